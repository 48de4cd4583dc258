//! The domain bypass's control path, per DNS answer: what a worker does
//! when an answer for a listed domain passes through it, before the
//! kernel map update (a `bpf()` syscall per new address, not measured
//! here).
//!
//! - `dns/observe`: a tracked query, then its answer (a CNAME and two A
//!   records) parsed, matched against the query and turned into two
//!   addresses to install; per query/answer pair.
//! - `dns/parse_only`: the same answer parsed by `hickory-proto` alone
//!   (the floor: what any observer must pay).
//! - `dns/table_insert/<n>`: a new address into a full table of `n`
//!   addresses (so every insert also evicts the one closest to expiry);
//!   per insert.
use std::{
    hint::black_box,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, CNAME},
    },
};
use sluice_core::dns::{
    Answer, BypassTable, DomainSet, Endpoints, Limits, Observer, Pattern, Transport,
};

fn messages() -> (Vec<u8>, Vec<u8>) {
    let name = |s: &str| Name::from_ascii(s).expect("name");
    let mut q = Message::new();
    q.set_id(0x1234)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    q.add_query(Query::query(name("www.cdn.example."), RecordType::A));
    let query = q.to_vec().expect("query");
    let mut r = q.clone();
    r.set_message_type(MessageType::Response);
    r.add_answer(Record::from_rdata(
        name("www.cdn.example."),
        300,
        RData::CNAME(CNAME(name("e1.provider.example."))),
    ));
    for last in [7, 8] {
        r.add_answer(Record::from_rdata(
            name("e1.provider.example."),
            60,
            RData::A(A::new(198, 51, 100, last)),
        ));
    }
    (query, r.to_vec().expect("answer"))
}

fn observe(crit: &mut Criterion) {
    let (query, answer) = messages();
    let domains = DomainSet::new(
        ["bypass.example", "*.cdn.example"].map(|p| Pattern::parse(p).expect("pattern")),
    );
    let mut obs = Observer::new(domains, Limits::default());
    let ends = Endpoints {
        client: "192.0.2.10:40000".parse().expect("addr"),
        server: "203.0.113.53:53".parse().expect("addr"),
        transport: Transport::Udp,
    };
    let mut out = Vec::with_capacity(4);
    let mut g = crit.benchmark_group("dns");
    g.throughput(Throughput::Elements(1));
    g.bench_function("observe", |b| {
        b.iter(|| {
            let now = Instant::now();
            obs.handle_query(now, ends, black_box(&query))
                .expect("tracked");
            out.clear();
            obs.handle_response(now, ends, black_box(&answer), &mut out)
                .expect("accepted");
            assert_eq!(out.len(), 2);
        });
    });
    g.bench_function("parse_only", |b| {
        b.iter(|| Message::from_vec(black_box(&answer)).expect("parses"));
    });
    for n in [1_000usize, 100_000] {
        let mut table = BypassTable::new(n);
        let t0 = Instant::now();
        let mut i: u32 = 0;
        let mut next = |t: &mut BypassTable| {
            i = i.wrapping_add(1);
            let a = Answer {
                // 2001:db8::/96, a documentation range.
                addr: IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i))),
                ttl: Duration::from_secs(30 + u64::from(i % 600)),
                domain: "www.cdn.example".into(),
            };
            t.insert(t0 + Duration::from_millis(u64::from(i)), &a)
        };
        for _ in 0..n {
            next(&mut table);
        }
        g.bench_with_input(BenchmarkId::new("table_insert", n), &n, |b, _| {
            b.iter(|| black_box(next(&mut table)));
        });
    }
    g.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
