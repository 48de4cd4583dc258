//! Unit tests of the policy model: entry syntax, rule selection, the
//! destination order, and the compiled tables against the reference
//! evaluator (IPv4 and IPv6, overlapping and port-specific entries).
use std::{net::IpAddr, time::Duration};

use super::{
    compile::{CompileError, Tables},
    eval::{self, Flow, Outcome, Runtime, Step},
    *,
};

fn e(s: &str) -> Entry {
    s.parse().unwrap_or_else(|err| panic!("{s}: {err}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pfx(s: &str) -> Prefix {
    s.parse().unwrap()
}

/// Positions in [`DEFAULT_EXCLUSIONS`]: the tests take private,
/// link-local and unique-local addresses from that list (configuration
/// data for real deployments) and only evaluate them in memory; no test
/// sends a packet to them.
const PRIVATE_10: usize = 0;
const PRIVATE_192_168: usize = 2;
const UNIQUE_LOCAL: usize = 6;

/// Default exclusion `i`.
fn excluded(i: usize) -> Prefix {
    pfx(DEFAULT_EXCLUSIONS[i])
}

/// The address `n` above the start of `p`.
fn host_in(p: Prefix, n: u128) -> IpAddr {
    match p.addr() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) + u32::try_from(n).unwrap()).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + n).into()),
    }
}

/// The upper half of `p` (one bit longer).
fn upper_half(p: Prefix) -> Prefix {
    let bits: u32 = if p.addr().is_ipv4() { 32 } else { 128 };
    Prefix::new(
        host_in(p, 1 << (bits - 1 - u32::from(p.len()))),
        p.len() + 1,
    )
}

fn tunnel_cfg() -> super::TunnelConfig {
    super::TunnelConfig {
        edge: "198.51.100.9:4443".parse().unwrap(),
        edges: crate::select::EdgeSet::single("198.51.100.9:4443".parse().unwrap()),
        server_name: "partner.test".into(),
        ca: "ca.pem".into(),
        cert: "c.pem".into(),
        key: "k.pem".into(),
        crl: None,
        keepalive: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        coalesce_delay: Duration::ZERO,
        mtu: 1420,
        transport: crate::datagram::path::PathConfig::default(),
    }
}

/// Two groups, a subnet rule, a device rule, a private tenant.
fn policy() -> Policy {
    let mut eng = Profile::with_defaults("engineering", 2);
    eng.exclude.push(e("203.0.113.0/24"));
    eng.include.push(e("203.0.113.0/24:443:tcp"));
    eng.include.push(e("[2001:db8:5::/48]:8443"));
    eng.exclude.push(e("2001:db8:5::/48"));
    eng.source_ports = vec![5060];
    let mut sales = Profile::with_defaults("sales", 2);
    sales.tunnel = true;
    sales.vpn_gateways = vec![pfx("203.0.113.50/32")];
    sales.private_tenants = vec![1];
    sales.fail = FailMode::Open;
    let mut kiosk = Profile::with_defaults("kiosk", 0);
    kiosk.tunnel = false;
    kiosk.captive_portal_grace = Duration::from_secs(60);
    let default = Profile::with_defaults("default", 2);
    Policy {
        identities: vec![
            Identity {
                source: pfx("192.0.2.10"),
                user: "alice".into(),
                groups: vec!["engineering".into()],
                device: Some("alice-laptop".into()),
            },
            Identity {
                source: pfx("192.0.2.20"),
                user: "bob".into(),
                groups: vec!["sales".into()],
                device: None,
            },
            Identity {
                source: pfx("2001:db8:1::10"),
                user: "carol".into(),
                groups: vec!["engineering".into(), "sales".into()],
                device: None,
            },
            Identity {
                source: pfx("192.0.2.64/28"),
                user: "kiosks".into(),
                groups: vec![],
                device: Some("kiosk".into()),
            },
        ],
        local: Identity {
            source: pfx("198.18.3.1"),
            user: "gateway".into(),
            groups: vec!["sales".into()],
            device: None,
        },
        profiles: vec![eng, sales, kiosk, default],
        rules: vec![
            Rule {
                matches: Match::Group("engineering".into()),
                profile: 0,
            },
            Rule {
                matches: Match::Device("kiosk".into()),
                profile: 2,
            },
            Rule {
                matches: Match::Subnet(pfx("192.0.2.0/25")),
                profile: 1,
            },
            Rule {
                matches: Match::Group("sales".into()),
                profile: 1,
            },
        ],
        default_profile: 3,
        tenants: vec![
            Tenant {
                name: "corp".into(),
                tunnel: tunnel_cfg(),
                segments: vec![pfx("198.51.100.128/25")],
                domains: vec![crate::dns::Pattern::parse("*.corp.example").unwrap()],
            },
            Tenant {
                name: "partner".into(),
                tunnel: tunnel_cfg(),
                segments: vec![pfx("198.51.100.192/26"), pfx("2001:db8:77::/48")],
                domains: vec![],
            },
        ],
        active_tenant: Some(0),
        forwarding: Forwarding {
            on_trusted: NetAction::Direct,
            ..Forwarding::default()
        },
    }
}

fn flow(src: &str, dst: &str, dport: u16, proto: Proto) -> Flow {
    Flow::new(ip(src), ip(dst), 40000, dport, proto)
}

#[test]
fn entries_parse_and_print() {
    for (s, fields) in [
        ("203.0.113.0/24", 1),
        ("203.0.113.0/24:443", 2),
        ("203.0.113.7:53:udp", 3),
        ("2001:db8::/32", 1),
        ("[2001:db8::/32]:443", 2),
        ("[2001:db8::1]:443:tcp", 3),
        ("198.51.100.0/24:5000:132", 3),
    ] {
        let entry = e(s);
        assert_eq!(entry.fields(), fields, "{s}");
        assert_eq!(e(&entry.to_string()), entry, "{s} round trip");
    }
    for bad in [
        "203.0.113.1/24",
        "203.0.113.0/24:0",
        "203.0.113.0/24:70000",
        "203.0.113.0/24:443:gre-ish",
        "[2001:db8::/32",
        "[2001:db8::/32]443",
        "2001:db8::/129",
        "host.example:443",
    ] {
        assert!(bad.parse::<Entry>().is_err(), "{bad} must be refused");
    }
    let refused = |s: &str| s.parse::<Entry>().unwrap_err().to_string();
    assert_eq!(
        refused("[2001:db8::/32"),
        "`[2001:db8::/32`: missing `]` after the bracketed prefix"
    );
    assert_eq!(
        refused("[2001:db8::/32]443"),
        "`[2001:db8::/32]443`: expected `:port` after `]`"
    );
    assert_eq!(
        refused("203.0.113.0/24:0"),
        "`0` is not a port (1 to 65535)"
    );
    assert_eq!(
        refused("203.0.113.0/24:443:gre-ish"),
        "`gre-ish` is not a protocol (tcp, udp, icmp, icmpv6, sctp or a number 1 to 255)"
    );
    assert_eq!(
        refused("2001:db8::/129"),
        "2001:db8::/129".parse::<Prefix>().unwrap_err().to_string()
    );
}

#[test]
fn first_matching_rule_wins_and_default_applies() {
    let p = policy();
    let sel = |src: &str| eval::selection(&p, &flow(src, "203.0.113.9", 80, Proto::TCP));
    // alice: group engineering (rule 0) before her subnet (rule 2).
    assert_eq!(
        (sel("192.0.2.10").rule, sel("192.0.2.10").profile),
        (Some(0), 0)
    );
    // bob: not engineering, no device; subnet rule 2 precedes group rule 3.
    assert_eq!(sel("192.0.2.20").rule, Some(2));
    // a kiosk in 192.0.2.64/28: device rule 1 precedes the subnet rule.
    assert_eq!(sel("192.0.2.70").profile, 2);
    // unidentified in the subnet: rule 2.
    assert_eq!(sel("192.0.2.99").profile, 1);
    // unidentified elsewhere: the default profile.
    assert_eq!(
        (sel("192.0.2.200").rule, sel("192.0.2.200").profile),
        (None, 3)
    );
    // IPv6 identity with both groups: engineering is the earlier rule.
    assert_eq!(sel("2001:db8:1::10").profile, 0);
    // Local flows: the local identity (group sales).
    let mut f = flow("198.18.3.1", "203.0.113.9", 80, Proto::TCP);
    f.local = true;
    assert_eq!(eval::selection(&p, &f).profile, 1);
    assert_eq!(p.local_profile(), 1);
}

#[test]
fn defaults_include_everything_and_exclude_private_ranges() {
    let p = policy();
    let d = |dst: &str| eval::decide(&p, 3, &flow("192.0.2.200", dst, 443, Proto::TCP)).verdict;
    assert_eq!(d("198.51.100.7"), Verdict::Tunnel(INTERNET));
    assert_eq!(d("2001:db8:9::1"), Verdict::Tunnel(INTERNET));
    // Every default exclusion: its first host (or its one address).
    for range in DEFAULT_EXCLUSIONS {
        let p = pfx(range);
        let full = if p.addr().is_ipv4() { 32 } else { 128 };
        let a = host_in(p, u128::from(p.len() < full));
        assert_eq!(d(&a.to_string()), Verdict::Direct, "{a} in {range}");
    }
}

#[test]
fn longest_prefix_then_more_fields_then_inclusion() {
    let mut p = policy();
    let prof = &mut p.profiles[3];
    prof.include = vec![e("0.0.0.0/0"), e("203.0.113.0/25:80"), e("203.0.113.0/24")];
    prof.exclude = vec![
        e("203.0.113.0/25"),
        e("203.0.113.0/24:80:tcp"),
        e("203.0.113.0/24"),
    ];
    let d = |dst: &str, port: u16, proto: Proto| {
        eval::decide(&p, 3, &flow("192.0.2.200", dst, port, proto))
    };
    // /25 beats /24 whatever the fields: exclude /25 on port 443.
    assert_eq!(d("203.0.113.5", 443, Proto::TCP).verdict, Verdict::Direct);
    // At /25, the port entry (2 fields) beats the plain exclusion.
    assert_eq!(
        d("203.0.113.5", 80, Proto::TCP).verdict,
        Verdict::Tunnel(INTERNET)
    );
    // In the upper /25, the /24 entries: 3 fields beat the tie on /24.
    assert_eq!(d("203.0.113.200", 80, Proto::TCP).verdict, Verdict::Direct);
    // Same prefix and fields: the inclusion wins.
    assert_eq!(
        d("203.0.113.200", 80, Proto::UDP).verdict,
        Verdict::Tunnel(INTERNET)
    );
    let step = d("203.0.113.200", 22, Proto::TCP).step;
    assert!(
        matches!(
            step,
            Step::Entry {
                include: true,
                index: 2,
                ..
            }
        ),
        "{step:?}"
    );
}

#[test]
fn the_decision_order_is_vpn_private_sport_then_entries() {
    let p = policy();
    // sales: VPN gateway beats everything.
    let f = flow("192.0.2.20", "203.0.113.50", 443, Proto::TCP);
    assert_eq!(
        eval::decide(&p, 1, &f).step,
        Step::VpnGateway(pfx("203.0.113.50/32"))
    );
    // corp is switched on, but sales only allows partner: internet tunnel.
    let f = flow("192.0.2.20", "198.51.100.130", 443, Proto::TCP);
    assert_eq!(eval::decide(&p, 1, &f).verdict, Verdict::Tunnel(INTERNET));
    // engineering allows corp: corp's tunnel, ahead of the source port.
    let mut f = flow("192.0.2.10", "198.51.100.130", 443, Proto::TCP);
    f.sport = 5060;
    assert_eq!(eval::decide(&p, 0, &f).verdict, Verdict::Tunnel(1));
    // A corp domain, answered outside the segments.
    let mut f = flow("192.0.2.10", "198.51.100.7", 443, Proto::TCP);
    f.domain = Some("wiki.corp.example.".into());
    assert!(matches!(
        eval::decide(&p, 0, &f).step,
        Step::PrivateDomain(_)
    ));
    // Source-port bypass before the entries.
    let mut f = flow("192.0.2.10", "198.51.100.7", 443, Proto::UDP);
    f.sport = 5060;
    assert_eq!(eval::decide(&p, 0, &f).step, Step::SourcePort(5060));
    // Switching to partner: sales now reaches its segment through it.
    let mut q = policy();
    q.switch_tenant("partner").unwrap();
    let f = flow("192.0.2.20", "198.51.100.200", 443, Proto::TCP);
    assert_eq!(eval::decide(&q, 1, &f).verdict, Verdict::Tunnel(2));
    assert_eq!(
        policy().switch_tenant("nobody").unwrap_err().to_string(),
        "no private-access tenant `nobody` (configured: corp, partner)"
    );
    assert!(
        q.switch_tenant("nobody")
            .unwrap_err()
            .to_string()
            .contains("corp, partner")
    );
}

#[test]
fn tunnel_off_and_runtime_state() {
    let p = policy();
    // kiosk: tunnel off, included traffic goes direct.
    let f = flow("192.0.2.70", "198.51.100.7", 443, Proto::TCP);
    let x = eval::explain(&p, &f, &Runtime::default());
    assert_eq!(x.outcome, Outcome::Direct);
    assert!(x.to_string().contains("tunnel is off"), "{x}");
    // On the trusted network, internet traffic goes direct.
    let f = flow("192.0.2.200", "198.51.100.7", 443, Proto::TCP);
    let on = Runtime {
        network: trusted::NetworkState::OnTrusted,
        down: vec![],
    };
    assert_eq!(eval::explain(&p, &f, &on).outcome, Outcome::Direct);
    // Tunnel down: the default profile fails closed, sales fails open.
    let down = Runtime {
        network: trusted::NetworkState::OffTrusted,
        down: vec![(INTERNET, Duration::from_secs(5))],
    };
    assert_eq!(eval::explain(&p, &f, &down).outcome, Outcome::Drop);
    let f = flow("192.0.2.20", "198.51.100.7", 443, Proto::TCP);
    assert_eq!(eval::explain(&p, &f, &down).outcome, Outcome::Direct);
    // Captive-portal grace: direct inside it, dropped after.
    let mut q = policy();
    q.profiles[3].captive_portal_grace = Duration::from_secs(30);
    let f = flow("192.0.2.200", "198.51.100.7", 443, Proto::TCP);
    assert_eq!(eval::explain(&q, &f, &down).outcome, Outcome::Direct);
    let late = Runtime {
        down: vec![(INTERNET, Duration::from_secs(31))],
        ..down
    };
    assert_eq!(eval::explain(&q, &f, &late).outcome, Outcome::Drop);
}

#[test]
fn explanation_names_identity_rule_profile_and_reason() {
    let p = policy();
    let text = eval::explain(
        &p,
        &flow("192.0.2.10", "203.0.113.9", 443, Proto::TCP),
        &Runtime::default(),
    )
    .to_string();
    for want in [
        "user `alice` (groups: engineering; device `alice-laptop`)",
        "rule[0] (group `engineering` -> profile `engineering`)",
        "profile:  `engineering`",
        "include[2] 203.0.113.0/24:443:tcp is the best match",
        "outcome:  tunnel (internet)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random addresses concentrated around the policy's prefixes, so that
/// overlaps are exercised.
fn random_addr(r: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        let bases = [
            ip("2001:db8:5::"),
            ip("2001:db8:77::"),
            ip("2001:db8:1::10"),
            upper_half(excluded(UNIQUE_LOCAL)).addr(),
            ip("2001:db8:9::"),
        ];
        let base = pfx(&format!(
            "{}/128",
            bases[r.below(bases.len() as u64) as usize]
        ));
        host_in(base, u128::from(r.below(1 << 20)))
    } else {
        let bases = [
            ip("203.0.113.0"),
            ip("198.51.100.0"),
            ip("192.0.2.0"),
            excluded(PRIVATE_10).addr(),
            excluded(PRIVATE_192_168).addr(),
        ];
        let base = pfx(&format!(
            "{}/32",
            bases[r.below(bases.len() as u64) as usize]
        ));
        host_in(base, u128::from(r.below(512)))
    }
}

#[test]
fn compiled_tables_agree_with_the_reference_evaluator() {
    let mut p = policy();
    // Add dense overlaps with ports to the default profile.
    let prof = &mut p.profiles[3];
    prof.include.extend([
        e("203.0.113.0/26:443"),
        e("203.0.113.128/25:53:udp"),
        e(&format!("{}:443:tcp", excluded(PRIVATE_10))),
        e(&format!("[{}]:22", upper_half(excluded(UNIQUE_LOCAL)))),
    ]);
    prof.exclude.extend([
        e("203.0.113.0/24"),
        e("203.0.113.0/28:443:tcp"),
        e("198.51.100.0/23:80"),
        e("[2001:db8:9::/48]:443:udp"),
    ]);
    prof.vpn_gateways
        .push(Prefix::new(host_in(excluded(PRIVATE_10), 9 << 16), 16));
    for tenant in [0, 1] {
        p.active_tenant = Some(tenant);
        let t = Tables::compile(&p).unwrap();
        let mut r = Rng(0x5eed_0000 + tenant as u64);
        for _ in 0..20_000 {
            let v6 = r.below(2) == 0;
            let src = random_addr(&mut r, v6);
            let dst = random_addr(&mut r, v6);
            let proto = [Proto::TCP, Proto::UDP, Proto(1)][r.below(3) as usize];
            let has_ports = proto != Proto(1);
            let ports = [22, 53, 80, 443, 5060, 8443];
            let dport = if has_ports {
                ports[r.below(6) as usize]
            } else {
                0
            };
            let sport = if has_ports {
                ports[r.below(6) as usize]
            } else {
                0
            };
            let f = Flow::new(src, dst, sport, dport, proto);
            let sel = eval::selection(&p, &f);
            assert_eq!(t.profile_of(src), sel.profile, "profile of {src}");
            assert_eq!(
                t.lookup(src, dst, sport, dport, proto),
                eval::decide(&p, sel.profile, &f).verdict,
                "{f:?}"
            );
        }
    }
}

#[test]
fn unknown_ports_err_toward_the_tunnel() {
    let mut p = policy();
    p.profiles[3]
        .include
        .push(e(&format!("{}:443:tcp", excluded(PRIVATE_10))));
    let t = Tables::compile(&p).unwrap();
    let private = host_in(excluded(PRIVATE_10), 0x01_0101);
    // A non-first fragment (no ports) to an excluded prefix whose port
    // entry tunnels: tunnelled. ICMP (no ports at all) is not affected.
    assert_eq!(
        t.lookup(ip("192.0.2.200"), private, 0, 0, Proto::TCP),
        Verdict::Tunnel(INTERNET)
    );
    assert_eq!(
        t.lookup(ip("192.0.2.200"), private, 0, 0, Proto(1)),
        Verdict::Direct
    );
    assert_eq!(
        t.lookup(ip("192.0.2.200"), private, 0, 0, Proto::UDP),
        Verdict::Direct
    );
}

#[test]
fn too_many_port_rules_on_one_prefix_is_an_error() {
    let mut p = policy();
    for port in 1..=9 {
        p.profiles[3]
            .include
            .push(e(&format!("203.0.113.0/24:{port}")));
    }
    let err = Tables::compile(&p).unwrap_err();
    assert!(
        matches!(&err, CompileError::TooManyPortRules { count: 9, .. }),
        "{err}"
    );
}

#[test]
fn local_direct_leaves_out_prefixes_with_tunnelled_ports() {
    let mut p = policy();
    p.profiles[1].exclude.push(e("198.51.100.0/24"));
    p.profiles[1].include.push(e("198.51.100.0/24:443"));
    let t = Tables::compile(&p).unwrap();
    assert_eq!(t.local_profile, 1);
    assert!(t.local_direct.contains(&excluded(PRIVATE_10)));
    assert!(t.local_direct.contains(&pfx("203.0.113.50/32")));
    assert!(!t.local_direct.contains(&pfx("198.51.100.0/24")));
    assert!(!t.local_direct.contains(&pfx("0.0.0.0/0")));
}

#[test]
fn local_direct_cuts_out_tunnelled_prefixes_nested_in_direct_ones() {
    // An excluded (direct) range with a private segment inside it, and an
    // inclusion inside an exclusion: the socket hooks' table must not
    // cover the tunnelled parts.
    let mut p = policy();
    let local = p.local_profile();
    p.profiles[local].exclude.push(e("198.18.0.0/15"));
    p.profiles[local].include.push(e("198.18.7.0/24"));
    p.profiles[local].exclude.push(e("198.51.100.0/24"));
    p.tenants[0].segments.push(pfx("198.51.100.64/26"));
    p.active_tenant = Some(0);
    p.profiles[local].private_tenants = vec![0];
    let t = Tables::compile(&p).unwrap();
    let covers = |a: &str| t.local_direct.iter().any(|d| d.contains(ip(a)));
    for (addr, direct) in [
        ("198.51.100.70", false),
        ("198.51.100.10", true),
        ("198.51.100.130", false), // the fixture's segment 198.51.100.128/25
        ("198.51.100.254", false),
        ("198.51.100.63", true),
        ("198.18.7.9", false),
        ("198.18.6.9", true),
        ("198.19.0.1", true),
    ] {
        assert_eq!(covers(addr), direct, "{addr}");
        let f = Flow {
            local: true,
            ..flow("192.0.2.1", addr, 443, Proto::TCP)
        };
        let sel = eval::selection(&p, &f);
        assert_eq!(
            eval::decide(&p, sel.profile, &f).verdict == Verdict::Direct,
            direct,
            "{addr} by the reference"
        );
    }
    // Disjoint pieces, no more than the holes need.
    for (i, a) in t.local_direct.iter().enumerate() {
        for b in &t.local_direct[i + 1..] {
            assert!(!a.contains(b.addr()) && !b.contains(a.addr()), "{a} {b}");
        }
    }
}
