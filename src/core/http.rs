//! PURE: HTTP/1.1 request heads in, responses out. Parsing is `httparse`'s; this module adds
//! the limits and the routing of CONTRACT §9.

/// Largest request head accepted, bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 32;

/// Which endpoint a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/metrics` on metrics-port.
    Metrics,
    /// `/health` on health-port.
    Health,
}

impl Endpoint {
    /// The one path served.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Metrics => "/metrics",
            Endpoint::Health => "/health",
        }
    }
}

/// Outcome of parsing what has been read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Need more bytes.
    Partial,
    /// A complete head: method and path (query string removed).
    Request {
        /// True for HEAD.
        head: bool,
        /// True for GET or HEAD.
        allowed: bool,
        /// Path without the query string.
        path: String,
    },
    /// Not HTTP, or over the limits.
    Bad,
}

/// Parses the bytes read so far on a connection.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => {
            let method = req.method.unwrap_or("");
            let path = req.path.unwrap_or("");
            let path = path.split(['?', '#']).next().unwrap_or("").to_string();
            Parsed::Request {
                head: method == "HEAD",
                allowed: method == "GET" || method == "HEAD",
                path,
            }
        }
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => Parsed::Partial,
        _ => Parsed::Bad,
    }
}

/// A response ready to be written.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub code: u16,
    /// Content-Type header.
    pub content_type: &'static str,
    /// Body (sent for GET; its length is still announced for HEAD).
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text response.
    pub fn text(code: u16, body: &str) -> Response {
        Response {
            code,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Decides the response for a parsed head on `endpoint`; `render` builds the 200/503 body.
pub fn route(parsed: &Parsed, endpoint: Endpoint, render: impl FnOnce() -> Response) -> Response {
    match parsed {
        Parsed::Partial | Parsed::Bad => Response::text(400, "bad request\n"),
        Parsed::Request { allowed: false, .. } => Response::text(405, "method not allowed\n"),
        Parsed::Request { path, .. } if path != endpoint.path() => {
            Response::text(404, "not found\n")
        }
        Parsed::Request { .. } => render(),
    }
}

/// Serializes a response; the connection is always closed after it.
pub fn serialize(r: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{}\r\n",
        r.code,
        reason(r.code),
        r.content_type,
        r.body.len(),
        if r.code == 405 { "Allow: GET, HEAD\r\n" } else { "" },
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&r.body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Response {
        Response::text(200, "hi")
    }

    #[test]
    fn get_and_head_are_served() {
        let p = parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(route(&p, Endpoint::Metrics, ok).code, 200);
        let p = parse(b"HEAD /health?x=1 HTTP/1.0\r\n\r\n");
        assert!(matches!(p, Parsed::Request { head: true, .. }));
        assert_eq!(route(&p, Endpoint::Health, ok).code, 200);
    }

    #[test]
    fn wrong_path_and_method() {
        let p = parse(b"GET /health HTTP/1.1\r\n\r\n");
        assert_eq!(route(&p, Endpoint::Metrics, ok).code, 404);
        let p = parse(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        let r = route(&p, Endpoint::Metrics, ok);
        assert_eq!(r.code, 405);
        assert!(String::from_utf8(serialize(&r, false))
            .unwrap()
            .contains("Allow: GET, HEAD"));
    }

    #[test]
    fn partial_then_complete() {
        assert_eq!(parse(b"GET /metr"), Parsed::Partial);
        assert_eq!(parse(b""), Parsed::Partial);
    }

    #[test]
    fn garbage_and_oversized_are_bad() {
        assert_eq!(parse(b"\x00\x01\x02garbage\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse(b"HELLO\r\n\r\n"), Parsed::Bad);
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(vec![b'a'; MAX_HEAD]);
        assert_eq!(parse(&big), Parsed::Bad);
        // A head over the limit is bad even when it arrives complete in one read.
        let mut complete = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        complete.extend(vec![b'a'; MAX_HEAD]);
        complete.extend(b"\r\n\r\n");
        assert_eq!(parse(&complete), Parsed::Bad);
        let mut fits = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        fits.extend(vec![b'a'; MAX_HEAD - fits.len() - 4]);
        fits.extend(b"\r\n\r\n");
        assert_eq!(fits.len(), MAX_HEAD);
        assert!(matches!(parse(&fits), Parsed::Request { .. }));
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            many.extend(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(parse(&many), Parsed::Bad);
        assert_eq!(route(&Parsed::Bad, Endpoint::Health, ok).code, 400);
    }

    #[test]
    fn serialize_head_omits_body_but_keeps_length() {
        let r = Response::text(200, "hello");
        let full = String::from_utf8(serialize(&r, false)).unwrap();
        let head = String::from_utf8(serialize(&r, true)).unwrap();
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(full.ends_with("\r\n\r\nhello"));
        assert!(head.contains("Content-Length: 5\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
        assert!(full.contains("Connection: close\r\n"));
    }
}
