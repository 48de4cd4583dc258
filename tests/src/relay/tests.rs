//! The relay on loopback (no lab needed): the delay is added, the bounds
//! hold, the switches do what they say, and it ends by itself.
use std::{
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use super::{Relay, RelayConfig};

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
const WAIT: Duration = Duration::from_secs(3);

/// A TCP echo server on loopback, serving up to `conns` connections (each
/// until its end of stream or 10 s), accepting for 10 s at most.
fn echo_server(conns: usize) -> (SocketAddr, thread::JoinHandle<()>) {
    let l = TcpListener::bind((LOOPBACK, 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || {
        let mut threads = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while threads.len() < conns && Instant::now() < end {
            let Ok((mut s, _)) = l.accept() else {
                thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            threads.push(thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut b = [0u8; 4096];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 || s.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
            }));
        }
        for t in threads {
            let _ = t.join();
        }
    });
    (addr, t)
}

fn relay(upstream: SocketAddr, delay_ms: u64) -> RelayConfig {
    RelayConfig::new(
        (LOOPBACK, 0).into(),
        upstream,
        Duration::from_millis(delay_ms),
    )
}

fn start(cfg: RelayConfig) -> Relay<'static> {
    Relay::spawn(None, cfg).unwrap()
}

fn connect(to: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&to, WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `msg` and reads as many bytes back; the round trip's time.
fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let t0 = Instant::now();
    s.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
    t0.elapsed()
}

/// Whether the peer ended or reset `s` within `within` (no data came).
fn ended(s: &mut TcpStream, within: Duration) -> Option<io::ErrorKind> {
    s.set_read_timeout(Some(within)).unwrap();
    match s.read(&mut [0u8; 64]) {
        Ok(0) => Some(io::ErrorKind::UnexpectedEof),
        Ok(n) => panic!("{n} bytes came from a connection that should have ended"),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => Some(e.kind()),
    }
}

#[test]
fn the_delay_is_added_each_way_and_ends_are_passed_on() {
    let (echo, server) = echo_server(2);
    let mut direct = connect(echo);
    let baseline = round_trip(&mut direct, b"direct");
    drop(direct);
    let r = start(relay(echo, 30));
    let mut s = connect(r.local_addr());
    let _first = round_trip(&mut s, b"hello");
    let rtt = round_trip(&mut s, b"again");
    eprintln!("relay: round trip {rtt:?} through a 30 ms relay, {baseline:?} direct");
    assert!(
        rtt >= Duration::from_millis(60),
        "a 30 ms relay gave a round trip of {rtt:?}"
    );
    assert!(rtt < Duration::from_millis(60) + WAIT, "{rtt:?}");
    // A half-close reaches the server, whose close comes back.
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(ended(&mut s, WAIT), Some(io::ErrorKind::UnexpectedEof));
    let st = r.stats();
    assert_eq!((st.accepted, st.refused, st.upstream_failed), (1, 0, 0));
    assert_eq!((st.bytes_up, st.bytes_down), (10, 10));
    drop(r);
    server.join().unwrap();
}

#[test]
fn connections_over_the_cap_are_reset_and_buffers_stay_bounded() {
    // Connections: two relayed, the third reset at once.
    let (echo, server) = echo_server(2);
    let mut cfg = relay(echo, 1);
    cfg.max_conns = 2;
    let r = start(cfg);
    let mut first = connect(r.local_addr());
    let mut second = connect(r.local_addr());
    round_trip(&mut first, b"1");
    round_trip(&mut second, b"2");
    let mut third = connect(r.local_addr());
    let _ = third.write_all(b"3");
    assert!(
        ended(&mut third, WAIT).is_some(),
        "a third connection was relayed"
    );
    assert_eq!(r.stats().refused, 1);
    drop((first, second, third, r));
    server.join().unwrap();

    // Bytes: an upstream that never reads; the relay holds at most its
    // cap, then stops reading (the sender's writes block).
    let sink = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let mut cfg = relay(sink.local_addr().unwrap(), 1);
    cfg.max_buffered = 64 * 1024;
    let r = start(cfg);
    let mut s = connect(r.local_addr());
    let (_held, _) = sink.accept().unwrap();
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && sent < 64 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent < 64 << 20,
        "64 MiB went into a relay whose upstream reads nothing"
    );
    thread::sleep(Duration::from_millis(100));
    let st = r.stats();
    eprintln!("relay: {sent} bytes written before the sender blocked; {st:?}");
    assert!(
        st.peak_buffered > 0 && st.peak_buffered <= 64 * 1024,
        "{st:?}"
    );
}

#[test]
fn a_blackhole_is_silent_and_a_cut_resets() {
    let (echo, server) = echo_server(2);
    let r = start(relay(echo, 1));
    let mut s = connect(r.local_addr());
    round_trip(&mut s, b"before");
    r.blackhole(true);
    s.write_all(b"lost").unwrap();
    assert_eq!(
        ended(&mut s, Duration::from_millis(300)),
        None,
        "a blackholed connection answered or ended"
    );
    // Even its end of stream is swallowed.
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(ended(&mut s, Duration::from_millis(300)), None);
    assert!(r.stats().discarded >= 4, "{:?}", r.stats());
    // A connection made while dead is held, never answered.
    let mut held = connect(r.local_addr());
    held.write_all(b"anyone?").unwrap();
    assert_eq!(ended(&mut held, Duration::from_millis(300)), None);
    // The cut resets both.
    r.cut();
    for c in [&mut s, &mut held] {
        let e = ended(c, WAIT);
        assert!(
            matches!(
                e,
                Some(io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof)
            ),
            "after a cut: {e:?}"
        );
    }
    // Back to life: new connections are relayed.
    r.blackhole(false);
    let mut s = connect(r.local_addr());
    round_trip(&mut s, b"after");
    drop((s, r));
    server.join().unwrap();
}

#[test]
fn an_unreachable_upstream_resets_the_connection() {
    let gone = TcpListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let r = start(relay(gone, 1));
    let mut s = connect(r.local_addr());
    let e = ended(&mut s, WAIT);
    assert_eq!(e, Some(io::ErrorKind::ConnectionReset), "{:?}", r.stats());
    assert_eq!(r.stats().upstream_failed, 1);
}

#[test]
fn it_ends_by_itself_and_drop_joins_at_once() {
    let (echo, server) = echo_server(1);
    let mut cfg = relay(echo, 1);
    cfg.lifetime = Duration::from_millis(500);
    let r = start(cfg);
    let mut s = connect(r.local_addr());
    round_trip(&mut s, b"x");
    let e = ended(&mut s, WAIT);
    assert!(e.is_some(), "the connection outlived the relay's lifetime");
    let t0 = Instant::now();
    let addr = r.local_addr();
    drop(r);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "still listening after drop"
    );
    drop(s);
    server.join().unwrap();

    // Dropped while a connection is busy: joined at once too.
    let (echo, server) = echo_server(1);
    let r = start(relay(echo, 50));
    let mut s = connect(r.local_addr());
    s.write_all(&vec![1u8; 100_000]).unwrap();
    let t0 = Instant::now();
    drop(r);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    drop(s);
    server.join().unwrap();
}

#[test]
fn udp_is_delayed_each_way_and_blackholed() {
    let server = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let upstream = server.local_addr().unwrap();
    // The echo server ends by itself after 10 s.
    let echo = thread::spawn(move || {
        let mut b = [0u8; 2048];
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok((n, from)) = server.recv_from(&mut b) {
                let _ = server.send_to(&b[..n], from);
            }
        }
    });
    {
        let r = start(relay(upstream, 25).with_udp());
        let c = UdpSocket::bind((LOOPBACK, 0)).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.connect(r.local_addr()).unwrap();
        let mut b = [0u8; 64];
        let t0 = Instant::now();
        c.send(b"dgram").unwrap();
        let n = c.recv(&mut b).unwrap();
        let rtt = t0.elapsed();
        assert_eq!(&b[..n], b"dgram");
        eprintln!("relay: UDP round trip {rtt:?} through a 25 ms relay");
        assert!(rtt >= Duration::from_millis(50), "{rtt:?}");
        r.blackhole(true);
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c.send(b"lost").unwrap();
        assert!(c.recv(&mut b).is_err(), "a blackholed relay answered");
        r.blackhole(false);
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.send(b"back").unwrap();
        let n = c.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"back");
        // The counter follows the send.
        let until = Instant::now() + WAIT;
        while r.stats().bytes_down < 9 && Instant::now() < until {
            thread::sleep(Duration::from_millis(10));
        }
        let st = r.stats();
        assert_eq!((st.bytes_up, st.bytes_down), (9, 9), "{st:?}");
    }
    echo.join().unwrap();
}
