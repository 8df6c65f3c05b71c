//! Catch-up that an operator can watch and tune: `heatbridge.catchup-step-us` bounds each
//! catch-up pass, and the entries remaining and the rate show in metrics and INFO while a
//! backlog drains. (How fast, and what other clients feel, is measured by the benchmark,
//! never asserted here.)

mod common;
use common::*;

use std::time::{Duration, Instant};

fn info_field(c: &mut Connection, name: &str) -> String {
    let text: String = redis::cmd("INFO").arg("heatbridge").query(c).expect("INFO");
    text.lines()
        .find_map(|l| {
            let (k, v) = l.trim_end().split_once(':')?;
            (k == name).then(|| v.to_string())
        })
        .unwrap_or_else(|| panic!("INFO heatbridge has no {name}: {text}"))
}

#[test]
fn the_catch_up_step_is_a_validated_setting() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.catchup-step-us"), "1000");
        for bad in ["99", "10001", "-1", "x"] {
            assert!(
                config_set(&mut c, "heatbridge.catchup-step-us", bad).is_err(),
                "{bad}"
            );
        }
        config_set(&mut c, "heatbridge.catchup-step-us", "250").unwrap();
        assert_eq!(config_get(&mut c, "heatbridge.catchup-step-us"), "250");
        // Live projection goes on as before.
        inject(&mut c, "L", "live1");
        wait_drained(&mut c);
        assert!(exists(&mut c, "quantum:harvest:heat:by_plan:live1"));
    });
}

/// While a backlog drains, INFO and the metrics show the entries remaining and a rate above
/// 0; once it is drained, the rate is 0 and every entry is projected.
#[test]
fn catch_up_progress_shows_in_info_and_metrics() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_module()
            .without_exporter()
            .start();
        let mut c = s.conn();
        let n = 60_000;
        xadd_pipelined(&mut c, n, |i| format!("S{}", i % 5), |i| format!("c{i}"));
        let _: () = redis::cmd("MODULE")
            .arg("LOAD")
            .arg(module_path().display().to_string())
            .arg(&["metrics-port", "0", "health-port", "0", "poll-ms", "50"][..])
            .arg(&["catchup-step-us", "200"][..])
            .query(&mut c)
            .expect("MODULE LOAD");
        let mut seen_rate = false;
        let mut seen_remaining = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let remaining = info_field(&mut c, "heatbridge_catchup_remaining");
            let rate: f64 = info_field(&mut c, "heatbridge_catchup_rate")
                .parse()
                .unwrap_or(0.0);
            let text = metrics_text(&mut c);
            let m_rate = sample(&text, "p27_catchup_rate").unwrap_or(0.0);
            if remaining.parse::<u64>().is_ok_and(|r| r > 0) {
                seen_remaining = true;
                seen_rate |= rate > 0.0 && m_rate > 0.0;
            }
            if remaining == "0" {
                break;
            }
            assert!(Instant::now() < deadline, "catch-up did not finish");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(seen_remaining, "no backlog was ever shown");
        assert!(
            seen_rate,
            "no catch-up rate was ever shown in INFO and metrics"
        );
        wait_drained(&mut c);
        assert_eq!(metric(&mut c, "p27_in_messages_total"), n as f64);
        wait_for(10, "the rate back to 0", || {
            metric(&mut c, "p27_catchup_rate") == 0.0
                && info_field(&mut c, "heatbridge_catchup_rate") == "0"
        });
    });
}
