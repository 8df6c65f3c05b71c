//! The HTTP exporter: one thread inside redis-server serving `/metrics` and `/health`.
//!
//! It never takes the Redis lock: it renders from atomics and the state the main thread
//! publishes. It is bounded: one thread; each endpoint its own budget of at most
//! [`MAX_CONNS`] connections, so a flood on one port never starves the other; an 8 KiB head
//! that must be complete within [`HEAD_DEADLINE`] of the accept; a 5 s deadline per
//! connection; and when an endpoint is full and a client waits, its oldest connection is
//! dropped for it ([`EVICT_AFTER`]), so slow or idle clients cannot hold the slots. It is
//! fail-open: a port that cannot be bound is logged and retried while projection goes on.
//! CONFIG SET of bind or a port bumps a generation that makes the thread rebind; unload
//! stops and joins it, which frees both ports.
//!
//! File descriptors: Redis sizes `maxclients` so that `maxclients` + 32 (its reserve for
//! persistence, listeners, logs and pipes) fit in `RLIMIT_NOFILE` (`adjustOpenFilesLimit`).
//! The exporter's listeners and connections come out of what is left above that, never out
//! of the reserve: the main thread measures it ([`refresh_fd_budget`]), the thread keeps to
//! it, and an endpoint gets no listener when nothing is left for it.
//!
//! Every socket is shut down (`shutdown(2)`), not only closed, when the exporter lets it go.
//! A fork child (BGSAVE, AOF rewrite, full sync) holds copies of the descriptors: close drops
//! only ours, so the old port would stay in LISTEN, and a client stay connected, for as long
//! as the child lives. Shutdown acts on the socket itself, which both copies share.
//! Close-on-exec (Rust sets it) does not help: the child never execs.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis_module::Context;

use crate::core::http::{self, Endpoint, Parsed, Response};
use crate::exporter::state;
use crate::settings::config;
use crate::support::guard;
use crate::support::logging;

/// Most connections each endpoint serves at once (CONTRACT §9 allows 64). 47 so that the
/// exporter's [`EXPORTER_FDS`] never push a Redis descriptor past the server's event loop:
/// it registers only descriptors below `maxclients` + 128 (`CONFIG_FDSET_INCR`), and keeps
/// up to `maxclients` + 32 itself, which leaves 96.
pub const MAX_CONNS: usize = 47;
/// Longest a connection may live, from accept to close.
pub const CONN_DEADLINE: Duration = Duration::from_secs(5);
/// Longest a client may take to send its whole request head, from the accept: a slow
/// client is cut off then, however steadily it trickles.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(3);
/// When an endpoint has all its connections and another client waits, the oldest one that
/// has been open at least this long is dropped to make room. A real client sends its head
/// in one packet and is answered long before.
pub const EVICT_AFTER: Duration = Duration::from_millis(250);
/// Most connections one listener accepts per poll round, so that neither port waits for
/// the other's queue.
const ACCEPT_BATCH: usize = 16;
/// Longest the rest of a request is read and discarded after the reply.
pub const DRAIN_PERIOD: Duration = Duration::from_millis(500);
/// How long a listener rests after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
/// Most one line per this period about failing accepts or dropped connections.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often a port that could not be bound is tried again.
pub const RETRY_BIND: Duration = Duration::from_secs(2);
/// Longest the thread sleeps before it looks at stop and rebind requests.
const TICK_MS: i32 = 50;
/// Descriptors Redis keeps beyond `maxclients` (`CONFIG_MIN_RESERVED_FDS` in server.h,
/// the same in Redis 7.0, 8.2 and Valkey 8.1).
pub const REDIS_RESERVED_FDS: u64 = 32;
/// Descriptors the exporter holds at most: a listener and [`MAX_CONNS`] per endpoint, 96.
pub const EXPORTER_FDS: u64 = 2 * (1 + MAX_CONNS as u64);
/// The server's event loop handles descriptors below `maxclients` + this
/// (`CONFIG_FDSET_INCR` in server.h: Redis 7.0, 8.2, Valkey 8.1).
const EVENT_LOOP_SPARE: u64 = 128;
const _: () = assert!(REDIS_RESERVED_FDS + EXPORTER_FDS <= EVENT_LOOP_SPARE);
/// How often the cron tick measures the descriptor budget again.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

static GENERATION: AtomicU64 = AtomicU64::new(0);

struct Running {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

/// Starts the exporter thread (module load). A thread already running is stopped first.
pub fn start() {
    stop();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("heatbridge-exp".into())
        .spawn(move || run(&flag));
    match spawned {
        Ok(handle) => {
            *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running { stop, handle });
        }
        Err(e) => logging::error(&format!("exporter thread could not start: {e}")),
    }
}

/// Stops and joins the exporter thread, closing its sockets (module unload).
pub fn stop() {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(r) = running {
        r.stop.store(true, Ordering::SeqCst);
        if r.handle.join().is_err() {
            logging::error("exporter thread ended with a panic");
        }
    }
    let mut p = state::published();
    p.exporter_up = [false, false];
}

/// Asks the thread to rebind with the current bind and port settings.
pub fn reconfigure() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Descriptors the exporter may hold (listeners and connections); `u64::MAX` until the main
/// thread has measured.
static FD_BUDGET: AtomicU64 = AtomicU64::new(u64::MAX);
/// The soft `RLIMIT_NOFILE` and the `maxclients` the budget came from, for messages.
static FD_NOFILE: AtomicU64 = AtomicU64::new(0);
static FD_MAXCLIENTS: AtomicU64 = AtomicU64::new(0);
/// When the budget was last measured.
static LAST_REFRESH: Mutex<Option<Instant>> = Mutex::new(None);

/// PURE: descriptors left to the exporter by Redis's own rule (`adjustOpenFilesLimit`):
/// of `nofile` (the soft `RLIMIT_NOFILE`), `maxclients` are for clients and
/// [`REDIS_RESERVED_FDS`] for the server itself.
pub fn fd_budget(nofile: u64, maxclients: u64) -> u64 {
    nofile.saturating_sub(maxclients.saturating_add(REDIS_RESERVED_FDS))
}

/// Descriptors `/health` always has, a listener and two connections, even when the budget
/// leaves nothing: then they come out of Redis's reserve of [`REDIS_RESERVED_FDS`] (a
/// server whose limit Redis raised itself has exactly maxclients + 32). A liveness probe that
/// fails for want of a descriptor restarts a healthy server; three of the reserve's 32 do not
/// stop Redis from saving or logging, and a flood on `/metrics` never reaches them.
pub const HEALTH_FLOOR: u64 = 3;

/// PURE: splits `budget` descriptors between the endpoints that are on (`[metrics,
/// health]`). Each gets a listener and the returned number of connections, at most
/// [`MAX_CONNS`]; 0 means the endpoint stays unbound. When there is not enough for both,
/// `/health` comes first: a failed liveness probe restarts the server, a missed scrape does
/// not; and `/health` never has less than [`HEALTH_FLOOR`].
pub fn conn_caps(budget: u64, on: [bool; 2]) -> [usize; 2] {
    let max = MAX_CONNS as u64;
    let alone = |b: u64| if b >= 2 { (b - 1).min(max) as usize } else { 0 };
    match on {
        [false, false] => [0, 0],
        [true, false] => [alone(budget), 0],
        [false, true] => [0, alone(budget.max(HEALTH_FLOOR))],
        [true, true] if budget < HEALTH_FLOOR + 2 => [0, alone(budget.max(HEALTH_FLOOR))],
        [true, true] => {
            let conns = budget - 2;
            let health = conns.div_ceil(2);
            [(conns - health).min(max) as usize, health.min(max) as usize]
        }
    }
}

/// `maxclients` as the server runs with it (main thread: INFO reads server state).
fn maxclients(ctx: &Context) -> Option<u64> {
    let info = ctx.server_info("clients");
    let value = info.field("maxclients")?;
    value.try_as_str().ok()?.trim().parse().ok()
}

/// The process's `RLIMIT_NOFILE`: (soft, hard).
fn nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct through a valid, exclusive pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    ok.then_some((lim.rlim_cur, lim.rlim_max))
}

/// Module load (main thread, before the thread starts): measures the descriptor budget.
/// If the soft limit leaves the exporter less than it can use and the hard limit allows
/// more, the soft limit is raised by the difference first, as Redis raises it for its
/// clients; the hard limit is never touched.
pub fn init_fd_budget(ctx: &Context) {
    FD_BUDGET.store(u64::MAX, Ordering::SeqCst);
    if let (Some(clients), Some((soft, hard))) = (maxclients(ctx), nofile_limit()) {
        let want = clients
            .saturating_add(REDIS_RESERVED_FDS)
            .saturating_add(EXPORTER_FDS);
        if soft < want && hard > soft {
            let raised = libc::rlimit {
                rlim_cur: want.min(hard),
                rlim_max: hard,
            };
            // SAFETY: setrlimit reads one valid rlimit struct; raising the soft limit within
            // the hard one changes nothing else in the process.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                logging::info(&format!(
                    "raised the open-files soft limit from {soft} to {} for the exporter",
                    raised.rlim_cur
                ));
            }
        }
    }
    refresh(ctx, true);
}

/// Cron tick (main thread): measures the budget again, at most once a second, so that
/// CONFIG SET maxclients or a changed limit (prlimit) is followed within about a second.
pub fn refresh_fd_budget(ctx: &Context) {
    refresh(ctx, false);
}

fn refresh(ctx: &Context, force: bool) {
    {
        let mut last = LAST_REFRESH.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if !force && last.is_some_and(|t| now.duration_since(t) < REFRESH_EVERY) {
            return;
        }
        *last = Some(now);
    }
    let (Some(clients), Some((soft, _))) = (maxclients(ctx), nofile_limit()) else {
        return;
    };
    let budget = fd_budget(soft, clients);
    FD_NOFILE.store(soft, Ordering::SeqCst);
    FD_MAXCLIENTS.store(clients, Ordering::SeqCst);
    let old = FD_BUDGET.swap(budget, Ordering::SeqCst);
    if old == budget {
        return;
    }
    if budget < EXPORTER_FDS {
        let [m, h] = conn_caps(budget, [true, true]);
        logging::warning(&format!(
            "exporter: the open-files limit {soft} leaves {budget} descriptors beyond \
             maxclients {clients} and the {REDIS_RESERVED_FDS} Redis keeps for itself; the \
             exporter keeps within them (at most {m} connections on /metrics, {h} on \
             /health, 0 = not served). It can use {EXPORTER_FDS}: raise the limit to at \
             least {} (ulimit -n, LimitNOFILE) or lower maxclients",
            clients
                .saturating_add(REDIS_RESERVED_FDS)
                .saturating_add(EXPORTER_FDS)
        ));
    } else if old < EXPORTER_FDS {
        logging::info(&format!(
            "exporter: the open-files limit {soft} leaves room for every connection again"
        ));
    }
}

/// The numbers behind the budget, for a status line.
fn fd_note() -> String {
    format!(
        "open-files limit {}, maxclients {}, {REDIS_RESERVED_FDS} kept by Redis",
        FD_NOFILE.load(Ordering::Relaxed),
        FD_MAXCLIENTS.load(Ordering::Relaxed)
    )
}

/// Renders the reply for a request that routed to `endpoint`.
fn render(endpoint: Endpoint) -> Response {
    match endpoint {
        Endpoint::Metrics => Response {
            code: 200,
            content_type: crate::core::metrics::CONTENT_TYPE,
            body: state::metrics_text().into_bytes(),
        },
        Endpoint::Health => {
            let (status, json) = state::health();
            Response {
                code: status.http_code(),
                content_type: crate::core::health::CONTENT_TYPE,
                body: json.into_bytes(),
            }
        }
    }
}

struct Listener {
    endpoint: Endpoint,
    /// The address wanted now; `None` when the endpoint is off.
    want: Option<SocketAddr>,
    sock: Option<TcpListener>,
    last_try: Option<Instant>,
    last_error: Option<String>,
    /// Not accepting until then, after an accept error.
    paused_until: Option<Instant>,
    last_accept_log: Option<Instant>,
    /// Most connections this endpoint holds: [`MAX_CONNS`], or fewer when file descriptors
    /// are short.
    cap: usize,
    /// The endpoint is on but no descriptor is left for it: unbound.
    starved: bool,
    last_evict_log: Option<Instant>,
}

impl Listener {
    fn new(endpoint: Endpoint) -> Listener {
        Listener {
            endpoint,
            want: None,
            sock: None,
            last_try: None,
            last_error: None,
            paused_until: None,
            last_accept_log: None,
            cap: MAX_CONNS,
            starved: false,
            last_evict_log: None,
        }
    }

    fn index(&self) -> usize {
        match self.endpoint {
            Endpoint::Metrics => 0,
            Endpoint::Health => 1,
        }
    }

    fn publish(&self) {
        let status = match (&self.want, &self.sock, &self.last_error) {
            (None, _, _) if self.starved => {
                format!("off: no file descriptors to spare ({})", fd_note())
            }
            (None, _, _) => "off".to_string(),
            (Some(a), Some(_), _) if self.cap < MAX_CONNS => format!(
                "bound {a}, at most {} connections ({})",
                self.cap,
                fd_note()
            ),
            (Some(a), Some(_), _) => format!("bound {a}"),
            (Some(a), None, Some(e)) => format!("retrying {a}: {e}"),
            (Some(a), None, None) => format!("binding {a}"),
        };
        let mut p = state::published();
        p.exporter_up[self.index()] = self.sock.is_some();
        p.exporter_status[self.index()] = status;
    }

    /// Stops listening, also in any fork child that inherited the socket.
    fn close(&mut self) {
        if let Some(sock) = self.sock.take() {
            shut_down(sock.as_raw_fd());
        }
    }

    /// Applies a new wanted address and connection cap, dropping the socket if the address
    /// changed. A cap of 0 (no descriptor left) leaves the endpoint unbound.
    fn configure(&mut self, want: Option<SocketAddr>, cap: usize) {
        let starved = want.is_some() && cap == 0;
        let want = want.filter(|_| cap > 0);
        let changed = want != self.want || cap != self.cap || starved != self.starved;
        if want != self.want {
            self.close();
            self.want = want;
            self.last_try = None;
            self.last_error = None;
        }
        self.cap = cap;
        self.starved = starved;
        if changed {
            self.publish();
        }
    }

    /// Whether a waiting client could be taken now: a free slot, or one to drop for it.
    fn has_room(&self, conns: &[Conn], now: Instant) -> bool {
        conns.len() < self.cap || conns.iter().any(|c| c.evictable(now))
    }

    /// Drops the oldest connection that may be dropped for a waiting client; false if none.
    fn evict_oldest(&mut self, conns: &mut Vec<Conn>, now: Instant) -> bool {
        let oldest = conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.evictable(now))
            .min_by_key(|(_, c)| c.started)
            .map(|(i, _)| i);
        let Some(i) = oldest else { return false };
        conns.swap_remove(i);
        if self
            .last_evict_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            self.last_evict_log = Some(now);
            logging::warning(&format!(
                "exporter: {} has all its {} connections busy; dropping the oldest for a new \
                 client (slow or idle clients on the port?)",
                self.endpoint.path(),
                self.cap
            ));
        }
        true
    }

    /// Binds if wanted, unbound, and the retry period has passed.
    fn ensure_bound(&mut self) {
        let Some(addr) = self.want else { return };
        if self.sock.is_some() || self.last_try.is_some_and(|t| t.elapsed() < RETRY_BIND) {
            return;
        }
        self.last_try = Some(Instant::now());
        let bound = TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|_| l));
        match bound {
            Ok(l) => {
                logging::info(&format!(
                    "exporter serving {} on {addr}",
                    self.endpoint.path()
                ));
                self.sock = Some(l);
                self.last_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    logging::warning(&format!(
                        "exporter cannot bind {addr} for {}: {msg}; retrying every {}s",
                        self.endpoint.path(),
                        RETRY_BIND.as_secs()
                    ));
                }
                self.last_error = Some(msg);
            }
        }
        self.publish();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// `shutdown(fd, SHUT_RDWR)`: ends the socket for every process holding a copy of `fd`.
/// On a listening socket Linux stops listening, so new connections are refused at once.
fn shut_down(fd: std::os::fd::RawFd) {
    // SAFETY: `fd` is an open socket owned by the caller, which closes it right after;
    // shutdown(2) neither frees nor reuses the descriptor. Its error (ENOTCONN on a socket
    // the peer already closed) changes nothing for a socket about to be closed.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

enum Phase {
    /// Reading the request head.
    Reading(Vec<u8>),
    /// Writing the reply: bytes and how many are sent.
    Writing(Vec<u8>, usize),
    /// Reply sent and the write side shut: reading and discarding whatever the client still
    /// sends (a POST body, more garbage) until it closes, so that closing does not reset the
    /// connection and destroy the reply before the client has read it.
    Draining(Instant),
}

struct Conn {
    stream: TcpStream,
    endpoint: Endpoint,
    started: Instant,
    phase: Phase,
}

impl Conn {
    fn new(stream: TcpStream, endpoint: Endpoint) -> Conn {
        Conn {
            stream,
            endpoint,
            started: Instant::now(),
            phase: Phase::Reading(Vec::with_capacity(512)),
        }
    }

    /// Whether the connection ran out of time: the overall deadline, the head deadline
    /// while the head is incomplete, or the drain period after the reply.
    fn expired(&self, now: Instant) -> bool {
        let age = now.duration_since(self.started);
        if age > CONN_DEADLINE {
            return true;
        }
        match self.phase {
            Phase::Reading(_) => age > HEAD_DEADLINE,
            Phase::Writing(..) => false,
            Phase::Draining(since) => now.duration_since(since) > DRAIN_PERIOD,
        }
    }

    /// Whether it may be dropped for a waiting client: open for [`EVICT_AFTER`] already.
    fn evictable(&self, now: Instant) -> bool {
        now.duration_since(self.started) >= EVICT_AFTER
    }

    /// Tells a client whose head never completed that it timed out, if the socket takes
    /// the few bytes at once; the connection is closed either way.
    fn time_out(&mut self) {
        if let Phase::Reading(buf) = &self.phase {
            if !buf.is_empty() {
                count(408);
                let reply = http::serialize(&Response::text(408, "request timeout\n"), false);
                let _ = self.stream.write(&reply);
            }
        }
    }

    /// Progresses the connection; returns false when it is finished and must be closed.
    fn progress(&mut self) -> bool {
        if self.expired(Instant::now()) {
            self.time_out();
            return false;
        }
        loop {
            match &mut self.phase {
                Phase::Reading(buf) => {
                    // Never hold more than one byte over the head limit: that byte is
                    // enough to tell that the head is too large.
                    let room = (http::MAX_HEAD + 1).saturating_sub(buf.len()).min(4096);
                    let mut chunk = [0u8; 4096];
                    let Some(dst) = chunk.get_mut(..room) else {
                        return false;
                    };
                    match self.stream.read(dst) {
                        Ok(0) => return false,
                        Ok(n) => {
                            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                            let parsed = http::parse(buf);
                            if parsed == Parsed::Partial {
                                continue;
                            }
                            let head_only = matches!(parsed, Parsed::Request { head: true, .. });
                            let endpoint = self.endpoint;
                            let resp = http::route(&parsed, endpoint, || render(endpoint));
                            count(resp.code);
                            self.phase = Phase::Writing(http::serialize(&resp, head_only), 0);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => return false,
                    }
                }
                Phase::Writing(out, sent) => {
                    let rest = out.get(*sent..).unwrap_or_default();
                    if rest.is_empty() {
                        if self.stream.shutdown(std::net::Shutdown::Write).is_err() {
                            return false;
                        }
                        self.phase = Phase::Draining(Instant::now());
                        continue;
                    }
                    match self.stream.write(rest) {
                        Ok(0) => return false,
                        Ok(n) => *sent += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => return false,
                    }
                }
                Phase::Draining(_) => {
                    let mut sink = [0u8; 4096];
                    match self.stream.read(&mut sink) {
                        Ok(0) => return false,
                        Ok(_) => continue,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => return false,
                    }
                }
            }
        }
    }

    fn wants_write(&self) -> bool {
        matches!(self.phase, Phase::Writing(..))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        shut_down(self.stream.as_raw_fd());
    }
}

/// Counts a reply by status code.
fn count(code: u16) {
    crate::core::metrics::METRICS.count_http(code);
}

fn wanted_addr(port: u16) -> Option<SocketAddr> {
    if port == 0 {
        return None;
    }
    let ip = config::BIND.get().parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

fn run(stop: &AtomicBool) {
    let mut listeners = [
        Listener::new(Endpoint::Metrics),
        Listener::new(Endpoint::Health),
    ];
    let mut conns: [Vec<Conn>; 2] = [Vec::new(), Vec::new()];
    let mut seen = (u64::MAX, u64::MAX - 1);
    while !stop.load(Ordering::SeqCst) {
        let ok = guard::contain("exporter loop", false, || {
            let now = (
                GENERATION.load(Ordering::SeqCst),
                FD_BUDGET.load(Ordering::SeqCst),
            );
            if now != seen {
                seen = now;
                configure(&mut listeners, &mut conns, now.1);
            }
            for l in listeners.iter_mut() {
                l.ensure_bound();
            }
            serve_once(&mut listeners, &mut conns);
            true
        });
        if !ok {
            conns = [Vec::new(), Vec::new()];
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Sockets are shut down and closed as they drop here, before join returns.
}

/// Applies the settings and the descriptor budget: the wanted addresses, each endpoint's
/// connection cap, and closes the oldest connections over a cap that shrank.
fn configure(listeners: &mut [Listener; 2], conns: &mut [Vec<Conn>; 2], budget: u64) {
    let want = [
        wanted_addr(config::port(&config::METRICS_PORT)),
        wanted_addr(config::port(&config::HEALTH_PORT)),
    ];
    let caps = conn_caps(budget, want.map(|w| w.is_some()));
    for (((l, cs), want), cap) in listeners
        .iter_mut()
        .zip(conns.iter_mut())
        .zip(want)
        .zip(caps)
    {
        l.configure(want, cap);
        if cs.len() > cap {
            cs.sort_by_key(|c| std::cmp::Reverse(c.started));
            cs.truncate(cap);
        }
    }
}

/// One poll round: expire and progress connections, then accept from each listener in turn.
fn serve_once(listeners: &mut [Listener; 2], conns: &mut [Vec<Conn>; 2]) {
    let now = Instant::now();
    let held = conns.iter().map(Vec::len).sum::<usize>();
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(2 + held);
    for (l, cs) in listeners.iter().zip(conns.iter()) {
        // A full endpoint whose connections are all young leaves its queue alone until one
        // may be dropped (the poll timeout brings that round), instead of spinning on it.
        let listening = l.paused_until.is_none_or(|t| now >= t) && l.has_room(cs, now);
        fds.push(libc::pollfd {
            fd: match &l.sock {
                Some(s) if listening => s.as_raw_fd(),
                _ => -1,
            },
            events: libc::POLLIN,
            revents: 0,
        });
    }
    for c in conns.iter().flatten() {
        fds.push(libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: if c.wants_write() {
                libc::POLLOUT
            } else {
                libc::POLLIN
            },
            revents: 0,
        });
    }
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs for
    // the duration of the call; negative fds are ignored by poll(2).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, TICK_MS) };
    if n < 0 {
        if std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            // Should not happen; never spin on it.
            std::thread::sleep(Duration::from_millis(TICK_MS as u64));
        }
        return;
    }
    let mut ready = fds.iter().map(|f| f.revents != 0);
    let listener_ready = [ready.next().unwrap_or(false), ready.next().unwrap_or(false)];
    let now = Instant::now();
    for cs in conns.iter_mut() {
        cs.retain_mut(|c| {
            if ready.next().unwrap_or(false) {
                c.progress()
            } else if c.expired(now) {
                c.time_out();
                false
            } else {
                true
            }
        });
    }
    for ((l, cs), r) in listeners
        .iter_mut()
        .zip(conns.iter_mut())
        .zip(listener_ready)
    {
        if r {
            accept_some(l, cs);
        }
    }
}

/// Accepts up to [`ACCEPT_BATCH`] pending connections while the endpoint has room, dropping
/// its oldest connection for a new one when it is full. Refused and failed accepts never end
/// the loop: an error (EMFILE and friends) pauses this listener briefly instead of spinning
/// on it.
fn accept_some(l: &mut Listener, conns: &mut Vec<Conn>) {
    for _ in 0..ACCEPT_BATCH {
        let now = Instant::now();
        if !l.has_room(conns, now) {
            return;
        }
        let Some(sock) = &l.sock else { return };
        match sock.accept() {
            Ok((stream, _)) => {
                if conns.len() >= l.cap && !l.evict_oldest(conns, now) {
                    // has_room said there was one; never hold more than the cap.
                    shut_down(stream.as_raw_fd());
                    return;
                }
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let mut c = Conn::new(stream, l.endpoint);
                if c.progress() {
                    conns.push(c);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                l.paused_until = Some(now + ACCEPT_BACKOFF);
                if l.last_accept_log
                    .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
                {
                    l.last_accept_log = Some(now);
                    logging::warning(&format!(
                        "exporter accept on {} failed: {e}; backing off",
                        l.endpoint.path()
                    ));
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(endpoint: Endpoint) -> (Listener, SocketAddr) {
        let sock = TcpListener::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        let mut l = Listener::new(endpoint);
        l.want = Some(addr);
        l.sock = Some(sock);
        (l, addr)
    }

    /// Sends `GET path` on a new connection and runs the exporter until the reply is
    /// complete; returns what came back.
    fn request(
        listeners: &mut [Listener; 2],
        conns: &mut [Vec<Conn>; 2],
        addr: SocketAddr,
        path: &str,
    ) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        c.set_nonblocking(true).unwrap();
        let mut reply = Vec::new();
        for _ in 0..100 {
            serve_once(listeners, conns);
            let mut buf = [0u8; 4096];
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    }

    #[test]
    fn the_budget_leaves_redis_its_clients_and_reserve() {
        // ulimit -n 256: Redis lowers maxclients to 224 and nothing is left.
        assert_eq!(fd_budget(256, 224), 0);
        assert_eq!(fd_budget(256, 100), 124);
        assert_eq!(fd_budget(10_032, 10_000), 0);
        assert_eq!(fd_budget(100, 1_000), 0);
        assert_eq!(fd_budget(u64::MAX, u64::MAX), 0);
        assert_eq!(fd_budget(u64::MAX, 10_000), u64::MAX - 10_032);
        // /health keeps its floor of a listener and two connections.
        assert_eq!(conn_caps(0, [true, true]), [0, 2]);
        assert_eq!(conn_caps(2, [true, true]), [0, 2]);
        assert_eq!(conn_caps(3, [true, true]), [0, 2]);
        assert_eq!(conn_caps(4, [true, true]), [0, 3]);
        assert_eq!(conn_caps(5, [true, true]), [1, 2]);
        assert_eq!(conn_caps(0, [false, true]), [0, 2]);
        assert_eq!(conn_caps(44, [true, true]), [21, 21]);
        assert_eq!(conn_caps(95, [true, true]), [46, 47]);
        assert_eq!(conn_caps(EXPORTER_FDS, [true, true]), [47, 47]);
        assert_eq!(conn_caps(124, [true, true]), [47, 47]);
        assert_eq!(conn_caps(u64::MAX, [true, true]), [47, 47]);
        assert_eq!(conn_caps(u64::MAX, [false, true]), [0, 47]);
        assert_eq!(conn_caps(1, [true, false]), [0, 0]);
        assert_eq!(conn_caps(2, [true, false]), [1, 0]);
        assert_eq!(conn_caps(40, [false, true]), [0, 39]);
        assert_eq!(conn_caps(u64::MAX, [false, false]), [0, 0]);
    }

    #[test]
    fn the_caps_never_exceed_the_budget() {
        // A listener and its connections, for each endpoint that gets any.
        let used = |caps: [usize; 2]| -> u64 {
            caps.iter()
                .map(|&c| if c > 0 { c as u64 + 1 } else { 0 })
                .sum()
        };
        for budget in 0..300u64 {
            for on in [[true, true], [true, false], [false, true], [false, false]] {
                let caps = conn_caps(budget, on);
                // Only /health's floor may go past the budget.
                let allowed = if on[1] {
                    budget.max(HEALTH_FLOOR)
                } else {
                    budget
                };
                assert!(used(caps) <= allowed, "{budget} {on:?} {caps:?}");
                if on[1] {
                    assert!(caps[1] >= 2, "/health keeps its floor: {budget} {caps:?}");
                }
                for (&c, on) in caps.iter().zip(on) {
                    assert!(c <= MAX_CONNS && (on || c == 0), "{budget} {on:?} {caps:?}");
                }
            }
            let caps = conn_caps(budget, [true, true]);
            assert!(caps[1] >= caps[0], "health first: {caps:?}");
            // Short of the full need, at most one descriptor goes unused.
            if used(caps) < EXPORTER_FDS && budget >= HEALTH_FLOOR {
                assert!(budget - used(caps) <= 1, "{budget} {caps:?}");
            }
        }
    }

    #[test]
    fn a_full_metrics_port_leaves_health_its_own_connections() {
        let (m, maddr) = listener(Endpoint::Metrics);
        let (h, haddr) = listener(Endpoint::Health);
        let mut listeners = [m, h];
        let mut conns = [Vec::new(), Vec::new()];
        let silent: Vec<TcpStream> = (0..MAX_CONNS + 20)
            .map(|_| TcpStream::connect(maddr).unwrap())
            .collect();
        for _ in 0..10 {
            serve_once(&mut listeners, &mut conns);
            assert!(conns[0].len() <= MAX_CONNS);
        }
        assert_eq!(conns[0].len(), MAX_CONNS);
        let reply = request(&mut listeners, &mut conns, haddr, "/health");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
        assert_eq!(conns[0].len(), MAX_CONNS);
        drop(silent);
    }

    #[test]
    fn a_full_port_drops_its_oldest_connection_for_a_waiting_client() {
        let (m, maddr) = listener(Endpoint::Metrics);
        let (h, _) = listener(Endpoint::Health);
        let mut listeners = [m, h];
        let mut conns = [Vec::new(), Vec::new()];
        let silent: Vec<TcpStream> = (0..MAX_CONNS)
            .map(|_| TcpStream::connect(maddr).unwrap())
            .collect();
        for _ in 0..10 {
            serve_once(&mut listeners, &mut conns);
        }
        assert_eq!(conns[0].len(), MAX_CONNS);
        std::thread::sleep(EVICT_AFTER);
        let reply = request(&mut listeners, &mut conns, maddr, "/metrics");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
        assert!(conns[0].len() <= MAX_CONNS);
        drop(silent);
    }

    #[test]
    fn a_smaller_cap_is_kept_and_zero_leaves_the_endpoint_unbound() {
        let (mut l, addr) = listener(Endpoint::Metrics);
        l.configure(Some(addr), 3);
        assert!(l.sock.is_some());
        let (h, _) = listener(Endpoint::Health);
        let mut listeners = [l, h];
        let mut conns = [Vec::new(), Vec::new()];
        let silent: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for _ in 0..10 {
            serve_once(&mut listeners, &mut conns);
            assert!(conns[0].len() <= 3);
        }
        assert_eq!(conns[0].len(), 3);
        let [m, _] = &mut listeners;
        m.configure(Some(addr), 0);
        assert!(m.sock.is_none() && m.want.is_none() && m.starved);
        drop(silent);
    }
}
