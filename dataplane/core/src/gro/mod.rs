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
//! that segmentation ([`segment`]). Packets are merged only when this
//! holds:
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
use crate::wire::checksum;

/// Length of `struct virtio_net_hdr` (the TUN default `vnet_hdr_sz`).
pub const VNET_HDR_LEN: usize = 10;
/// Most segments in one merged packet (UDP GSO's limit in Linux is 128;
/// 64 keeps to the stricter of older kernels).
pub const MAX_SEGMENTS: usize = 64;
/// Most datagrams in one merged UDP packet.
pub const MAX_UDP_SEGMENTS: usize = 8;
/// Flows merged at once; a packet of a further flow flushes the oldest.
pub const SLOTS: usize = 8;
/// Largest IP packet (total length field).
const MAX_IP_LEN: usize = 65_535;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_*`.
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

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
    pub const PLAIN: Self = Self {
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
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Parses the wire form.
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
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

    fn start(&mut self, i: usize, pkt: &[u8], info: Info) {
        self.buf(i)[..pkt.len()].copy_from_slice(pkt);
        let id = if info.key.v6 {
            0
        } else {
            u16::from_be_bytes([pkt[4], pkt[5]])
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

    fn can_append(&self, i: usize, pkt: &[u8], info: &Info) -> bool {
        let s = &self.slots[i];
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
            // Version, traffic class, flow label; hop limit.
            pkt[0..4] == first[0..4] && pkt[7] == first[7]
        } else {
            // TOS; flags and fragment offset (DF only, checked); TTL; ID.
            pkt[1] == first[1]
                && pkt[6..8] == first[6..8]
                && pkt[8] == first[8]
                && u16::from_be_bytes([pkt[4], pkt[5]]) == s.next_id
        };
        if !ip_same {
            return false;
        }
        if info.key.proto == PROTO_UDP {
            return true;
        }
        let l4 = info.ip_len;
        // Sequence; ack, data offset, window and urgent pointer; options.
        // Flags: both carry ACK, and only the new one may carry PSH.
        info.seq == s.next_seq
            && pkt[l4 + 8..l4 + 13] == first[l4 + 8..l4 + 13]
            && pkt[l4 + 14..l4 + 16] == first[l4 + 14..l4 + 16]
            && pkt[l4 + 18..info.hdr_len] == first[l4 + 18..info.hdr_len]
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
            let flags_at = s.info.ip_len + 13;
            self.buf(i)[flags_at] |= TCP_PSH;
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
        let (src, dst) = if info.key.v6 {
            buf[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            (8..24, 24..40)
        } else {
            buf[2..4].copy_from_slice(&(s.used as u16).to_be_bytes());
            buf[10..12].fill(0);
            let c = checksum::ipv4_header(&buf[..info.ip_len]);
            buf[10..12].copy_from_slice(&c.to_be_bytes());
            (12..16, 16..20)
        };
        let csum_offset = if info.key.proto == PROTO_TCP {
            16
        } else {
            buf[info.ip_len + 4..info.ip_len + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            6
        };
        // The checksum field holds the folded pseudo-header sum, not
        // complemented: the kernel completes it over each segment.
        let pseudo = checksum::fold(checksum::pseudo_header(
            &buf[src],
            &buf[dst],
            info.key.proto,
            l4_len as u32,
        ));
        let at = info.ip_len + csum_offset;
        buf[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
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

/// Reads what merging needs; every access is bounds-checked.
fn parse(pkt: &[u8]) -> Parsed {
    let Some(&first) = pkt.first() else {
        return Parsed::Other;
    };
    let (v6, ip_len, proto, plain_ip) = match first >> 4 {
        4 if pkt.len() >= 20 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            // DF may be set; MF and the fragment offset must be clear.
            let frag = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff;
            if ihl < 20 || total != pkt.len() || frag != 0 {
                return Parsed::Other;
            }
            (false, ihl, pkt[9], ihl == 20)
        }
        6 if pkt.len() >= 40 => {
            let payload = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            if 40 + payload != pkt.len() {
                return Parsed::Other;
            }
            (true, 40, pkt[6], true)
        }
        _ => return Parsed::Other,
    };
    let l4_min = match proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => return Parsed::Other,
    };
    if pkt.len() < ip_len + l4_min {
        return Parsed::Other;
    }
    let mut key = Key {
        v6,
        proto,
        addrs: [0; 32],
        ports: [0; 4],
    };
    if v6 {
        key.addrs.copy_from_slice(&pkt[8..40]);
    } else {
        key.addrs[..8].copy_from_slice(&pkt[12..20]);
    }
    key.ports.copy_from_slice(&pkt[ip_len..ip_len + 4]);
    if !plain_ip {
        return Parsed::Flow(key);
    }
    let l4 = &pkt[ip_len..];
    let (hdr_len, seq, flags) = if proto == PROTO_TCP {
        let doff = usize::from(l4[12] >> 4) * 4;
        let flags = l4[13];
        let urgent = u16::from_be_bytes([l4[18], l4[19]]);
        // Only ACK, or ACK and PSH; reserved bits clear.
        if doff < 20
            || l4.len() < doff
            || l4[12] & 0x0f != 0
            || flags & !TCP_PSH != TCP_ACK
            || urgent != 0
        {
            return Parsed::Flow(key);
        }
        (
            ip_len + doff,
            u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
            flags,
        )
    } else {
        let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
        let csum = u16::from_be_bytes([l4[6], l4[7]]);
        if len != l4.len() || csum == 0 {
            return Parsed::Flow(key);
        }
        (ip_len + 8, 0, 0)
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

/// The IPv4 header checksum and the TCP/UDP checksum verify.
fn checksums_valid(pkt: &[u8], info: &Info) -> bool {
    let (src, dst) = if info.key.v6 {
        (&pkt[8..24], &pkt[24..40])
    } else {
        if checksum::fold(checksum::add(0, &pkt[..info.ip_len])) != 0xffff {
            return false;
        }
        (&pkt[12..16], &pkt[16..20])
    };
    let l4 = &pkt[info.ip_len..];
    let sum = checksum::pseudo_header(src, dst, info.key.proto, l4.len() as u32);
    checksum::fold(checksum::add(sum, l4)) == 0xffff
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
    let v6 = pkt[0] >> 4 == 6;
    let ip_len = usize::from(hdr.csum_start);
    let hdr_len = usize::from(hdr.hdr_len);
    let tcp = hdr.gso_type != GSO_UDP_L4;
    let payload = &pkt[hdr_len..];
    let chunks: Vec<&[u8]> = payload.chunks(usize::from(hdr.gso_size)).collect();
    let n = chunks.len();
    let mut out = Vec::with_capacity(n);
    let id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let mut seq = u32::from_be_bytes([
        pkt[ip_len + 4],
        pkt[ip_len + 5],
        pkt[ip_len + 6],
        pkt[ip_len + 7],
    ]);
    for (k, chunk) in chunks.into_iter().enumerate() {
        let mut s = pkt[..hdr_len].to_vec();
        s.extend_from_slice(chunk);
        let total = s.len();
        let l4_len = total - ip_len;
        let (src, dst) = if v6 {
            s[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            (8..24, 24..40)
        } else {
            s[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            s[4..6].copy_from_slice(&id.wrapping_add(k as u16).to_be_bytes());
            s[10..12].fill(0);
            let c = checksum::ipv4_header(&s[..ip_len]);
            s[10..12].copy_from_slice(&c.to_be_bytes());
            (12..16, 16..20)
        };
        let csum_at = ip_len + usize::from(hdr.csum_offset);
        if tcp {
            s[ip_len + 4..ip_len + 8].copy_from_slice(&seq.to_be_bytes());
            seq = seq.wrapping_add(chunk.len() as u32);
            if k + 1 < n {
                s[ip_len + 13] &= !TCP_PSH;
            }
        } else {
            s[ip_len + 4..ip_len + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        s[csum_at..csum_at + 2].fill(0);
        let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
        let sum = checksum::pseudo_header(&s[src], &s[dst], proto, l4_len as u32);
        let mut c = !checksum::fold(checksum::add(sum, &s[ip_len..]));
        if !tcp && c == 0 {
            c = 0xffff;
        }
        s[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests;
