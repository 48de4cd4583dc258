//! The tunnel's inner MTU, enforced where packets enter the tunnel.
//!
//! A tunnel carries each inner packet whole; the datagram transport can
//! carry at most the path MTU less its own headers. So that switching
//! between transports never changes what fits, the gateway gives every
//! tenant one inner MTU and enforces it on the way in, never silently:
//!
//! - a TCP SYN (or SYN-ACK) whose MSS option would let the peer send
//!   segments larger than the inner MTU has it lowered ([`clamp_mss`]);
//! - an IPv4 packet without DF that does not fit is split into fragments
//!   ([`fragment_v4`]), as a router would;
//! - an IPv4 packet with DF, or any IPv6 packet, that does not fit is
//!   dropped and its sender gets ICMP "fragmentation needed" (type 3
//!   code 4, RFC 1191) or `ICMPv6` "packet too big" (type 2, RFC 8201) with
//!   the inner MTU ([`too_big_reply`]), rate-limited ([`IcmpLimiter`],
//!   RFC 4443 §2.4(f)). Never to an ICMP error, a non-first fragment, or a
//!   broadcast, multicast or unspecified source.
//!
//! Sans-IO: functions over byte slices; the limiter takes the time from
//! its caller. Nothing allocates.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use crate::wire::{checksum, ip, ipv4, ipv6, tcp};

/// The smallest inner MTU accepted for IPv6 (RFC 8200 §5): every IPv6
/// link carries 1280 bytes.
pub const MIN_MTU_V6: u16 = 1280;
/// The smallest inner MTU accepted at all: an IPv4 host must accept
/// 576-byte datagrams (RFC 791), and ICMP quotes are sized to it.
pub const MIN_MTU: u16 = 576;

const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const ICMP_HEADER_LEN: usize = 8;
/// IPv4 ICMP errors are at most this long (RFC 1812 §4.3.2.3).
const ICMPV4_MAX: usize = 576;
/// `ICMPv6` errors are at most this long (RFC 4443 §2.4(c)).
const ICMPV6_MAX: usize = 1280;
/// TTL / hop limit of the errors the gateway sends.
const TTL: u8 = 64;
/// TCP option kinds.
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// What a packet entering the tunnel needs, against the inner MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// It fits.
    Fits,
    /// IPv4 without DF, too long: send it as fragments.
    Fragment,
    /// Too long and may not be fragmented (IPv4 with DF, or IPv6): drop it
    /// and tell its sender.
    TooBig,
}

/// Where `pkt` (an IP packet, as [`ip::Packet`] checked it) stands
/// against `mtu`.
pub fn fit(pkt: &[u8], mtu: u16) -> Fit {
    if pkt.len() <= usize::from(mtu) {
        return Fit::Fits;
    }
    match ip::version(pkt) {
        Some(4) => match ipv4::Packet::new_checked(pkt) {
            Ok(p) if !p.dont_frag() => Fit::Fragment,
            _ => Fit::TooBig,
        },
        _ => Fit::TooBig,
    }
}

/// The largest TCP MSS that keeps a segment within `mtu`, for an IPv4
/// (`v6` false) or IPv6 packet without options or extension headers.
pub fn max_mss(mtu: u16, v6: bool) -> u16 {
    let headers = if v6 { 40 + 20 } else { 20 + 20 };
    mtu.saturating_sub(headers)
}

/// Lowers the MSS option of a TCP SYN or SYN-ACK in `pkt` (an IP packet
/// whose lengths [`ip::Packet`] checked) to [`max_mss`] for `mtu`, and
/// fixes the TCP checksum. Returns true if it changed the packet. Other
/// packets, a SYN without an MSS option (its default, 536 or 1220, is
/// below any inner MTU allowed) or with a smaller one, a fragment, an IPv6
/// packet with extension headers, or malformed options are left alone.
pub fn clamp_mss(pkt: &mut [u8], mtu: u16) -> bool {
    let (ip_len, v6, pseudo) = match ip::version(pkt) {
        Some(4) => {
            let Ok(p) = ipv4::Packet::new_checked(&*pkt) else {
                return false;
            };
            if p.protocol() != ip::PROTO_TCP || p.is_fragment() {
                return false;
            }
            let l4 = u32::from(p.total_len()) - p.header_len() as u32;
            let pseudo = checksum::pseudo_header(
                &p.src_addr().octets(),
                &p.dst_addr().octets(),
                ip::PROTO_TCP,
                l4,
            );
            (p.header_len(), false, pseudo)
        }
        Some(6) => {
            let Ok(p) = ipv6::Packet::new_checked(&*pkt) else {
                return false;
            };
            if p.next_header() != ip::PROTO_TCP {
                return false;
            }
            let pseudo = checksum::pseudo_header(
                &p.src_octets(),
                &p.dst_octets(),
                ip::PROTO_TCP,
                u32::from(p.payload_len()),
            );
            (ipv6::HEADER_LEN, true, pseudo)
        }
        _ => return false,
    };
    let Some(seg) = pkt.get_mut(ip_len..) else {
        return false;
    };
    let Ok(t) = tcp::Packet::new_checked(&*seg) else {
        return false;
    };
    if t.flags() & tcp::FLAG_SYN == 0 {
        return false;
    }
    let max = max_mss(mtu, v6);
    let Some(at) = mss_option(t.options()) else {
        return false;
    };
    let at = tcp::HEADER_LEN + at;
    let current = u16::from_be_bytes([seg[at], seg[at + 1]]);
    if current <= max {
        return false;
    }
    seg[at..at + 2].copy_from_slice(&max.to_be_bytes());
    // A SYN is small and rare: the whole checksum again, not an
    // incremental update (the option may sit at an odd offset).
    tcp::Packet::new_unchecked(seg).fill_checksum(pseudo);
    true
}

/// The offset of the MSS option's value within `options`, if there is a
/// well-formed one.
fn mss_option(options: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            OPT_END => return None,
            OPT_NOP => i += 1,
            kind => {
                let len = usize::from(*options.get(i + 1)?);
                if len < 2 || i + len > options.len() {
                    return None;
                }
                if kind == OPT_MSS {
                    return (len == 4).then_some(i + 2);
                }
                i += len;
            }
        }
    }
    None
}

/// Writes into `out` the ICMP error that tells the sender of `pkt` (an IP
/// packet too big for `mtu`, as [`ip::Packet`] checked it) to send at most
/// `mtu` bytes: ICMP "fragmentation needed" for IPv4, `ICMPv6` "packet too
/// big" for IPv6, from `from` (the gateway's address on the sender's side,
/// of the same family), quoting as much of `pkt` as the error may hold.
/// Returns its length, or `None` if no error may be sent (see the module
/// documentation), `from` is of the other family, or `out` is too short.
pub fn too_big_reply(pkt: &[u8], mtu: u16, from: IpAddr, out: &mut [u8]) -> Option<usize> {
    match (ip::version(pkt)?, from) {
        (4, IpAddr::V4(from)) => too_big_v4(pkt, mtu, from, out),
        (6, IpAddr::V6(from)) => too_big_v6(pkt, mtu, from, out),
        _ => None,
    }
}

fn too_big_v4(pkt: &[u8], mtu: u16, from: Ipv4Addr, out: &mut [u8]) -> Option<usize> {
    let p = ipv4::Packet::new_checked(pkt).ok()?;
    let (src, dst) = (p.src_addr(), p.dst_addr());
    if src.is_unspecified()
        || src.is_broadcast()
        || src.is_multicast()
        || dst.is_broadcast()
        || dst.is_multicast()
        || p.frag_offset() != 0
    {
        return None;
    }
    // Never an error about an ICMP error.
    if p.protocol() == PROTO_ICMP {
        let ty = *p.payload().first()?;
        if matches!(ty, 3 | 4 | 5 | 11 | 12) {
            return None;
        }
    }
    let quote = pkt
        .len()
        .min(ICMPV4_MAX - ipv4::HEADER_LEN - ICMP_HEADER_LEN);
    let icmp_len = ICMP_HEADER_LEN + quote;
    let h = ipv4::emit_header(out, from, src, PROTO_ICMP, TTL, icmp_len)?;
    let icmp = out.get_mut(h..h + icmp_len)?;
    icmp[0] = 3; // destination unreachable
    icmp[1] = 4; // fragmentation needed and DF set
    icmp[2..6].fill(0);
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&pkt[..quote]);
    let c = !checksum::fold(checksum::add(0, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(h + icmp_len)
}

fn too_big_v6(pkt: &[u8], mtu: u16, from: Ipv6Addr, out: &mut [u8]) -> Option<usize> {
    let p = ipv6::Packet::new_checked(pkt).ok()?;
    let src = p.src_addr();
    if src.is_unspecified() || src.is_multicast() {
        return None;
    }
    // Never an error about an ICMPv6 error (types below 128), when the
    // ICMPv6 header directly follows.
    if p.next_header() == PROTO_ICMPV6 && p.payload().first().is_none_or(|&ty| ty < 128) {
        return None;
    }
    let quote = pkt
        .len()
        .min(ICMPV6_MAX - ipv6::HEADER_LEN - ICMP_HEADER_LEN);
    let icmp_len = ICMP_HEADER_LEN + quote;
    let h = ipv6::emit_header(out, from, src, PROTO_ICMPV6, TTL, icmp_len)?;
    let icmp = out.get_mut(h..h + icmp_len)?;
    icmp[0] = 2; // packet too big
    icmp[1] = 0;
    icmp[2..4].fill(0);
    icmp[4..8].copy_from_slice(&u32::from(mtu).to_be_bytes());
    icmp[8..].copy_from_slice(&pkt[..quote]);
    let pseudo =
        checksum::pseudo_header(&from.octets(), &src.octets(), PROTO_ICMPV6, icmp_len as u32);
    let c = !checksum::fold(checksum::add(pseudo, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(h + icmp_len)
}

/// Why [`fragment_v4`] did not fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FragError {
    /// Not an IPv4 packet whose lengths check, or a fragment whose data
    /// would reach past 65,535 bytes.
    #[error("not a well-formed IPv4 packet")]
    Malformed,
    /// The packet has DF set.
    #[error("the packet may not be fragmented (DF)")]
    DontFragment,
    /// The MTU leaves no room for 8 bytes of payload after the header.
    #[error("the MTU leaves no room for a fragment's payload")]
    MtuTooSmall,
    /// `scratch` cannot hold one fragment.
    #[error("the scratch buffer is shorter than the MTU")]
    Scratch,
}

/// Splits `pkt`, an IPv4 packet without DF, into fragments of at most
/// `mtu` bytes (RFC 791 §3.2), built one at a time in `scratch` and handed
/// to `out` in order. The first fragment keeps every option; the others
/// keep the options whose "copied" bit is set. Works on a packet that is
/// itself a fragment (offsets add up; MF stays on the last piece if it
/// was set). Returns the number of fragments.
///
/// # Errors
/// See [`FragError`].
pub fn fragment_v4(
    pkt: &[u8],
    mtu: u16,
    scratch: &mut [u8],
    out: &mut dyn FnMut(&[u8]),
) -> Result<usize, FragError> {
    let p = ipv4::Packet::new_checked(pkt).map_err(|_| FragError::Malformed)?;
    if p.dont_frag() {
        return Err(FragError::DontFragment);
    }
    let mtu = usize::from(mtu);
    if scratch.len() < mtu.min(pkt.len()) {
        return Err(FragError::Scratch);
    }
    let header = p.header();
    let payload = p.payload();
    // A fragment's data may not reach past 65,535 bytes of the datagram.
    if usize::from(p.frag_offset()) + payload.len() > usize::from(u16::MAX) {
        return Err(FragError::Malformed);
    }
    // The later fragments' header: the fixed part and the copied options,
    // padded with end-of-options to a multiple of four.
    let mut later = [0u8; 60];
    later[..ipv4::HEADER_LEN].copy_from_slice(&header[..ipv4::HEADER_LEN]);
    let mut later_len = ipv4::HEADER_LEN;
    let options = p.options();
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            OPT_END => break,
            OPT_NOP => i += 1,
            kind => {
                let Some(&len) = options.get(i + 1) else {
                    break;
                };
                let len = usize::from(len);
                if len < 2 || i + len > options.len() {
                    break;
                }
                if kind & 0x80 != 0 {
                    later[later_len..later_len + len].copy_from_slice(&options[i..i + len]);
                    later_len += len;
                }
                i += len;
            }
        }
    }
    later_len = later_len.next_multiple_of(4);
    later[0] = 0x40 | (later_len / 4) as u8;
    let (base, last_mf) = (p.frag_offset(), p.more_frags());
    let flags = p.flags() & !0b011;
    let mut off = 0;
    let mut n = 0;
    while off < payload.len() {
        let hdr: &[u8] = if off == 0 {
            header
        } else {
            &later[..later_len]
        };
        let room = mtu.checked_sub(hdr.len()).ok_or(FragError::MtuTooSmall)? & !7;
        if room == 0 {
            return Err(FragError::MtuTooSmall);
        }
        let take = room.min(payload.len() - off);
        let last = off + take == payload.len();
        let total = hdr.len() + take;
        let frag = &mut scratch[..total];
        frag[..hdr.len()].copy_from_slice(hdr);
        frag[hdr.len()..].copy_from_slice(&payload[off..off + take]);
        let mut f = ipv4::Packet::new_unchecked(&mut *frag);
        f.set_total_len(total as u16);
        let mf = if last { u8::from(last_mf) } else { 1 };
        f.set_frag(flags | mf, base + off as u16); // checked above: at most 65,535
        f.fill_checksum();
        out(frag);
        off += take;
        n += 1;
    }
    Ok(n)
}

/// A token bucket for the ICMP errors one worker sends (RFC 4443
/// §2.4(f)): `burst` at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct IcmpLimiter {
    per_second: u32,
    burst: u32,
    tokens: u32,
    last: Option<Instant>,
    refused: u64,
}

impl IcmpLimiter {
    /// A full bucket.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second,
            burst,
            tokens: burst,
            last: None,
            refused: 0,
        }
    }

    /// True if an error may be sent at `now` (and takes a token).
    pub fn allow(&mut self, now: Instant) -> bool {
        let last = *self.last.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last).as_nanos();
        let add = elapsed * u128::from(self.per_second) / 1_000_000_000;
        if add > 0 {
            let add = u32::try_from(add).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(add).min(self.burst);
            self.last = Some(now);
        }
        if self.tokens == 0 {
            self.refused += 1;
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Errors not sent because the bucket was empty.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests;
