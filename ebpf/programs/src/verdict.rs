//! The classification policy: the ordered rules that turn a parsed
//! [`Frame`] into a verdict. First match wins:
//!
//! 1. ARP → pass ([`Counter::PassArp`]); other non-IP → pass
//!    ([`Counter::PassNonIp`]).
//! 2. Group MAC destination, IPv4 multicast (224/4), limited broadcast,
//!    link-local (169.254/16), IPv6 multicast (ff00::/8) or link-local
//!    (fe80::/10) destination → pass ([`Counter::PassMulticast`]; ICMPv6
//!    router/neighbour discovery: [`Counter::PassNeighbor`]).
//! 3. One of the gateway's own addresses → pass ([`Counter::PassLocal`];
//!    neighbour discovery: [`Counter::PassNeighbor`]).
//! 4. Neighbour discovery to any other address is not for this link: it
//!    takes the policy below like any packet (passed, the kernel would
//!    forward it out of the WAN).
//! 5. The policy (once one is installed): the source's profile, then the
//!    destination's entry in that profile, both from the live slot read
//!    once per frame (never a mix of two policies). See [`policy`].
//!    Before any policy is installed: in a bypass prefix → pass
//!    ([`Counter::Bypass`]), anything else → tunnel.
//!
//! Fragments follow their first fragment. The policy's verdict may depend
//! on ports, which only the first fragment of a datagram carries: the
//! first fragment's verdict (pass, or tunnel with its metadata) is
//! recorded under (source, destination, identification, protocol) in an
//! LRU map, and a later fragment found there within the timeout takes it
//! ([`Counter::FragFollowed`]). A later fragment whose first fragment is
//! unknown (not seen, evicted, or older than the timeout) is classified
//! without ports ([`Counter::FragUnknown`]): it goes direct only if its
//! destination's own verdict and every port rule of its protocol are
//! direct; any port rule that tunnels sends it to that tunnel. An IPv6
//! later fragment's protocol is unknown too (its fragment header's next
//! header is not the datagram's): every port rule counts. Nothing that a
//! port rule tunnels can leave directly that way.
//!
//! No packet access here: only the parsed summary and map lookups.
use sluice_common::{
    ACTION_DIRECT, ACTION_TUNNEL, Counter, DestEntry, FRAG_FIRST, FRAG_LATER, FRAG_PASS,
    FRAG_TUNNEL, FragEntry, FragKey, Ipv4Key, Ipv6Key, PROFILE_FAIL_OPEN, PolicyState,
    ProfileEntry,
};

use crate::{
    maps,
    parse::{Frame, Kind},
};

/// What to do with a well-formed frame.
pub(crate) enum Verdict {
    /// Hand it to the kernel (`XDP_PASS`), counting this verdict counter.
    Pass(Counter),
    /// Send it to the `AF_XDP` socket of its RX queue, with this verdict
    /// ([`sluice_common::ACTION_TUNNEL`] + tunnel) and policy generation
    /// in front of it; count `counter`.
    Tunnel {
        /// The verdict.
        action: u8,
        /// The policy generation.
        generation: u32,
        /// `Tunnel` or `TunnelPrivate`.
        counter: Counter,
    },
}

/// The verdict before any policy is installed.
const TUNNEL_INTERNET: Verdict = Verdict::Tunnel {
    action: ACTION_TUNNEL,
    generation: 0,
    counter: Counter::Tunnel,
};

/// Applies the rules above.
#[inline(always)]
pub(crate) fn decide(frame: &Frame) -> Verdict {
    match frame.kind {
        Kind::Arp => Verdict::Pass(Counter::PassArp),
        Kind::NonIp => Verdict::Pass(Counter::PassNonIp),
        Kind::Ipv4 => {
            let dst = &frame.dst_v4;
            if frame.l2_multicast || is_special_v4(dst) {
                Verdict::Pass(Counter::PassMulticast)
            } else if maps::is_local_v4(dst) {
                Verdict::Pass(Counter::PassLocal)
            } else {
                policy_v4(frame)
            }
        }
        Kind::Ipv6 => {
            let dst = &frame.dst_v6;
            // Neighbour discovery is for this link: to a group MAC, a
            // multicast or link-local address, or the gateway. Addressed
            // to a remote unicast address it is no ND the kernel needs,
            // and passed, the kernel would forward it out of the WAN: it
            // takes the policy like any packet.
            if frame.l2_multicast || is_special_v6(dst) {
                Verdict::Pass(if frame.neighbor_discovery {
                    Counter::PassNeighbor
                } else {
                    Counter::PassMulticast
                })
            } else if maps::is_local_v6(dst) {
                Verdict::Pass(if frame.neighbor_discovery {
                    Counter::PassNeighbor
                } else {
                    Counter::PassLocal
                })
            } else {
                policy_v6(frame)
            }
        }
    }
}

/// Multicast 224.0.0.0/4, limited broadcast 255.255.255.255, link-local
/// 169.254.0.0/16: never routed through the tunnel.
#[inline(always)]
fn is_special_v4(dst: &Ipv4Key) -> bool {
    dst[0] & 0xf0 == 0xe0 || *dst == [255; 4] || (dst[0] == 169 && dst[1] == 254)
}

/// Multicast ff00::/8 and link-local unicast fe80::/10.
#[inline(always)]
fn is_special_v6(dst: &Ipv6Key) -> bool {
    dst[0] == 0xff || (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80)
}

/// The policy for an IPv4 frame, fragments following their first.
#[inline(always)]
fn policy_v4(frame: &Frame) -> Verdict {
    let state = maps::policy_state();
    if state.installed == 0 {
        return if maps::is_bypass_v4(&frame.dst_v4) {
            Verdict::Pass(Counter::Bypass)
        } else {
            TUNNEL_INTERNET
        };
    }
    if frame.frag == FRAG_LATER
        && let Some(v) = followed(frame)
    {
        return v;
    }
    let v = policy_v4_ports(frame, &state);
    if frame.frag == FRAG_FIRST {
        record(frame, &v);
    }
    v
}

#[inline(always)]
fn policy_v4_ports(frame: &Frame, state: &PolicyState) -> Verdict {
    let Some(profile) = maps::profile_v4(state.slot, &frame.src_v4) else {
        return tunnel(state, ACTION_TUNNEL, None);
    };
    let Some(dest) = maps::dest_v4(profile.profile, &frame.dst_v4) else {
        return tunnel(state, ACTION_TUNNEL, Some(&profile));
    };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&frame.dst_v4);
    let action = policy_action(state, &profile, dest, &addr, frame);
    tunnel(state, action, Some(&profile))
}

/// The policy for an IPv6 frame, fragments following their first.
#[inline(always)]
fn policy_v6(frame: &Frame) -> Verdict {
    let state = maps::policy_state();
    if state.installed == 0 {
        return if maps::is_bypass_v6(&frame.dst_v6) {
            Verdict::Pass(Counter::Bypass)
        } else {
            TUNNEL_INTERNET
        };
    }
    if frame.frag == FRAG_LATER
        && let Some(v) = followed(frame)
    {
        return v;
    }
    let v = policy_v6_ports(frame, &state);
    if frame.frag == FRAG_FIRST {
        record(frame, &v);
    }
    v
}

#[inline(always)]
fn policy_v6_ports(frame: &Frame, state: &PolicyState) -> Verdict {
    let Some(profile) = maps::profile_v6(state.slot, &frame.src_v6) else {
        return tunnel(state, ACTION_TUNNEL, None);
    };
    let Some(dest) = maps::dest_v6(profile.profile, &frame.dst_v6) else {
        return tunnel(state, ACTION_TUNNEL, Some(&profile));
    };
    let action = policy_action(state, &profile, dest, &frame.dst_v6, frame);
    tunnel(state, action, Some(&profile))
}

/// The fragment table's key of a fragment: (source, destination,
/// identification, protocol) for IPv4 (RFC 791), (source, destination,
/// identification) for IPv6 (RFC 8200).
#[inline(always)]
fn frag_key(frame: &Frame) -> FragKey {
    let mut k = FragKey {
        id: frame.frag_id,
        ..FragKey::default()
    };
    if frame.kind == Kind::Ipv4 {
        k.src[..4].copy_from_slice(&frame.src_v4);
        k.dst[..4].copy_from_slice(&frame.dst_v4);
        k.proto = frame.proto;
        k.family = 4;
    } else {
        k.src = frame.src_v6;
        k.dst = frame.dst_v6;
        k.family = 6;
    }
    k
}

/// Records a first fragment's verdict for the fragments after it.
#[inline(always)]
fn record(frame: &Frame, v: &Verdict) {
    // SAFETY: a helper without arguments or side effects.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    let e = match v {
        Verdict::Pass(c) => FragEntry {
            seen_ns: now,
            kind: FRAG_PASS,
            counter: c.index() as u8,
            ..FragEntry::default()
        },
        Verdict::Tunnel {
            action,
            generation,
            counter,
        } => FragEntry {
            seen_ns: now,
            generation: *generation,
            kind: FRAG_TUNNEL,
            action: *action,
            counter: counter.index() as u8,
            reserved: 0,
        },
    };
    maps::set_frag_entry(&frag_key(frame), &e);
}

/// A later fragment's verdict: its first fragment's, if that is known and
/// recent ([`Counter::FragFollowed`]); `None` otherwise, counted as
/// [`Counter::FragUnknown`] (the caller then classifies it without ports).
#[inline(always)]
fn followed(frame: &Frame) -> Option<Verdict> {
    let found = maps::frag_entry(&frag_key(frame)).and_then(|e| {
        // SAFETY: a helper without arguments or side effects.
        let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        if now.wrapping_sub(e.seen_ns) > maps::frag_timeout_ns() {
            return None;
        }
        match e.kind {
            FRAG_PASS => Some(Verdict::Pass(pass_counter(e.counter))),
            FRAG_TUNNEL => Some(Verdict::Tunnel {
                action: e.action,
                generation: e.generation,
                counter: if e.counter == Counter::TunnelPrivate.index() as u8 {
                    Counter::TunnelPrivate
                } else {
                    Counter::Tunnel
                },
            }),
            _ => None,
        }
    });
    maps::count(if found.is_some() {
        Counter::FragFollowed
    } else {
        Counter::FragUnknown
    });
    found
}

/// The pass counter a recorded verdict names (the policy passes with one
/// of these three).
#[inline(always)]
fn pass_counter(index: u8) -> Counter {
    if index == Counter::DirectNetwork.index() as u8 {
        Counter::DirectNetwork
    } else if index == Counter::DirectFailOpen.index() as u8 {
        Counter::DirectFailOpen
    } else {
        Counter::Bypass
    }
}

/// The policy's verdict (`ACTION_*`) from a destination entry, in the
/// order of `sluice::policy`: a priority entry (VPN gateway, private
/// segment); a private-access domain; a source-port bypass; a bypassed
/// domain; the first matching port rule; the entry's own verdict. A frame
/// whose ports are unknown (a non-first fragment) takes the first port
/// rule of its protocol that tunnels, if any: it errs toward the tunnel.
#[inline(always)]
fn policy_action(
    state: &PolicyState,
    profile: &ProfileEntry,
    dest: &DestEntry,
    addr: &[u8; 16],
    frame: &Frame,
) -> u8 {
    if dest.priority != 0 {
        return dest.action;
    }
    let bit = 1u64 << (profile.profile & 63);
    // This slot's domain entry.
    let (bypass, private, private_action) = match maps::dns_entry(state.slot & 1, addr) {
        Some(d) => (d.bypass, d.private, d.private_action),
        None => (0, 0, 0),
    };
    if private & bit != 0 {
        return private_action;
    }
    if frame.sport != 0 {
        for p in profile.source_ports {
            if p == frame.sport {
                return ACTION_DIRECT;
            }
        }
    }
    if bypass & bit != 0 {
        return ACTION_DIRECT;
    }
    // An IPv6 later fragment's own "next header" is not the datagram's
    // protocol (RFC 8200 4.5: the receiver takes the first fragment's,
    // and an extension header may come first): any protocol, any port.
    let unknown_proto = frame.kind == Kind::Ipv6 && frame.frag == FRAG_LATER;
    let unknown_ports = unknown_proto || (frame.dport == 0 && crate::parse::has_ports(frame.proto));
    let n = dest.nports as usize;
    for (i, r) in dest.ports.iter().enumerate() {
        if i >= n {
            break;
        }
        let proto_ok = unknown_proto || r.proto == 0 || r.proto == frame.proto;
        if unknown_ports {
            if proto_ok && r.action != ACTION_DIRECT {
                return r.action;
            }
        } else if proto_ok && r.port == frame.dport {
            return r.action;
        }
    }
    dest.action
}

/// Turns a policy verdict into the frame's fate under the runtime state:
/// direct passes; internet traffic goes direct when the network state says
/// so; a tunnel that is down passes traffic of a fail-open profile, or of
/// one inside its captive-portal grace; everything else is redirected.
#[inline(always)]
fn tunnel(state: &PolicyState, action: u8, profile: Option<&ProfileEntry>) -> Verdict {
    if action == ACTION_DIRECT {
        return Verdict::Pass(Counter::Bypass);
    }
    let t = (action.wrapping_sub(ACTION_TUNNEL)) as usize & 7;
    if t == 0 && state.internet_direct != 0 {
        return Verdict::Pass(Counter::DirectNetwork);
    }
    if state.is_down(t)
        && let Some(p) = profile
    {
        if p.flags & PROFILE_FAIL_OPEN != 0 {
            return Verdict::Pass(Counter::DirectFailOpen);
        }
        // Read after the word: a time older than the outage the word
        // reports (or 0) only shortens the grace.
        let down = maps::down_since(t);
        // SAFETY: a helper without arguments or side effects.
        let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        if down != 0 && now.wrapping_sub(down) < p.grace_ns {
            return Verdict::Pass(Counter::DirectFailOpen);
        }
    }
    Verdict::Tunnel {
        action,
        generation: state.generation,
        counter: if t == 0 {
            Counter::Tunnel
        } else {
            Counter::TunnelPrivate
        },
    }
}
