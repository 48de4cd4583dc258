//! Tunnel hot path: encapsulate + encrypt and decrypt + decapsulate a batch
//! of IP packets through an established [`Session`] pair, against raw AEAD
//! sealing/opening of the same bytes in TLS records of the same sizes.
//!
//! - `tunnel_encrypt/session/<size>`: [`BATCH`] × `Session::send_packet`,
//!   one `flush`, then `poll_transmit` / `transmitted` into a `Vec<u8>`
//!   sink (cleared, not freed, between iterations).
//! - `tunnel_encrypt/raw_seal/<size>`: the floor for the same work: for each
//!   TLS record the session produced for that batch (same plaintext lengths,
//!   content-type byte included), copy the plaintext into the sink, append
//!   the content type, seal in place with the negotiated AEAD (per-record
//!   nonce, record header as AAD) and append the tag.
//! - `tunnel_decrypt/session/<size>`: the peer reads one batch's TLS bytes
//!   the way the driver reads a socket (`driver::receive`: straight into
//!   the session's receive buffer, `handle_received_in_place`), then
//!   `poll_packet` until `None`. Each iteration gets fresh ciphertext,
//!   produced by the sending side in the untimed setup of `iter_batched`
//!   and consumed in order, so TLS sequence numbers stay valid.
//! - `tunnel_decrypt/session_copied/<size>`: the same through the copying
//!   input, as a caller without access to the buffer would do it: each
//!   read goes to a 64 KiB scratch buffer, then `handle_received` (one
//!   copy more per byte than the zero-copy path).
//! - `tunnel_decrypt/raw_open/<size>`: copy each record's ciphertext into a
//!   scratch buffer and open it in place (records sealed once up front).
//!
//! - `session_ring`, `raw_seal_ring` / `raw_open_ring`: the same with
//!   ring's AEAD (`session` and `raw_*` use aws-lc-rs). The dataplane
//!   picks the faster library at start-up (`driver::aead`); this is the
//!   measurement behind that choice, and each session is compared with the
//!   raw AEAD of its own library.
//!
//! Throughput is the IP packet bytes of a batch in every case, so the
//! session/raw ratio of throughputs is the ratio of costs.
use std::{hint::black_box, time::Instant};

use aws_lc_rs::aead;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rustls::CipherSuite;
use sluice_bench::{Feed, Pki, SessionPair};
use sluice_core::tunnel::{AeadProvider, Session};
use sluice_runtime::driver;

/// Packets per batch (one `AF_XDP` RX batch).
const BATCH: usize = 64;
/// IP packet sizes.
const SIZES: [usize; 4] = [64, 512, 1400, 9000];
/// TLS 1.3 record header: application data, legacy version 0x0303.
const RECORD_HEADER: usize = 5;

/// An IPv4/UDP packet of `len` bytes (header fields valid, payload a
/// pattern): the session does not parse it, but it looks like traffic.
fn ip_packet(len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    p[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 10, 203, 0, 113, 10,
    ]);
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

/// One batch through `client`: encapsulate, encrypt, write to `sink`.
fn send_batch(client: &mut Session, packet: &[u8], sink: &mut Vec<u8>, now: Instant) {
    for _ in 0..BATCH {
        client.send_packet(packet).expect("send_packet");
    }
    client.flush();
    while let Some(bytes) = client.poll_transmit(now) {
        sink.extend_from_slice(bytes);
        let n = bytes.len();
        client.transmitted(n, now);
    }
}

/// One batch into `server`: decrypt, decapsulate, drain. Returns the packet
/// bytes delivered.
fn receive_batch(server: &mut Session, wire: &[u8], now: Instant) -> usize {
    let mut feed = Feed(wire);
    let mut got = 0;
    loop {
        let more = driver::receive(server, &mut feed, now, driver::READ_BUDGET)
            .expect("receive")
            .more;
        while let Some(p) = server.poll_packet() {
            got += black_box(p).len();
        }
        if !more {
            return got;
        }
    }
}

/// [`receive_batch`] through the copying input: each read into `scratch`,
/// then `handle_received`.
fn receive_batch_copied(
    server: &mut Session,
    wire: &[u8],
    scratch: &mut [u8],
    now: Instant,
) -> usize {
    let mut feed = Feed(wire);
    let mut got = 0;
    while let Ok(n) = std::io::Read::read(&mut feed, scratch) {
        let mut rest = &scratch[..n];
        while !rest.is_empty() {
            let taken = server.handle_received(rest, now).expect("handle_received");
            rest = &rest[taken..];
            while let Some(p) = server.poll_packet() {
                got += black_box(p).len();
            }
        }
    }
    got
}

/// The plaintext lengths (content-type byte included) of the TLS records
/// in `wire`.
fn record_lengths(wire: &[u8], tag_len: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = wire;
    while rest.len() >= RECORD_HEADER {
        assert_eq!(rest[0], 0x17, "application data record");
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        out.push(len - tag_len);
        rest = &rest[RECORD_HEADER + len..];
    }
    assert!(rest.is_empty(), "whole records");
    out
}

/// The AEAD rustls negotiated, as an aws-lc-rs algorithm.
fn negotiated_aead(s: &Session) -> &'static aead::Algorithm {
    let suite = s.cipher_suite().expect("handshake done").suite();
    match suite {
        CipherSuite::TLS13_AES_256_GCM_SHA384 => &aead::AES_256_GCM,
        CipherSuite::TLS13_AES_128_GCM_SHA256 => &aead::AES_128_GCM,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => &aead::CHACHA20_POLY1305,
        other => panic!("unexpected suite {other:?}"),
    }
}

/// A key of either provider (one per bench: size does not matter).
#[allow(clippy::large_enum_variant, reason = "one value per bench")]
enum Key {
    AwsLc(aead::LessSafeKey),
    Ring(ring::aead::LessSafeKey),
}

/// A raw TLS 1.3-style record protector: key, static IV, sequence number.
struct RawAead {
    key: Key,
    iv: [u8; 12],
}

impl RawAead {
    /// A raw protector from `provider`'s library.
    fn new(alg: &'static aead::Algorithm, provider: AeadProvider) -> Self {
        let key_bytes: Vec<u8> = (0..alg.key_len()).map(|i| i as u8 ^ 0x5a).collect();
        let key = match provider {
            AeadProvider::AwsLcRs => Key::AwsLc(aead::LessSafeKey::new(
                aead::UnboundKey::new(alg, &key_bytes).expect("key"),
            )),
            AeadProvider::Ring => {
                let ring_alg = if alg == &aead::AES_256_GCM {
                    &ring::aead::AES_256_GCM
                } else if alg == &aead::AES_128_GCM {
                    &ring::aead::AES_128_GCM
                } else {
                    &ring::aead::CHACHA20_POLY1305
                };
                Key::Ring(ring::aead::LessSafeKey::new(
                    ring::aead::UnboundKey::new(ring_alg, &key_bytes).expect("key"),
                ))
            }
        };
        Self {
            key,
            iv: [0x3c; 12],
        }
    }

    fn nonce(&self, seq: u64) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    /// Appends one sealed record of `plain` (+ content type) to `out`.
    fn seal_record(&self, seq: u64, plain: &[u8], out: &mut Vec<u8>) {
        let len = plain.len() + 1 + 16;
        let header = [0x17, 3, 3, (len >> 8) as u8, len as u8];
        out.extend_from_slice(&header);
        let start = out.len();
        out.extend_from_slice(plain);
        out.push(0x17);
        let n = self.nonce(seq);
        match &self.key {
            Key::AwsLc(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        aead::Nonce::assume_unique_for_key(n),
                        aead::Aad::from(header),
                        &mut out[start..],
                    )
                    .expect("seal");
                out.extend_from_slice(tag.as_ref());
            }
            Key::Ring(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(n),
                        ring::aead::Aad::from(header),
                        &mut out[start..],
                    )
                    .expect("seal");
                out.extend_from_slice(tag.as_ref());
            }
        }
    }

    /// Opens `body` (ciphertext and tag) in place; returns the plaintext
    /// length (content type included).
    fn open(&self, seq: u64, header: [u8; RECORD_HEADER], body: &mut [u8]) -> usize {
        let n = self.nonce(seq);
        match &self.key {
            Key::AwsLc(k) => k
                .open_in_place(
                    aead::Nonce::assume_unique_for_key(n),
                    aead::Aad::from(header),
                    body,
                )
                .expect("open")
                .len(),
            Key::Ring(k) => k
                .open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(n),
                    ring::aead::Aad::from(header),
                    body,
                )
                .expect("open")
                .len(),
        }
    }
}

/// Per AEAD library: the session's setting, and the bench names of the
/// session and of its raw baselines.
const PROVIDERS: [(AeadProvider, &str, &str, &str); 2] = [
    (AeadProvider::AwsLcRs, "session", "raw_seal", "raw_open"),
    (
        AeadProvider::Ring,
        "session_ring",
        "raw_seal_ring",
        "raw_open_ring",
    ),
];

fn bench_encrypt(c: &mut Criterion, pki: &Pki) {
    let mut g = c.benchmark_group("tunnel_encrypt");
    for size in SIZES {
        let packet = ip_packet(size);
        g.throughput(Throughput::Bytes((BATCH * size) as u64));
        for (aead, session_name, seal_name, _) in PROVIDERS {
            let mut pair = SessionPair::established_with(pki, aead);
            let alg = negotiated_aead(&pair.client);
            let now = Instant::now();
            let mut sink = Vec::with_capacity(2 * BATCH * (size + 64));
            send_batch(&mut pair.client, &packet, &mut sink, now);
            let records = record_lengths(&sink, alg.tag_len());
            eprintln!(
                "tunnel_encrypt/{session_name}/{size}: {alg:?}, {} records per batch of {BATCH}, {} TLS bytes",
                records.len(),
                sink.len()
            );
            g.bench_function(format!("{session_name}/{size}"), |b| {
                b.iter(|| {
                    sink.clear();
                    send_batch(&mut pair.client, black_box(&packet), &mut sink, now);
                    black_box(sink.len())
                });
            });
            let total: usize = records.iter().sum();
            let plain: Vec<u8> = packet.iter().copied().cycle().take(total).collect();
            let raw = RawAead::new(alg, aead);
            let mut seq = 0u64;
            g.bench_function(format!("{seal_name}/{size}"), |b| {
                b.iter(|| {
                    sink.clear();
                    let mut rest = black_box(&plain[..]);
                    for &len in &records {
                        let (rec, tail) = rest.split_at(len - 1);
                        raw.seal_record(seq, rec, &mut sink);
                        seq += 1;
                        rest = tail;
                    }
                    black_box(sink.len())
                });
            });
        }
    }
    g.finish();
}

fn bench_decrypt(c: &mut Criterion, pki: &Pki) {
    let mut g = c.benchmark_group("tunnel_decrypt");
    for size in SIZES {
        let packet = ip_packet(size);
        g.throughput(Throughput::Bytes((BATCH * size) as u64));
        for (aead, session_name, _, open_name) in PROVIDERS {
            let pair = SessionPair::established_with(pki, aead);
            let alg = negotiated_aead(&pair.server);
            let now = Instant::now();
            let SessionPair {
                mut client,
                mut server,
            } = pair;
            // Check once that a batch arrives whole.
            let mut wire = Vec::new();
            send_batch(&mut client, &packet, &mut wire, now);
            assert_eq!(receive_batch(&mut server, &wire, now), BATCH * size);
            let records = record_lengths(&wire, alg.tag_len());
            if aead == AeadProvider::AwsLcRs {
                let mut scratch = vec![0u8; 64 * 1024];
                g.bench_function(format!("session_copied/{size}"), |b| {
                    b.iter_batched(
                        || {
                            let mut w = Vec::with_capacity(wire.len());
                            send_batch(&mut client, &packet, &mut w, now);
                            w
                        },
                        |w| {
                            black_box(receive_batch_copied(&mut server, &w, &mut scratch, now));
                            w
                        },
                        BatchSize::SmallInput,
                    );
                });
            }
            g.bench_function(format!("{session_name}/{size}"), |b| {
                b.iter_batched(
                    || {
                        let mut w = Vec::with_capacity(wire.len());
                        send_batch(&mut client, &packet, &mut w, now);
                        w
                    },
                    |w| {
                        black_box(receive_batch(&mut server, &w, now));
                        w
                    },
                    BatchSize::SmallInput,
                );
            });
            // Raw baseline: the same record sizes, sealed once; opening is
            // stateless, so the same records serve every iteration.
            let total: usize = records.iter().sum();
            let plain: Vec<u8> = packet.iter().copied().cycle().take(total).collect();
            let raw = RawAead::new(alg, aead);
            let mut sealed = Vec::with_capacity(records.len());
            let mut rest = &plain[..];
            for (seq, &len) in records.iter().enumerate() {
                let (rec, tail) = rest.split_at(len - 1);
                let mut out = Vec::new();
                raw.seal_record(seq as u64, rec, &mut out);
                sealed.push(out);
                rest = tail;
            }
            let mut scratch = Vec::with_capacity(records.iter().max().copied().unwrap_or(0) + 64);
            g.bench_function(format!("{open_name}/{size}"), |b| {
                b.iter(|| {
                    let mut got = 0;
                    for (seq, rec) in black_box(&sealed).iter().enumerate() {
                        let header: [u8; RECORD_HEADER] =
                            rec[..RECORD_HEADER].try_into().expect("header");
                        scratch.clear();
                        scratch.extend_from_slice(&rec[RECORD_HEADER..]);
                        got += raw.open(seq as u64, header, &mut scratch) - 1;
                    }
                    black_box(got)
                });
            });
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let pki = Pki::new();
    bench_encrypt(c, &pki);
    bench_decrypt(c, &pki);
}

criterion_group!(tunnel, benches);
criterion_main!(tunnel);
