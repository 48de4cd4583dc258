//! IPv4 longest-prefix match as DIR-24-8 (Gupta et al., 1998).
//!
//! `tbl24` has one `u16` per /24 (2^24 entries, 32 MiB). An entry is either a
//! value index (bit 15 clear; 0 means "no match") or, with bit 15 set, the
//! number of a 256-entry chunk in `tbl8` that resolves the last octet for a
//! /24 that holds prefixes longer than /24 (512 B per such /24, at most
//! [`MAX_CHUNKS`]). Prefixes are painted shortest first, so every slot holds
//! the value of its longest covering prefix ("leaf pushing"): a lookup is one
//! read, or two for addresses under a longer-than-/24 prefix.
//!
//! The table is allocated only when there is at least one IPv4 prefix.
use super::LpmError;

/// Bit 15 of a `tbl24` entry: the rest is a chunk number.
const CHUNK: u16 = 0x8000;
/// Chunk numbers are 15 bits.
pub(super) const MAX_CHUNKS: usize = 0x8000;

/// A built DIR-24-8 table of value indices (0 = no match).
#[derive(Debug, Default)]
pub(super) struct Dir24 {
    tbl24: Box<[u16]>,
    tbl8: Box<[u16]>,
}

impl Dir24 {
    /// Builds from `(network, len, value index)`, at most one per prefix.
    pub(super) fn build(
        mut routes: Vec<(u32, u8, u16)>,
        advise: &impl super::Advise,
    ) -> Result<Self, LpmError> {
        if routes.is_empty() {
            return Ok(Self::default());
        }
        // Shortest first, so a longer prefix overwrites the shorter ones it
        // lies in. Equal lengths are disjoint, so their order is irrelevant.
        routes.sort_unstable_by_key(|&(addr, len, _)| (len, addr));
        let mut tbl24 = vec![0u16; 1 << 24];
        // Before the first write: random lookups over 32 MiB miss the TLB
        // on nearly every read with 4 KiB pages (see [`super::Advise`]).
        advise.advise_u16(&mut tbl24);
        let mut tbl8: Vec<u16> = Vec::new();
        for (addr, len, value) in routes {
            debug_assert!(value != 0 && value & CHUNK == 0);
            if len <= 24 {
                let start = (addr >> 8) as usize;
                tbl24[start..start + (1 << (24 - len))].fill(value);
            } else {
                // All prefixes up to /24 are painted already: a new chunk
                // inherits the /24's current value.
                let slot = &mut tbl24[(addr >> 8) as usize];
                let chunk = if *slot & CHUNK == 0 {
                    let chunk = tbl8.len() >> 8;
                    if chunk >= MAX_CHUNKS {
                        return Err(LpmError::TooManyChunks { max: MAX_CHUNKS });
                    }
                    tbl8.resize(tbl8.len() + 256, *slot);
                    *slot = CHUNK | chunk as u16;
                    chunk
                } else {
                    usize::from(*slot & !CHUNK)
                };
                let start = (chunk << 8) | (addr & 0xff) as usize;
                tbl8[start..start + (1 << (32 - len))].fill(value);
            }
        }
        Ok(Self {
            tbl24: tbl24.into_boxed_slice(),
            tbl8: tbl8.into_boxed_slice(),
        })
    }

    /// The value index of the longest prefix holding `addr`, 0 if none.
    #[inline]
    pub(super) fn lookup(&self, addr: u32) -> u16 {
        // An empty table has no `tbl24`: the same bounds check answers it.
        let Some(&entry) = self.tbl24.get((addr >> 8) as usize) else {
            return 0;
        };
        if entry & CHUNK == 0 {
            entry
        } else {
            self.tbl8[(usize::from(entry & !CHUNK) << 8) | (addr & 0xff) as usize]
        }
    }

    /// Value indices for `N` addresses: all first-level reads, then the
    /// second-level ones, so that the reads overlap.
    #[inline]
    pub(super) fn lookup_many<const N: usize>(&self, addrs: &[u32; N]) -> [u16; N] {
        let mut out = [0u16; N];
        if self.tbl24.is_empty() {
            return out;
        }
        for i in 0..N {
            out[i] = self.tbl24[(addrs[i] >> 8) as usize];
        }
        for i in 0..N {
            if out[i] & CHUNK != 0 {
                out[i] =
                    self.tbl8[(usize::from(out[i] & !CHUNK) << 8) | (addrs[i] & 0xff) as usize];
            }
        }
        out
    }

    /// Heap bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        (self.tbl24.len() + self.tbl8.len()) * size_of::<u16>()
    }
}
