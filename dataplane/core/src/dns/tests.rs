#![allow(
    clippy::duration_suboptimal_units,
    reason = "TTLs read as seconds, as DNS writes them"
)]
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME},
    },
};

use super::*;

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn set(patterns: &[&str]) -> DomainSet {
    DomainSet::new(patterns.iter().map(|p| Pattern::parse(p).unwrap()))
}

const CLIENT: &str = "192.0.2.10:40000";
const SERVER: &str = "203.0.113.53:53";

fn ends() -> Endpoints {
    Endpoints {
        client: CLIENT.parse().unwrap(),
        server: SERVER.parse().unwrap(),
        transport: Transport::Udp,
    }
}

fn query(id: u16, qname: &str, qtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(name(qname), qtype));
    m
}

fn answer(q: &Message, records: Vec<Record>) -> Vec<u8> {
    let mut m = q.clone();
    m.set_message_type(MessageType::Response);
    for r in records {
        m.add_answer(r);
    }
    m.to_vec().unwrap()
}

fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
    )
}

fn aaaa(owner: &str, ttl: u32, ip: Ipv6Addr) -> Record {
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip)))
}

fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

fn observer() -> Observer {
    Observer::new(
        set(&["bypass.example", "*.cdn.example"]),
        Limits {
            ttl_floor: Duration::from_secs(30),
            ttl_cap: Duration::from_secs(600),
            max_pending: 4,
            query_timeout: Duration::from_secs(5),
        },
    )
}

fn ip4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

#[test]
fn patterns_parse_and_refuse() {
    assert_eq!(
        Pattern::parse("Bypass.Example."),
        Ok(Pattern::Exact("bypass.example".into()))
    );
    assert_eq!(
        Pattern::parse("*.cdn.example"),
        Ok(Pattern::Below("cdn.example".into()))
    );
    assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
    assert_eq!(Pattern::parse("*."), Err(PatternError::BadWildcard));
    assert_eq!(
        Pattern::parse("a.*.example"),
        Err(PatternError::BadWildcard)
    );
    assert_eq!(
        Pattern::parse("*example.com"),
        Err(PatternError::BadWildcard)
    );
    assert_eq!(Pattern::parse("**.example"), Err(PatternError::BadWildcard));
    assert!(matches!(
        Pattern::parse("a..example"),
        Err(PatternError::BadLabel(_))
    ));
    assert_eq!(
        Pattern::parse("exämple.com"),
        Err(PatternError::BadChar('ä'))
    );
    assert_eq!(Pattern::parse("a b.com"), Err(PatternError::BadChar(' ')));
    assert!(matches!(
        Pattern::parse(&format!("{}.com", "a".repeat(64))),
        Err(PatternError::BadLabel(_))
    ));
    let long = vec!["a".repeat(60); 5].join(".");
    assert_eq!(Pattern::parse(&long), Err(PatternError::TooLong));
    assert_eq!(
        Pattern::parse("*.cdn.example").unwrap().to_string(),
        "*.cdn.example"
    );
}

#[test]
fn domain_set_matches_exact_and_below() {
    let s = set(&["bypass.example", "*.cdn.example"]);
    assert!(s.matches("bypass.example"));
    assert!(!s.matches("www.bypass.example"));
    assert!(
        !s.matches("cdn.example"),
        "a wildcard is below, not the apex"
    );
    assert!(s.matches("a.cdn.example"));
    assert!(s.matches("x.y.cdn.example"));
    assert!(!s.matches("acdn.example"));
    assert!(!s.matches("example"));
    assert!(!s.matches(""));
    assert_eq!(normalize("WWW.Cdn.Example."), "www.cdn.example");
}

#[test]
fn answer_with_cname_chain_installs_clamped_addresses() {
    let mut o = observer();
    let now = Instant::now();
    let q = query(0x1234, "www.cdn.example.", RecordType::A);
    o.handle_query(now, ends(), &q.to_vec().unwrap()).unwrap();
    assert_eq!(o.pending(), 1);
    let r = answer(
        &q,
        vec![
            cname("www.cdn.example.", 300, "edge.provider.example."),
            cname("edge.provider.example.", 120, "e1.provider.example."),
            a("e1.provider.example.", 900, [198, 51, 100, 7]),
            a("e1.provider.example.", 5, [198, 51, 100, 8]),
            // Not on the chain: an attempt to smuggle an address in.
            a("other.example.", 900, [198, 51, 100, 9]),
        ],
    );
    let mut out = Vec::new();
    o.handle_response(now, ends(), &r, &mut out).unwrap();
    assert_eq!(
        out,
        vec![
            Answer {
                addr: ip4("198.51.100.7"),
                ttl: Duration::from_secs(120),
                domain: "www.cdn.example".into()
            },
            Answer {
                addr: ip4("198.51.100.8"),
                ttl: Duration::from_secs(30),
                domain: "www.cdn.example".into()
            },
        ]
    );
    assert_eq!(o.pending(), 0);
    let s = o.stats();
    assert_eq!((s.queries, s.answers, s.addresses), (1, 1, 2));
}

#[test]
fn aaaa_and_ttl_cap() {
    let mut o = observer();
    let now = Instant::now();
    let q = query(7, "bypass.example.", RecordType::AAAA);
    o.handle_query(now, ends(), &q.to_vec().unwrap()).unwrap();
    let ip: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let r = answer(&q, vec![aaaa("BYPASS.example.", 86_400, ip)]);
    let mut out = Vec::new();
    o.handle_response(now, ends(), &r, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].addr, IpAddr::V6(ip));
    assert_eq!(out[0].ttl, Duration::from_secs(600));
}

#[test]
fn unlisted_queries_are_not_tracked_and_their_answers_install_nothing() {
    let mut o = observer();
    let now = Instant::now();
    let q = query(1, "tunnelled.example.", RecordType::A);
    assert_eq!(
        o.handle_query(now, ends(), &q.to_vec().unwrap()),
        Err(Drop::NotListed)
    );
    let r = answer(&q, vec![a("tunnelled.example.", 60, [198, 51, 100, 1])]);
    let mut out = Vec::new();
    assert_eq!(
        o.handle_response(now, ends(), &r, &mut out),
        Err(Drop::Unsolicited)
    );
    // An MX query for a listed name is not tracked either.
    let q = query(2, "bypass.example.", RecordType::MX);
    assert_eq!(
        o.handle_query(now, ends(), &q.to_vec().unwrap()),
        Err(Drop::NotListed)
    );
    assert!(out.is_empty());
}

#[test]
fn forged_answers_install_nothing() {
    let now = Instant::now();
    let q = query(0x4242, "bypass.example.", RecordType::A);
    let good = answer(&q, vec![a("bypass.example.", 60, [198, 51, 100, 1])]);
    let mut wrong_id = q.clone();
    wrong_id.set_id(0x4243);
    let wrong_id = answer(
        &wrong_id,
        vec![a("bypass.example.", 60, [198, 51, 100, 66])],
    );
    let other_server = Endpoints {
        server: "198.51.100.53:53".parse().unwrap(),
        ..ends()
    };
    let other_port = Endpoints {
        client: "192.0.2.10:40001".parse().unwrap(),
        ..ends()
    };
    let over_tcp = Endpoints {
        transport: Transport::Tcp,
        ..ends()
    };
    let mut o = observer();
    o.handle_query(now, ends(), &q.to_vec().unwrap()).unwrap();
    let mut out = Vec::new();
    for (e, msg) in [
        (ends(), &wrong_id),
        (other_server, &good),
        (other_port, &good),
        (over_tcp, &good),
    ] {
        assert_eq!(
            o.handle_response(now, e, msg, &mut out),
            Err(Drop::Unsolicited)
        );
    }
    // The query itself sent back (QR clear) is not an answer.
    assert_eq!(
        o.handle_response(now, ends(), &q.to_vec().unwrap(), &mut out),
        Err(Drop::Unsolicited)
    );
    // A different question under the right ID does not consume the query.
    let other_q = query(0x4242, "evil.example.", RecordType::A);
    let other = answer(&other_q, vec![a("bypass.example.", 60, [198, 51, 100, 66])]);
    assert_eq!(
        o.handle_response(now, ends(), &other, &mut out),
        Err(Drop::QuestionMismatch)
    );
    assert!(out.is_empty());
    // Garbage.
    for bad in [&b""[..], &[0u8; 5], &[0xff; 64], &good[..good.len() - 3]] {
        assert_eq!(
            o.handle_response(now, ends(), bad, &mut out),
            Err(Drop::Malformed)
        );
    }
    // The real answer still works, once.
    o.handle_response(now, ends(), &good, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        o.handle_response(now, ends(), &good, &mut out),
        Err(Drop::Unsolicited)
    );
    assert_eq!(out.len(), 1);
    let s = o.stats();
    assert_eq!(s.unsolicited, 6);
    assert_eq!(s.question_mismatch, 1);
    assert_eq!(s.malformed, 4);
}

#[test]
fn errors_truncation_and_bad_addresses_install_nothing() {
    let now = Instant::now();
    let mut o = observer();
    let mut out = Vec::new();
    let q = query(1, "bypass.example.", RecordType::A);
    o.handle_query(now, ends(), &q.to_vec().unwrap()).unwrap();
    let mut nx = q.clone();
    nx.set_message_type(MessageType::Response)
        .set_response_code(ResponseCode::NXDomain);
    nx.add_answer(a("bypass.example.", 60, [198, 51, 100, 1]));
    assert_eq!(
        o.handle_response(now, ends(), &nx.to_vec().unwrap(), &mut out),
        Err(Drop::ErrorCode)
    );
    let q = query(2, "bypass.example.", RecordType::A);
    o.handle_query(now, ends(), &q.to_vec().unwrap()).unwrap();
    let mut tc = q.clone();
    tc.set_message_type(MessageType::Response)
        .set_truncated(true);
    tc.add_answer(a("bypass.example.", 60, [198, 51, 100, 1]));
    assert_eq!(
        o.handle_response(now, ends(), &tc.to_vec().unwrap(), &mut out),
        Err(Drop::Truncated)
    );
    let q = query(3, "bypass.example.", RecordType::A);
    o.handle_query(now, ends(), &q.to_vec().unwrap()).unwrap();
    let r = answer(
        &q,
        vec![
            a("bypass.example.", 60, [0, 0, 0, 0]),
            a("bypass.example.", 60, [127, 0, 0, 1]),
            a("bypass.example.", 60, [224, 0, 0, 1]),
            a("bypass.example.", 60, [255, 255, 255, 255]),
            aaaa("bypass.example.", 60, Ipv6Addr::LOCALHOST),
            aaaa("bypass.example.", 60, "ff02::1".parse().unwrap()),
        ],
    );
    o.handle_response(now, ends(), &r, &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(o.stats().bad_address, 6);
}

#[test]
fn cname_loops_and_long_chains_end() {
    let now = Instant::now();
    let mut o = observer();
    let mut out = Vec::new();
    let q = query(1, "bypass.example.", RecordType::A);
    o.handle_query(now, ends(), &q.to_vec().unwrap()).unwrap();
    let r = answer(
        &q,
        vec![
            cname("bypass.example.", 60, "x.example."),
            cname("x.example.", 60, "bypass.example."),
            a("x.example.", 60, [198, 51, 100, 3]),
        ],
    );
    o.handle_response(now, ends(), &r, &mut out).unwrap();
    assert_eq!(out.len(), 1);

    let q = query(2, "bypass.example.", RecordType::A);
    o.handle_query(now, ends(), &q.to_vec().unwrap()).unwrap();
    let mut recs: Vec<Record> = (0..40)
        .map(|i| {
            let from = if i == 0 {
                "bypass.example.".to_string()
            } else {
                format!("c{i}.example.")
            };
            cname(&from, 60, &format!("c{}.example.", i + 1))
        })
        .collect();
    recs.push(a("c40.example.", 60, [198, 51, 100, 4]));
    recs.push(a("c3.example.", 60, [198, 51, 100, 5]));
    out.clear();
    o.handle_response(now, ends(), &answer(&q, recs), &mut out)
        .unwrap();
    assert_eq!(
        out.iter().map(|a| a.addr).collect::<Vec<_>>(),
        [ip4("198.51.100.5")]
    );
    assert_eq!(o.stats().long_chain, 1);
}

#[test]
fn queries_time_out_and_the_pending_table_is_bounded() {
    let t0 = Instant::now();
    let mut o = observer();
    let mut out = Vec::new();
    let q = query(1, "bypass.example.", RecordType::A);
    o.handle_query(t0, ends(), &q.to_vec().unwrap()).unwrap();
    let r = answer(&q, vec![a("bypass.example.", 60, [198, 51, 100, 1])]);
    assert_eq!(
        o.handle_response(t0 + Duration::from_secs(6), ends(), &r, &mut out),
        Err(Drop::Unsolicited)
    );
    assert_eq!(o.stats().timeouts, 1);
    // Cap 4: the fifth query forgets the oldest.
    for id in 10..15 {
        let q = query(id, "bypass.example.", RecordType::A);
        o.handle_query(t0 + Duration::from_secs(7), ends(), &q.to_vec().unwrap())
            .unwrap();
    }
    assert_eq!(o.pending(), 4);
    assert_eq!(o.stats().pending_overflow, 1);
    let oldest = answer(&query(10, "bypass.example.", RecordType::A), vec![]);
    assert_eq!(
        o.handle_response(t0 + Duration::from_secs(7), ends(), &oldest, &mut out),
        Err(Drop::Unsolicited)
    );
    let newest = answer(
        &query(14, "bypass.example.", RecordType::A),
        vec![a("bypass.example.", 60, [198, 51, 100, 1])],
    );
    o.handle_response(t0 + Duration::from_secs(7), ends(), &newest, &mut out)
        .unwrap();
    assert_eq!(out.len(), 1);
    // Many answered queries leave the bookkeeping bounded.
    for id in 0..10_000u16 {
        let q = query(id, "bypass.example.", RecordType::A);
        let now = t0 + Duration::from_secs(8);
        o.handle_query(now, ends(), &q.to_vec().unwrap()).unwrap();
        o.handle_response(now, ends(), &answer(&q, vec![]), &mut out)
            .unwrap();
    }
    assert!(o.order.len() <= 2 * 16 + 1, "{}", o.order.len());
}

#[test]
fn table_refreshes_expires_and_evicts_the_soonest() {
    let t0 = Instant::now();
    let mut t = BypassTable::new(2);
    let ans = |ip: &str, secs: u64| Answer {
        addr: ip4(ip),
        ttl: Duration::from_secs(secs),
        domain: "bypass.example".into(),
    };
    assert_eq!(t.insert(t0, &ans("198.51.100.1", 60)), Insert::New);
    assert_eq!(t.insert(t0, &ans("198.51.100.2", 30)), Insert::New);
    // A shorter TTL never moves the expiry earlier.
    assert_eq!(t.insert(t0, &ans("198.51.100.1", 10)), Insert::Refreshed);
    assert_eq!(
        t.get(ip4("198.51.100.1")).unwrap().1,
        t0 + Duration::from_secs(60)
    );
    // Full: the one closest to expiry goes.
    assert_eq!(
        t.insert(t0, &ans("198.51.100.3", 90)),
        Insert::Evicted(ip4("198.51.100.2"))
    );
    assert_eq!(t.evictions(), 1);
    let mut gone = Vec::new();
    t.expire(t0 + Duration::from_secs(59), &mut gone);
    assert!(gone.is_empty());
    t.expire(t0 + Duration::from_secs(60), &mut gone);
    assert_eq!(gone, [ip4("198.51.100.1")]);
    assert!(!t.contains(ip4("198.51.100.1")));
    // Refreshing later keeps it alive past the first expiry.
    assert_eq!(
        t.insert(t0 + Duration::from_secs(80), &ans("198.51.100.3", 60)),
        Insert::Refreshed
    );
    t.expire(t0 + Duration::from_secs(100), &mut gone);
    assert_eq!(gone.len(), 1);
    t.expire(t0 + Duration::from_secs(140), &mut gone);
    assert_eq!(gone.len(), 2);
    assert!(t.is_empty());
    assert_eq!(t.expirations(), 2);
    // Heavy refreshing keeps the heap bounded.
    for i in 0..10_000u64 {
        t.insert(t0 + Duration::from_secs(200 + i), &ans("198.51.100.9", 60));
    }
    assert!(t.heap.len() <= 2 * t.len() + 65);
}

#[test]
fn only_trusted_servers_count_when_listed() {
    let now = Instant::now();
    let mut o = observer().with_trusted_servers(vec!["198.51.100.53".parse().unwrap()]);
    let q = query(9, "bypass.example.", RecordType::A);
    assert_eq!(
        o.handle_query(now, ends(), &q.to_vec().unwrap()),
        Err(Drop::UntrustedServer)
    );
    let mut out = Vec::new();
    let r = answer(&q, vec![a("bypass.example.", 60, [198, 51, 100, 1])]);
    assert_eq!(
        o.handle_response(now, ends(), &r, &mut out),
        Err(Drop::Unsolicited)
    );
    let trusted = Endpoints {
        server: "198.51.100.53:53".parse().unwrap(),
        ..ends()
    };
    o.handle_query(now, trusted, &q.to_vec().unwrap()).unwrap();
    o.handle_response(now, trusted, &r, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(o.stats().untrusted_server, 1);
}
