//! HTTP/1.1 request heads as sluice's listeners (metrics, admin API, PAC)
//! read them, before anything is authorised: [`parse`] (bytes in, a
//! request or an error out; never panics, bounded by the caller's cap) and
//! the `Host` allow-list ([`Hosts`]) that keeps DNS-rebinding pages out.
//! Pure: the server around them (sockets, deadlines, caps, authorisation)
//! is `sluice_runtime::http`; this is what the `http_request` fuzz target
//! drives.

/// The `Host` header values a TCP listener answers: IP literals (a page
/// can only send one as its own origin's name, so no rebinding), the
/// names listed, and requests without `Host` (HTTP/1.0 tools; browsers
/// always send one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    /// The names (any case, without port) accepted besides IP literals.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Self {
        Self {
            names: names
                .into_iter()
                .map(|n| n.as_ref().trim_end_matches('.').to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// `localhost` and this machine's host name (`hostname`, as the caller
    /// read it), plus `extra`: what a metrics or admin listener accepts by
    /// default.
    pub fn local<I: IntoIterator<Item = S>, S: AsRef<str>>(
        extra: I,
        hostname: Option<&str>,
    ) -> Self {
        let mut h = Self::new(extra);
        h.names.push("localhost".into());
        if let Some(name) = hostname {
            let name = name.trim().to_ascii_lowercase();
            if !name.is_empty() {
                h.names.push(name);
            }
        }
        h
    }

    /// Whether a request with this `Host` header is answered.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host.map(str::trim) else {
            return true;
        };
        // `[v6]`, `[v6]:port`, `v4`, `v4:port`, `name`, `name:port`.
        let name = if let Some(rest) = host.strip_prefix('[') {
            let Some((v6, tail)) = rest.split_once(']') else {
                return false;
            };
            return v6.parse::<std::net::Ipv6Addr>().is_ok()
                && (tail.is_empty() || tail.strip_prefix(':').is_some_and(valid_port));
        } else {
            match host.rsplit_once(':') {
                Some((n, port)) if valid_port(port) => n,
                Some(_) => return false,
                None => host,
            }
        };
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.');
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// A request head, borrowed from the connection's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// What follows `?` in the target (empty without one).
    pub query: &'a str,
    /// The `Host` header.
    pub host: Option<&'a str>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// Whether an `Origin` header came (browsers send one with every
    /// cross-site request that changes state).
    pub origin: bool,
    /// Whether the request announces a body (`Content-Length` above zero
    /// or `Transfer-Encoding`): refused, no route takes one.
    pub has_body: bool,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No end of head within the size cap.
    #[error("request head too large")]
    TooLarge,
    /// Not an HTTP/1.x request head.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

/// Most header lines in a request head.
const MAX_HEADERS: usize = 64;

/// Parses the request head at the start of `buf`: `Ok(None)` while it is
/// incomplete and shorter than `max`; [`ParseError::TooLarge`] once `max`
/// bytes hold no end of head. Never panics, whatever `buf` holds.
pub fn parse(buf: &[u8], max: usize) -> Result<Option<Request<'_>>, ParseError> {
    let window = &buf[..buf.len().min(max)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= max {
            Err(ParseError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| ParseError::Malformed("the head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed("expected METHOD TARGET HTTP/1.x"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ParseError::Malformed("bad method"));
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(ParseError::Malformed("only HTTP/1.0 and HTTP/1.1"));
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ParseError::Malformed("bad target"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method,
        path,
        query,
        host: None,
        authorization: None,
        origin: false,
        has_body: false,
    };
    for (n, line) in lines.enumerate() {
        if n >= MAX_HEADERS {
            return Err(ParseError::Malformed("too many headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::Malformed("a header line without `:`"))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(ParseError::Malformed("bad header name"));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(ParseError::Malformed("control characters in a header"));
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("host") {
            once(&mut req.host, value)?;
        } else if name.eq_ignore_ascii_case("authorization") {
            once(&mut req.authorization, value)?;
        } else if name.eq_ignore_ascii_case("origin") {
            req.origin = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            let len: u64 = value
                .parse()
                .map_err(|_| ParseError::Malformed("bad Content-Length"))?;
            req.has_body |= len > 0;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            req.has_body = true;
        }
    }
    Ok(Some(req))
}

/// Sets a header seen once; a second one is an error (two `Host`s could
/// be read differently by a proxy in front).
fn once<'a>(slot: &mut Option<&'a str>, v: &'a str) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::Malformed("a header given twice"));
    }
    *slot = Some(v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] =
        b"GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9477\r\nUser-Agent: t\r\n\r\n";

    #[test]
    fn parses_request_heads() {
        let r = parse(GET, 8192).unwrap().unwrap();
        assert_eq!(
            r,
            Request {
                method: "GET",
                path: "/metrics",
                query: "x=1",
                host: Some("127.0.0.1:9477"),
                authorization: None,
                origin: false,
                has_body: false,
            }
        );
        // Every prefix of a head is incomplete, never an error.
        for n in 0..GET.len() {
            assert_eq!(parse(&GET[..n], 8192), Ok(None), "{n}");
        }
        // Bytes after the head (a body) are not read.
        let post = b"POST /policy/reload HTTP/1.0\r\nauthorization: Bearer abc\r\nOrigin: http://x\r\nContent-Length: 3\r\n\r\nabc";
        let r = parse(post, 8192).unwrap().unwrap();
        assert_eq!(r.authorization, Some("Bearer abc"));
        assert!(r.origin && r.has_body);
        assert!(
            parse(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 64)
                .unwrap()
                .unwrap()
                .has_body
        );
    }

    #[test]
    fn refuses_malformed_heads() {
        for bad in [
            &b"\0\0\0\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, 8192), Err(ParseError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(65));
        assert!(parse(many.as_bytes(), 8192).is_err());
        // The cap: no end of head within it.
        assert_eq!(parse(&[b'A'; 100], 100), Err(ParseError::TooLarge));
        assert_eq!(parse(&[b'A'; 99], 100), Ok(None));
        // An end of head beyond the cap is not looked for.
        let mut long = vec![b'A'; 100];
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&long, 100), Err(ParseError::TooLarge));
    }

    #[test]
    fn host_allow_list() {
        let h = Hosts::new(["gw1.example", "Metrics.Example."]);
        for ok in [
            None,
            Some("127.0.0.1"),
            Some("198.51.100.7:9477"),
            Some("[::1]"),
            Some("[2001:db8::1]:80"),
            Some("gw1.example"),
            Some("GW1.example:9477"),
            Some("metrics.example."),
        ] {
            assert!(h.allows(ok), "{ok:?}");
        }
        for bad in [
            "evil.example",
            "gw1.example.evil.example",
            "localhost",
            "127.0.0.1:x",
            "[::1",
            "[::1]x",
            "[zz]",
            "",
            "gw1.example:123456",
        ] {
            assert!(!h.allows(Some(bad)), "{bad:?}");
        }
        assert!(Hosts::local(["x"], None).allows(Some("localhost:9477")));
        assert!(Hosts::local(["x"], Some("GW-1\n")).allows(Some("gw-1")));
    }
}
