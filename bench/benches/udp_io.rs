//! Batched UDP I/O on loopback (`sluice_sys::udp`): 64 datagrams of 1400
//! bytes per iteration, sent or received one syscall each (the baseline)
//! against one `sendmmsg`/`recvmmsg` and against UDP GSO/GRO.
//!
//! - `udp_send/send_to`: 64 `sendto` calls from an unconnected socket
//!   (the per-packet baseline).
//! - `udp_send/sendmmsg`: one [`UdpSocket::send_batch`] of the 64 from a
//!   socket with GSO off: one `sendmmsg` of 64 messages.
//! - `udp_send/gso`: the same with GSO on: one `sendmmsg` of two GSO
//!   messages (46 + 18 segments: 64 KiB per message at most), to a
//!   receiver without GRO (the kernel splits them on delivery).
//! - `udp_send/gso_to_gro`: the same to a receiver with `UDP_GRO` on (the
//!   GSO packets are queued whole).
//! - `udp_recv/recvfrom`: 64 `recvfrom` calls (the per-packet baseline).
//! - `udp_recv/recvmmsg`: one [`UdpSocket::recv_batch`] of 64 slots.
//! - `udp_recv/gro`: [`UdpSocket::recv_batch`] on a GRO socket (the 64
//!   datagrams come as two coalesced messages) and the split into 64.
//!
//! Loopback runs the receiving kernel path in the sender's context, so a
//! send's time includes the delivery into the receiver's queue (and, for
//! `gso`, the segmentation); the other side's work is done between
//! iterations, outside the timed part (`iter_custom`). Every iteration
//! checks that all 64 datagrams arrived. Throughput is in datagrams:
//! compare the cases within a group.
use std::{
    hint::black_box,
    io,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_sys::udp::{GRO_SLOT_LEN, RecvBatch, SendBatch, UdpConfig, UdpSocket};

/// Datagrams per iteration (one worker batch).
const BATCH: usize = 64;
/// Datagram length (a record carrying one 1400-byte-class packet).
const LEN: usize = 1400;

fn config(gso: bool, gro: bool) -> UdpConfig {
    UdpConfig {
        gso,
        gro,
        recv_buffer: Some(4 << 20),
        send_buffer: Some(4 << 20),
        ..UdpConfig::default()
    }
}

fn bind(gso: bool, gro: bool) -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0).into(), &config(gso, gro)).expect("bind on loopback")
}

fn payloads() -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| (0..LEN).map(|k| (i * 31 + k) as u8).collect())
        .collect()
}

fn fill(batch: &mut SendBatch, payloads: &[Vec<u8>], to: SocketAddr) {
    for p in payloads {
        assert!(batch.push(p, Some(to)), "batch sized for {BATCH}");
    }
}

/// Receives everything waiting; panics unless it is `BATCH` datagrams.
fn drain(rx: &UdpSocket, rb: &mut RecvBatch) {
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while got < BATCH {
        match rx.recv_batch(rb) {
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {}
            Err(e) => panic!("drain: {e} after {got} datagrams"),
        }
    }
    assert_eq!(got, BATCH, "every datagram arrived");
}

fn send(c: &mut Criterion) {
    let payloads = payloads();
    let mut g = c.benchmark_group("udp_send");
    g.throughput(Throughput::Elements(BATCH as u64));

    let rx = bind(false, false);
    let to = rx.local_addr().unwrap();
    let mut rb = RecvBatch::new(BATCH, 2048);

    let plain = bind(false, false);
    g.bench_function("send_to", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                for p in &payloads {
                    assert_eq!(plain.send_to(black_box(p), to).expect("send_to"), LEN);
                }
                timed += t.elapsed();
                drain(&rx, &mut rb);
            }
            timed
        });
    });

    let mut batch = SendBatch::new(BATCH, LEN);
    g.bench_function("sendmmsg", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                fill(&mut batch, &payloads, to);
                let t = Instant::now();
                assert_eq!(plain.send_batch(&mut batch).expect("sendmmsg"), BATCH);
                timed += t.elapsed();
                drain(&rx, &mut rb);
            }
            timed
        });
    });

    let gso = bind(true, false);
    assert!(gso.gso(), "this kernel offers UDP GSO");
    g.bench_function("gso", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                fill(&mut batch, &payloads, to);
                let t = Instant::now();
                assert_eq!(gso.send_batch(&mut batch).expect("GSO send"), BATCH);
                timed += t.elapsed();
                drain(&rx, &mut rb);
            }
            timed
        });
    });

    let gro_sock = bind(false, true);
    assert!(gro_sock.gro(), "this kernel offers UDP GRO");
    let gro_to = gro_sock.local_addr().unwrap();
    let mut gro_batch = RecvBatch::new(8, GRO_SLOT_LEN);
    g.bench_function("gso_to_gro", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                fill(&mut batch, &payloads, gro_to);
                let t = Instant::now();
                assert_eq!(gso.send_batch(&mut batch).expect("GSO send"), BATCH);
                timed += t.elapsed();
                drain(&gro_sock, &mut gro_batch);
            }
            timed
        });
    });
    let s = gso.stats();
    assert!(s.sent_gso_messages > 0 && s.gso_fallbacks == 0, "{s:?}");
    g.finish();
}

fn recv(c: &mut Criterion) {
    let payloads = payloads();
    let mut g = c.benchmark_group("udp_recv");
    g.throughput(Throughput::Elements(BATCH as u64));
    // The sender is the same for every case (GSO: cheap, and queued as 64
    // datagrams on a socket without GRO, as two coalesced ones with).
    let tx = bind(true, false);
    let mut batch = SendBatch::new(BATCH, LEN);
    let mut put = |to: SocketAddr| {
        fill(&mut batch, &payloads, to);
        assert_eq!(tx.send_batch(&mut batch).expect("send"), BATCH);
    };

    let rx = bind(false, false);
    let to = rx.local_addr().unwrap();
    let mut one = vec![0u8; 2048];
    g.bench_function("recvfrom", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                put(to);
                let t = Instant::now();
                let mut bytes = 0;
                for _ in 0..BATCH {
                    let (n, _from) = rx.recv_from(&mut one).expect("queued");
                    bytes += black_box(&one[..n]).len();
                }
                timed += t.elapsed();
                assert_eq!(bytes, BATCH * LEN);
            }
            timed
        });
    });

    let mut rb = RecvBatch::new(BATCH, 2048);
    g.bench_function("recvmmsg", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                put(to);
                let t = Instant::now();
                let mut bytes = 0;
                while bytes < BATCH * LEN {
                    rx.recv_batch(&mut rb).expect("queued");
                    bytes += rb.records().map(|(_, d)| black_box(d).len()).sum::<usize>();
                }
                timed += t.elapsed();
                assert_eq!(bytes, BATCH * LEN);
            }
            timed
        });
    });

    let gro_sock = bind(false, true);
    assert!(gro_sock.gro(), "this kernel offers UDP GRO");
    let gro_to = gro_sock.local_addr().unwrap();
    let mut gro_batch = RecvBatch::new(8, GRO_SLOT_LEN);
    g.bench_function("gro", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                put(gro_to);
                let t = Instant::now();
                let mut bytes = 0;
                while bytes < BATCH * LEN {
                    gro_sock.recv_batch(&mut gro_batch).expect("queued");
                    bytes += gro_batch
                        .records()
                        .map(|(_, d)| black_box(d).len())
                        .sum::<usize>();
                }
                timed += t.elapsed();
                assert_eq!(bytes, BATCH * LEN);
            }
            timed
        });
    });
    let s = gro_sock.stats();
    assert!(s.recv_gro_messages > 0, "{s:?}");
    g.finish();
}

criterion_group!(udp_io_benches, send, recv);
criterion_main!(udp_io_benches);
