//! The edge's per-packet decisions with adversarial packets and addresses:
//! tunnels of three gateways come and go, send packets of any bytes or
//! with addresses at and around every prefix boundary, replies are looked
//! up, gone tunnels' routes are swept. Checked against a plain model of
//! the configuration (`Prefix::contains` over the lists, no table):
//! - a packet passes if and only if its source is its gateway's, its
//!   destination (and the IPv4 address an IPv6 destination carries:
//!   mapped, compatible, NAT64, 6to4, Teredo) belongs to no gateway and is
//!   not reserved, and, if it is an ICMP or ICMPv6 error, it is whole and
//!   the packet it quotes went to that gateway;
//! - a reply route only ever names a tunnel of the address's owner, and
//!   after a passed packet it names that packet's tunnel;
//! - no gateway holds more routes than its quota;
//! - after a full sweep no route names a gone tunnel.
//!
//! Input: ops, each `op(u8)` then its arguments:
//! - `0 g(u8)`: a tunnel of gateway `g % 3` opens;
//! - `1 t(u8)`: tunnel `t` (mod open ones) closes;
//! - `2 t(u8) s(u8) d(u8) x(u8)*4`: tunnel `t` sends from address `s`
//!   to address `d` (see `addr`, `x` are the host bits);
//! - `3 t(u8) len(u8) bytes[len]`: tunnel `t` sends these bytes;
//! - `4 d(u8) x(u8)*4`: a reply to address `d` is looked up;
//! - anything else: a full sweep.
#![no_main]
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Mutex, OnceLock},
};

use libfuzzer_sys::fuzz_target;
use sluice_core::edge::EdgeGateway;
use sluice_core::edge::router::{Learnt, Refused, Router, TunnelRef};
use sluice_core::lpm::NoAdvice;
use sluice_core::net::Prefix;
use sluice_core::wire::ip;

const V4: [&str; 6] = [
    "192.0.2.0/25",
    "192.0.2.128/26",
    "198.18.2.0/24",
    "203.0.113.0/24",
    "169.254.0.0/16",
    "198.51.100.0/24",
];
const V6: [&str; 4] = [
    "2001:db8:1::/64",
    "2001:db8:12::/48",
    "fd00:ec2::254/128",
    "2001:db8:ffff::/64",
];

struct Model {
    gateways: Vec<EdgeGateway>,
    reserved: Vec<Prefix>,
}

fn p(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

fn setup() -> &'static (Model, Mutex<Router>) {
    static S: OnceLock<(Model, Mutex<Router>)> = OnceLock::new();
    S.get_or_init(|| {
        let gw = |name: &str, prefixes: &[&str], max_routes| EdgeGateway {
            name: name.into(),
            spki_sha256: None,
            prefixes: prefixes.iter().map(|s| p(s)).collect(),
            max_tunnels: 8,
            max_routes,
        };
        let gateways = vec![
            gw("a", &["192.0.2.0/25", "2001:db8:1::/64"], 16),
            gw("b", &["192.0.2.128/26", "2001:db8:12::/48"], 32),
            gw("c", &["198.18.2.0/24"], 16),
        ];
        let reserved: Vec<Prefix> = sluice_config::RESERVED_DESTINATIONS
            .iter()
            .chain(&["198.51.100.0/24"])
            .map(|s| p(s))
            .collect();
        let router = Router::new(&gateways, &reserved, &NoAdvice).expect("router");
        (Model { gateways, reserved }, Mutex::new(router))
    })
}

impl Model {
    fn owner(&self, ip: IpAddr) -> Option<u16> {
        self.gateways
            .iter()
            .position(|g| g.prefixes.iter().any(|p| p.contains(ip)))
            .map(|i| i as u16)
    }

    fn reserved(&self, ip: IpAddr) -> bool {
        self.reserved.iter().any(|p| p.contains(ip))
    }

    /// Why a packet from gateway `g`'s tunnel is refused, if it is.
    fn verdict(&self, g: u16, pkt: &[u8], src: IpAddr, dst: IpAddr) -> Result<(), Refused> {
        if self.owner(src) != Some(g) {
            return Err(Refused::Spoofed);
        }
        let carried = match dst {
            IpAddr::V6(a) => carried_v4(a).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        for d in [Some(dst), carried].into_iter().flatten() {
            if self.owner(d).is_some() {
                return Err(Refused::ToGateway);
            }
            if self.reserved(d) {
                return Err(Refused::Reserved);
            }
        }
        match quoted_dst(pkt) {
            Quote::NotAnError => Ok(()),
            Quote::Unreadable => Err(Refused::Malformed),
            Quote::To(q) if self.owner(q) == Some(g) => Ok(()),
            Quote::To(_) => Err(Refused::Spoofed),
        }
    }
}

/// The IPv4 address in an IPv6 one, for the forms a translator or relay
/// acts on.
fn carried_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = a.octets();
    let within = |s: &str| p(s).contains(IpAddr::V6(a));
    if within("::ffff:0:0/96") || within("::/96") || within("64:ff9b::/96") {
        Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
    } else if within("2002::/16") {
        Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else if within("2001::/32") {
        Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]))
    } else {
        None
    }
}

enum Quote {
    NotAnError,
    Unreadable,
    To(IpAddr),
}

/// What an ICMP(v6) error in `pkt` (trimmed to its IP length) quotes.
fn quoted_dst(pkt: &[u8]) -> Quote {
    let at = |i: usize| pkt.get(i).copied();
    let (body, fragmented) = if pkt[0] >> 4 == 4 {
        let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
        if pkt[9] != 1 || frag & 0x1fff != 0 {
            return Quote::NotAnError;
        }
        let start = (usize::from(pkt[0] & 15) * 4).max(20);
        match at(start) {
            None => return Quote::Unreadable,
            Some(3 | 4 | 5 | 11 | 12) => (start, frag & 0x2000 != 0),
            Some(_) => return Quote::NotAnError,
        }
    } else {
        let mut next = pkt[6];
        let mut pos = 40;
        let mut fragmented = false;
        while next != 58 {
            let (Some(n), Some(l)) = (at(pos), at(pos + 1)) else {
                return if [0, 43, 44, 51, 60].contains(&next) {
                    Quote::Unreadable
                } else {
                    Quote::NotAnError
                };
            };
            let len = match next {
                0 | 43 | 60 => (usize::from(l) + 1) * 8,
                51 => (usize::from(l) + 2) * 4,
                44 => {
                    let (Some(a), Some(b)) = (at(pos + 2), at(pos + 3)) else {
                        return Quote::Unreadable;
                    };
                    if pos + 8 > pkt.len() {
                        return Quote::Unreadable;
                    }
                    if (u16::from(a) << 8 | u16::from(b)) >> 3 != 0 {
                        return Quote::NotAnError;
                    }
                    fragmented = true;
                    8
                }
                _ => return Quote::NotAnError,
            };
            if next != 44 && pos + 8 > pkt.len() {
                return Quote::Unreadable;
            }
            next = n;
            pos += len;
        }
        match at(pos) {
            None => return Quote::Unreadable,
            Some(t) if t < 128 => (pos, fragmented),
            Some(_) => return Quote::NotAnError,
        }
    };
    if fragmented {
        return Quote::Unreadable;
    }
    let q = pkt.get(body + 8..).unwrap_or(&[]);
    match (pkt[0] >> 4, q.first().map(|b| b >> 4), q.len()) {
        (4, Some(4), 20..) => Quote::To(IpAddr::V4(Ipv4Addr::new(q[16], q[17], q[18], q[19]))),
        (6, Some(6), 40..) => {
            let mut d = [0u8; 16];
            d.copy_from_slice(&q[24..40]);
            Quote::To(IpAddr::V6(Ipv6Addr::from(d)))
        }
        _ => Quote::Unreadable,
    }
}

/// An address near prefix number `sel` (or anywhere): the prefix's
/// network address with `x` as host bits, sometimes just outside it.
fn addr(sel: u8, x: [u8; 4]) -> IpAddr {
    let bits = u32::from_be_bytes(x);
    let i = usize::from(sel);
    if i % 2 == 0 {
        let base = u32::from(match p(V4[(i / 2) % V4.len()]).addr() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!(),
        });
        let off = if sel & 0x80 != 0 { bits } else { bits & 0x1ff };
        IpAddr::V4(Ipv4Addr::from(
            base.wrapping_add(off)
                .wrapping_sub(u32::from(sel & 0x40 != 0)),
        ))
    } else {
        let base = u128::from(match p(V6[(i / 2) % V6.len()]).addr() {
            IpAddr::V6(a) => a,
            IpAddr::V4(_) => unreachable!(),
        });
        let off = if sel & 0x80 != 0 {
            u128::from(bits) << 64 | u128::from(bits)
        } else {
            u128::from(bits)
        };
        IpAddr::V6(Ipv6Addr::from(
            base.wrapping_add(off)
                .wrapping_sub(u128::from(sel & 0x40 != 0)),
        ))
    }
}

fn packet(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h
        }
        (IpAddr::V4(s), IpAddr::V6(d)) => packet(IpAddr::V6(s.to_ipv6_mapped()), IpAddr::V6(d)),
        (IpAddr::V6(s), IpAddr::V4(d)) => packet(IpAddr::V6(s), IpAddr::V6(d.to_ipv6_mapped())),
    }
}

fuzz_target!(|data: &[u8]| {
    let (model, router) = setup();
    let mut r = router
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    r.clear_routes();
    let mut open: Vec<TunnelRef> = Vec::new();
    let mut next_gen = 1u32;
    let mut seen: Vec<IpAddr> = Vec::new();
    let mut rest = data;
    while let [op, tail @ ..] = rest {
        rest = tail;
        let send = |r: &mut Router, t: TunnelRef, pkt: &[u8], seen: &mut Vec<IpAddr>| {
            let got = r.inbound(t, pkt);
            let Ok(view) = ip::Packet::new_checked(pkt) else {
                assert_eq!(got, Err(Refused::Malformed));
                return;
            };
            let (src, dst) = (view.src(), view.dst());
            let expect = model.verdict(t.gateway, view.as_bytes(), src, dst);
            assert_eq!(got.map(|_| ()), expect, "{src} -> {dst} from {t:?}");
            if let Ok(l) = got {
                if l != Learnt::OverQuota {
                    assert_eq!(r.outbound(src), Some(t), "route to {src}");
                }
                if seen.len() < 256 {
                    seen.push(src);
                }
            }
        };
        match op {
            0 => {
                let [g, tail @ ..] = rest else { break };
                rest = tail;
                if open.len() < 16 {
                    open.push(TunnelRef {
                        slot: u32::from(*g),
                        generation: next_gen,
                        gateway: u16::from(*g % 3),
                    });
                    next_gen += 1;
                }
            }
            1 if !open.is_empty() => {
                let [t, tail @ ..] = rest else { break };
                rest = tail;
                open.remove(usize::from(*t) % open.len());
                r.tunnel_closed();
            }
            2 if !open.is_empty() => {
                let [t, s, d, a, b, c, e, tail @ ..] = rest else {
                    break;
                };
                rest = tail;
                let tun = open[usize::from(*t) % open.len()];
                let pkt = packet(addr(*s, [*a, *b, *c, *e]), addr(*d, [*e, *c, *b, *a]));
                send(&mut r, tun, &pkt, &mut seen);
            }
            3 if !open.is_empty() => {
                let [t, n, tail @ ..] = rest else { break };
                let n = usize::from(*n).min(tail.len());
                let (pkt, tail) = tail.split_at(n);
                rest = tail;
                let tun = open[usize::from(*t) % open.len()];
                send(&mut r, tun, pkt, &mut seen);
            }
            4 => {
                let [d, a, b, c, e, tail @ ..] = rest else {
                    break;
                };
                rest = tail;
                let dst = addr(*d, [*a, *b, *c, *e]);
                if let Some(t) = r.outbound(dst) {
                    assert_eq!(
                        model.owner(dst),
                        Some(t.gateway),
                        "reply to {dst} into {t:?}"
                    );
                }
            }
            _ => {
                let alive = |t: TunnelRef| open.contains(&t);
                while r.sweep_due() {
                    r.sweep(4096, alive);
                }
                for a in &seen {
                    if let Some(t) = r.outbound(*a) {
                        assert!(open.contains(&t), "route to {a} into gone {t:?}");
                    }
                }
            }
        }
        for g in 0..3u16 {
            assert!(r.gateway_routes(g) <= model.gateways[usize::from(g)].max_routes);
        }
    }
});
