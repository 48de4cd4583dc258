//! sluice's PAC file, served over HTTP and evaluated by a real PAC engine
//! (pacparser, Debian's `libpacparser1`, with Microsoft's IPv6 extensions
//! on), for hosts inside and outside the bypass lists.
//!
//! The engine runs in a fresh network namespace with only loopback
//! (`unshare -n`): names the script resolves fail at once instead of
//! reaching a real resolver. Needs root for that, and the library: without
//! them the test skips loudly, or fails under `CI=true`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::Command,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use sluice_core::dns::Pattern;
use sluice_core::net::Prefix;
use sluice_gateway::pac;

const EVAL: &str = r#"
import ctypes, sys
lib = ctypes.CDLL("libpacparser.so.1")
lib.pacparser_find_proxy.restype = ctypes.c_char_p
lib.pacparser_enable_microsoft_extensions()
assert lib.pacparser_init()
assert lib.pacparser_parse_pac_string(sys.stdin.read().encode()), "the PAC file does not parse"
for host in sys.argv[1:]:
    r = lib.pacparser_find_proxy(("http://%s/" % host).encode(), host.encode())
    print(host, r.decode() if r else "ERROR")
lib.pacparser_cleanup()
"#;

fn have_pacparser() -> bool {
    Command::new("python3")
        .args(["-c", "import ctypes; ctypes.CDLL('libpacparser.so.1')"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: wpad\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn pac_file_answers_direct_for_bypass_lists_and_proxy_otherwise() {
    if !sluice_lab::require_root("pac_file") {
        return;
    }
    if !sluice_lab::require(
        "pac_file",
        have_pacparser(),
        "libpacparser1 (cargo xtask setup installs it)",
    ) {
        return;
    }
    let domains = ["bypass.example", "*.cdn.example"].map(|p| Pattern::parse(p).unwrap());
    let prefixes = ["203.0.113.0/24", "198.51.100.7/32", "2001:db8:100::/48"]
        .map(|p| p.parse::<Prefix>().unwrap());
    let text = pac::render(&domains, &prefixes, &"proxy.example:3128".parse().unwrap());

    // Served over HTTP, at both paths, with the PAC content type.
    // Bound on port 0 and asked for its address: a probe socket's port,
    // released and bound again, could be taken meanwhile (CI saw
    // AddrInUse).
    let stop = Arc::new(AtomicBool::new(false));
    let server = pac::server("127.0.0.1:0".parse().unwrap(), text.clone(), &[]).unwrap();
    let addr = server.local_addrs()[0];
    let http = server.spawn(stop.clone()).unwrap();
    for path in ["/proxy.pac", "/wpad.dat"] {
        let r = get(addr, path);
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{path}: {r}");
        assert!(
            r.contains("Content-Type: application/x-ns-proxy-autoconfig"),
            "{r}"
        );
        assert_eq!(r.split_once("\r\n\r\n").unwrap().1, text);
    }
    assert!(get(addr, "/other").starts_with("HTTP/1.1 404"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    http.join().unwrap();

    let cases = [
        ("bypass.example", "DIRECT"),
        ("BYPASS.example", "DIRECT"),
        ("www.bypass.example", "PROXY proxy.example:3128"),
        ("a.cdn.example", "DIRECT"),
        ("x.y.cdn.example", "DIRECT"),
        ("cdn.example", "PROXY proxy.example:3128"),
        ("evilcdn.example", "PROXY proxy.example:3128"),
        ("203.0.113.9", "DIRECT"),
        ("198.51.100.7", "DIRECT"),
        ("198.51.100.8", "PROXY proxy.example:3128"),
        ("2001:db8:100::9", "DIRECT"),
        ("2001:db8:200::9", "PROXY proxy.example:3128"),
        // Does not resolve (no network in the namespace): the proxy.
        ("tunnelled.example", "PROXY proxy.example:3128"),
    ];
    let mut child = Command::new("unshare")
        .args(["-n", "python3", "-c", EVAL])
        .args(cases.iter().map(|(h, _)| *h))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare -n python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the PAC engine hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pacparser: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got.len(), cases.len(), "{stdout}");
    for ((host, want), line) in cases.iter().zip(got) {
        assert_eq!(line, format!("{host} {want}"), "PAC answer for {host}");
    }
}

/// The PAC server faces the LAN: clients that dribble their request one
/// byte a second hold their own connections, never the server; another
/// client's request is answered at once (the old server read one request
/// at a time, each for up to 2 s).
#[test]
fn slow_clients_do_not_stall_the_pac_server() {
    let stop = Arc::new(AtomicBool::new(false));
    let server = pac::server(
        "127.0.0.1:0".parse().unwrap(),
        "function FindProxyForURL() {}\n".into(),
        &[],
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let http = server.spawn(stop.clone()).unwrap();
    let mut slow: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..4 {
        let t = std::time::Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(s, "GET /proxy.pac HTTP/1.1\r\nHost: wpad\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let took = t.elapsed();
        assert!(out.starts_with("HTTP/1.1 200"), "round {round}: {out:?}");
        // Generous: the slow clients hold seconds each.
        assert!(
            took < Duration::from_secs(1),
            "round {round}: answered after {took:?} behind 10 slow clients"
        );
        // The slow clients send their next byte.
        for c in &mut slow {
            let _ = c.write_all(b"E");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // A wrong Host (a page that rebound its name) is refused; WPAD's
    // name and addresses are served.
    let r = get_host(addr, "/proxy.pac", "rebind.evil.example");
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    assert!(get_host(addr, "/wpad.dat", "127.0.0.1").starts_with("HTTP/1.1 200"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    http.join().unwrap();
}

fn get_host(addr: SocketAddr, path: &str, host: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
