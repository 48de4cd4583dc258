//! A small Prometheus text endpoint (`GET /metrics`) on a plain TCP
//! listener, in its own thread, off the packet path; the same minimal
//! HTTP server ([`serve_http`]) serves the PAC file.
//!
//! Requests are untrusted: the request head is read with a size cap (8 KiB)
//! and a timeout; anything but `GET` of a known path gets 404 or 405. Rendering
//! reads counters that the workers update with relaxed atomics, once per
//! batch.
use std::{
    fmt::Write as _,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// Appends one sample line, with the `# HELP`/`# TYPE` header when
/// `help` is given (once per metric family).
pub fn sample(
    out: &mut String,
    name: &str,
    kind: &str,
    help: Option<&str>,
    labels: &[(&str, &str)],
    value: u64,
) {
    if let Some(h) = help {
        let _ = writeln!(out, "# HELP {name} {h}\n# TYPE {name} {kind}");
    }
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{k}=\"{}\"",
                v.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Serves `render` at `GET /metrics` on `addr` until `stop` is set.
pub fn serve<F>(addr: SocketAddr, stop: Arc<AtomicBool>, render: F) -> io::Result<JoinHandle<()>>
where
    F: Fn(&mut String) + Send + 'static,
{
    serve_http(addr, stop, "sluice-metrics", move |path, body| {
        (path == b"/metrics").then(|| {
            render(body);
            "text/plain; version=0.0.4"
        })
    })
}

/// A minimal HTTP/1.1 `GET` server on `addr`, in its own thread, until
/// `stop` is set: `handler(path, body)` fills `body` and returns its
/// content type, or `None` for 404. One request per connection; the head
/// is read with a size cap (8 KiB) and 2 s timeouts.
pub fn serve_http<F>(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: &str,
    handler: F,
) -> io::Result<JoinHandle<()>>
where
    F: Fn(&[u8], &mut String) -> Option<&'static str> + Send + 'static,
{
    serve_requests(addr, stop, thread, move |method, path, body| {
        if method != b"GET" {
            body.push_str("only GET\n");
            return Some((405, "text/plain"));
        }
        handler(path, body).map(|ctype| (200, ctype))
    })
}

/// [`serve_http`] for any method: `handler(method, path, body)` returns
/// the status and content type, or `None` for 404. Requests have no body:
/// the path (with its query string) says everything.
pub fn serve_requests<F>(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: &str,
    handler: F,
) -> io::Result<JoinHandle<()>>
where
    F: Fn(&[u8], &[u8], &mut String) -> Option<(u16, &'static str)> + Send + 'static,
{
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let mut poll = mio::Poll::new()?;
    poll.registry()
        .register(&mut listener, mio::Token(0), mio::Interest::READABLE)?;
    let name = thread.to_string();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let mut body = String::with_capacity(16 * 1024);
            let mut events = mio::Events::with_capacity(4);
            // Woken by a connection at once; by the timeout to notice `stop`.
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100)))
                    && e.kind() != io::ErrorKind::Interrupted
                {
                    log::warn!("{name}: poll: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                loop {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let s = TcpStream::from(std::os::fd::OwnedFd::from(s));
                            let _ = answer(s, &mut body, &handler);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            log::warn!("{name}: accept: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                            break;
                        }
                    }
                }
            }
        })
}

fn answer<F>(mut s: TcpStream, body: &mut String, handler: &F) -> io::Result<()>
where
    F: Fn(&[u8], &[u8], &mut String) -> Option<(u16, &'static str)>,
{
    s.set_nonblocking(false)?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    // The whole request head within 2 s (a client dribbling bytes does
    // not hold the server past it).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut head = [0u8; 8192];
    let mut n = 0;
    while n < head.len() && !head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let line = head[..n].split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    body.clear();
    // A browser adds `Origin` to every cross-site POST (also `no-cors`):
    // state-changing requests from web pages are refused, so a page the
    // gateway host or a LAN client opens cannot reload the policy or
    // switch the tenant. The CLI and curl send none.
    let from_page = head[..n]
        .split(|&b| b == b'\n')
        .skip(1)
        .any(|l| l.len() > 7 && l[..7].eq_ignore_ascii_case(b"origin:"));
    let (status, ctype) = if method != b"GET" && from_page {
        body.push_str("requests from web pages (with an Origin header) are refused\n");
        (403, "text/plain")
    } else {
        handler(method, path, body).unwrap_or_else(|| {
            body.clear();
            body.push_str("not found\n");
            (404, "text/plain")
        })
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        _ => "Error",
    };
    write!(
        s,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let stop = Arc::new(AtomicBool::new(false));
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let h = serve(addr, stop.clone(), |out| {
            sample(
                out,
                "sluice_test_total",
                "counter",
                Some("a test"),
                &[("k", "v\"x")],
                7,
            );
        })
        .unwrap();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("sluice_test_total{k=\"v\\\"x\"} 7"), "{ok}");
        assert!(get(addr, "GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // A state-changing request from a web page (a browser adds Origin).
        let page = get(
            addr,
            "POST /policy/reload HTTP/1.1\r\nHost: 127.0.0.1\r\norigin: http://evil.example\r\n\r\n",
        );
        assert!(page.starts_with("HTTP/1.1 403"), "{page}");
        // Garbage gets an answer; an oversized head (more than the 8 KiB
        // read cap, no end of head) does not stop the endpoint: the next
        // request is served.
        assert!(get(addr, "\0\0\0\r\n\r\n").starts_with("HTTP/1.1 405"));
        let big = "A".repeat(20_000);
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(big.as_bytes());
        drop(s);
        let ok = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            ok.starts_with("HTTP/1.1 200"),
            "after an oversized head: {ok}"
        );
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }
}
