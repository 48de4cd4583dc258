//! DNS messages as the domain-bypass observer sees them: a tracked query
//! for a listed name, then hostile bytes as its answer (and as queries).
//! Nothing may panic, and whatever installs must be a unicast address on
//! the question's CNAME chain with a TTL inside the bounds.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice::dns::{DomainSet, Endpoints, Limits, Observer, Pattern, Transport};

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
