use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::net::UnixStream,
};

use super::*;

#[test]
fn local_hosts_are_localhost_and_this_host() {
    assert!(local_hosts(["x"]).allows(Some("localhost:9477")));
    assert!(local_hosts(["x"]).allows(Some("x")));
}

fn ask(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A server on loopback with `limits`, answering `GET /x` with "x";
/// `token`: its listener wants that bearer token.
fn server(limits: Limits, token: Option<&str>) -> (SocketAddr, Arc<AtomicBool>, JoinHandle<()>) {
    let mut s = Server::new("sluice-test-http", limits, |req, body| {
        if req.path == "/x" {
            body.push_str("x\n");
            Reply::text(200)
        } else {
            Reply::text(404)
        }
    })
    .unwrap();
    let access = token.map_or(Access::Open, |t| Access::Token(sha256(t.as_bytes())));
    let addr = s
        .listen_tcp(
            "127.0.0.1:0".parse().unwrap(),
            access,
            Hosts::new(["gw.example"]),
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let h = s.spawn(stop.clone()).unwrap();
    (addr, stop, h)
}

#[test]
fn answers_and_refuses() {
    let (addr, stop, h) = server(Limits::default(), None);
    let ok = ask(addr, "GET /x HTTP/1.1\r\nHost: gw.example\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nx\n"), "{ok}");
    assert!(ask(addr, "GET /y HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    // DNS rebinding: the page's own name.
    let r = ask(addr, "GET /x HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    let r = ask(
        addr,
        "POST /x HTTP/1.1\r\nOrigin: http://evil.example\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = ask(addr, "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(ask(addr, "\0\0\0\r\n\r\n").starts_with("HTTP/1.1 400"));
    // More than the head cap without an end: 431, and the server goes on.
    let r = ask(addr, &"A".repeat(20_000));
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 431"), "{r}");
    assert!(ask(addr, "GET /x HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
    // A request followed at once by the end of the client's side.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Half a request and the end: closed without an answer.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /x HT").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.is_empty(), "{out}");
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

#[test]
fn bearer_tokens() {
    let (addr, stop, h) = server(Limits::default(), Some("s3cret"));
    let r = ask(addr, "GET /x HTTP/1.1\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 401") && r.contains("WWW-Authenticate: Bearer"),
        "{r}"
    );
    let r = ask(
        addr,
        "GET /x HTTP/1.1\r\nAuthorization: Bearer s3cre\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = ask(
        addr,
        "GET /x HTTP/1.1\r\nAuthorization: Basic s3cret\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = ask(
        addr,
        "GET /x HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // The host check comes first: a rebinding page with the token (it
    // cannot have it, but even so) is refused.
    let r = ask(
        addr,
        "GET /x HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer s3cret\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

/// Clients that send one byte a second (slowloris) hold their own
/// connections only: another client's request is answered at once, and
/// the slow ones are closed at the deadline.
#[test]
fn slow_clients_do_not_stall_others() {
    let limits = Limits {
        deadline: Duration::from_secs(3),
        ..Limits::default()
    };
    let (addr, stop, h) = server(limits, None);
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    let dribble = std::thread::spawn(move || {
        let mut slow = slow;
        for _ in 0..6 {
            std::thread::sleep(Duration::from_secs(1));
            for s in &mut slow {
                let _ = s.write_all(b"E");
            }
        }
        slow
    });
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let t = Instant::now();
        let r = ask(addr, "GET /x HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        // Generous: the point is not waiting for the slow ones (seconds).
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut slow = dribble.join().unwrap();
    // Past the 3 s deadline the slow connections were closed.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 16];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "still open");
    }
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

#[test]
fn connection_caps() {
    let limits = Limits {
        max_conns: 6,
        max_per_source: 4,
        deadline: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut s = Server::new("sluice-test-caps", limits, |_, body| {
        body.push_str("x\n");
        Reply::text(200)
    })
    .unwrap();
    // Dual-stack where the host has IPv6: 127.0.0.1 and ::1 are two
    // sources.
    let (addr, v6) = match s.listen_tcp("[::]:0".parse().unwrap(), Access::Open, Hosts::default()) {
        Ok(a) => (SocketAddr::from(([127, 0, 0, 1], a.port())), Some(a.port())),
        Err(_) => (
            s.listen_tcp(
                "127.0.0.1:0".parse().unwrap(),
                Access::Open,
                Hosts::default(),
            )
            .unwrap(),
            None,
        ),
    };
    let stats = s.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let h = s.spawn(stop.clone()).unwrap();
    // Four idle connections from 127.0.0.1: the fifth from there is closed
    // at once, one from ::1 is served.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = ask(addr, "GET /x HTTP/1.1\r\n\r\n");
    assert!(r.is_empty(), "{r}");
    assert!(stats.refused_cap.load(Ordering::Relaxed) >= 1);
    if let Some(port) = v6
        && TcpStream::connect(("::1", port)).is_ok()
    {
        let r = ask(
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            "GET /x HTTP/1.1\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        // Two more from ::1 fill the server's six; a third takes one of
        // 127.0.0.1's four (it holds the most); then three and three is
        // an even share: nobody else gets in, from either.
        let more: Vec<TcpStream> = (0..3)
            .map(|_| {
                let c = TcpStream::connect(("::1", port)).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
        assert!(
            ask(
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
                "GET /x HTTP/1.1\r\n\r\n"
            )
            .is_empty()
        );
        assert!(ask(addr, "GET /x HTTP/1.1\r\n\r\n").is_empty());
        drop(more);
    }
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    assert!(ask(addr, "GET /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

fn unix_ask(path: &Path, req: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "sluice-http-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn unix_socket_peers() {
    let dir = temp_dir("unix");
    let path = dir.join("admin.sock");
    // Something that is not a socket is never replaced.
    std::fs::write(&path, "x").unwrap();
    let mut s = Server::new("sluice-test-unix", Limits::default(), |_, body| {
        body.push_str("ok\n");
        Reply::text(200)
    })
    .unwrap();
    let err = s
        .listen_unix(&path, 0o600, None, Access::Peer { gid: None })
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    std::fs::remove_file(&path).unwrap();
    s.listen_unix(&path, 0o600, None, Access::Peer { gid: None })
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stop = Arc::new(AtomicBool::new(false));
    let h = s.spawn(stop.clone()).unwrap();
    // This process (root in CI, or the owner) is allowed; the Host header
    // is not checked on a socket.
    let r = unix_ask(&path, "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n").unwrap();
    if sluice_lab::is_root() {
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    } else {
        assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    }
    // A second server on the same path is refused while this one runs.
    let mut again = Server::new("sluice-test-unix2", Limits::default(), |_, _| {
        Reply::text(200)
    })
    .unwrap();
    let err = again
        .listen_unix(&path, 0o600, None, Access::Peer { gid: None })
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    assert!(!path.exists(), "the socket file is removed on stop");
    // A server whose path another process took over (a restart) leaves
    // the newcomer's file alone when it stops.
    let mut s = Server::new("sluice-test-unix3", Limits::default(), |_, _| {
        Reply::text(200)
    })
    .unwrap();
    s.listen_unix(&path, 0o600, None, Access::Peer { gid: None })
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let h = s.spawn(stop.clone()).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "the newcomer's").unwrap();
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "the newcomer's");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Another user is refused by its credentials even where the socket's
/// mode would let it connect; a member of the configured group is served.
#[test]
fn unix_peer_credentials_of_other_users() {
    if !sluice_lab::require_root("unix_peer_credentials_of_other_users") {
        return;
    }
    let dir = temp_dir("peer");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |gid: Option<u32>| {
        let path = dir.join(format!("admin-{}.sock", gid.unwrap_or(0)));
        let mut s = Server::new("sluice-test-peer", Limits::default(), |_, body| {
            body.push_str("ok\n");
            Reply::text(200)
        })
        .unwrap();
        // 0666: only the credentials check stands in the way.
        s.listen_unix(&path, 0o666, None, Access::Peer { gid })
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let h = s.spawn(stop.clone()).unwrap();
        let script = format!(
            "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
             s.sendall(b'GET / HTTP/1.1\\r\\n\\r\\n'); print(s.recv(100).decode().split(chr(13))[0])",
            path.display().to_string()
        );
        let out = std::process::Command::new("setpriv")
            .current_dir("/")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                // Debian's, not a per-user shim on root's PATH.
                "/usr/bin/python3",
                "-c",
                &script,
            ])
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(run(None), "HTTP/1.1 403 Forbidden");
    assert_eq!(run(Some(12_345)), "HTTP/1.1 403 Forbidden");
    assert_eq!(run(Some(65_534)), "HTTP/1.1 200 OK");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tokens_compare_by_hash() {
    let a = sha256(b"x");
    assert!(ct_eq(&a, &sha256(b"x")));
    assert!(!ct_eq(&a, &sha256(b"y")));
    assert_eq!(format!("{:?}", Access::Token(a)), "Token(..)");
}

/// Review finding: the admin server's TCP listener (bearer token) and
/// root's Unix socket shared one connection cap, so unauthenticated
/// network clients that connect and send nothing filled it and root's
/// `sluice policy reload` was closed at accept. Each listener has its own
/// cap: a full TCP listener leaves the socket served.
#[test]
fn unauthenticated_tcp_clients_cannot_lock_out_the_unix_socket() {
    let dir = temp_dir("shared-cap");
    let path = dir.join("admin.sock");
    let mut s = Server::new(
        "sluice-test-sharedcap",
        Limits {
            max_conns: 4,
            max_per_source: 4,
            deadline: Duration::from_secs(60),
            ..Limits::default()
        },
        |_, body| {
            body.push_str("ok\n");
            Reply::text(200)
        },
    )
    .unwrap();
    let addr = s
        .listen_tcp(
            "127.0.0.1:0".parse().unwrap(),
            Access::Token(sha256(b"s3cret")),
            Hosts::default(),
        )
        .unwrap();
    s.listen_unix(&path, 0o600, None, Access::Peer { gid: None })
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let h = s.spawn(stop.clone()).unwrap();
    // Four connections without a token (nor a byte) fill the TCP side.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = unix_ask(&path, "GET / HTTP/1.1\r\n\r\n").unwrap_or_else(|e| e.to_string());
    // 200 as root, 403 otherwise: answered either way, not closed.
    assert!(
        r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.1 403"),
        "the admin socket was not answered while unauthenticated TCP clients held the server: {r:?}"
    );
    drop(idle);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Review finding: the admin API's 60 s deadline (a reload may take
/// that long) also bounded the wait for the request head, so a client
/// that sent nothing held a slot for a minute before any authorisation.
/// The head has a deadline of its own ([`Limits::default`]'s 5 s).
#[test]
fn a_request_head_has_a_deadline_of_its_own() {
    let (addr, stop, h) = server(
        Limits {
            deadline: Duration::from_secs(60),
            ..Limits::default()
        },
        Some("s3cret"),
    );
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /x HT").unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t = Instant::now();
    let mut b = [0u8; 64];
    let r = idle.read(&mut b);
    let took = t.elapsed();
    assert!(
        matches!(r, Ok(0))
            || r.as_ref().is_err_and(|e| {
                !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                )
            }),
        "a connection without a complete head was still open after {took:?}: {r:?}"
    );
    // Generous: the point is seconds, not the minute of the answer's
    // deadline.
    assert!(took < Duration::from_secs(15), "closed after {took:?}");
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

/// Review finding: a full server turned every new connection away, so a
/// LAN host with a few addresses (8 x 32 fill the PAC server's 256)
/// kept it full and other clients got nothing. A new source now takes the
/// oldest connection of the source that holds the most.
#[test]
fn a_full_server_makes_room_for_a_new_source() {
    let limits = Limits {
        max_conns: 4,
        max_per_source: 4,
        deadline: Duration::from_secs(30),
        ..Limits::default()
    };
    let mut s = Server::new("sluice-test-fair", limits, |_, body| {
        body.push_str("x\n");
        Reply::text(200)
    })
    .unwrap();
    // Dual stack: 127.0.0.1 (as ::ffff:127.0.0.1) and ::1 are two sources.
    let port = s
        .listen_tcp("[::]:0".parse().unwrap(), Access::Open, Hosts::default())
        .expect("a dual-stack listener (IPv6 loopback)")
        .port();
    let stop = Arc::new(AtomicBool::new(false));
    let h = s.spawn(stop.clone()).unwrap();
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let hog: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(v4).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = ask(v6, "GET /x HTTP/1.1\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "a new source was turned away by a server one source filled: {r:?}"
    );
    // One of the hog's connections made the room.
    let closed = hog
        .iter()
        .filter(|c| {
            c.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut r: &TcpStream = c;
            matches!(r.read(&mut [0u8; 8]), Ok(0))
        })
        .count();
    assert_eq!(closed, 1, "connections of the hog closed");
    drop(hog);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

/// Review finding: the listener's socket file is chmod'ed and chown'ed
/// by path after bind; in a directory others can write, a local user
/// could swap it for a symlink in between (root then chmods and chowns
/// the file it points to) or replace it later (the CLI then talks to an
/// impostor). Such a directory is refused, and nothing is created there.
#[test]
fn refuses_a_socket_directory_others_can_write() {
    for m in [0o777, 0o770, 0o1777, 0o1770] {
        let dir = temp_dir("sockdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap();
        let path = dir.join("admin.sock");
        let mut s = Server::new("sluice-test-sockdir", Limits::default(), |_, _| {
            Reply::text(200)
        })
        .unwrap();
        let r = s.listen_unix(&path, 0o600, None, Access::Peer { gid: None });
        assert!(
            r.as_ref()
                .is_err_and(|e| e.to_string().contains("writable")),
            "an admin socket in a {m:o} directory: {r:?}"
        );
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "{m:o}: a socket was bound"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// The same for a directory another user owns (it can rename the socket
/// whatever the mode).
#[test]
fn refuses_a_socket_directory_another_user_owns() {
    if !sluice_lab::require_root("refuses_a_socket_directory_another_user_owns") {
        return;
    }
    let dir = temp_dir("sockowner");
    std::os::unix::fs::chown(&dir, Some(65_534), Some(65_534)).unwrap();
    let path = dir.join("admin.sock");
    let mut s = Server::new("sluice-test-sockowner", Limits::default(), |_, _| {
        Reply::text(200)
    })
    .unwrap();
    let r = s.listen_unix(&path, 0o600, None, Access::Peer { gid: None });
    assert!(
        r.as_ref()
            .is_err_and(|e| e.to_string().contains("owned by")),
        "an admin socket in a directory uid 65534 owns: {r:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Review finding: the admin socket's missing directories were created
/// (`mkdir -p`) before anything was checked, so a directory appeared in
/// a directory others can change before the refusal. Each directory is
/// checked before anything is created in it.
#[test]
fn creates_no_socket_directory_where_others_could_change_it() {
    let dir = temp_dir("sockmkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.join("run/sluice/admin.sock");
    let mut s = Server::new("sluice-test-sockmkdir", Limits::default(), |_, _| {
        Reply::text(200)
    })
    .unwrap();
    let r = s.listen_unix(&path, 0o600, None, Access::Peer { gid: None });
    let made: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        made.is_empty(),
        "created in a 777 directory before the refusal ({r:?}): {made:?}"
    );
    assert!(
        r.as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied
                && e.to_string().contains("writable")),
        "an admin socket below a 777 directory: {r:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Review finding: sources were counted address by address, so one
/// IPv6 host (a /64 of its own: privacy addresses, or any it picks) got
/// 32 connections per address. A /64 is one source; a v4-mapped address
/// on a dual-stack listener is its IPv4 address.
#[test]
fn ipv6_sources_are_counted_by_their_64() {
    let k = |s: &str| source_key(s.parse().unwrap());
    assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff:ffff:ffff:ffff"));
    assert_eq!(k("2001:db8:1:2:abcd::9"), k("2001:db8:1:2::"));
    assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
    assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
    assert_ne!(k("::ffff:192.0.2.7"), k("::ffff:192.0.2.8"));
    assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
}
