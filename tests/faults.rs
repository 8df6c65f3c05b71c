//! Panics cannot escape: the fault-injection build panics on purpose inside each kind of
//! callback; the server stays up, and the panic is logged and counted.

mod common;
use common::*;

use std::time::Duration;

fn internal_errors(c: &mut Connection) -> u64 {
    // INFO, not HEATBRIDGE.METRICS: with the "command" site every module command panics.
    let info: String = redis::cmd("INFO").arg("heatbridge").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("heatbridge_errors_internal_total:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn run_site(flavor: Flavor, site: &str) {
    let Some(module) = fault_module_path() else {
        panic!("the fault-injection build is missing: scripts/test.sh builds it into target/fault");
    };
    let mut opts = Options::new(flavor).without_exporter();
    opts.module_file = Some(module);
    opts.env
        .push(("HEATBRIDGE_FAULT_INJECT".into(), site.into()));
    let mut s = opts.start();
    let mut c = s.conn();
    inject(&mut c, "F", "f1");
    let _: redis::RedisResult<String> = redis::cmd("HEATBRIDGE.HEALTH").query(&mut c);
    let _: redis::RedisResult<redis::Value> = redis::cmd("HEATBRIDGE.GET").arg("f1").query(&mut c);
    std::thread::sleep(Duration::from_millis(700));
    assert!(s.alive(), "server died with a panic at {site}");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    assert!(internal_errors(&mut c) > 0, "panic at {site} not counted");
    assert!(
        s.log().contains("internal error contained in"),
        "panic at {site} not logged"
    );
}

#[test]
fn panic_in_command_is_contained() {
    for_each_flavor(|flavor| {
        run_site(flavor, "command");
    });
}

#[test]
fn panic_in_keyspace_event_is_contained() {
    for_each_flavor(|flavor| run_site(flavor, "event"));
}

#[test]
fn panic_in_deferred_drain_is_contained() {
    // Redis 8.2 and Valkey run the drain as a post-notification job (per turn with
    // HEATBRIDGE_PROJECT_AT=turn), Redis 7.0 at the end of the event-loop turn.
    for_each_flavor(|flavor| run_site(flavor, flavor.live_site()));
}

/// The 0 ms timer that carries a catch-up on: a backlog on a stream listed after its
/// entries were added.
#[test]
fn panic_in_catch_up_timer_is_contained() {
    for_each_flavor(|flavor| {
        let Some(module) = fault_module_path() else {
            panic!(
                "the fault-injection build is missing: scripts/test.sh builds it into target/fault"
            );
        };
        let mut opts = Options::new(flavor)
            .without_exporter()
            .module_arg("batch", "1")
            .module_arg("catchup-step-us", "100");
        opts.module_file = Some(module);
        opts.env
            .push(("HEATBRIDGE_FAULT_INJECT".into(), "timer".into()));
        let mut s = opts.start();
        let mut c = s.conn();
        let other = "quantum:stream:faults.backlog";
        for i in 0..300 {
            xadd(&mut c, other, "*", &decision("F", &format!("b{i}"), &[]));
        }
        config_set(&mut c, "heatbridge.stream-in", other).unwrap();
        wait_for(10, "a contained panic in the catch-up timer", || {
            internal_errors(&mut c) > 0
        });
        assert!(s.alive(), "server died with a panic in the catch-up timer");
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
        assert!(s.log().contains("internal error contained in"));
    });
}

#[test]
fn panic_in_cron_housekeeping_is_contained() {
    for_each_flavor(|flavor| run_site(flavor, "cron"));
}

#[test]
fn panic_while_projecting_an_entry_is_contained() {
    for_each_flavor(|flavor| run_site(flavor, "project"));
}

/// A crash while HeatBridge holds its state lock still ends in a crash report, with
/// HeatBridge's INFO section, and the process exits: INFO for a crash report takes no lock
/// (it used to wait for the lock its own thread held, and the server hung instead of dying).
#[test]
fn crash_report_with_a_lock_held_completes() {
    for_each_flavor(|flavor| {
        let Some(module) = fault_module_path() else {
            panic!(
                "the fault-injection build is missing: scripts/test.sh builds it into target/fault"
            );
        };
        let mut opts = Options::new(flavor)
            .without_exporter()
            .arg("--crash-memcheck-enabled", "no");
        opts.module_file = Some(module);
        opts.env
            .push(("HEATBRIDGE_FAULT_INJECT".into(), "crash-locked".into()));
        let mut s = opts.start();
        let mut c = s.conn();
        inject(&mut c, "F", "f1");
        let _: redis::RedisResult<String> = redis::cmd("HEATBRIDGE.HEALTH").query(&mut c);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while s.alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = s.log();
        assert!(!s.alive(), "the server hung in its crash report:\n{log}");
        assert!(log.contains("crashed by signal"), "no crash report:\n{log}");
        assert!(
            log.contains("heatbridge_loops_total"),
            "no heatbridge section in the crash report:\n{log}"
        );
    });
}
