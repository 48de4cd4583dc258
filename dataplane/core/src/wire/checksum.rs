//! The Internet checksum (RFC 1071) as IPv4, TCP and UDP use it.
//!
//! [`add`] accumulates a one's-complement sum without folding, so that a
//! pseudo-header, a header and a payload held in different places can be
//! summed piecewise; [`fold`] reduces it to 16 bits. A checksum field holds
//! `!fold(sum)`; a packet whose sum over everything (checksum field
//! included) folds to `0xffff` is intact.
//!
//! Pure arithmetic: no allocation, no I/O, no panics.

/// Adds `data`, read as big-endian 16-bit words (a trailing odd byte is
/// the high byte of a last word), to `sum`. `data` must start at an even
/// offset of the checksummed region.
///
/// Short data (addresses, headers: under [`WIDE_FROM`] bytes) is read as
/// big-endian 32-bit words summed into 64 bits (2^16 is 1 modulo 2^16 - 1,
/// so a 32-bit word contributes what its two 16-bit halves do). Longer
/// data is read as 64-bit words in the host's byte order, each split into
/// its two 32-bit halves, and the folded sum byte-swapped once at the end
/// (RFC 1071 §2(B): the sum is byte-order independent): no per-word byte
/// swap, and the compiler vectorises the loop. Measured in the same run
/// (`cargo bench -p sluice-bench --bench wire -- checksum`, figures in
/// `bench/RESULTS.md`).
#[inline]
pub fn add(sum: u64, data: &[u8]) -> u64 {
    if data.len() < WIDE_FROM {
        return add_be(sum, data);
    }
    let mut words = data.chunks_exact(8);
    let (mut lo, mut hi) = (0u64, 0u64);
    for w in &mut words {
        let w = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        lo += w & 0xffff_ffff;
        hi += w >> 32;
    }
    let host = fold(lo + hi);
    let be = if cfg!(target_endian = "little") {
        host.swap_bytes()
    } else {
        host
    };
    // The remainder (under 8 bytes) starts at an even offset.
    add_be(sum + u64::from(be), words.remainder())
}

/// Length from which [`add`] reads host-order 64-bit words: below it the
/// fold and swap at the end cost more than the byte swaps they save.
const WIDE_FROM: usize = 64;

/// [`add`] for short data: big-endian 32-bit words.
#[inline]
fn add_be(sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    let mut acc = sum;
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    match *chunks.remainder() {
        [a, b, c] => acc + u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => acc + u64::from(u16::from_be_bytes([a, b])),
        [a] => acc + (u64::from(a) << 8),
        _ => acc,
    }
}

/// Folds a sum from [`add`] to 16 bits (not complemented).
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The unfolded sum of the TCP/UDP pseudo-header: the addresses (4 or 16
/// bytes each), the protocol and the transport length (RFC 793, RFC 768,
/// RFC 8200 §8.1).
#[inline]
pub fn pseudo_header(src: &[u8], dst: &[u8], protocol: u8, len: u32) -> u64 {
    add(add(0, src), dst) + u64::from(protocol) + u64::from(len)
}

/// The IPv4 header checksum of `header` (its checksum field, bytes 10..12,
/// is skipped), ready to store.
#[inline]
pub fn ipv4_header(header: &[u8]) -> u16 {
    let (a, b) = header.split_at(header.len().min(10));
    let rest = b.get(2..).unwrap_or_default();
    !fold(add(add(0, a), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 §3's example words sum to `ddf2`.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
        // Split at an even offset: the same.
        assert_eq!(fold(add(add(0, &data[..2]), &data[2..])), 0xddf2);
        // Odd lengths pad with a zero low byte.
        assert_eq!(fold(add(0, &[0x12])), 0x1200);
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x6834);
    }

    /// A captured IPv4 header (checksum 0xb861) verifies and recomputes.
    #[test]
    fn ipv4_header_checksum() {
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(add(0, &h)), 0xffff);
        assert_eq!(ipv4_header(&h), 0xb861);
    }

    /// Summing 32-bit words gives what summing 16-bit words gives, also
    /// with many carries.
    #[test]
    fn wide_sum_matches_word_sum() {
        let data: Vec<u8> = (0..9001u32).map(|i| (i * 131 + 7) as u8 | 0x80).collect();
        for len in (0..=140).chain([1399, 1400, 1401, 1402, 9001]) {
            let d = &data[..len];
            let mut s = 0u64;
            for w in d.chunks(2) {
                s += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            }
            assert_eq!(fold(add(0, d)), fold(s), "len {len}");
            // With a running sum carried in, split at an even offset.
            let half = (len / 2) & !1;
            let carried = add(add(0xfffe_ffff, &d[..half]), &d[half..]);
            assert_eq!(fold(carried), fold(s + 0xfffe_ffff), "len {len}");
        }
    }
}
