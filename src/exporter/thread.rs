//! The HTTP exporter: one thread inside redis-server serving `/metrics` and `/health`.
//!
//! It never takes the Redis lock: it renders from atomics and the state the main thread
//! publishes. It is bounded (one thread, at most [`MAX_CONNS`] connections, an 8 KiB head,
//! a read timeout and a 5 s overall deadline per connection) and fail-open: a port that cannot be bound is logged and
//! retried while projection goes on. CONFIG SET of bind or a port bumps a generation that
//! makes the thread rebind; unload stops and joins it, which frees both ports.
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

use crate::core::http::{self, Endpoint, Parsed, Response};
use crate::exporter::state;
use crate::settings::config;
use crate::support::guard;
use crate::support::logging;

/// Most connections served at once; further ones wait in the kernel's accept queue.
pub const MAX_CONNS: usize = 64;
/// Longest a connection may live, from accept to close.
pub const CONN_DEADLINE: Duration = Duration::from_secs(5);
/// Longest a client may stay silent before its request head is complete.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the rest of a request is read and discarded after the reply.
pub const DRAIN_PERIOD: Duration = Duration::from_millis(500);
/// How long a listener rests after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
/// Most one line per this period about failing accepts.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often a port that could not be bound is tried again.
pub const RETRY_BIND: Duration = Duration::from_secs(2);
/// Longest the thread sleeps before it looks at stop and rebind requests.
const TICK_MS: i32 = 50;

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
            (None, _, _) => "off".to_string(),
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

    /// Applies a new wanted address, dropping the socket if it changed.
    fn configure(&mut self, want: Option<SocketAddr>) {
        if want != self.want {
            self.close();
            self.want = want;
            self.last_try = None;
            self.last_error = None;
            self.publish();
        }
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
    last_read: Instant,
    phase: Phase,
}

impl Conn {
    fn new(stream: TcpStream, endpoint: Endpoint) -> Conn {
        let now = Instant::now();
        Conn {
            stream,
            endpoint,
            started: now,
            last_read: now,
            phase: Phase::Reading(Vec::with_capacity(512)),
        }
    }

    /// Whether the connection ran out of time: the overall deadline, the read timeout while
    /// the head is incomplete, or the drain period after the reply.
    fn expired(&self, now: Instant) -> bool {
        if now.duration_since(self.started) > CONN_DEADLINE {
            return true;
        }
        match self.phase {
            Phase::Reading(_) => now.duration_since(self.last_read) > READ_TIMEOUT,
            Phase::Writing(..) => false,
            Phase::Draining(since) => now.duration_since(since) > DRAIN_PERIOD,
        }
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
                            self.last_read = Instant::now();
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
    let mut conns: Vec<Conn> = Vec::new();
    let mut seen_gen = u64::MAX;
    while !stop.load(Ordering::SeqCst) {
        let ok = guard::contain("exporter loop", false, || {
            let generation = GENERATION.load(Ordering::SeqCst);
            if generation != seen_gen {
                seen_gen = generation;
                listeners[0].configure(wanted_addr(config::port(&config::METRICS_PORT)));
                listeners[1].configure(wanted_addr(config::port(&config::HEALTH_PORT)));
            }
            for l in listeners.iter_mut() {
                l.ensure_bound();
            }
            serve_once(&mut listeners, &mut conns);
            true
        });
        if !ok {
            conns.clear();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Sockets are shut down and closed as they drop here, before join returns.
}

/// One poll round: accept, read, write, expire.
fn serve_once(listeners: &mut [Listener; 2], conns: &mut Vec<Conn>) {
    let now = Instant::now();
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(2 + conns.len());
    for l in listeners.iter() {
        let listening = l.paused_until.is_none_or(|t| now >= t) && conns.len() < MAX_CONNS;
        fds.push(libc::pollfd {
            fd: match &l.sock {
                Some(s) if listening => s.as_raw_fd(),
                _ => -1,
            },
            events: libc::POLLIN,
            revents: 0,
        });
    }
    for c in conns.iter() {
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
    let ready = |i: usize| fds.get(i).is_some_and(|f| f.revents != 0);
    let conn_ready: Vec<bool> = (0..conns.len()).map(|i| ready(i + 2)).collect();
    let mut keep = conn_ready.iter();
    let now = Instant::now();
    conns.retain_mut(|c| {
        let r = keep.next().copied().unwrap_or(false);
        if r {
            c.progress()
        } else if c.expired(now) {
            c.time_out();
            false
        } else {
            true
        }
    });
    for (i, l) in listeners.iter_mut().enumerate() {
        if ready(i) {
            accept_all(l, conns);
        }
    }
}

/// Accepts every pending connection while there is room. Refused and failed accepts never
/// end the loop: an error (EMFILE and friends) pauses this listener briefly instead of
/// spinning on it.
fn accept_all(l: &mut Listener, conns: &mut Vec<Conn>) {
    let Some(sock) = &l.sock else { return };
    while conns.len() < MAX_CONNS {
        match sock.accept() {
            Ok((stream, _)) => {
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
                let now = Instant::now();
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

    fn listener() -> (Listener, SocketAddr) {
        let sock = TcpListener::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        let mut l = Listener::new(Endpoint::Health);
        l.want = Some(addr);
        l.sock = Some(sock);
        (l, addr)
    }

    #[test]
    fn at_most_max_conns_are_held_and_the_rest_wait() {
        let (l, addr) = listener();
        let (other, _) = listener();
        let mut listeners = [other, l];
        let mut conns = Vec::new();
        let clients: Vec<TcpStream> = (0..MAX_CONNS + 20)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        for _ in 0..10 {
            serve_once(&mut listeners, &mut conns);
            assert!(conns.len() <= MAX_CONNS);
        }
        assert_eq!(conns.len(), MAX_CONNS);
        // Once the silent ones go away, a waiting client is served.
        drop(clients);
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        c.set_nonblocking(true).unwrap();
        let mut reply = Vec::new();
        for _ in 0..100 {
            serve_once(&mut listeners, &mut conns);
            let mut buf = [0u8; 4096];
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200 OK\r\n"));
    }
}
