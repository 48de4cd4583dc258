//! Receive coalescing ("GRO in user space") for a TUN device that takes
//! virtio-net headers: consecutive TCP segments, or UDP datagrams, of one
//! flow become one GSO packet of up to 64 KiB.
//!
//! The edge writes every packet that leaves a tunnel into its TUN device.
//! One write per packet costs a syscall and a trip through the kernel's
//! forwarding, conntrack and NAT per packet. Packets of a flow arrive in
//! bursts (a TLS record carries about eleven 1400-byte packets), so the
//! edge merges them: the kernel then forwards and translates one packet
//! where there were dozens, and segments it again (GSO) only where it must,
//! at the egress device or the receiving socket.
//!
//! The merge is lossless: the kernel's segmentation of a merged packet
//! gives back exactly the packets that went in (addresses, ports, IP IDs,
//! TTL, TOS, TCP sequence and acknowledgement numbers, window, options,
//! flags, payloads, checksums); the tests check this against a model of
//! that segmentation (`segment`, built for tests and fuzzing). Packets are
//! merged only when this holds:
//!
//! - IPv4 without options, not a fragment; IPv6 without extension headers;
//! - TCP with only ACK (and PSH on the last segment), no urgent pointer,
//!   the same header length and options, acknowledgement number and window
//!   as the first segment, and the next sequence number; or UDP with a
//!   non-zero checksum;
//! - the same TOS/traffic class, TTL/hop limit, DF bit and flow label, and
//!   for IPv4 the next IP ID;
//! - valid checksums (IPv4 header and TCP/UDP): a corrupted segment is
//!   passed on unchanged for the receiver to drop, never repaired by a
//!   recomputed checksum;
//! - a payload no larger than the first one's (the GSO size); a shorter
//!   one, or PSH, ends the packet; at most [`MAX_SEGMENTS`] segments and
//!   65,535 bytes.
//!
//! Everything else is passed on unchanged, after any merged packet of its
//! flow, so a flow's order is kept (the order between flows may change).
//!
//! Sans-IO: [`Coalescer::push`] takes one IP packet at a time and
//! [`Coalescer::flush`] ends the batch; both hand what is ready to write
//! to a callback as a virtio-net header and the packet. Nothing is
//! allocated after [`Coalescer::new`].
//!
//! Every header is read and written through the checked views of
//! [`crate::wire`] ([`ipv4`], [`ipv6`], [`tcp`], [`udp`]): a packet's
//! parse runs their `new_checked`/`check_len` once, and later steps re-wrap
//! what it accepted (the packet, or the slot's copy of its first packet's
//! headers) with `new_unchecked`.
use crate::wire::{
    checksum,
    ip::{self, PROTO_TCP, PROTO_UDP},
    ipv4, ipv6, tcp, udp,
};

/// Length of `struct virtio_net_hdr` (the TUN default `vnet_hdr_sz`).
pub const VNET_HDR_LEN: usize = 10;
/// Most segments in one merged packet (UDP GSO's limit in Linux is 128;
/// 64 keeps to the stricter of older kernels).
pub(crate) const MAX_SEGMENTS: usize = 64;
/// Most datagrams in one merged UDP packet.
pub const MAX_UDP_SEGMENTS: usize = 8;
/// Flows merged at once; a packet of a further flow flushes the oldest.
pub(crate) const SLOTS: usize = 8;
/// Largest IP packet (total length field).
const MAX_IP_LEN: usize = 65_535;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_*`.
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;

const TCP_ACK: u8 = tcp::FLAG_ACK;
const TCP_PSH: u8 = tcp::FLAG_PSH;

/// The fields of `struct virtio_net_hdr` (little-endian).
mod field {
    use core::ops::Range;
    pub(super) const FLAGS: usize = 0;
    pub(super) const GSO_TYPE: usize = 1;
    pub(super) const HDR_LEN: Range<usize> = 2..4;
    pub(super) const GSO_SIZE: Range<usize> = 4..6;
    pub(super) const CSUM_START: Range<usize> = 6..8;
    pub(super) const CSUM_OFFSET: Range<usize> = 8..10;
}

/// A `struct virtio_net_hdr` (little-endian fields, as TUN uses them on
/// little-endian hosts and with `TUNSETVNETLE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Length of the headers every segment repeats.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksum to complete starts.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header of a packet that needs nothing done: no GSO, checksums
    /// complete.
    pub(crate) const PLAIN: Self = Self {
        flags: 0,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// The wire form.
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0; VNET_HDR_LEN];
        b[field::FLAGS] = self.flags;
        b[field::GSO_TYPE] = self.gso_type;
        b[field::HDR_LEN].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[field::GSO_SIZE].copy_from_slice(&self.gso_size.to_le_bytes());
        b[field::CSUM_START].copy_from_slice(&self.csum_start.to_le_bytes());
        b[field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Parses the wire form.
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u = |r: core::ops::Range<usize>| u16::from_le_bytes([b[r.start], b[r.start + 1]]);
        Self {
            flags: b[field::FLAGS],
            gso_type: b[field::GSO_TYPE],
            hdr_len: u(field::HDR_LEN),
            gso_size: u(field::GSO_SIZE),
            csum_start: u(field::CSUM_START),
            csum_offset: u(field::CSUM_OFFSET),
        }
    }

    /// True if the packet is a GSO packet.
    pub fn is_gso(&self) -> bool {
        self.gso_type != GSO_NONE
    }
}

/// Counters of a [`Coalescer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroStats {
    /// Packets pushed.
    pub packets_in: u64,
    /// Packets handed out (merged ones count once).
    pub packets_out: u64,
    /// Segments that went into merged packets of two or more.
    pub merged_segments: u64,
    /// TCP/UDP packets that could have been merged but had a bad checksum.
    pub bad_checksum: u64,
}

/// What a packet is, for merging.
#[derive(Debug, Clone, Copy)]
struct Info {
    key: Key,
    /// IP header length.
    ip_len: usize,
    /// IP + TCP/UDP header length.
    hdr_len: usize,
    /// Payload after `hdr_len`.
    payload: usize,
    /// TCP sequence number.
    seq: u32,
    /// TCP flags.
    flags: u8,
}

/// A flow: IP version and protocol, then addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    v6: bool,
    proto: u8,
    addrs: [u8; 32],
    ports: [u8; 4],
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Bytes of the packet in the slot's buffer; 0: free.
    used: usize,
    info: Info,
    /// Payload of the first segment: every other one is at most this.
    gso_size: usize,
    segs: usize,
    /// No more segments may join (a short one or PSH came).
    closed: bool,
    next_seq: u32,
    next_id: u16,
    /// When the slot was last appended to (eviction order).
    tick: u64,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            used: 0,
            info: Info {
                key: Key {
                    v6: false,
                    proto: 0,
                    addrs: [0; 32],
                    ports: [0; 4],
                },
                ip_len: 0,
                hdr_len: 0,
                payload: 0,
                seq: 0,
                flags: 0,
            },
            gso_size: 0,
            segs: 0,
            closed: false,
            next_seq: 0,
            next_id: 0,
            tick: 0,
        }
    }
}

/// Merges runs of TCP segments and UDP datagrams into GSO packets. See
/// the module documentation.
pub struct Coalescer {
    slots: [Slot; SLOTS],
    /// `SLOTS` buffers of `MAX_IP_LEN` bytes.
    bufs: Box<[u8]>,
    tick: u64,
    udp: bool,
    /// Merging switched off ([`Coalescer::disable`]): everything passes.
    off: bool,
    stats: GroStats,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Coalescer {
    /// A coalescer with its buffers (512 KiB). `udp`: merge UDP too (the
    /// kernel must accept `VIRTIO_NET_HDR_GSO_UDP_L4`, Linux 6.2 and
    /// later); TCP is always merged.
    pub fn new(udp: bool) -> Self {
        Self {
            slots: [Slot::default(); SLOTS],
            bufs: vec![0; SLOTS * MAX_IP_LEN].into_boxed_slice(),
            tick: 0,
            udp,
            off: false,
            stats: GroStats::default(),
        }
    }

    /// Stops merging: from now on every packet is handed out as it comes
    /// (for a kernel that refuses GSO packets). Packets already held still
    /// come out of [`Coalescer::flush`].
    pub fn disable(&mut self) {
        self.off = true;
    }

    /// The counters so far.
    pub fn stats(&self) -> GroStats {
        self.stats
    }

    /// Takes one IP packet (as [`crate::wire::ip::Packet`] trimmed it).
    /// Whatever must be written before it, or the packet itself if it
    /// cannot be merged, goes to `out` now; the rest waits for a later
    /// packet or [`Coalescer::flush`].
    pub fn push(&mut self, pkt: &[u8], out: &mut dyn FnMut(&VnetHdr, &[u8])) {
        self.stats.packets_in += 1;
        self.tick += 1;
        if self.off {
            self.stats.packets_out += 1;
            out(&VnetHdr::PLAIN, pkt);
            return;
        }
        let parsed = self.classify(pkt);
        let key = match parsed {
            Parsed::Other => None,
            Parsed::Flow(key) => Some(key),
            Parsed::Mergeable(info) => Some(info.key),
        };
        let found = key.and_then(|k| {
            self.slots
                .iter()
                .position(|s| s.used != 0 && s.info.key == k)
        });
        if let Parsed::Mergeable(info) = parsed {
            if let Some(i) = found {
                if self.can_append(i, pkt, &info) {
                    self.append(i, pkt, &info);
                    return;
                }
                self.flush_slot(i, out);
            }
            let i = self.free_slot(out);
            self.start(i, pkt, info);
            return;
        }
        if let Some(i) = found {
            self.flush_slot(i, out);
        }
        self.stats.packets_out += 1;
        out(&VnetHdr::PLAIN, pkt);
    }

    /// Hands out every packet still held (end of a batch).
    pub fn flush(&mut self, out: &mut dyn FnMut(&VnetHdr, &[u8])) {
        // Oldest first.
        while let Some(i) = (0..SLOTS)
            .filter(|&i| self.slots[i].used != 0)
            .min_by_key(|&i| self.slots[i].tick)
        {
            self.flush_slot(i, out);
        }
    }

    /// True if no packet is held.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.used == 0)
    }

    fn classify(&mut self, pkt: &[u8]) -> Parsed {
        let parsed = parse(pkt);
        if let Parsed::Mergeable(info) = parsed {
            if info.key.proto == PROTO_UDP && !self.udp {
                return Parsed::Flow(info.key);
            }
            if !checksums_valid(pkt, &info) {
                self.stats.bad_checksum += 1;
                return Parsed::Flow(info.key);
            }
        }
        parsed
    }

    fn buf(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * MAX_IP_LEN..(i + 1) * MAX_IP_LEN]
    }

    /// A free slot, flushing the least recently used one if need be.
    fn free_slot(&mut self, out: &mut dyn FnMut(&VnetHdr, &[u8])) -> usize {
        if let Some(i) = self.slots.iter().position(|s| s.used == 0) {
            return i;
        }
        let i = (0..SLOTS)
            .min_by_key(|&i| self.slots[i].tick)
            .unwrap_or_default();
        self.flush_slot(i, out);
        i
    }

    /// Slot `i` starts with `pkt` ([`parse`] accepted it as `info`).
    fn start(&mut self, i: usize, pkt: &[u8], info: Info) {
        self.buf(i)[..pkt.len()].copy_from_slice(pkt);
        let id = if info.key.v6 {
            0
        } else {
            ipv4::Packet::new_unchecked(pkt).ident()
        };
        self.slots[i] = Slot {
            used: pkt.len(),
            info,
            gso_size: info.payload,
            segs: 1,
            closed: info.flags & TCP_PSH != 0,
            next_seq: info.seq.wrapping_add(info.payload as u32),
            next_id: id.wrapping_add(1),
            tick: self.tick,
        };
    }

    /// `pkt` ([`parse`] accepted it as `info`) continues slot `i`'s run.
    fn can_append(&self, i: usize, pkt: &[u8], info: &Info) -> bool {
        let s = &self.slots[i];
        // The headers of the slot's first packet (its IP length fields are
        // stale until the flush: only the other fields are read).
        let first = &self.bufs[i * MAX_IP_LEN..i * MAX_IP_LEN + s.info.hdr_len];
        if s.closed
            || s.segs >= MAX_SEGMENTS
            || (info.key.proto == PROTO_UDP && s.segs >= MAX_UDP_SEGMENTS)
            || info.payload > s.gso_size
            || s.used + info.payload > MAX_IP_LEN
            || info.hdr_len != s.info.hdr_len
        {
            return false;
        }
        let ip_same = if info.key.v6 {
            // Traffic class, flow label; hop limit (the version is 6).
            let (Some(a), Some(b)) = (
                pkt.first_chunk::<{ ipv6::HEADER_LEN }>(),
                first.first_chunk::<{ ipv6::HEADER_LEN }>(),
            ) else {
                return false;
            };
            let (a, b) = (
                ipv6::Packet::new_unchecked(a),
                ipv6::Packet::new_unchecked(b),
            );
            a.traffic_class() == b.traffic_class()
                && a.flow_label() == b.flow_label()
                && a.hop_limit() == b.hop_limit()
        } else {
            // TOS; flags (DF and the reserved bit; MF and the fragment
            // offset are clear); TTL; ID.
            let (Some(a), Some(b)) = (
                pkt.first_chunk::<{ ipv4::HEADER_LEN }>(),
                first.first_chunk::<{ ipv4::HEADER_LEN }>(),
            ) else {
                return false;
            };
            let (a, b) = (
                ipv4::Packet::new_unchecked(a),
                ipv4::Packet::new_unchecked(b),
            );
            a.tos() == b.tos()
                && a.flags() == b.flags()
                && a.ttl() == b.ttl()
                && a.ident() == s.next_id
        };
        if !ip_same {
            return false;
        }
        if info.key.proto == PROTO_UDP {
            return true;
        }
        // Sequence; ack, data offset (the reserved bits are clear), window
        // and urgent pointer (zero); options. Flags: both carry ACK, and
        // only the new one may carry PSH.
        // Both headers are `hdr_len - ip_len` bytes (checked above): the
        // fixed parts as arrays, then the options.
        let (a, b) = (&pkt[info.ip_len..info.hdr_len], &first[info.ip_len..]);
        let (Some(fa), Some(fb)) = (
            a.first_chunk::<{ tcp::HEADER_LEN }>(),
            b.first_chunk::<{ tcp::HEADER_LEN }>(),
        ) else {
            return false;
        };
        let (fa, fb) = (
            tcp::Packet::new_unchecked(fa),
            tcp::Packet::new_unchecked(fb),
        );
        info.seq == s.next_seq
            && fa.ack_number() == fb.ack_number()
            && fa.header_len() == fb.header_len()
            && fa.window_len() == fb.window_len()
            && fa.urgent_at() == fb.urgent_at()
            && tcp::Packet::new_unchecked(a).options() == tcp::Packet::new_unchecked(b).options()
    }

    fn append(&mut self, i: usize, pkt: &[u8], info: &Info) {
        let used = self.slots[i].used;
        let payload = &pkt[info.hdr_len..];
        self.buf(i)[used..used + payload.len()].copy_from_slice(payload);
        let tick = self.tick;
        let s = &mut self.slots[i];
        s.used += payload.len();
        s.segs += 1;
        s.next_seq = s.next_seq.wrapping_add(payload.len() as u32);
        s.next_id = s.next_id.wrapping_add(1);
        s.tick = tick;
        if payload.len() < s.gso_size {
            s.closed = true;
        }
        if info.flags & TCP_PSH != 0 {
            s.closed = true;
            let (l4, end) = (s.info.ip_len, s.info.hdr_len);
            let mut first = tcp::Packet::new_unchecked(&mut self.buf(i)[l4..end]);
            first.set_flags(first.flags() | TCP_PSH);
        }
    }

    fn flush_slot(&mut self, i: usize, out: &mut dyn FnMut(&VnetHdr, &[u8])) {
        let s = self.slots[i];
        if s.used == 0 {
            return;
        }
        self.slots[i].used = 0;
        self.stats.packets_out += 1;
        let buf = &mut self.bufs[i * MAX_IP_LEN..i * MAX_IP_LEN + s.used];
        if s.segs < 2 {
            out(&VnetHdr::PLAIN, buf);
            return;
        }
        self.stats.merged_segments += s.segs as u64;
        let info = s.info;
        let l4_len = s.used - info.ip_len;
        let pseudo = if info.key.v6 {
            let mut ip = ipv6::Packet::new_unchecked(&mut *buf);
            ip.set_payload_len(l4_len as u16);
            checksum::pseudo_header(
                &ip.src_octets(),
                &ip.dst_octets(),
                info.key.proto,
                l4_len as u32,
            )
        } else {
            let mut ip = ipv4::Packet::new_unchecked(&mut *buf);
            ip.set_total_len(s.used as u16);
            ip.fill_checksum();
            checksum::pseudo_header(
                &ip.src_addr().octets(),
                &ip.dst_addr().octets(),
                info.key.proto,
                l4_len as u32,
            )
        };
        // The checksum field holds the folded pseudo-header sum, not
        // complemented: the kernel completes it over each segment.
        let pseudo = checksum::fold(pseudo);
        let l4 = &mut buf[info.ip_len..];
        let csum_offset = if info.key.proto == PROTO_TCP {
            tcp::Packet::new_unchecked(l4).set_checksum(pseudo);
            tcp::CHECKSUM_OFFSET
        } else {
            let mut u = udp::Packet::new_unchecked(l4);
            u.set_length(l4_len as u16);
            u.set_checksum(pseudo);
            udp::CHECKSUM_OFFSET
        };
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: match (info.key.proto, info.key.v6) {
                (PROTO_TCP, false) => GSO_TCPV4,
                (PROTO_TCP, true) => GSO_TCPV6,
                _ => GSO_UDP_L4,
            },
            hdr_len: info.hdr_len as u16,
            gso_size: s.gso_size as u16,
            csum_start: info.ip_len as u16,
            csum_offset: csum_offset as u16,
        };
        out(&hdr, buf);
    }
}

/// What [`parse`] found.
#[derive(Debug, Clone, Copy)]
enum Parsed {
    /// Not TCP or UDP over plain IPv4/IPv6.
    Other,
    /// TCP or UDP, but not mergeable (flags, fragment, no payload, ...):
    /// passed on, after its flow's held packet.
    Flow(Key),
    /// A candidate (checksums still to check).
    Mergeable(Info),
}

/// The IP header, through the views' checks: the packet is exactly its
/// declared length, and for IPv4 not a fragment (DF may be set). Fills
/// `addrs` (source then destination) and returns the version (true: 6),
/// the header length, the protocol, whether the header is plain (no
/// IPv4 options) and the transport bytes.
fn ip_header<'a>(pkt: &'a [u8], addrs: &mut [u8; 32]) -> Option<(bool, usize, u8, bool, &'a [u8])> {
    match ip::version(pkt) {
        Some(4) => {
            let checked = ipv4::Packet::new_checked(pkt).ok()?;
            let l4 = checked.payload();
            // The fixed header again, as an array: the fields below are
            // read without further bounds checks.
            let fixed = pkt.first_chunk::<{ ipv4::HEADER_LEN }>()?;
            let ip = ipv4::Packet::new_unchecked(fixed);
            if usize::from(ip.total_len()) != pkt.len() || ip.is_fragment() {
                return None;
            }
            addrs[..4].copy_from_slice(&ip.src_addr().octets());
            addrs[4..8].copy_from_slice(&ip.dst_addr().octets());
            let ip_len = ip.header_len();
            Some((false, ip_len, ip.protocol(), ip_len == ipv4::HEADER_LEN, l4))
        }
        Some(6) => {
            let checked = ipv6::Packet::new_checked(pkt).ok()?;
            let l4 = checked.payload();
            let fixed = pkt.first_chunk::<{ ipv6::HEADER_LEN }>()?;
            let ip = ipv6::Packet::new_unchecked(fixed);
            if ip.total_len() != pkt.len() {
                return None;
            }
            addrs[..16].copy_from_slice(&ip.src_octets());
            addrs[16..].copy_from_slice(&ip.dst_octets());
            Some((true, ipv6::HEADER_LEN, ip.next_header(), true, l4))
        }
        _ => None,
    }
}

/// Reads what merging needs, through the views' checks (every access is
/// bounds-checked).
fn parse(pkt: &[u8]) -> Parsed {
    let mut addrs = [0; 32];
    let Some((v6, ip_len, proto, plain_ip, l4)) = ip_header(pkt, &mut addrs) else {
        return Parsed::Other;
    };
    // The flow is known from the fixed transport header alone: a packet
    // whose header is malformed beyond it is still passed on after its
    // flow's held packet. Below, the views read only fields of that fixed
    // header until `check_len` has looked at the rest.
    let fixed = match proto {
        PROTO_TCP => tcp::HEADER_LEN,
        PROTO_UDP => udp::HEADER_LEN,
        _ => return Parsed::Other,
    };
    if l4.len() < fixed {
        return Parsed::Other;
    }
    // Source and destination ports open both headers.
    let Some(ports) = l4.first_chunk::<4>() else {
        return Parsed::Other;
    };
    let (src_port, dst_port) = if proto == PROTO_TCP {
        let t = tcp::Packet::new_unchecked(ports);
        (t.src_port(), t.dst_port())
    } else {
        let u = udp::Packet::new_unchecked(ports);
        (u.src_port(), u.dst_port())
    };
    let (sp, dp) = (src_port.to_be_bytes(), dst_port.to_be_bytes());
    let key = Key {
        v6,
        proto,
        addrs,
        ports: [sp[0], sp[1], dp[0], dp[1]],
    };
    if !plain_ip {
        return Parsed::Flow(key);
    }
    let (hdr_len, seq, flags) = if proto == PROTO_TCP {
        // A data offset within the segment; only ACK, or ACK and PSH;
        // reserved bits clear; no urgent pointer.
        if tcp::Packet::new_checked(l4).is_err() {
            return Parsed::Flow(key);
        }
        let Some(fixed) = l4.first_chunk::<{ tcp::HEADER_LEN }>() else {
            return Parsed::Flow(key);
        };
        let t = tcp::Packet::new_unchecked(fixed);
        if t.reserved() != 0 || t.flags() & !TCP_PSH != TCP_ACK || t.urgent_at() != 0 {
            return Parsed::Flow(key);
        }
        (ip_len + t.header_len(), t.seq_number(), t.flags())
    } else {
        let Some(fixed) = l4.first_chunk::<{ udp::HEADER_LEN }>() else {
            return Parsed::Flow(key);
        };
        let u = udp::Packet::new_unchecked(fixed);
        // The length field is the datagram's (so `check_len` holds), and
        // a checksum was computed.
        if usize::from(u.length()) != l4.len() || u.checksum() == 0 {
            return Parsed::Flow(key);
        }
        (ip_len + udp::HEADER_LEN, 0, 0)
    };
    let payload = pkt.len() - hdr_len;
    if payload == 0 {
        return Parsed::Flow(key);
    }
    Parsed::Mergeable(Info {
        key,
        ip_len,
        hdr_len,
        payload,
        seq,
        flags,
    })
}

/// The IPv4 header checksum and the TCP/UDP checksum verify (`pkt` as
/// [`parse`] accepted it into `info`).
fn checksums_valid(pkt: &[u8], info: &Info) -> bool {
    let l4 = &pkt[info.ip_len..];
    let len = l4.len() as u32;
    let pseudo = if info.key.v6 {
        let ip = ipv6::Packet::new_unchecked(pkt);
        checksum::pseudo_header(&ip.src_octets(), &ip.dst_octets(), info.key.proto, len)
    } else {
        let ip = ipv4::Packet::new_unchecked(pkt);
        if !ip.verify_checksum() {
            return false;
        }
        checksum::pseudo_header(
            &ip.src_addr().octets(),
            &ip.dst_addr().octets(),
            info.key.proto,
            len,
        )
    };
    if info.key.proto == PROTO_TCP {
        tcp::Packet::new_unchecked(l4).verify_checksum(pseudo)
    } else {
        udp::Packet::new_unchecked(l4).verify_checksum(pseudo)
    }
}

/// What the kernel's GSO makes of a packet written with `hdr`: the
/// segments, as a receiver would see them (checksums complete). A model
/// for tests and fuzzing (`tcp_gso_segment`, `__udp_gso_segment`,
/// `inet_gso_segment`): each segment repeats the headers with the IPv4 ID
/// incremented, lengths set, the TCP sequence advanced and PSH only on the
/// last segment.
///
/// # Panics
/// On a malformed `hdr` or packet (test inputs only).
#[cfg(any(test, feature = "fuzzing"))]
pub fn segment(hdr: &VnetHdr, pkt: &[u8]) -> Vec<Vec<u8>> {
    if !hdr.is_gso() {
        return vec![pkt.to_vec()];
    }
    let v6 = ip::version(pkt) == Some(6);
    let ip_len = usize::from(hdr.csum_start);
    let hdr_len = usize::from(hdr.hdr_len);
    let tcp = hdr.gso_type != GSO_UDP_L4;
    // The kernel completes the transport checksum where the transport's
    // header has it: the header must say so.
    let csum_offset = if tcp {
        tcp::CHECKSUM_OFFSET
    } else {
        udp::CHECKSUM_OFFSET
    };
    assert_eq!(usize::from(hdr.csum_offset), csum_offset, "csum_offset");
    let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
    let payload = &pkt[hdr_len..];
    let chunks: Vec<&[u8]> = payload.chunks(usize::from(hdr.gso_size)).collect();
    let n = chunks.len();
    let mut out = Vec::with_capacity(n);
    let id = ipv4::Packet::new_unchecked(pkt).ident();
    let mut seq = if tcp {
        tcp::Packet::new_unchecked(&pkt[ip_len..hdr_len]).seq_number()
    } else {
        0
    };
    for (k, chunk) in chunks.into_iter().enumerate() {
        let mut s = pkt[..hdr_len].to_vec();
        s.extend_from_slice(chunk);
        let total = s.len();
        let l4_len = total - ip_len;
        let pseudo = if v6 {
            let mut ip = ipv6::Packet::new_unchecked(&mut s[..]);
            ip.set_payload_len(l4_len as u16);
            checksum::pseudo_header(&ip.src_octets(), &ip.dst_octets(), proto, l4_len as u32)
        } else {
            let mut ip = ipv4::Packet::new_unchecked(&mut s[..]);
            ip.set_total_len(total as u16);
            ip.set_ident(id.wrapping_add(k as u16));
            ip.fill_checksum();
            checksum::pseudo_header(
                &ip.src_addr().octets(),
                &ip.dst_addr().octets(),
                proto,
                l4_len as u32,
            )
        };
        let l4 = &mut s[ip_len..];
        if tcp {
            let mut t = tcp::Packet::new_unchecked(l4);
            t.set_seq_number(seq);
            seq = seq.wrapping_add(chunk.len() as u32);
            if k + 1 < n {
                t.set_flags(t.flags() & !TCP_PSH);
            }
            t.fill_checksum(pseudo);
        } else {
            let mut u = udp::Packet::new_unchecked(l4);
            u.set_length(l4_len as u16);
            u.fill_checksum(pseudo);
        }
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests;
