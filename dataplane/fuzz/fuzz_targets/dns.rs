//! DNS messages as the domain-bypass observer sees them: a tracked query
//! for a listed name, then hostile bytes as its answer (and as queries),
//! and the same bytes as TCP segments (sequence numbers, flags and
//! lengths taken from the input) through the stream follower. Nothing may
//! panic, and whatever installs must be a unicast address on the
//! question's CNAME chain with a TTL inside the bounds.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice_core::dns::{
    DomainSet, Endpoints, Limits, Observer, Pattern, Transport,
    tcp::{Segment, StreamKey, TcpStreams},
};

/// A standard query, ID 0x1234, for `www.cdn.example` A, as a stub sends it.
const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
\x03www\x03cdn\x07example\x00\x00\x01\x00\x01";

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let domains = DomainSet::new(
        ["bypass.example", "*.cdn.example"].map(|p| Pattern::parse(p).unwrap()),
    );
    let mut o = Observer::new(domains, limits);
    let ends = Endpoints {
        client: "192.0.2.10:40000".parse().unwrap(),
        server: "203.0.113.53:53".parse().unwrap(),
        transport: Transport::Udp,
    };
    let now = Instant::now();
    o.handle_query(now, ends, QUERY).unwrap();
    let _ = o.handle_query(now, ends, data);
    let mut out = Vec::new();
    let _ = o.handle_response(now, ends, data, &mut out);
    let _ = o.handle_response(now + Duration::from_secs(1), ends, data, &mut out);
    // The input as TCP segments: [seq u32][flags u8][len u8][payload].
    let mut streams = TcpStreams::new(4);
    let key = StreamKey {
        from: ends.server,
        to: ends.client,
    };
    let tcp_ends = Endpoints {
        transport: Transport::Tcp,
        ..ends
    };
    o.handle_query(now, tcp_ends, QUERY).unwrap();
    let mut rest = data;
    while let [a, b, c, d, flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, r) = tail.split_at(n);
        let seg = Segment {
            seq: u32::from_be_bytes([*a, *b, *c, *d]),
            syn: flags & 2 != 0,
            end: flags & 5 != 0,
            payload,
        };
        streams.push(key, seg, |m| {
            let _ = o.handle_response(now, tcp_ends, m, &mut out);
        });
        rest = r;
    }
    assert!(streams.len() <= 4);
    for a in &out {
        assert!(a.ttl >= limits.ttl_floor && a.ttl <= limits.ttl_cap);
        assert!(!a.addr.is_loopback() && !a.addr.is_multicast() && !a.addr.is_unspecified());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = Pattern::parse(s) {
            // A valid pattern prints back to something that parses the same.
            assert_eq!(Pattern::parse(&p.to_string()), Ok(p));
        }
    }
});
