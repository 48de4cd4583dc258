//! The datagram transport's hot path: [`BATCH`] IP packets sealed into
//! records by a [`DatagramSession`] and opened by its peer, against the
//! raw AEAD sealing and opening the same plaintexts in records of the same
//! sizes (the floor: the copy into the output buffer and the AEAD).
//!
//! - `datagram_seal/session/<size>`: `DatagramSession::seal` until the
//!   batch is taken (1400-byte packets: one per record; 64-byte packets:
//!   21 per record), each record into its own slot of an output buffer.
//!   Between iterations, untimed, the peers exchange an empty record and
//!   its answer, so rekeying goes on as on the wire.
//! - `datagram_seal/raw/<size>`: for each of those records, the items
//!   copied into the slot behind a 16-byte header and sealed in place with
//!   the same AEAD (header as additional data), tag appended.
//! - `datagram_open/session/<size>`: `DatagramSession::open` on each record
//!   in place, then the packets iterated. Fresh records every iteration,
//!   sealed by the peer outside the timed part (`iter_custom`: the replay
//!   window refuses records it has seen).
//! - `datagram_open/raw/<size>`: each record copied into a scratch buffer
//!   and opened in place (records sealed once up front).
//!
//! Both sides use aws-lc-rs and the suite a real handshake negotiates
//! (the keys come from the TLS exporter of a session pair). Throughput is
//! the IP packet bytes of a batch, so session/raw is the ratio of costs.
use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use aws_lc_rs::aead;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_bench::Feed;
use sluice_core::{
    datagram::{self, DatagramConfig, DatagramSession},
    tunnel::{AeadProvider, Session, SessionConfig},
    wire::datagram::{HEADER_LEN, ITEM_HEADER_LEN, Items, TAG_LEN},
};
use sluice_runtime::{driver, pki};

/// Packets per batch (one `AF_XDP` RX batch).
const BATCH: usize = 64;
/// IP packet sizes.
const SIZES: [usize; 2] = [64, 1400];
/// One output slot per record.
const SLOT: usize = 1500;

fn ip_packet(len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    p[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 10, 203, 0, 113, 10,
    ]);
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pump(from: &mut Session, to: &mut Session, now: Instant) -> usize {
    let mut wire = Vec::new();
    driver::transmit(from, &mut wire, now).expect("write to Vec");
    if !wire.is_empty() {
        driver::receive(to, &mut Feed(&wire), now, driver::READ_BUDGET).expect("read");
        while to.poll_packet().is_some() {}
    }
    wire.len()
}

/// A gateway and an edge datagram session keyed from one real TLS session.
fn datagram_pair(
    client: &Arc<rustls::ClientConfig>,
    server: &Arc<rustls::ServerConfig>,
) -> (DatagramSession, DatagramSession, &'static aead::Algorithm) {
    let now = Instant::now();
    let name = pki::server_name("edge.sluice.test").expect("server name");
    let (c, ce) = datagram::keys::client(client, name).expect("client");
    let (s, se) = datagram::keys::server(server).expect("server");
    let mut gw = Session::with_exporter(c, ce, SessionConfig::default(), now);
    let mut edge = Session::with_exporter(s, se, SessionConfig::default(), now);
    for _ in 0..64 {
        let n = pump(&mut gw, &mut edge, now) + pump(&mut edge, &mut gw, now);
        if n == 0 && gw.is_established() && edge.is_established() {
            break;
        }
    }
    let gk = gw.take_datagram_keys().expect("exporter").expect("keys");
    let ek = edge.take_datagram_keys().expect("exporter").expect("keys");
    let alg = match gk.suite().common.suite {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => &aead::AES_128_GCM,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => &aead::AES_256_GCM,
        _ => &aead::CHACHA20_POLY1305,
    };
    let cfg = DatagramConfig {
        aead: AeadProvider::AwsLcRs,
        ..DatagramConfig::default()
    };
    (
        DatagramSession::new(gk, 1, 2, cfg.clone(), now).expect("gw"),
        DatagramSession::new(ek, 2, 1, cfg, now).expect("edge"),
        alg,
    )
}

/// Seals the batch; returns the records' lengths (record `i` in slot `i`).
fn seal_batch(s: &mut DatagramSession, pkts: &[&[u8]], out: &mut [u8], now: Instant) -> Vec<usize> {
    let mut lens = Vec::new();
    let mut rest = pkts;
    while !rest.is_empty() {
        let slot = &mut out[lens.len() * SLOT..][..SLOT];
        let sealed = s.seal(rest, now, slot).expect("seal");
        lens.push(sealed.len);
        rest = &rest[sealed.packets..];
    }
    lens
}

/// Lets the sessions rekey as they would on the wire: an empty record
/// from `gw` to `edge`, and whatever `edge` owes back (its move to the new
/// key). Without it the sender could not rekey and would stop at the
/// per-key limit in a long run.
fn sync(gw: &mut DatagramSession, edge: &mut DatagramSession, now: Instant) {
    let mut buf = [0u8; 256];
    let n = gw.seal(&[], now, &mut buf).expect("keepalive").len;
    let _ = edge.open(&mut buf[..n], now);
    while let Ok(Some(n)) = edge.poll_transmit(now, &mut buf) {
        let _ = gw.open(&mut buf[..n], now);
    }
}

/// The raw AEAD over the records `seal_batch` makes: same item layout.
struct Raw {
    key: aead::LessSafeKey,
}

impl Raw {
    fn new(alg: &'static aead::Algorithm) -> Self {
        let key = vec![0x5a; alg.key_len()];
        Self {
            key: aead::LessSafeKey::new(aead::UnboundKey::new(alg, &key).expect("key")),
        }
    }

    fn nonce(seq: u64) -> aead::Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&seq.to_be_bytes());
        aead::Nonce::assume_unique_for_key(n)
    }

    /// Seals `per` packets per record into the slots of `out`.
    fn seal_batch(&self, pkts: &[&[u8]], per: usize, out: &mut [u8], seq: &mut u64) {
        for (i, chunk) in pkts.chunks(per).enumerate() {
            let slot = &mut out[i * SLOT..][..SLOT];
            let mut at = HEADER_LEN;
            for p in chunk {
                slot[at..at + 2].copy_from_slice(&(p.len() as u16).to_be_bytes());
                slot[at + 2..at + 2 + p.len()].copy_from_slice(p);
                at += ITEM_HEADER_LEN + p.len();
            }
            slot[8..16].copy_from_slice(&seq.to_be_bytes());
            let (head, body) = slot.split_at_mut(HEADER_LEN);
            let tag = self
                .key
                .seal_in_place_separate_tag(
                    Self::nonce(*seq),
                    aead::Aad::from(&head[..]),
                    &mut body[..at - HEADER_LEN],
                )
                .expect("seal");
            body[at - HEADER_LEN..at - HEADER_LEN + TAG_LEN].copy_from_slice(tag.as_ref());
            *seq += 1;
        }
    }
}

fn benches(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("sluice-bench-dgram-{}", std::process::id()));
    let files = pki::generate(&dir, &["edge.sluice.test".into()], &["gw1".into()]).expect("pki");
    let (_, cert, key) = &files.gateways[0];
    let client = pki::client_config(&files.ca, cert, key).expect("client config");
    let server = pki::server_config(&files.ca, &files.edge.0, &files.edge.1).expect("server");
    let now = Instant::now();

    let mut g = c.benchmark_group("datagram_seal");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let packet = ip_packet(size);
        let pkts: Vec<&[u8]> = vec![&packet[..]; BATCH];
        let mut out = vec![0u8; BATCH * SLOT];
        g.throughput(Throughput::Bytes((BATCH * size) as u64));
        let (mut gw, mut edge, alg) = datagram_pair(&client, &server);
        let per = (1452 - HEADER_LEN - TAG_LEN) / (ITEM_HEADER_LEN + size);
        g.bench_function(format!("session/{size}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    sync(&mut gw, &mut edge, now);
                    let t = Instant::now();
                    black_box(seal_batch(&mut gw, &pkts, &mut out, now));
                    spent += t.elapsed();
                }
                spent
            });
        });
        let raw = Raw::new(alg);
        let mut seq = 0;
        g.bench_function(format!("raw/{size}"), |b| {
            b.iter(|| raw.seal_batch(black_box(&pkts), per, &mut out, &mut seq));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("datagram_open");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let packet = ip_packet(size);
        let pkts: Vec<&[u8]> = vec![&packet[..]; BATCH];
        g.throughput(Throughput::Bytes((BATCH * size) as u64));
        let (mut gw, mut edge, alg) = datagram_pair(&client, &server);
        let mut out = vec![0u8; BATCH * SLOT];
        g.bench_function(format!("session/{size}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    sync(&mut gw, &mut edge, now);
                    let lens = seal_batch(&mut gw, &pkts, &mut out, now);
                    let t = Instant::now();
                    let mut bytes = 0;
                    for (i, &len) in lens.iter().enumerate() {
                        let rec = &mut out[i * SLOT..i * SLOT + len];
                        let o = edge.open(rec, now).expect("open");
                        bytes += o.packets(rec).map(<[u8]>::len).sum::<usize>();
                    }
                    spent += t.elapsed();
                    assert_eq!(bytes, BATCH * size);
                }
                spent
            });
        });
        let raw = Raw::new(alg);
        let per = (1452 - HEADER_LEN - TAG_LEN) / (ITEM_HEADER_LEN + size);
        let mut sealed = vec![0u8; BATCH * SLOT];
        let mut seq = 0;
        raw.seal_batch(&pkts, per, &mut sealed, &mut seq);
        let lens: Vec<usize> = pkts
            .chunks(per)
            .map(|ch| HEADER_LEN + ch.len() * (ITEM_HEADER_LEN + size) + TAG_LEN)
            .collect();
        let mut scratch = vec![0u8; SLOT];
        g.bench_function(format!("raw/{size}"), |b| {
            b.iter(|| {
                let mut bytes = 0;
                for (i, &len) in lens.iter().enumerate() {
                    scratch[..len].copy_from_slice(&sealed[i * SLOT..i * SLOT + len]);
                    let (head, body) = scratch[..len].split_at_mut(HEADER_LEN);
                    let plain = raw
                        .key
                        .open_in_place(Raw::nonce(i as u64), aead::Aad::from(&head[..]), body)
                        .expect("open");
                    bytes += Items::new(plain).map(<[u8]>::len).sum::<usize>();
                }
                assert_eq!(bytes, BATCH * size);
            });
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(datagram_benches, benches);
criterion_main!(datagram_benches);
