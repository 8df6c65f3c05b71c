//! A running scripts/watch_latest.py, killed and reaped on drop (also when a test panics),
//! with bounded waits on everything it prints and on its exit.

use serde_json::Value;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long the watcher may take to print a decision, to resubscribe or to exit.
pub const WAIT: Duration = Duration::from_secs(20);

enum Line {
    Out(String),
    Err(String),
}

/// A running `watch_latest.py`.
pub struct Watcher {
    child: Child,
    rx: Receiver<Line>,
    /// The symbol it watches (its `--symbol`).
    symbol: String,
    /// Stdout lines read while waiting for a stderr line, not yet taken.
    pending: VecDeque<String>,
    /// Every stderr line so far, for failure messages.
    pub log: Vec<String>,
}

impl Watcher {
    /// Starts `python3 scripts/watch_latest.py args...`.
    pub fn start(args: &[String]) -> Watcher {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/watch_latest.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs scripts/watch_latest.py");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let tx_out = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx_out.send(Line::Out(line));
            }
        });
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(Line::Err(line));
            }
        });
        let symbol = args
            .windows(2)
            .find(|w| w[0] == "--symbol")
            .map(|w| w[1].clone())
            .unwrap_or_default();
        Watcher {
            child,
            rx,
            symbol,
            pending: VecDeque::new(),
            log: Vec::new(),
        }
    }

    /// The next line within the deadline; panics (with the watcher's stderr) on timeout or
    /// when the watcher ended.
    fn recv(&mut self, deadline: Instant, what: &str) -> Line {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(l) => l,
            Err(e) => {
                let status = match e {
                    RecvTimeoutError::Timeout => "still running".to_string(),
                    RecvTimeoutError::Disconnected => format!("{:?}", self.child.try_wait()),
                };
                panic!(
                    "watch_latest.py ({status}) gave nothing for {what}; its stderr:\n{}",
                    self.log.join("\n")
                )
            }
        }
    }

    /// The next decision printed, whole.
    pub fn next_json(&mut self, what: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        let json = loop {
            if let Some(l) = self.pending.pop_front() {
                break l;
            }
            match self.recv(deadline, what) {
                Line::Out(l) => break l,
                Line::Err(l) => {
                    eprintln!("watch_latest: {l}");
                    self.log.push(l);
                }
            }
        };
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("not a JSON line ({e}): {json}"))
    }

    /// The next decision printed: (plan_id, symbol).
    pub fn next_decision(&mut self, what: &str) -> (String, String) {
        let v = self.next_json(what);
        let s = |f: &str| v[f].as_str().unwrap_or_default().to_string();
        (s("plan_id"), s("symbol"))
    }

    /// Asserts that the next decision printed is `plan` of the watched symbol.
    pub fn expect(&mut self, plan: &str) {
        let (got, symbol) = self.next_decision(plan);
        assert_eq!(
            (got.as_str(), symbol.as_str()),
            (plan, self.symbol.as_str()),
            "watch_latest.py printed another decision than {plan}; its stderr:\n{}",
            self.log.join("\n")
        );
    }

    /// Waits for a stderr line containing `needle` (keeping stdout lines for later).
    pub fn wait_stderr(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.recv(deadline, &format!("a stderr line with {needle:?}")) {
                Line::Out(l) => self.pending.push_back(l),
                Line::Err(l) => {
                    eprintln!("watch_latest: {l}");
                    let found = l.contains(needle);
                    self.log.push(l);
                    if found {
                        return;
                    }
                }
            }
        }
    }

    /// Waits (bounded) for the watcher to exit; its status and its whole stderr.
    pub fn exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            // Both pipes closed: the process is gone or about to be.
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Line::Out(l)) => self.pending.push_back(l),
                Ok(Line::Err(l)) => self.log.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "watch_latest.py did not exit; its stderr:\n{}",
                    self.log.join("\n")
                ),
            }
        }
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, self.log.join("\n"));
            }
            assert!(Instant::now() < deadline, "watch_latest.py did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
