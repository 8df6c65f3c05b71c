//! Several input streams, hash-tagged key names and a non-zero database on a standalone
//! server (CONTRACT §11), and the commands' STREAM argument, key specs and docs.

mod common;
use common::*;

const A: &str = "quantum:stream:{a}:harvest.heat.decision";
const B: &str = "quantum:stream:{b}:harvest.heat.decision";

fn server(flavor: Flavor, streams: &str) -> Server {
    Options::new(flavor)
        .without_exporter()
        .module_arg("stream-in", streams)
        .start()
}

fn wait_group_drained(c: &mut Connection, stream: &str) {
    wait_for(10, &format!("{stream} drained"), || {
        group_field(c, stream, "heat_bridge", "lag").as_deref() == Some("0")
            && group_field(c, stream, "heat_bridge", "pending").as_deref() == Some("0")
    });
}

fn get_via(
    c: &mut Connection,
    cmd: &str,
    id: &str,
    stream: Option<&str>,
) -> redis::RedisResult<Vec<(String, String)>> {
    let mut q = redis::cmd(cmd);
    q.arg(id);
    if let Some(s) = stream {
        q.arg("STREAM").arg(s);
    }
    let mut v: Vec<(String, String)> = q
        .query::<Option<Vec<(String, String)>>>(c)?
        .unwrap_or_default();
    v.sort();
    Ok(v)
}

#[test]
fn each_listed_stream_is_projected_with_its_own_group_and_tagged_keys() {
    for_each_flavor(|flavor| {
        let s = server(flavor, &format!("{A} , {B}"));
        let mut c = s.conn();
        xadd(&mut c, A, "*", &decision("BTC", "pa", &[]));
        xadd(&mut c, B, "*", &decision("BTC", "pb", &[]));
        // The same plan_id on both streams: dedupe is per stream's tag.
        xadd(&mut c, B, "*", &decision("ETH", "pa", &[]));
        wait_group_drained(&mut c, A);
        wait_group_drained(&mut c, B);
        for (tag, plan, sym) in [("a", "pa", "BTC"), ("b", "pb", "BTC"), ("b", "pa", "ETH")] {
            let by_plan = format!("quantum:harvest:heat:by_plan:{{{tag}}}:{plan}");
            assert_eq!(
                hget(&mut c, &by_plan, "symbol").as_deref(),
                Some(sym),
                "{by_plan}"
            );
            let dedupe = format!("quantum:dedupe:p27:{{{tag}}}:{plan}");
            assert!(exists(&mut c, &dedupe), "{dedupe}");
        }
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:{a}:BTC").as_deref(),
            Some("pa")
        );
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:{b}:BTC").as_deref(),
            Some("pb")
        );
        assert!(
            !exists(&mut c, "quantum:harvest:heat:by_plan:pa"),
            "no untagged key"
        );
        // Reads name their stream; without STREAM, the first listed one.
        let got = get_via(&mut c, "HEATBRIDGE.GET", "pa", Some(B)).unwrap();
        assert!(got.contains(&("symbol".into(), "ETH".into())), "{got:?}");
        let got = get_via(&mut c, "HEATBRIDGE.GET", "pa", None).unwrap();
        assert!(got.contains(&("symbol".into(), "BTC".into())), "{got:?}");
        let got = get_via(&mut c, "HEATBRIDGE.LATEST", "BTC", Some(B)).unwrap();
        assert!(
            got.contains(&("last_plan_id".into(), "pb".into())),
            "{got:?}"
        );
        let e = get_via(&mut c, "HEATBRIDGE.GET", "pa", Some("nope")).unwrap_err();
        assert!(
            e.to_string()
                .contains("HEATBRIDGE: nope is not in heatbridge.stream-in"),
            "{e}"
        );
        let (n, _): (i64, String) = redis::cmd("HEATBRIDGE.REPLAY")
            .arg("STREAM")
            .arg(B)
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 2);
        // Metrics and health per stream.
        let text = metrics_text(&mut c);
        for st in [A, B] {
            assert_eq!(
                sample(&text, &format!("p27_stream_owned{{stream=\"{st}\"}}")),
                Some(1.0),
                "{text}"
            );
            assert_eq!(
                sample(&text, &format!("p27_stream_backlog{{stream=\"{st}\"}}")),
                Some(0.0),
                "{text}"
            );
        }
        assert_eq!(sample(&text, "p27_in_messages_total"), Some(3.0));
        let h = health(&mut c);
        assert_eq!(h["status"], "ok", "{h}");
        let names: Vec<String> = h["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(names, vec![A.to_string(), B.to_string()]);
    });
}

#[test]
fn stream_lists_are_validated() {
    for_each_flavor(|flavor| {
        let s = server(flavor, A);
        let mut c = s.conn();
        for bad in [
            format!("{A},"),
            format!("{A},,{B}"),
            format!("{A},{A}"),
            " , ".into(),
        ] {
            assert!(
                config_set(&mut c, "heatbridge.stream-in", &bad).is_err(),
                "{bad:?}"
            );
            assert_eq!(config_get(&mut c, "heatbridge.stream-in"), A);
        }
        config_set(&mut c, "heatbridge.stream-in", &format!("{A},{B}")).unwrap();
        xadd(&mut c, B, "*", &decision("S", "late", &[]));
        wait_group_drained(&mut c, B);
        assert!(exists(&mut c, "quantum:harvest:heat:by_plan:{b}:late"));
    });
}

#[test]
fn a_non_zero_database_holds_the_streams_and_keys() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("db", "3")
            .start();
        let mut c = s.conn();
        let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
        inject(&mut c, "BTC", "in3");
        wait_drained(&mut c);
        assert!(exists(&mut c, "quantum:harvest:heat:by_plan:in3"));
        // The same stream name in database 0 is not projected.
        let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
        inject(&mut c, "BTC", "in0");
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!exists(&mut c, "quantum:harvest:heat:by_plan:in0"));
        assert!(group_field(&mut c, STREAM, "heat_bridge", "name").is_none());
        // Reads go to database 3 from any database, and leave the caller where it was.
        let got = get_via(&mut c, "HEATBRIDGE.GET", "in3", None).unwrap();
        assert!(got.contains(&("plan_id".into(), "in3".into())), "{got:?}");
        assert_eq!(health(&mut c)["status"], "ok");
        // A database the server lacks is reported, not crashed on.
        config_set(&mut c, "heatbridge.db", "999").unwrap();
        wait_for(5, "health error", || health(&mut c)["status"] == "error");
        config_set(&mut c, "heatbridge.db", "3").unwrap();
        wait_for(5, "health back", || health(&mut c)["status"] != "error");
    });
}

#[test]
fn commands_declare_the_stream_as_a_key_and_have_docs() {
    for_each_flavor(|flavor| {
        let s = server(flavor, A);
        let mut c = s.conn();
        for (args, key) in [
            (vec!["HEATBRIDGE.GET", "p", "STREAM", A], A),
            (vec!["HEATBRIDGE.LATEST", "S", "STREAM", B], B),
            (vec!["HEATBRIDGE.REPLAY", "STREAM", A, "COUNT", "5"], A),
        ] {
            let keys: Vec<String> = redis::cmd("COMMAND")
                .arg("GETKEYS")
                .arg(&args)
                .query(&mut c)
                .unwrap();
            assert_eq!(keys, vec![key.to_string()], "{args:?}");
        }
        for cmd in [
            "heatbridge.health",
            "heatbridge.metrics",
            "heatbridge.get",
            "heatbridge.latest",
            "heatbridge.replay",
        ] {
            let docs: redis::Value = redis::cmd("COMMAND")
                .arg("DOCS")
                .arg(cmd)
                .query(&mut c)
                .unwrap();
            let text = format!("{docs:?}");
            let fields: &[&str] = if cmd.ends_with("health") || cmd.ends_with("metrics") {
                &["summary", "since"]
            } else {
                &["summary", "since", "arguments"]
            };
            for field in fields {
                assert!(text.contains(field), "{cmd} {field}: {text}");
            }
        }
    });
}

#[test]
fn streams_that_would_share_keys_are_refused() {
    for_each_flavor(|flavor| {
        let s = server(flavor, A);
        let mut c = s.conn();
        for bad in [
            format!("{A},quantum:stream:{{a}}:other"),
            "x:plain,y:plain".to_string(),
        ] {
            let e = config_set(&mut c, "heatbridge.stream-in", &bad).unwrap_err();
            assert!(e.contains("the same lookup keys"), "{bad}: {e}");
        }
        assert_eq!(config_get(&mut c, "heatbridge.stream-in"), A);
    });
}

#[test]
fn a_stream_set_by_config_is_projected_at_once() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("stream-in", A)
            .module_arg("poll-ms", "60000")
            .start();
        let mut c = s.conn();
        // Let the first tick (at load) pass, so that only the settings change can help.
        std::thread::sleep(std::time::Duration::from_millis(300));
        xadd(&mut c, B, "*", &decision("S", "before", &[]));
        config_set(&mut c, "heatbridge.stream-in", &format!("{A},{B}")).unwrap();
        wait_for(3, "the new stream projected", || {
            exists(&mut c, "quantum:harvest:heat:by_plan:{b}:before")
        });
    });
}

#[test]
fn replay_names_one_stream() {
    for_each_flavor(|flavor| {
        let s = server(flavor, &format!("{A},{B}"));
        let mut c = s.conn();
        let e = redis::cmd("HEATBRIDGE.REPLAY")
            .arg(&["STREAM", A, "STREAM", B][..])
            .query::<redis::Value>(&mut c)
            .unwrap_err();
        assert!(e.to_string().contains("syntax error"), "{e}");
    });
}

#[test]
fn a_cluster_node_refuses_a_non_zero_database() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_module()
            .without_exporter()
            .arg("--cluster-enabled", "yes")
            .arg("--cluster-config-file", "nodes.conf")
            .start();
        let mut c = s.conn();
        let load = |c: &mut Connection, db: &str| {
            redis::cmd("MODULE")
                .arg("LOAD")
                .arg(module_path().display().to_string())
                .arg(
                    &[
                        "metrics-port",
                        "0",
                        "health-port",
                        "0",
                        "stream-in",
                        A,
                        "db",
                        db,
                    ][..],
                )
                .query::<()>(c)
        };
        assert!(load(&mut c, "3").is_err(), "db 3 loaded on a cluster node");
        load(&mut c, "0").expect("db 0 loads");
        assert!(config_set(&mut c, "heatbridge.db", "2").is_err());
    });
}

/// A stream named inside one of the four derived-key namespaces would be replaced by the
/// module's own writes (a SET of the pointer or the dedupe key): it is refused by CONFIG SET
/// and by MODULE LOAD, and the old value stays.
#[test]
fn a_stream_inside_the_derived_namespaces_is_refused() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        for bad in [
            "quantum:harvest:heat:latest_plan_id:BTC",
            "quantum:harvest:heat:latest:BTC",
            "quantum:harvest:heat:by_plan:p1",
            "quantum:dedupe:p27:{a}:p1",
        ] {
            let e = config_set(&mut c, "heatbridge.stream-in", bad).unwrap_err();
            assert!(e.contains("namespace"), "{bad}: {e}");
            let listed = format!("{A},{bad}");
            assert!(config_set(&mut c, "heatbridge.stream-in", &listed).is_err());
        }
        assert_eq!(config_get(&mut c, "heatbridge.stream-in"), STREAM);

        let plain = Options::new(flavor).without_module().start();
        let mut p = plain.conn();
        let r: redis::RedisResult<()> = redis::cmd("MODULE")
            .arg("LOAD")
            .arg(module_path().display().to_string())
            .arg("stream-in")
            .arg("quantum:harvest:heat:latest_plan_id:BTC")
            .arg("metrics-port")
            .arg("0")
            .arg("health-port")
            .arg("0")
            .query(&mut p);
        assert!(r.is_err(), "the load is refused");
        assert!(plain.log().contains("namespace"), "{}", plain.log());
        let _: String = redis::cmd("PING").query(&mut p).expect("the server lives");
    });
}

/// The module's string writes (the dedupe key and the latest_plan_id pointer) never replace
/// a key of another type: a stream, a list or a hash at that name stays as it is, the write
/// is counted as an error, and the rest of the decision is projected.
#[test]
fn string_writes_never_replace_a_key_of_another_type() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let pointer = "quantum:harvest:heat:latest_plan_id:BTC";
        let dedupe = "quantum:dedupe:p27:p9";
        let theirs = xadd(&mut c, pointer, "*", &decision("X", "theirs", &[]));
        let _: i64 = redis::cmd("RPUSH")
            .arg(dedupe)
            .arg("a")
            .query(&mut c)
            .unwrap();
        inject(&mut c, "BTC", "p1");
        inject(&mut c, "ETH", "p9");
        wait_drained(&mut c);
        let kind =
            |c: &mut Connection, k: &str| -> String { redis::cmd("TYPE").arg(k).query(c).unwrap() };
        assert_eq!(
            kind(&mut c, pointer),
            "stream",
            "the stream at the pointer's name stays"
        );
        let ids: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(pointer)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].0, theirs);
        assert_eq!(
            kind(&mut c, dedupe),
            "list",
            "the list at the dedupe name stays"
        );
        // The rest of both decisions is projected.
        assert_eq!(
            hget(&mut c, "quantum:harvest:heat:latest:BTC", "plan_id").as_deref(),
            Some("p1")
        );
        assert!(exists(&mut c, "quantum:harvest:heat:by_plan:p9"));
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:ETH").as_deref(),
            Some("p9")
        );
        assert_eq!(metric(&mut c, "p27_errors_total{stage=\"write\"}"), 2.0);
        // The stream at the pointer's name still takes entries.
        xadd(&mut c, pointer, "*", &decision("X", "more", &[]));
    });
}

/// An untagged stream and a tagged one never share a key: on the untagged stream a plan_id
/// or symbol that starts like a tagged key (`{eu}:P1`) is invalid, so the `{eu}` stream's
/// plan `P1` owns `by_plan:{eu}:P1`, its dedupe key and its latest, and is never taken for
/// a duplicate.
#[test]
fn untagged_and_tagged_streams_never_share_keys() {
    for_each_flavor(|flavor| {
        let eu = "quantum:stream:{eu}:harvest.heat.decision";
        let s = server(flavor, &format!("{STREAM},{eu}"));
        let mut c = s.conn();
        xadd(
            &mut c,
            STREAM,
            "*",
            &decision("BTC", "{eu}:P1", &[("heat_level", "untagged")]),
        );
        xadd(
            &mut c,
            STREAM,
            "*",
            &decision("{eu}:BTC", "P2", &[("heat_level", "untagged")]),
        );
        xadd(
            &mut c,
            eu,
            "*",
            &decision("BTC", "P1", &[("heat_level", "tagged")]),
        );
        wait_group_drained(&mut c, STREAM);
        wait_group_drained(&mut c, eu);
        assert_eq!(
            hget(&mut c, "quantum:harvest:heat:by_plan:{eu}:P1", "heat_level").as_deref(),
            Some("tagged")
        );
        assert_eq!(
            hget(&mut c, "quantum:harvest:heat:latest:{eu}:BTC", "heat_level").as_deref(),
            Some("tagged")
        );
        assert!(!exists(&mut c, "quantum:harvest:heat:by_plan:P2"));
        assert!(!exists(&mut c, "quantum:harvest:heat:latest:BTC"));
        assert_eq!(metric(&mut c, "p27_dedupe_skips_total"), 0.0);
        assert_eq!(metric(&mut c, "p27_errors_total{stage=\"parse\"}"), 2.0);
    });
}
