//! Real sockets on loopback (no namespaces, no root needed), and the pure
//! parts (send plans, control-message parsing, addresses, steering) on
//! their own.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use sluice_core::wire::datagram::{MIN_LEN, Packet, RecordType};

use super::*;

const V4: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
const V6: SocketAddr = SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::LOCALHOST), 0);

/// Deterministic contents for datagram `i` of `len` bytes.
fn datagram(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 31 + k * 7) as u8).collect()
}

fn plain() -> UdpConfig {
    UdpConfig {
        recv_buffer: Some(4 << 20),
        ..UdpConfig::default()
    }
}

/// A receiver bound to loopback and a sender connected to it.
fn pair(local: SocketAddr, send: &UdpConfig, recv: &UdpConfig) -> (UdpSocket, UdpSocket) {
    let rx = UdpSocket::bind(local, recv).expect("bind the receiver");
    let tx = UdpSocket::connect(rx.local_addr().expect("local address"), send)
        .expect("connect the sender");
    (rx, tx)
}

/// Receives until `want` datagrams came or 2 s passed: `(source, bytes)`
/// in arrival order.
fn recv_n(sock: &UdpSocket, batch: &mut RecvBatch, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        match sock.recv_batch(batch) {
            Ok(_) => got.extend(batch.records().map(|(from, d)| (from, d.to_vec()))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("recv_batch: {e}"),
        }
    }
    got
}

fn round_trip(local: SocketAddr) {
    let (rx, tx) = pair(local, &plain(), &plain());
    // Lengths with runs of equal sizes (GSO messages), shorter tails, an
    // empty datagram and single ones.
    let lens: Vec<usize> = (0..64)
        .map(|i| match i {
            0..=19 => 1400,
            20 => 600,
            21..=30 => 100 + i,
            31 => 0,
            _ => 1200,
        })
        .collect();
    let mut batch = SendBatch::new(64, 1500);
    for (i, &len) in lens.iter().enumerate() {
        let slot = batch.slot().expect("a free slot");
        slot[..len].copy_from_slice(&datagram(i, len));
        batch.commit(len, None);
    }
    assert!(batch.is_full());
    assert_eq!(tx.send_batch(&mut batch).expect("send_batch"), 64);
    assert!(batch.is_empty());

    let mut rb = RecvBatch::new(64, 2048);
    let got = recv_n(&rx, &mut rb, 64);
    assert_eq!(got.len(), 64, "datagrams received");
    let from = tx.local_addr().expect("sender address");
    for (i, (src, data)) in got.iter().enumerate() {
        assert_eq!(*src, from, "source of datagram {i}");
        assert_eq!(data, &datagram(i, lens[i]), "datagram {i}");
    }
    let s = tx.stats();
    assert_eq!(s.sent_datagrams, 64);
    assert!(tx.gso(), "this kernel (4.18+) offers UDP GSO");
    // 20 x 1400 + 600 are one message, 32 x 1200 another: fewer messages
    // than datagrams.
    assert!(s.sent_gso_messages >= 2, "{s:?}");
    assert!(s.sent_messages < 64, "{s:?}");
    assert_eq!(rx.stats().recv_datagrams, 64);
}

#[test]
fn udp_batch_round_trip_v4() {
    round_trip(V4);
}

#[test]
fn udp_batch_round_trip_v6() {
    round_trip(V6);
}

#[test]
fn udp_send_batch_unconnected_each_to_its_own_address() {
    let rx: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind(V4, &plain()).expect("bind"))
        .collect();
    let to: Vec<SocketAddr> = rx.iter().map(|s| s.local_addr().unwrap()).collect();
    let tx = UdpSocket::bind(V4, &plain()).expect("bind the edge's socket");
    let mut batch = SendBatch::new(64, 1500);
    // Equal lengths, alternating destinations: GSO must not merge them.
    for i in 0..64 {
        assert!(batch.push(&datagram(i, 1000), Some(to[i % 2])));
    }
    assert_eq!(tx.send_batch(&mut batch).expect("send_batch"), 64);
    for (k, sock) in rx.iter().enumerate() {
        let got = recv_n(sock, &mut RecvBatch::new(64, 2048), 32);
        let want: Vec<Vec<u8>> = (0..64)
            .filter(|i| i % 2 == k)
            .map(|i| datagram(i, 1000))
            .collect();
        let got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
        assert_eq!(got, want, "receiver {k}");
    }
}

#[test]
fn udp_send_batch_to_v4_peers_from_a_dual_stack_v6_socket() {
    let rx = UdpSocket::bind(V4, &plain()).expect("bind");
    let tx = UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0), &plain())
        .expect("bind [::]");
    let to = rx.local_addr().unwrap();
    let mut batch = SendBatch::new(8, 1500);
    for i in 0..8 {
        assert!(batch.push(&datagram(i, 300), Some(to)));
    }
    assert_eq!(tx.send_batch(&mut batch).expect("send_batch"), 8);
    let got = recv_n(&rx, &mut RecvBatch::new(8, 2048), 8);
    assert_eq!(got.len(), 8);
    // And back: the v4 source comes out as a plain IPv4 address.
    let port = tx.local_addr().unwrap().port();
    assert_eq!(
        rx.send_to(b"back", (Ipv4Addr::LOCALHOST, port).into())
            .unwrap(),
        4
    );
    let back = recv_n(&tx, &mut RecvBatch::new(8, 2048), 1);
    assert_eq!(back, vec![(to, b"back".to_vec())]);
}

#[test]
fn udp_gso_send_arrives_as_separate_datagrams() {
    for local in [V4, V6] {
        let (rx, tx) = pair(local, &plain(), &plain());
        assert!(tx.gso(), "this kernel (4.18+) offers UDP GSO");
        let mut buf: Vec<u8> = Vec::new();
        for i in 0..10 {
            buf.extend(datagram(i, 1400));
        }
        buf.extend(datagram(10, 500));
        assert_eq!(tx.send_segments(&buf, 1400, None).expect("GSO send"), 11);
        let s = tx.stats();
        assert_eq!(
            (s.sent_messages, s.sent_gso_messages, s.sent_datagrams),
            (1, 1, 11),
            "one GSO message"
        );
        // A plain receiver (no GRO, one recvfrom each) sees 11 datagrams.
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut one = [0u8; 2048];
        while got.len() < 11 && Instant::now() < deadline {
            match rx.recv_from(&mut one) {
                Ok((n, _)) => got.push(one[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("recv_from: {e}"),
            }
        }
        let want: Vec<Vec<u8>> = (0..11)
            .map(|i| datagram(i, if i < 10 { 1400 } else { 500 }))
            .collect();
        assert_eq!(got, want, "{local}");
        assert!(!rx.gro());
    }
}

#[test]
fn udp_gso_off_sends_the_same_with_sendmmsg() {
    let (rx, tx) = pair(
        V4,
        &UdpConfig {
            gso: false,
            ..plain()
        },
        &plain(),
    );
    assert!(!tx.gso());
    let buf: Vec<u8> = (0..100).flat_map(|i| datagram(i, 1400)).collect();
    assert_eq!(tx.send_segments(&buf, 1400, None).expect("send"), 100);
    let s = tx.stats();
    assert_eq!(
        (s.sent_gso_messages, s.sent_messages, s.send_calls),
        (0, 100, 2)
    );
    let got = recv_n(&rx, &mut RecvBatch::new(64, 2048), 100);
    assert_eq!(got.len(), 100);
    for (i, (_, d)) in got.iter().enumerate() {
        assert_eq!(d, &datagram(i, 1400));
    }
}

#[test]
fn udp_send_many_from_caller_slices() {
    let (rx, tx) = pair(V6, &plain(), &plain());
    let owned: Vec<Vec<u8>> = (0..70).map(|i| datagram(i, 700)).collect();
    let slices: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    assert_eq!(tx.send_many(&slices, None).expect("send_many"), 70);
    let got = recv_n(&rx, &mut RecvBatch::new(64, 2048), 70);
    let got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
    assert_eq!(got, owned);
}

fn gro_split(local: SocketAddr) {
    let gro = UdpConfig {
        gro: true,
        ..plain()
    };
    let (rx, tx) = pair(local, &plain(), &gro);
    assert!(rx.gro(), "this kernel (5.0+) offers UDP GRO");
    let mut buf: Vec<u8> = (0..20).flat_map(|i| datagram(i, 1400)).collect();
    buf.extend(datagram(20, 700));
    assert_eq!(tx.send_segments(&buf, 1400, None).expect("GSO send"), 21);

    let mut rb = RecvBatch::new(8, GRO_SLOT_LEN);
    let deadline = Instant::now() + Duration::from_secs(2);
    let n = loop {
        match rx.recv_batch(&mut rb) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("recv_batch: {e}"),
        }
    };
    // Loopback keeps the GSO packet whole up to a GRO socket: one
    // coalesced message, split back into 21 datagrams.
    assert_eq!((rb.messages(), n, rb.len()), (1, 21, 21), "{local}");
    let from = tx.local_addr().unwrap();
    let got: Vec<(SocketAddr, Vec<u8>)> = rb.records().map(|(f, d)| (f, d.to_vec())).collect();
    for (i, (f, d)) in got.iter().enumerate() {
        assert_eq!(*f, from);
        assert_eq!(
            d,
            &datagram(i, if i < 20 { 1400 } else { 700 }),
            "segment {i}"
        );
    }
    // The writable view gives the same pieces.
    let lens: Vec<usize> = rb.records_mut().map(|(_, d)| d.len()).collect();
    assert_eq!(lens, got.iter().map(|(_, d)| d.len()).collect::<Vec<_>>());
    let s = rx.stats();
    assert_eq!(
        (s.recv_messages, s.recv_gro_messages, s.recv_datagrams),
        (1, 1, 21)
    );
}

#[test]
fn udp_gro_receive_is_split_into_datagrams_v4() {
    gro_split(V4);
}

#[test]
fn udp_gro_receive_is_split_into_datagrams_v6() {
    gro_split(V6);
}

#[test]
fn udp_gro_receive_cut_by_a_small_slot_keeps_whole_segments() {
    let gro = UdpConfig {
        gro: true,
        ..plain()
    };
    let (rx, tx) = pair(V4, &plain(), &gro);
    let buf: Vec<u8> = (0..10).flat_map(|i| datagram(i, 1400)).collect();
    assert_eq!(tx.send_segments(&buf, 1400, None).unwrap(), 10);
    let mut rb = RecvBatch::new(4, 4096);
    let got = recv_n(&rx, &mut rb, 2);
    // 4096 bytes hold two whole segments; the rest is lost and counted.
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, datagram(0, 1400));
    assert_eq!(got[1].1, datagram(1, 1400));
    assert_eq!(rb.truncated(), 1);
    assert_eq!(rx.stats().recv_truncated, 1);
}

#[test]
fn udp_truncated_and_short_datagrams_are_counted_never_a_panic() {
    let (rx, tx) = pair(V4, &plain(), &plain());
    for d in [&datagram(0, 200)[..], &datagram(1, 50), &[], &[7]] {
        tx.send(d).expect("send");
    }
    let mut rb = RecvBatch::new(8, 100);
    let n = rx.recv_batch(&mut rb).expect("recv_batch");
    // The 200-byte one is cut by the 100-byte slot: skipped, counted; the
    // empty and the 1-byte ones come out as they are.
    assert_eq!((rb.messages(), n, rb.truncated()), (4, 3, 1));
    let got: Vec<Vec<u8>> = rb.records().map(|(_, d)| d.to_vec()).collect();
    assert_eq!(got, vec![datagram(1, 50), vec![], vec![7]]);
    let got_mut: Vec<Vec<u8>> = rb.records_mut().map(|(_, d)| d.to_vec()).collect();
    assert_eq!(got_mut, got);
    assert_eq!(rx.stats().recv_truncated, 1);
}

#[test]
fn udp_recv_would_block_when_nothing_waits() {
    let (rx, _tx) = pair(V4, &plain(), &plain());
    let mut rb = RecvBatch::new(8, 2048);
    let err = rx.recv_batch(&mut rb).expect_err("nothing was sent");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(rb.is_empty());
    assert_eq!(rb.records().count(), 0);
    let err = rx.recv_from(&mut [0; 16]).expect_err("nothing was sent");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

/// A connected Unix datagram pair: loopback UDP never pushes back on a
/// sender (the receiver drops instead), a Unix datagram socket does (its
/// unread datagrams count against the sender's buffer), which is how the
/// batch's `WouldBlock` bookkeeping is exercised for real.
fn unix_pair() -> (UdpSocket, UdpSocket) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is writable for two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", io::Error::last_os_error());
    // The smallest send buffer (the kernel's floor): a mutually connected
    // pair is limited by the sender's buffer, not by the queue length.
    let no_gso = UdpConfig {
        gso: false,
        send_buffer: Some(1),
        ..UdpConfig::default()
    };
    // SAFETY: both descriptors are new and owned by nothing else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    (
        UdpSocket::from_fd_for_tests(a, &no_gso).unwrap(),
        UdpSocket::from_fd_for_tests(b, &no_gso).unwrap(),
    )
}

#[test]
fn udp_send_batch_would_block_keeps_the_rest_in_order() {
    let (tx, rx) = unix_pair();
    let mut batch = SendBatch::new(64, 128);
    let mut next = 0;
    while batch.push(&datagram(next, 100), None) {
        next += 1;
    }
    assert_eq!(next, 64);
    let first = tx.send_batch(&mut batch).expect("some fit");
    assert!(
        first > 0 && first < 64,
        "the peer's queue is short: {first}"
    );
    assert_eq!(batch.len(), 64 - first);
    let err = tx
        .send_batch(&mut batch)
        .expect_err("the peer's queue is full");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(batch.len(), 64 - first, "nothing lost on WouldBlock");

    // Drain and refill as slots free up (the batch compacts), until 100
    // datagrams went, in order.
    let mut rb = RecvBatch::new(64, 128);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 100 && Instant::now() < deadline {
        if rx.recv_batch(&mut rb).is_ok() {
            got.extend(rb.records().map(|(_, d)| d.to_vec()));
        }
        while next < 100 && batch.push(&datagram(next, 100), None) {
            next += 1;
        }
        match tx.send_batch(&mut batch) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
    }
    let want: Vec<Vec<u8>> = (0..100).map(|i| datagram(i, 100)).collect();
    assert_eq!(got, want);
    assert_eq!(tx.stats().send_errors, 0);
}

#[test]
fn udp_send_error_drops_only_the_refused_datagram() {
    let rx = UdpSocket::bind(V4, &plain()).unwrap();
    let to = rx.local_addr().unwrap();
    let tx = UdpSocket::bind(V4, &plain()).unwrap();
    let mut batch = SendBatch::new(8, 1500);
    assert!(batch.push(b"first", Some(to)));
    // An IPv6 destination on an IPv4 socket: the kernel refuses it
    // (EAFNOSUPPORT), every time.
    assert!(batch.push(b"refused", Some((Ipv6Addr::LOCALHOST, to.port()).into())));
    assert!(batch.push(b"third", Some(to)));
    assert_eq!(tx.send_batch(&mut batch).expect("the first goes"), 1);
    let err = tx
        .send_batch(&mut batch)
        .expect_err("the second is refused");
    assert_eq!(err.raw_os_error(), Some(libc::EAFNOSUPPORT), "{err}");
    assert_eq!(batch.len(), 1, "only the refused one was dropped");
    assert_eq!(batch.get(0).map(|(d, _)| d), Some(&b"third"[..]));
    assert_eq!(tx.send_batch(&mut batch).expect("the third goes"), 1);
    let got: Vec<Vec<u8>> = recv_n(&rx, &mut RecvBatch::new(8, 2048), 2)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(got, vec![b"first".to_vec(), b"third".to_vec()]);
    assert_eq!(tx.stats().send_errors, 1);
}

#[test]
fn udp_connected_socket_s_icmp_error_comes_out_of_recv_once() {
    // A port nobody listens on: each datagram draws an ICMP port
    // unreachable. The kernel does not fail sends for it (they all go);
    // the error is the socket's, reported once by the next receive.
    let gone = UdpSocket::bind(V4, &plain()).unwrap();
    let to = gone.local_addr().unwrap();
    drop(gone);
    let tx = UdpSocket::connect(to, &plain()).unwrap();
    let mut batch = SendBatch::new(16, 1500);
    for i in 0..16 {
        assert!(batch.push(&datagram(i, 100), None));
    }
    assert_eq!(
        tx.send_batch(&mut batch).expect("sends are not refused"),
        16
    );
    let mut rb = RecvBatch::new(4, 64);
    let err = tx.recv_batch(&mut rb).expect_err("the ICMP error");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    let err = tx.recv_batch(&mut rb).expect_err("reported once");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn udp_socket_works_with_mio() {
    let (mut rx, tx) = pair(V4, &plain(), &plain());
    let mut poll = mio::Poll::new().unwrap();
    poll.registry()
        .register(&mut rx, mio::Token(7), mio::Interest::READABLE)
        .unwrap();
    tx.send(b"wake").unwrap();
    let mut events = mio::Events::with_capacity(4);
    poll.poll(&mut events, Some(Duration::from_secs(2)))
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.token() == mio::Token(7) && e.is_readable())
    );
    let mut rb = RecvBatch::new(4, 64);
    assert_eq!(rx.recv_batch(&mut rb).unwrap(), 1);
    poll.registry().deregister(&mut rx).unwrap();
}

/// A datagram record (as far as steering cares): the header with
/// `receiver` set, then `extra` bytes.
fn record(receiver: u32, extra: usize) -> Vec<u8> {
    let mut buf = vec![0u8; MIN_LEN + extra];
    buf[0] = RecordType::Data.to_u8();
    Packet::new_checked(&mut buf[..])
        .expect("a record-sized buffer")
        .set_receiver(receiver);
    buf
}

fn steer(local: SocketAddr, workers: u32) {
    let reuse = UdpConfig {
        reuseport: true,
        ..plain()
    };
    let first = UdpSocket::bind(local, &reuse).expect("bind the first worker's socket");
    let addr = first.local_addr().unwrap();
    let mut group = vec![first];
    for _ in 1..workers {
        group.push(UdpSocket::bind(addr, &reuse).expect("join the reuseport group"));
    }
    let steering = ReuseportSteering::receiver_id(workers).unwrap();
    // Any member attaches the group's program.
    group[group.len() - 1]
        .attach_reuseport_cbpf(&steering)
        .expect("SO_ATTACH_REUSEPORT_CBPF");

    // Several gateways (source ports), each with sessions of many ids.
    let senders: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::connect(addr, &plain()).unwrap())
        .collect();
    let ids: Vec<u32> = (0..48u32)
        .map(|i| i.wrapping_mul(0x9E37_79B9) ^ i)
        .collect();
    let mut want: Vec<Vec<Vec<u8>>> = vec![Vec::new(); workers as usize];
    for (k, &id) in ids.iter().enumerate() {
        let d = record(id, k);
        senders[k % 3].send(&d).unwrap();
        want[steering.index_of(id) as usize].push(d);
    }
    // Too short to hold a receiver id: the defined index, 0.
    for short in [&[][..], &[1, 2, 3], &[1, 2, 3, 4, 5, 6, 7]] {
        assert_eq!(steering.index(short), SHORT_DATAGRAM_INDEX);
        senders[0].send(short).unwrap();
        want[SHORT_DATAGRAM_INDEX as usize].push(short.to_vec());
    }
    for (w, sock) in group.iter().enumerate() {
        let got = recv_n(sock, &mut RecvBatch::new(64, 2048), want[w].len());
        let mut got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
        let mut expect = want[w].clone();
        got.sort();
        expect.sort();
        assert_eq!(got, expect, "worker {w} of {workers} ({local})");
        assert_eq!(
            sock.recv_batch(&mut RecvBatch::new(4, 2048))
                .map(|_| ())
                .unwrap_err()
                .kind(),
            io::ErrorKind::WouldBlock,
            "worker {w} got nothing else"
        );
    }
}

#[test]
fn udp_reuseport_cbpf_steers_by_receiver_id_v4() {
    steer(V4, 4);
}

#[test]
fn udp_reuseport_cbpf_steers_by_receiver_id_v6() {
    steer(V6, 3);
}

#[test]
fn udp_attach_reuseport_cbpf_outside_a_group_is_refused() {
    let sock = UdpSocket::bind(V4, &plain()).unwrap();
    let err = sock
        .attach_reuseport_cbpf(&ReuseportSteering::receiver_id(2).unwrap())
        .expect_err("not a reuseport socket");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn udp_steering_reads_the_receiver_id_of_a_record() {
    let id = 0xA1B2_C3D4;
    let r = record(id, 0);
    assert_eq!(
        r[DATAGRAM_RECEIVER_OFFSET as usize..][..4],
        id.to_be_bytes(),
        "the record format keeps the receiver id at DATAGRAM_RECEIVER_OFFSET"
    );
    let s = ReuseportSteering::receiver_id(7).unwrap();
    assert_eq!(s.index(&r), id % 7);
    let shifted = ReuseportSteering::new(DATAGRAM_RECEIVER_OFFSET, 28, 16).unwrap();
    assert_eq!(shifted.index(&r), 0xA);
    assert_eq!(s.index(&r[..7]), SHORT_DATAGRAM_INDEX);
    assert_eq!(s.index(&r[..8]), id % 7);
    assert!(ReuseportSteering::new(0, 32, 2).is_err());
    assert!(ReuseportSteering::new(0, 0, 0).is_err());
    assert!(ReuseportSteering::new(0, 0, 65_536).is_err());
    assert!(ReuseportSteering::new(u32::MAX - 2, 0, 2).is_err());
    // The program: length check, load, shift, modulo, return; short: 0.
    let p = s.program();
    assert_eq!(p[1].k, DATAGRAM_RECEIVER_OFFSET + 4);
    assert_eq!(p[2].k, DATAGRAM_RECEIVER_OFFSET);
    assert_eq!(
        usize::from(p[1].jf) + 2,
        p.len() - 1,
        "short jumps to the last"
    );
    assert_eq!(p[6].k, SHORT_DATAGRAM_INDEX);
}

#[test]
fn udp_send_plan_groups_equal_runs_per_destination() {
    let a: Option<SocketAddr> = Some(V4);
    let b: Option<SocketAddr> = Some(V6);
    let d = |n| vec![0u8; n];
    let bufs = [
        d(10),
        d(10),
        d(10),
        d(4),
        d(10),
        d(10),
        d(0),
        d(10),
        d(10),
        d(12),
    ];
    let recs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
    let dests = [a, a, a, a, a, b, b, b, b, b];
    let mut out = [Msg::default(); MAX_BATCH];
    let n = plan_messages(&recs, &dests, true, &mut out);
    let got: Vec<(usize, usize, u16)> =
        out[..n].iter().map(|m| (m.start, m.count, m.seg)).collect();
    // 3 x 10 + a shorter 4 end a message; a change of destination, an
    // empty datagram and a longer one each break a run.
    assert_eq!(
        got,
        vec![
            (0, 4, 10),
            (4, 1, 0),
            (5, 1, 0),
            (6, 1, 0),
            (7, 2, 10),
            (9, 1, 0)
        ]
    );
    let n = plan_messages(&recs, &dests, false, &mut out);
    assert_eq!(n, 10);
    assert!(out[..n].iter().all(|m| m.count == 1 && m.seg == 0));

    // Caps: 64 segments, and 64 KiB of payload.
    let small = [0u8; 100];
    let many: Vec<&[u8]> = vec![&small[..]; 64];
    let n = plan_messages(&many, &[a; 64], true, &mut out);
    assert_eq!((n, out[0].count), (1, 64));
    let big = vec![0u8; 1400];
    let bigs: Vec<&[u8]> = vec![&big[..]; 64];
    let n = plan_messages(&bigs, &[a; 64], true, &mut out);
    assert_eq!(
        (n, out[0].count, out[1].count),
        (2, MAX_PAYLOAD / 1400, 64 - MAX_PAYLOAD / 1400)
    );
}

#[test]
fn udp_gro_control_parse_takes_any_bytes() {
    let mut ok = [0u8; 64];
    let header = size_of::<libc::cmsghdr>();
    ok[..8].copy_from_slice(&(header + 4).to_ne_bytes());
    ok[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    ok[12..16].copy_from_slice(&libc::UDP_GRO.to_ne_bytes());
    ok[16..20].copy_from_slice(&1400i32.to_ne_bytes());
    assert_eq!(gro_segment(&ok[..24]), Some(1400));
    assert_eq!(gro_segment(&ok[..19]), None, "data cut");
    assert_eq!(gro_segment(&ok[..10]), None, "header cut");
    assert_eq!(gro_segment(&[]), None);
    // Another message first, then ours.
    let mut two = [0u8; 64];
    two[..8].copy_from_slice(&(header + 1).to_ne_bytes());
    two[8..12].copy_from_slice(&libc::SOL_IP.to_ne_bytes());
    two[24..48].copy_from_slice(&ok[..24]);
    assert_eq!(gro_segment(&two[..48]), Some(1400));
    // Garbage: zero, huge and negative lengths and sizes end the walk.
    let mut bad = ok;
    bad[..8].copy_from_slice(&0usize.to_ne_bytes());
    assert_eq!(gro_segment(&bad), None);
    bad[..8].copy_from_slice(&usize::MAX.to_ne_bytes());
    assert_eq!(gro_segment(&bad), None);
    let mut neg = ok;
    neg[16..20].copy_from_slice(&(-5i32).to_ne_bytes());
    assert_eq!(gro_segment(&neg[..24]), None);
    for seed in 0..2000u32 {
        let junk: Vec<u8> = (0..64)
            .map(|k| (seed.wrapping_mul(2_654_435_761) >> (k % 24)) as u8)
            .collect();
        let _ = gro_segment(&junk);
    }
}

#[test]
fn udp_socket_addresses_round_trip() {
    for addr in [
        SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 4500)),
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9), 4500)),
    ] {
        let (raw, len) = SockAddr::new(addr, addr.is_ipv6());
        assert_eq!(raw.to_std(len), Some(addr));
        assert_eq!(raw.to_std(len - 1), None, "a short address is refused");
    }
    // IPv4 on an IPv6 socket: mapped going out, plain coming back.
    let v4 = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 53));
    let (raw, len) = SockAddr::new(v4, true);
    assert_eq!(len as usize, size_of::<libc::sockaddr_in6>());
    assert_eq!(raw.to_std(len), Some(v4));
    assert_eq!(SockAddr::ZERO.to_std(SockAddr::LEN), None);
}

#[test]
fn udp_send_batch_slots_and_compaction() {
    let mut b = SendBatch::new(3, 8);
    assert!(b.push(b"a", None));
    assert!(!b.push(b"too long!", None), "longer than a slot");
    assert!(b.push(b"b", None) && b.push(b"c", None));
    assert!(b.is_full() && b.slot().is_none() && !b.push(b"d", None));
    b.discard(2);
    // Two slots free again behind the waiting one.
    assert!(b.push(b"d", None) && b.push(b"e", None));
    let waiting: Vec<&[u8]> = (0..b.len()).map(|i| b.get(i).unwrap().0).collect();
    assert_eq!(waiting, vec![&b"c"[..], b"d", b"e"]);
    assert!(b.get(3).is_none());
    b.clear();
    assert!(b.is_empty());
}

/// A GSO send the route's MTU cannot carry, on a veth of MTU 1280 in a
/// network namespace of the test thread's own (it and its links vanish
/// with the thread): the kernel refuses the GSO message (`EMSGSIZE` on
/// 6.x, `EINVAL` before) and the datagrams go one by one, each fragmented
/// in two: 8 frames on the wire.
#[test]
fn udp_gso_refused_for_the_route_mtu_falls_back_to_single_datagrams() {
    if !sluice_lab::require_root("udp_gso_refused_for_the_route_mtu_falls_back_to_single_datagrams")
    {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNET
        // moves only this thread into a fresh, empty network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        );
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        ip(&[
            "link", "add", "sl-udp0", "type", "veth", "peer", "name", "sl-udp1",
        ]);
        // No IPv6 link-local address: nothing else is sent on the link.
        ip(&["link", "set", "sl-udp0", "addrgenmode", "none"]);
        ip(&["link", "set", "sl-udp1", "addrgenmode", "none"]);
        ip(&["link", "set", "sl-udp0", "mtu", "1280", "up"]);
        ip(&["link", "set", "sl-udp1", "up"]);
        ip(&["addr", "add", "192.0.2.1/24", "dev", "sl-udp0"]);
        ip(&[
            "neigh",
            "add",
            "192.0.2.9",
            "lladdr",
            "02:00:00:00:00:09",
            "dev",
            "sl-udp0",
        ]);

        let tx = UdpSocket::bind((Ipv4Addr::new(192, 0, 2, 1), 0).into(), &plain()).unwrap();
        assert!(tx.gso());
        let to: SocketAddr = (Ipv4Addr::new(192, 0, 2, 9), 4500).into();
        let mut batch = SendBatch::new(4, 1400);
        for i in 0..4 {
            assert!(batch.push(&datagram(i, 1400), Some(to)));
        }
        assert_eq!(tx.send_batch(&mut batch).expect("sent without GSO"), 4);
        let s = tx.stats();
        assert_eq!(
            (
                s.gso_fallbacks,
                s.sent_gso_messages,
                s.sent_messages,
                s.sent_datagrams
            ),
            (1, 0, 4, 4),
            "{s:?}"
        );
        assert!(tx.gso(), "a route's MTU does not turn GSO off for good");
        let json = ip(&["-j", "-s", "link", "show", "dev", "sl-udp0"]);
        let tx_stats = &json[json.find("\"tx\":{").expect("tx statistics")..];
        let packets = &tx_stats[tx_stats.find("\"packets\":").expect("tx packets") + 10..];
        let packets: u64 = packets[..packets.find(|c: char| !c.is_ascii_digit()).unwrap()]
            .parse()
            .unwrap();
        assert_eq!(
            packets, 8,
            "4 datagrams of 1400 bytes, 2 fragments each: {json}"
        );
    })
    .join()
    .expect("the test thread");
}

/// As root (CAP_NET_ADMIN, as the gateway and the edge run) a socket gets
/// the buffers it asks for even above `net.core.rmem_max`/`wmem_max`
/// (208 KiB on a stock kernel): plain SO_RCVBUF was capped there, so the
/// datagram transport's 4-8 MiB became 416 KiB on a fresh machine.
#[test]
fn buffers_above_the_sysctl_maximum_are_granted_to_root() {
    // SAFETY: no arguments; reads the effective user id.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "buffers_above_the_sysctl_maximum_are_granted_to_root needs root under CI"
        );
        eprintln!("skipped: needs root");
        return;
    }
    let max = |name: &str| -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(212_992)
    };
    let want = 4 * max("rmem_max").max(max("wmem_max"));
    let cfg = UdpConfig {
        recv_buffer: Some(want),
        send_buffer: Some(want),
        ..UdpConfig::default()
    };
    let s = UdpSocket::bind(V4, &cfg).expect("bind");
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        let got = getsockopt_int(s.fd.as_fd(), libc::SOL_SOCKET, opt).expect("getsockopt");
        assert!(
            usize::try_from(got).unwrap_or(0) >= want,
            "option {opt}: {got} bytes for {want} asked"
        );
    }
}
