//! A small Prometheus text endpoint (`GET /metrics` and nothing else) on a
//! plain TCP listener, in its own thread, off the packet path, served by
//! [`crate::http`] (deadlines, caps, `Host` allow-list).
//!
//! Rendering reads counters that the workers update with relaxed atomics,
//! once per batch.
use std::{
    fmt::Write as _,
    io,
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    thread::JoinHandle,
};

use crate::http::{Access, Limits, Reply, Server, local_hosts};

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

/// A metrics server on `addr`, bound but not started: `GET /metrics`
/// answers `render`'s text, every other path 404 (the metrics listener is
/// read-only: the admin API has a listener of its own). `Host` must be an
/// IP literal, `localhost`, this host's name or one of `hosts`.
///
/// # Errors
/// If `addr` cannot be bound.
pub fn server<F>(addr: SocketAddr, hosts: &[String], render: F) -> io::Result<Server>
where
    F: Fn(&mut String) + Send + 'static,
{
    let mut s = Server::new(
        "sluice-metrics",
        Limits::default(),
        move |req, body| match (req.method, req.path) {
            ("GET", "/metrics") => {
                render(body);
                Reply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                }
            }
            (_, "/metrics") => {
                body.push_str("only GET\n");
                Reply::text(405)
            }
            _ => {
                body.push_str("not found: this listener serves GET /metrics only\n");
                Reply::text(404)
            }
        },
    )?;
    s.listen_tcp(addr, Access::Open, local_hosts(hosts))?;
    Ok(s)
}

/// Serves `render` at `GET /metrics` on `addr` until `stop` is set, on a
/// thread of its own ([`server`] with no extra host names).
///
/// # Errors
/// If `addr` cannot be bound or the thread cannot start.
pub fn serve<F>(addr: SocketAddr, stop: Arc<AtomicBool>, render: F) -> io::Result<JoinHandle<()>>
where
    F: Fn(&mut String) + Send + 'static,
{
    server(addr, &[], render)?.spawn(stop)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpStream,
        sync::atomic::Ordering,
    };

    use super::*;

    fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_and_nothing_else() {
        let stop = Arc::new(AtomicBool::new(false));
        let s = server(
            "127.0.0.1:0".parse().unwrap(),
            &["prom.example".into()],
            |out| {
                sample(
                    out,
                    "sluice_test_total",
                    "counter",
                    Some("a test"),
                    &[("k", "v\"x")],
                    7,
                );
            },
        )
        .unwrap();
        let addr = s.local_addrs()[0];
        let h = s.spawn(stop.clone()).unwrap();
        let ok = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: prom.example:9477\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("sluice_test_total{k=\"v\\\"x\"} 7"), "{ok}");
        assert!(get(addr, "GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // The admin routes are not here (the admin socket serves them).
        for req in [
            "POST /policy/reload HTTP/1.1\r\n\r\n",
            "POST /policy/tenant?name=x HTTP/1.1\r\n\r\n",
            "GET /flows HTTP/1.1\r\n\r\n",
            "GET /policy HTTP/1.1\r\n\r\n",
            "GET /bypass/dns HTTP/1.1\r\n\r\n",
        ] {
            assert!(get(addr, req).starts_with("HTTP/1.1 404"), "{req}");
        }
        let r = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: rebind.evil.example\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 421"), "{r}");
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }
}
