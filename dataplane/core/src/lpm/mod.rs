//! The userspace bypass classifier: longest-prefix match over IPv4 and IPv6
//! prefixes in a few memory accesses.
//!
//! [`Lpm::build`] turns a list of `(Prefix, value)` into an immutable table:
//! DIR-24-8 for IPv4 (one read for prefixes up to /24, two beyond; 32 MiB
//! plus 512 B per /24 that holds a longer prefix) and a Poptrie for IPv6
//! (a 4 MiB direct table on the first 20 bits, then 6 bits per 24-byte
//! node; see the `v6` module for depths). Each family's tables are allocated
//! only if it has prefixes. Values are deduplicated into a small array that
//! the tables index with `u16`s, so at most [`MAX_VALUES`] distinct values.
//!
//! Building allocates and takes time (tens to hundreds of milliseconds):
//! do it off the hot path and publish the result with [`Swap`], which
//! workers read through a [`Reader`] without locks. Lookups never allocate
//! or lock; [`Lpm::lookup_v4_batch`] and [`Lpm::lookup_v6_batch`] overlap
//! the memory reads of several lookups, for a ring's worth of packets. This
//! module does no I/O and knows nothing of the config format: the caller
//! turns the bypass config into prefixes.
mod swap;
mod v4;
mod v6;

use std::{collections::HashMap, hash::Hash, net::IpAddr};

pub use swap::{Reader, Swap};

use crate::net::Prefix;

/// Most distinct values a table can hold (15-bit indices, 0 is "none").
pub(crate) const MAX_VALUES: usize = 0x7fff;

/// Lookups walked together by the batch functions.
const BATCH: usize = 8;
/// IPv6 lookups walked together by [`Lpm::lookup_v6_batch`].
const BATCH_V6: usize = 16;

/// Why a table could not be built: a capacity limit of the encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LpmError {
    /// More distinct values than the `u16` entries can index.
    #[error("more than {max} distinct values in the prefix table")]
    TooManyValues {
        /// The limit, [`MAX_VALUES`].
        max: usize,
    },
    /// Too many /24s hold IPv4 prefixes longer than /24.
    #[error("more than {max} IPv4 /24s hold prefixes longer than /24")]
    TooManyChunks {
        /// The limit.
        max: usize,
    },
    /// The IPv6 trie outgrew its 31-bit node indices.
    #[error("the IPv6 prefix table needs more than 2^31 nodes")]
    TooManyNodes,
}

/// An immutable longest-prefix-match table from IP prefixes to `V`.
#[derive(Debug)]
pub struct Lpm<V> {
    /// `values[0]` is `None`: the tables' "no match".
    values: Vec<Option<V>>,
    v4: v4::Dir24,
    v6: v6::Poptrie,
}

/// How the big tables' memory is advised before their first write: the
/// caller's system side (`sluice::sys::mem` asks for transparent huge
/// pages: random lookups over 32 MiB miss the TLB on nearly every read
/// with 4 KiB pages). The core itself makes no system call.
pub trait Advise {
    /// Called on the DIR-24-8 table.
    fn advise_u16(&self, table: &mut [u16]);
    /// Called on the Poptrie's top table.
    fn advise_u32(&self, table: &mut [u32]);
}

/// [`Advise`] that does nothing (tests, fuzzing, benches of the lookup
/// alone).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAdvice;

impl Advise for NoAdvice {
    fn advise_u16(&self, _: &mut [u16]) {}
    fn advise_u32(&self, _: &mut [u32]) {}
}

impl<V: Copy + Eq + Hash> Lpm<V> {
    /// Builds a table without memory advice ([`Lpm::build_with`]).
    ///
    /// Fails only on the capacity limits in [`LpmError`].
    pub fn build(entries: &[(Prefix, V)]) -> Result<Self, LpmError> {
        Self::build_with(entries, &NoAdvice)
    }

    /// Builds a table; for a prefix listed twice the last entry wins.
    /// `advise` sees the big tables before they are written.
    ///
    /// Fails only on the capacity limits in [`LpmError`].
    pub fn build_with(entries: &[(Prefix, V)], advise: &impl Advise) -> Result<Self, LpmError> {
        let mut unique: HashMap<Prefix, V> = HashMap::with_capacity(entries.len());
        for &(prefix, value) in entries {
            unique.insert(prefix, value);
        }
        let mut unique: Vec<_> = unique.into_iter().collect();
        unique.sort_unstable_by_key(|&(prefix, _)| prefix);

        let mut values = vec![None];
        let mut index: HashMap<V, u16> = HashMap::new();
        let (mut r4, mut r6) = (Vec::new(), Vec::new());
        for (prefix, value) in unique {
            let i = if let Some(&i) = index.get(&value) {
                i
            } else {
                if values.len() > MAX_VALUES {
                    return Err(LpmError::TooManyValues { max: MAX_VALUES });
                }
                let i = values.len() as u16;
                values.push(Some(value));
                index.insert(value, i);
                i
            };
            match prefix.addr() {
                IpAddr::V4(a) => r4.push((u32::from(a), prefix.len(), i)),
                IpAddr::V6(a) => r6.push((u128::from(a), prefix.len(), i)),
            }
        }
        Ok(Self {
            values,
            v4: v4::Dir24::build(r4, advise)?,
            v6: v6::Poptrie::build(r6, advise)?,
        })
    }
}

impl<V: Copy> Lpm<V> {
    /// The value of the longest IPv4 prefix holding `addr` (host order).
    #[inline]
    pub fn lookup_v4(&self, addr: u32) -> Option<V> {
        self.values[usize::from(self.v4.lookup(addr))]
    }

    /// The value of the longest IPv6 prefix holding `addr` (host order).
    #[inline]
    pub fn lookup_v6(&self, addr: u128) -> Option<V> {
        self.values[usize::from(self.v6.lookup(addr))]
    }

    /// The value of the longest prefix of `addr`'s family holding it.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<V> {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(u32::from(a)),
            IpAddr::V6(a) => self.lookup_v6(u128::from(a)),
        }
    }

    /// Looks up a batch of IPv4 addresses (host order) into `out`, issuing
    /// the first-level reads of 8 lookups before their second-level ones so
    /// that the cache misses overlap (up to 1.2x a loop of [`Self::lookup_v4`]
    /// with 1k prefixes, about even with 100k, on the bench machine).
    ///
    /// # Panics
    /// If `out` is shorter than `addrs`.
    pub fn lookup_v4_batch(&self, addrs: &[u32], out: &mut [Option<V>]) {
        let out = &mut out[..addrs.len()];
        let mut chunks = addrs.chunks_exact(BATCH);
        let mut outs = out.chunks_exact_mut(BATCH);
        for (a, o) in (&mut chunks).zip(&mut outs) {
            let idx = self
                .v4
                .lookup_many::<BATCH>(a.try_into().expect("chunk of BATCH"));
            for (o, i) in o.iter_mut().zip(idx) {
                *o = self.values[usize::from(i)];
            }
        }
        for (&a, o) in chunks.remainder().iter().zip(outs.into_remainder()) {
            *o = self.lookup_v4(a);
        }
    }

    /// Looks up a batch of IPv6 addresses (host order) into `out`, reading
    /// the direct-table entries of 16 lookups, then their first trie
    /// nodes, before finishing each walk, so that the first two levels'
    /// cache misses overlap. Same results as [`Self::lookup_v6`]; against
    /// a loop of it the gain is inconsistent on the (noisy) bench machine,
    /// from 0.75x to 1.3x across runs at 1k and 100k prefixes: that loop's
    /// misses already overlap out of order, and much of its cost is the
    /// mispredicted branches, which batching does not remove.
    ///
    /// # Panics
    /// If `out` is shorter than `addrs`.
    pub fn lookup_v6_batch(&self, addrs: &[u128], out: &mut [Option<V>]) {
        let out = &mut out[..addrs.len()];
        let mut chunks = addrs.chunks_exact(BATCH_V6);
        let mut outs = out.chunks_exact_mut(BATCH_V6);
        for (a, o) in (&mut chunks).zip(&mut outs) {
            let idx = self
                .v6
                .lookup_many::<BATCH_V6>(a.try_into().expect("chunk of BATCH_V6"));
            for (o, i) in o.iter_mut().zip(idx) {
                *o = self.values[usize::from(i)];
            }
        }
        for (&a, o) in chunks.remainder().iter().zip(outs.into_remainder()) {
            *o = self.lookup_v6(a);
        }
    }

    /// Heap bytes held by the tables.
    pub fn memory_bytes(&self) -> usize {
        self.values.len() * size_of::<Option<V>>() + self.v4.memory_bytes() + self.v6.memory_bytes()
    }
}

#[cfg(test)]
mod tests;
