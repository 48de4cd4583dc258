//! The datagram transport's receive path, differentially: a gateway's and
//! an edge's datagram sessions exchange genuine records, which the input
//! delays, reorders, replays, corrupts and mixes with arbitrary bytes,
//! while time jumps and keys roll over (rekeying after very few records).
//! No input may panic; and whatever the order:
//! - a genuine record opens at most once, and then holds exactly what was
//!   sealed;
//! - a replayed, corrupted or made-up record never opens;
//! - a genuine record is refused as forged only if its key epoch is
//!   neither the receiver's current one nor the next.
//!
//! Input: the first byte picks the suite and the rekeying interval; then
//! `op(u8) arg(u8) [bytes]`, repeated (see the `match`).
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rustls::{Side, crypto::aws_lc_rs::cipher_suite as cs};
use sluice_core::{
    datagram::{DatagramConfig, DatagramKeys, DatagramSession, DropReason},
    tunnel::AeadProvider,
    wire::datagram::Packet,
};

/// A record sealed by the gateway, as sent.
struct Sent {
    bytes: Vec<u8>,
    packets: Vec<Vec<u8>>,
    epoch: u64,
    opened: bool,
}

const MAX_INFLIGHT: usize = 64;

fn session(
    side: Side,
    suite: usize,
    rekey: u64,
    aead: AeadProvider,
    now: Instant,
) -> DatagramSession {
    let suite = [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ][suite];
    let keys = DatagramKeys::from_master_for_tests(suite, side, &[0x33; 32]).expect("suite");
    let (local, peer) = if side == Side::Client { (1, 2) } else { (2, 1) };
    let cfg = DatagramConfig {
        rekey_after_records: rekey,
        previous_key_grace: Duration::from_secs(1),
        aead,
        ..DatagramConfig::default()
    };
    DatagramSession::new(keys, local, peer, cfg, now).expect("keys")
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let mut now = Instant::now();
    let suite = usize::from(first % 3);
    let rekey = 1 + u64::from((first >> 2) & 7);
    let (a, b) = if first & 0x80 == 0 {
        (AeadProvider::AwsLcRs, AeadProvider::Ring)
    } else {
        (AeadProvider::Ring, AeadProvider::AwsLcRs)
    };
    let mut gw = session(Side::Client, suite, rekey, a, now);
    let mut edge = session(Side::Server, suite, rekey, b, now);
    let mut inflight: Vec<Sent> = Vec::new();
    let mut out = vec![0u8; 1500];
    let take = |rest: &mut &[u8], n: usize| -> Vec<u8> {
        let n = n.min(rest.len());
        let (h, t) = rest.split_at(n);
        *rest = t;
        h.to_vec()
    };
    while let [op, arg, tail @ ..] = rest {
        rest = tail;
        let arg = *arg;
        match op % 8 {
            // Arbitrary bytes: never open.
            0 => {
                let mut junk = take(&mut rest, usize::from(arg));
                assert!(edge.open(&mut junk, now).is_err(), "made-up bytes opened");
            }
            // The gateway seals a batch of packets.
            1 => {
                let sizes = take(&mut rest, usize::from(arg % 8));
                let packets: Vec<Vec<u8>> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| vec![i as u8 ^ s; 1 + usize::from(s) * 3])
                    .collect();
                let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
                if let Ok(s) = gw.seal(&refs, now, &mut out) {
                    if inflight.len() == MAX_INFLIGHT {
                        inflight.remove(0);
                    }
                    inflight.push(Sent {
                        bytes: out[..s.len].to_vec(),
                        packets: packets[..s.packets].to_vec(),
                        epoch: gw.tx_epoch(),
                        opened: false,
                    });
                }
            }
            // Deliver (or replay) one record in flight.
            2 | 6 => {
                if inflight.is_empty() {
                    continue;
                }
                let i = usize::from(arg) % inflight.len();
                let sent = &mut inflight[i];
                let mut buf = sent.bytes.clone();
                match edge.open(&mut buf, now) {
                    Ok(o) => {
                        assert!(!sent.opened, "a record opened twice");
                        sent.opened = true;
                        let got: Vec<Vec<u8>> = o.packets(&buf).map(<[u8]>::to_vec).collect();
                        assert_eq!(got, sent.packets, "opened other bytes");
                    }
                    // The current and the next key open what they sealed.
                    Err(DropReason::AuthFailed) => assert!(
                        sent.epoch != edge.rx_epoch() && sent.epoch != edge.rx_epoch() + 1,
                        "a genuine record of epoch {} refused at epoch {}",
                        sent.epoch,
                        edge.rx_epoch()
                    ),
                    Err(_) => {}
                }
            }
            // A corrupted record never opens.
            3 => {
                if let Some(sent) = inflight.last() {
                    let mut bad = sent.bytes.clone();
                    let at = usize::from(arg) % bad.len();
                    let flip = take(&mut rest, 1).first().copied().unwrap_or(1).max(1);
                    bad[at] ^= flip;
                    assert!(
                        edge.open(&mut bad, now).is_err(),
                        "a corrupted record opened"
                    );
                }
            }
            // Time passes.
            4 => now += Duration::from_millis(u64::from(arg) * 50),
            // The edge's answers (acks, echo replies) reach the gateway;
            // the gateway probes.
            5 => {
                while let Ok(Some(n)) = edge.poll_transmit(now, &mut out) {
                    let _ = gw.open(&mut out[..n], now);
                }
                while gw.poll_event().is_some() {}
                if arg & 1 == 1
                    && let Ok(n) = gw.send_echo(u64::from(arg), now, &mut out)
                {
                    let mut rec = out[..n].to_vec();
                    let _ = edge.open(&mut rec, now);
                }
            }
            // A record with a rewritten header (receiver, epoch, counter):
            // never opens.
            _ => {
                if let Some(sent) = inflight.first() {
                    let mut bad = sent.bytes.clone();
                    let mut p = Packet::new_unchecked(&mut bad[..]);
                    match arg % 3 {
                        0 => p.set_send_epoch(p.send_epoch().wrapping_add(1 + arg / 3)),
                        1 => p.set_counter(p.counter() ^ (1 << (arg % 64))),
                        _ => p.set_recv_epoch(p.recv_epoch() ^ 1),
                    }
                    assert!(
                        edge.open(&mut bad, now).is_err(),
                        "a rewritten record opened"
                    );
                }
            }
        }
    }
    let d = edge.drops();
    assert_eq!(d.total(), d.iter().map(|(_, n)| n).sum::<u64>());
});
