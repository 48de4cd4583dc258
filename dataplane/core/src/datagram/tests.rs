//! Two datagram sessions (a gateway's and an edge's) over keys from one
//! master secret; records moved by hand, so loss, reordering, replay and
//! forgery are the test's to choose. Time is mocked.
use std::time::{Duration, Instant};

use rustls::{Side, SupportedCipherSuite, crypto::aws_lc_rs::cipher_suite as cs};

use super::*;
use crate::wire::datagram::{self as w, Packet};

const GW_ID: u32 = 0x0000_0a01;
const EDGE_ID: u32 = 0xed6e_0001;

struct Pair {
    gw: DatagramSession,
    edge: DatagramSession,
    now: Instant,
}

fn pair_with(
    suite: SupportedCipherSuite,
    gw_cfg: DatagramConfig,
    edge_cfg: DatagramConfig,
) -> Pair {
    let now = Instant::now();
    let master = [0x42; 32];
    let c = DatagramKeys::from_master_for_tests(suite, Side::Client, &master).unwrap();
    let s = DatagramKeys::from_master_for_tests(suite, Side::Server, &master).unwrap();
    Pair {
        gw: DatagramSession::new(c, GW_ID, EDGE_ID, gw_cfg, now).unwrap(),
        edge: DatagramSession::new(s, EDGE_ID, GW_ID, edge_cfg, now).unwrap(),
        now,
    }
}

fn pair() -> Pair {
    pair_with(
        cs::TLS13_AES_256_GCM_SHA384,
        DatagramConfig::default(),
        DatagramConfig::default(),
    )
}

/// One record from `from` holding `packets` (all of them must fit).
fn seal(from: &mut DatagramSession, packets: &[&[u8]], now: Instant) -> Vec<u8> {
    let mut out = vec![0u8; 2048];
    let s = from.seal(packets, now, &mut out).unwrap();
    assert_eq!(s.packets, packets.len());
    out.truncate(s.len);
    out
}

/// Opens a copy of `rec` (records are opened in place); returns the
/// packets.
fn open(to: &mut DatagramSession, rec: &[u8], now: Instant) -> Result<Vec<Vec<u8>>, DropReason> {
    let mut buf = rec.to_vec();
    let o = to.open(&mut buf, now)?;
    Ok(o.packets(&buf).map(<[u8]>::to_vec).collect())
}

fn ip(i: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0x45; len];
    p[2..4].copy_from_slice(&i.to_be_bytes());
    p
}

#[test]
fn several_packets_round_trip_in_one_record_every_suite_and_library() {
    let suites = [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let libs = [AeadProvider::AwsLcRs, AeadProvider::Ring];
    for suite in suites {
        for (a, b) in [(libs[0], libs[1]), (libs[1], libs[0])] {
            let cfg = |aead| DatagramConfig {
                aead,
                ..DatagramConfig::default()
            };
            let mut p = pair_with(suite, cfg(a), cfg(b));
            let pkts = [ip(1, 60), ip(2, 400), ip(3, 20)];
            let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
            let rec = seal(&mut p.gw, &refs, p.now);
            assert_eq!(rec.len(), w::MIN_LEN + 3 * 2 + 480);
            // Nothing of the packets shows in the clear.
            assert!(!rec.windows(20).any(|win| win == &pkts[2][..]));
            assert_eq!(open(&mut p.edge, &rec, p.now).unwrap(), pkts, "{suite:?}");
            let back = seal(&mut p.edge, &[&pkts[1]], p.now);
            assert_eq!(open(&mut p.gw, &back, p.now).unwrap(), [pkts[1].clone()]);
            assert_eq!(p.edge.stats().rx_packets, 3);
            assert_eq!(p.edge.stats().rx_bytes, 480);
            assert_eq!(p.gw.stats().tx_packets, 3);
        }
    }
}

#[test]
fn batches_are_cut_at_the_maximum_size() {
    let mut p = pair();
    let pkts: Vec<Vec<u8>> = (0..10).map(|i| ip(i, 500)).collect();
    let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
    let mut out = [0u8; 4096];
    let mut got = Vec::new();
    let mut rest = &refs[..];
    while !rest.is_empty() {
        let s = p.gw.seal(rest, p.now, &mut out).unwrap();
        assert!(s.len <= 1452, "{s:?}");
        // 2 x 502 fit in 1452 - 32; 3 do not.
        assert_eq!(s.packets, rest.len().min(2));
        got.extend(open(&mut p.edge, &out[..s.len], p.now).unwrap());
        rest = &rest[s.packets..];
    }
    assert_eq!(got, pkts);
    // A packet larger than a record, or the buffer, is refused; no
    // counter is used.
    let big = ip(0, 1419);
    assert_eq!(
        p.gw.seal(&[&big], p.now, &mut out),
        Err(SealError::TooLarge)
    );
    assert!(
        p.gw.seal(&[&big[..1418]], p.now, &mut out).is_ok(),
        "1452 - 32 - 2"
    );
    assert_eq!(
        p.gw.seal(&[&pkts[0]], p.now, &mut out[..100]),
        Err(SealError::TooLarge)
    );
    assert_eq!(
        p.gw.seal(&[&[]], p.now, &mut out),
        Err(SealError::EmptyPacket)
    );
    // An empty batch is an empty record: a keepalive.
    let s = p.gw.seal(&[], p.now, &mut out).unwrap();
    assert_eq!((s.len, s.packets), (w::MIN_LEN, 0));
    assert_eq!(
        open(&mut p.edge, &out[..s.len], p.now).unwrap(),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(p.gw.stats().tx_records, 7, "refused seals used no counter");
}

#[test]
fn replays_are_dropped_and_counted() {
    let mut p = pair();
    let rec = seal(&mut p.gw, &[b"\x45one"], p.now);
    assert!(open(&mut p.edge, &rec, p.now).is_ok());
    assert_eq!(open(&mut p.edge, &rec, p.now), Err(DropReason::Replayed));
    assert_eq!(open(&mut p.edge, &rec, p.now), Err(DropReason::Replayed));
    assert_eq!(p.edge.drops().get(DropReason::Replayed), 2);
    assert_eq!(p.edge.stats().rx_records, 1);
}

#[test]
fn reordered_records_open_once_each_and_only_the_newest_may_move_the_peer() {
    let mut p = pair();
    let recs: Vec<Vec<u8>> = (0..300u16)
        .map(|i| seal(&mut p.gw, &[&ip(i, 40)], p.now))
        .collect();
    let mut rng = crate::testutil::XorShift::new(77);
    let mut order: Vec<usize> = (0..recs.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below_usize(i + 1));
    }
    let mut highest = None;
    for &i in &order {
        let mut buf = recs[i].clone();
        let o = p.edge.open(&mut buf, p.now).unwrap();
        assert_eq!(o.counter, i as u64);
        assert_eq!(o.newest, highest.is_none_or(|h| i > h), "record {i}");
        if o.newest {
            highest = Some(i);
        }
        assert_eq!(o.packets(&buf).next(), Some(&ip(i as u16, 40)[..]));
    }
    for rec in &recs {
        assert_eq!(open(&mut p.edge, rec, p.now), Err(DropReason::Replayed));
    }
    assert_eq!(p.edge.highest_received(), Some(299));
}

#[test]
fn counters_below_the_window_are_too_old() {
    let mut p = pair();
    let first = seal(&mut p.gw, &[b"\x45a"], p.now);
    let n = replay::WINDOW + 1;
    let mut last = Vec::new();
    for _ in 0..n {
        last = seal(&mut p.gw, &[], p.now);
    }
    assert!(open(&mut p.edge, &last, p.now).is_ok());
    assert_eq!(open(&mut p.edge, &first, p.now), Err(DropReason::TooOld));
    assert_eq!(p.edge.drops().get(DropReason::TooOld), 1);
}

/// Every bit flipped anywhere is refused, and a forged record, however
/// high its counter, neither moves the window nor marks a counter seen.
#[test]
fn forged_records_change_nothing() {
    let mut p = pair();
    let rec = seal(&mut p.gw, &[b"\x45payload"], p.now);
    for i in 0..rec.len() {
        for bit in [0x01, 0x80] {
            let mut bad = rec.clone();
            bad[i] ^= bit;
            let r = open(&mut p.edge, &bad, p.now);
            assert!(r.is_err(), "byte {i} bit {bit:#x} went unnoticed");
        }
    }
    let mut forged = rec.clone();
    Packet::new_unchecked(&mut forged[..]).set_counter(1_000_000);
    assert_eq!(
        open(&mut p.edge, &forged, p.now),
        Err(DropReason::AuthFailed)
    );
    assert_eq!(p.edge.highest_received(), None, "the window did not move");
    // The genuine record still opens, as the newest.
    let mut buf = rec.clone();
    let o = p.edge.open(&mut buf, p.now).unwrap();
    assert!(o.newest);
    let d = p.edge.drops();
    assert!(d.get(DropReason::AuthFailed) > 0);
    assert!(d.get(DropReason::Malformed) > 0, "type and reserved bytes");
    assert!(d.get(DropReason::UnknownReceiver) > 0, "receiver id bytes");
    assert_eq!(d.total(), d.iter().map(|(_, n)| n).sum::<u64>());
}

#[test]
fn wrong_receiver_and_wrong_epochs_are_refused_before_the_aead() {
    let mut p = pair();
    let rec = seal(&mut p.gw, &[b"\x45x"], p.now);
    // Sealed for the edge: the gateway's own session is not its receiver.
    assert_eq!(
        open(&mut p.gw, &rec, p.now),
        Err(DropReason::UnknownReceiver)
    );
    for (epoch, why) in [
        (2u8, DropReason::FutureEpoch),
        (100, DropReason::FutureEpoch),
        (255, DropReason::StaleEpoch),
        (200, DropReason::StaleEpoch),
    ] {
        let mut bad = rec.clone();
        Packet::new_unchecked(&mut bad[..]).set_send_epoch(epoch);
        assert_eq!(open(&mut p.edge, &bad, p.now), Err(why), "epoch {epoch}");
    }
    // Epoch 1 is the next key: tried, and refused by the AEAD (it was not
    // sealed with it); the receiver did not move to it.
    let mut bad = rec.clone();
    Packet::new_unchecked(&mut bad[..]).set_send_epoch(1);
    assert_eq!(open(&mut p.edge, &bad, p.now), Err(DropReason::AuthFailed));
    assert_eq!(p.edge.rx_epoch(), 0);
    assert!(open(&mut p.edge, &rec, p.now).is_ok());
}

/// The sender rekeys after `rekey_after_records`; records of the old key
/// still in flight open during the grace period, in any order with the
/// new key's; counters keep growing across the boundary; the sender never
/// runs two epochs ahead of what its peer has shown it opens.
#[test]
fn rekey_across_the_boundary_with_records_in_flight() {
    let cfg = DatagramConfig {
        rekey_after_records: 4,
        previous_key_grace: Duration::from_secs(2),
        ..DatagramConfig::default()
    };
    let mut p = pair_with(cs::TLS13_AES_128_GCM_SHA256, cfg.clone(), cfg);
    let recs: Vec<Vec<u8>> = (0..12u16)
        .map(|i| seal(&mut p.gw, &[&ip(i, 30)], p.now))
        .collect();
    let epochs: Vec<u8> = recs
        .iter()
        .map(|r| Packet::new_checked(&r[..]).unwrap().send_epoch())
        .collect();
    // Epoch 1 after 4 records; not 2: the edge has not shown it opens 1.
    assert_eq!(epochs, [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
    let counters: Vec<u64> = recs
        .iter()
        .map(|r| Packet::new_checked(&r[..]).unwrap().counter())
        .collect();
    assert_eq!(
        counters,
        (0..12).collect::<Vec<_>>(),
        "one counter across keys"
    );
    // Epoch 1 arrives first: the edge follows (and owes an ack).
    assert!(open(&mut p.edge, &recs[5], p.now).is_ok());
    assert_eq!((p.edge.rx_epoch(), p.edge.stats().rekeys_rx), (1, 1));
    assert!(p.edge.wants_transmit());
    // Old-key records in flight still open within the grace period.
    for i in [3, 0, 1] {
        assert!(open(&mut p.edge, &recs[i], p.now).is_ok(), "record {i}");
    }
    for (i, rec) in recs.iter().enumerate().skip(6) {
        assert!(open(&mut p.edge, rec, p.now).is_ok(), "record {i}");
    }
    // After the grace period the old key is gone.
    p.now += Duration::from_secs(3);
    assert_eq!(
        open(&mut p.edge, &recs[2], p.now),
        Err(DropReason::StaleEpoch)
    );
    // The edge's ack (an empty record) lets the gateway move on.
    let mut out = [0u8; 256];
    let n = p.edge.poll_transmit(p.now, &mut out).unwrap().unwrap();
    assert!(!p.edge.wants_transmit());
    assert_eq!(Packet::new_checked(&out[..n]).unwrap().recv_epoch(), 1);
    assert!(open(&mut p.gw, &out[..n], p.now).is_ok());
    let next = seal(&mut p.gw, &[b"\x45z"], p.now);
    assert_eq!(Packet::new_checked(&next[..]).unwrap().send_epoch(), 2);
    assert_eq!(
        open(&mut p.edge, &next, p.now).unwrap(),
        [b"\x45z".to_vec()]
    );
    assert_eq!((p.gw.tx_epoch(), p.edge.rx_epoch()), (2, 2));
    assert_eq!(p.gw.stats().rekeys_tx, 2);
}

#[test]
fn rekey_after_time_and_only_for_a_used_key() {
    let mut p = pair();
    p.now += Duration::from_secs(500);
    // The key was never used: no rekey for time alone.
    let r0 = seal(&mut p.gw, &[], p.now);
    assert_eq!(p.gw.tx_epoch(), 0);
    p.now += Duration::from_secs(121);
    let r1 = seal(&mut p.gw, &[], p.now);
    assert_eq!(p.gw.tx_epoch(), 1);
    assert!(open(&mut p.edge, &r1, p.now).is_ok());
    assert!(open(&mut p.edge, &r0, p.now).is_ok(), "in its grace period");
}

/// A peer that never answers never lets us rekey: sealing stops at the
/// per-key limit instead of overusing the key.
#[test]
fn a_silent_peer_exhausts_the_key_and_sealing_stops() {
    let cfg = DatagramConfig {
        rekey_after_records: 2,
        ..DatagramConfig::default()
    };
    let mut p = pair_with(cs::TLS13_AES_256_GCM_SHA384, cfg.clone(), cfg);
    for _ in 0..3 {
        seal(&mut p.gw, &[], p.now);
    }
    assert_eq!(p.gw.tx_epoch(), 1);
    p.gw.tx_in_epoch = MAX_RECORDS_PER_KEY - 1;
    seal(&mut p.gw, &[], p.now);
    let mut out = [0u8; 64];
    assert_eq!(
        p.gw.seal(&[], p.now, &mut out),
        Err(SealError::KeyExhausted)
    );
    assert_eq!(p.gw.tx_epoch(), 1, "still not allowed to move on");
    assert_eq!(
        p.gw.send_echo(1, p.now, &mut out),
        Err(SealError::KeyExhausted)
    );
}

#[test]
fn echo_round_trip_over_datagrams() {
    let mut p = pair();
    let mut out = [0u8; 256];
    p.now += Duration::from_millis(1500);
    let n = p.gw.send_echo(7, p.now, &mut out).unwrap();
    let req = out[..n].to_vec();
    // A control record delivers no packets; the edge owes a reply.
    assert_eq!(
        open(&mut p.edge, &req, p.now).unwrap(),
        Vec::<Vec<u8>>::new()
    );
    assert!(p.edge.wants_transmit());
    p.now += Duration::from_millis(12);
    let n = p.edge.poll_transmit(p.now, &mut out).unwrap().unwrap();
    assert_eq!(p.edge.poll_transmit(p.now, &mut out), Ok(None));
    let reply = out[..n].to_vec();
    p.now += Duration::from_millis(13);
    assert!(open(&mut p.gw, &reply, p.now).is_ok());
    assert_eq!(
        p.gw.poll_event(),
        Some(DatagramEvent::EchoReply {
            seq: 7,
            sent_at_us: 1_500_000,
            rtt: Duration::from_millis(25),
        })
    );
    assert_eq!(p.gw.poll_event(), None);
    let (g, e) = (p.gw.stats(), p.edge.stats());
    assert_eq!((g.echo_requests_tx, g.echo_replies_rx), (1, 1));
    assert_eq!(e.echo_requests_rx, 1);
}

/// Requests beyond the reply queue are counted, not queued; one record
/// carries the queued answers.
#[test]
fn echo_requests_are_bounded() {
    let mut p = pair();
    let mut out = [0u8; 256];
    for seq in 0..20 {
        let n = p.gw.send_echo(seq, p.now, &mut out).unwrap();
        let req = out[..n].to_vec();
        open(&mut p.edge, &req, p.now).unwrap();
    }
    assert_eq!(p.edge.stats().echo_overflow, 12);
    let mut big = [0u8; 1500];
    let n = p.edge.poll_transmit(p.now, &mut big).unwrap().unwrap();
    let mut rec = big[..n].to_vec();
    assert_eq!(p.gw.open(&mut rec, p.now).unwrap().items, 8);
    let seqs: Vec<u64> = std::iter::from_fn(|| p.gw.poll_event())
        .map(|DatagramEvent::EchoReply { seq, .. }| seq)
        .collect();
    assert_eq!(seqs, (0..8).collect::<Vec<_>>());
}

/// At the integrity limit the session refuses everything, genuine
/// records too (RFC 9001 §6.6).
#[test]
fn integrity_limit_closes_the_session() {
    let mut p = pair();
    let rec = seal(&mut p.gw, &[b"\x45ok"], p.now);
    let mut forged = rec.clone();
    *forged.last_mut().unwrap() ^= 1;
    p.edge.auth_failures = p.edge.integrity_limit - 1;
    assert_eq!(
        open(&mut p.edge, &forged, p.now),
        Err(DropReason::AuthFailed)
    );
    assert!(p.edge.is_closed());
    assert_eq!(open(&mut p.edge, &rec, p.now), Err(DropReason::Closed));
    let mut out = [0u8; 64];
    assert_eq!(p.edge.seal(&[], p.now, &mut out), Err(SealError::Closed));
    assert_eq!(p.edge.drops().get(DropReason::Closed), 1);
}

#[test]
fn debug_output_holds_no_key() {
    let p = pair();
    let dbg = format!("{:?}", p.gw);
    assert!(dbg.contains("tx_epoch: 0"), "{dbg}");
    assert!(!dbg.contains("iv") && !dbg.contains("secret"), "{dbg}");
}

/// A reply's timestamp is the peer's to write: one far beyond any
/// `Instant` gives a zero round-trip time, not a panic.
#[test]
fn echo_reply_with_any_timestamp_is_safe() {
    let mut p = pair();
    let mut out = [0u8; 256];
    let bogus = [
        Echo {
            seq: 1,
            sent_at_us: u64::MAX,
        },
        Echo {
            seq: 2,
            sent_at_us: 5_000_000,
        },
    ];
    let n = p
        .edge
        .seal_control(ControlKind::EchoReply, &bogus, p.now, &mut out)
        .unwrap();
    assert!(p.gw.open(&mut out[..n], p.now).is_ok());
    let rtts: Vec<Duration> = std::iter::from_fn(|| p.gw.poll_event())
        .map(|DatagramEvent::EchoReply { rtt, .. }| rtt)
        .collect();
    assert_eq!(rtts, [Duration::ZERO, Duration::ZERO], "from the future: 0");
}

/// Sealed where it lies, a packet opens as it would sealed by copy, the
/// record the same bytes as `seal`'s for the same counter; a buffer
/// without room for the tag, or a packet over the maximum, is refused
/// and left unchanged.
#[test]
fn a_packet_sealed_in_place_opens_and_matches_the_copied_record() {
    let mut p = pair();
    let mut q = pair();
    let pkt = ip(7, 1400);
    let mut buf = vec![0u8; 4096];
    buf[IN_PLACE_OFFSET..IN_PLACE_OFFSET + pkt.len()].copy_from_slice(&pkt);
    let n = p.gw.seal_in_place(&mut buf, pkt.len(), p.now).unwrap();
    assert_eq!(n, MIN_LEN + ITEM_HEADER_LEN + pkt.len());
    let copied = seal(&mut q.gw, &[&pkt], q.now);
    assert_eq!(&buf[..n], &copied[..], "the same record as seal's");
    assert_eq!(open(&mut p.edge, &buf[..n], p.now).unwrap(), [pkt.clone()]);

    // No room for the tag; larger than max_datagram; empty.
    let mut short = vec![0u8; IN_PLACE_OFFSET + pkt.len() + w::TAG_LEN - 1];
    short[IN_PLACE_OFFSET..IN_PLACE_OFFSET + pkt.len()].copy_from_slice(&pkt);
    let before = short.clone();
    assert_eq!(
        p.gw.seal_in_place(&mut short, pkt.len(), p.now),
        Err(SealError::TooLarge)
    );
    assert_eq!(short, before, "unchanged on an error");
    let big = 1453 - MIN_LEN - ITEM_HEADER_LEN;
    assert_eq!(
        p.gw.seal_in_place(&mut vec![0u8; 4096], big, p.now),
        Err(SealError::TooLarge)
    );
    assert_eq!(
        p.gw.seal_in_place(&mut buf, 0, p.now),
        Err(SealError::EmptyPacket)
    );
}
