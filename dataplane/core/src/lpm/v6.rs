//! IPv6 longest-prefix match as a Poptrie (Asai and Ohara, SIGCOMM 2015).
//!
//! The first 20 bits index a direct table (`top`, 2^20 `u32`, 4 MiB) whose
//! entry is either a value index or, with bit 31 set, a node. Below that,
//! each [`Node`] (24 B) resolves 6 more bits with two 64-bit bitmaps:
//! `vector` marks the slots that have a child (children of a node are
//! contiguous, found by a popcount), `leafvec` marks where a run of equal
//! leaf values starts (leaves of a node are contiguous, also found by a
//! popcount). Values are pushed to the leaves at build time, so the walk
//! stops at the first leaf and never backtracks.
//!
//! A subtree that holds a single prefix is one "single-prefix" node that
//! compares the address with it, instead of a chain of one-child nodes: in
//! sparse tables most lookups read the direct table and one or two nodes.
//!
//! Why 20 bits: global unicast is `2000::/3`, so a 20-bit table spreads
//! its prefixes over 2^17 slots; with 100k random /21–/128 prefixes most
//! slots hold one long prefix, read as `top` plus one single-prefix node
//! (80–96 M lookups/s in the classify bench, against 67–81 M for the
//! 18-bit, 1 MiB table it replaced; the machine is noisy). 21 bits was no
//! faster and 22 bits (16 MiB) slower: the table stops fitting in cache. The table is zeroed memory, so pages no
//! prefix paints and no lookup reads stay unbacked.
//!
//! Worst case: a prefix of length `l > 20` ends at depth `ceil((l - 20) /
//! 6)`, so a lookup reads the direct table, that many nodes and one leaf: 5
//! nodes for /48, 8 for /64, and 18 nodes for /128 when every level on the
//! path branches. Memory is 4 MiB plus 24 B per node and 2 B per leaf run;
//! nodes near the top are shared and stay in cache. The last level
//! resolves bits 122..128.
//!
//! The direct table is allocated only when there is at least one IPv6
//! prefix.
use super::LpmError;

/// `(network, length, value index)`.
type Route = (u128, u8, u16);

/// Bit 31 of a `top` entry: the rest is a node index.
const NODE: u32 = 0x8000_0000;
/// Bits resolved by the direct table.
const TOP_BITS: u32 = 20;
/// Bits resolved per node.
const STRIDE: u32 = 6;

/// Bit 31 of [`Node::child_base`]: this is a single-prefix node.
const SINGLE: u32 = 0x8000_0000;

/// A trie node, 24 bytes, in one of two shapes.
///
/// - Inner node (`child_base & SINGLE == 0`): `vector` marks the slots with
///   a child, `leafvec` where a run of equal leaf values starts,
///   `leaf_base` and `child_base` index `leaves` and `nodes`.
/// - Single-prefix node (`child_base & SINGLE != 0`): the subtree holds one
///   prefix only (common in sparse tables, where it replaces a chain of
///   one-child nodes). `vector`/`leafvec` are its network's high/low 64
///   bits, `child_base` its length, `leaf_base` its value index (low 16
///   bits) and the value index for the rest of the subtree (high 16 bits).
#[derive(Clone, Copy, Debug, Default)]
struct Node {
    vector: u64,
    leafvec: u64,
    leaf_base: u32,
    child_base: u32,
}

/// A built Poptrie of value indices (0 = no match).
#[derive(Debug, Default)]
pub(super) struct Poptrie {
    top: Box<[u32]>,
    nodes: Vec<Node>,
    leaves: Vec<u16>,
}

/// The 6-bit slot of `addr` at bit offset `off` (< 128), zero-padded.
#[inline]
fn slot(addr: u128, off: u32) -> u32 {
    ((addr << off) >> (128 - STRIDE)) as u32
}

impl Poptrie {
    /// Builds from `(network, len, value index)`, at most one per prefix.
    pub(super) fn build(
        mut routes: Vec<Route>,
        advise: &impl super::Advise,
    ) -> Result<Self, LpmError> {
        if routes.is_empty() {
            return Ok(Self::default());
        }
        let mut top = vec![0u32; 1 << TOP_BITS];
        // Before the first write (see [`super::Advise`]).
        advise.advise_u32(&mut top);
        let mut trie = Self {
            top: top.into_boxed_slice(),
            nodes: Vec::new(),
            leaves: Vec::new(),
        };
        // Short prefixes are painted into `top`, shortest first.
        routes.sort_unstable_by_key(|&(addr, len, _)| (len, addr));
        let split = routes.partition_point(|&(_, len, _)| u32::from(len) <= TOP_BITS);
        for &(addr, len, value) in &routes[..split] {
            let start = (addr >> (128 - TOP_BITS)) as usize;
            trie.top[start..start + (1 << (TOP_BITS - u32::from(len)))].fill(u32::from(value));
        }
        // Longer ones, in address order, share a top slot when contiguous.
        let long = &mut routes[split..];
        long.sort_unstable_by_key(|&(addr, len, _)| (addr, len));
        let mut rest: &[Route] = long;
        while let Some(&(first, _, _)) = rest.first() {
            let top = (first >> (128 - TOP_BITS)) as usize;
            let n = rest.partition_point(|&(a, _, _)| (a >> (128 - TOP_BITS)) as usize == top);
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let node = trie.nodes.len();
            trie.nodes.push(Node::default());
            // Prefixes up to /TOP_BITS are painted: the slot's value is the default.
            let default = trie.top[top] as u16;
            trie.build_node(node, group, TOP_BITS, default);
            trie.top[top] = NODE | node as u32;
        }
        if trie.nodes.len() >= NODE as usize || u32::try_from(trie.leaves.len()).is_err() {
            return Err(LpmError::TooManyNodes);
        }
        Ok(trie)
    }

    /// Fills `self.nodes[idx]` for the subtree at bit offset `off` from
    /// `routes` (all longer than `off`, in address order) with `default`
    /// from the shorter prefixes above.
    fn build_node(&mut self, idx: usize, routes: &[Route], off: u32, default: u16) {
        if let [(addr, len, value)] = *routes {
            self.nodes[idx] = Node {
                vector: (addr >> 64) as u64,
                leafvec: addr as u64,
                leaf_base: u32::from(value) | u32::from(default) << 16,
                child_base: SINGLE | u32::from(len),
            };
            return;
        }
        let end = off + STRIDE;
        let mut leaf = [default; 64];
        let mut ending: Vec<_> = routes
            .iter()
            .filter(|&&(_, len, _)| u32::from(len) <= end)
            .collect();
        ending.sort_by_key(|&&(_, len, _)| len);
        for &&(addr, len, value) in &ending {
            let start = slot(addr, off) as usize;
            leaf[start..start + (1 << (end - u32::from(len)))].fill(value);
        }

        // Children: the longer prefixes, grouped by slot (contiguous, since
        // they are in address order and share the bits above `off`).
        let deeper: Vec<_> = routes
            .iter()
            .copied()
            .filter(|&(_, len, _)| u32::from(len) > end)
            .collect();
        let mut groups: Vec<(usize, &[Route])> = Vec::new();
        let mut rest = &deeper[..];
        while let Some(&(first, _, _)) = rest.first() {
            let s = slot(first, off);
            let n = rest.partition_point(|&(a, _, _)| slot(a, off) == s);
            groups.push((s as usize, &rest[..n]));
            rest = &rest[n..];
        }
        let vector = groups.iter().fold(0u64, |v, &(s, _)| v | 1 << s);

        let leaf_base = self.leaves.len();
        let mut leafvec = 0u64;
        for s in 0..64 {
            if s == 0 || leaf[s] != leaf[s - 1] {
                leafvec |= 1 << s;
                self.leaves.push(leaf[s]);
            }
        }
        let child_base = self.nodes.len();
        self.nodes
            .resize(child_base + groups.len(), Node::default());
        self.nodes[idx] = Node {
            vector,
            leafvec,
            leaf_base: leaf_base as u32,
            child_base: child_base as u32,
        };
        for (i, &(s, group)) in groups.iter().enumerate() {
            self.build_node(child_base + i, group, end, leaf[s]);
        }
    }

    /// The value index of the longest prefix holding `addr`, 0 if none.
    #[inline]
    pub(super) fn lookup(&self, addr: u128) -> u16 {
        // An empty table has no `top`: the same bounds check answers it.
        let Some(&entry) = self.top.get((addr >> (128 - TOP_BITS)) as usize) else {
            return 0;
        };
        if entry & NODE == 0 {
            return entry as u16;
        }
        self.walk(&self.nodes[(entry & !NODE) as usize], addr)
    }

    /// Value indices for `N` addresses, in three passes with no branch
    /// between the reads of one pass: the `top` entries of all `N`, then
    /// the first node of each (node 0 for those that need none), then the
    /// rest of each walk. The reads of a pass overlap their cache misses
    /// instead of queueing behind mispredicted branches.
    #[inline]
    pub(super) fn lookup_many<const N: usize>(&self, addrs: &[u128; N]) -> [u16; N] {
        let mut out = [0u16; N];
        if self.nodes.is_empty() {
            // No prefix longer than `TOP_BITS` (or none at all): one read.
            if !self.top.is_empty() {
                for i in 0..N {
                    out[i] = self.top[(addrs[i] >> (128 - TOP_BITS)) as usize] as u16;
                }
            }
            return out;
        }
        let mut entry = [0u32; N];
        for i in 0..N {
            entry[i] = self.top[(addrs[i] >> (128 - TOP_BITS)) as usize];
        }
        let mut first = [Node::default(); N];
        for i in 0..N {
            // A select, not a branch: value entries read node 0.
            let idx = if entry[i] & NODE == 0 {
                0
            } else {
                entry[i] & !NODE
            };
            first[i] = self.nodes[idx as usize];
        }
        for i in 0..N {
            out[i] = if entry[i] & NODE == 0 {
                entry[i] as u16
            } else {
                self.walk(&first[i], addrs[i])
            };
        }
        out
    }

    /// The walk below `top` from `node`, the node of `addr`'s `top` slot.
    #[inline]
    fn walk(&self, node: &Node, addr: u128) -> u16 {
        let mut node = node;
        let mut off = TOP_BITS;
        loop {
            match self.step(node, addr, off) {
                Ok(child) => node = &self.nodes[child],
                Err(value) => return value,
            }
            // Children exist only for prefixes longer than `off + STRIDE`,
            // so `off` stays below 128.
            off += STRIDE;
        }
    }

    /// One level of the walk: the child to visit, or the final value index.
    #[inline]
    fn step(&self, node: &Node, addr: u128, off: u32) -> Result<usize, u16> {
        if node.child_base & SINGLE != 0 {
            // The length is > TOP_BITS here, so the shift is in range.
            let mask = u128::MAX << (128 - (node.child_base & 0xff));
            let net = (u128::from(node.vector) << 64) | u128::from(node.leafvec);
            let value = if (addr ^ net) & mask == 0 {
                node.leaf_base
            } else {
                node.leaf_base >> 16
            };
            return Err(value as u16);
        }
        let bit = 1u64 << slot(addr, off);
        if node.vector & bit == 0 {
            // Bit 0 of `leafvec` is always set, so the count is >= 1.
            let run = (node.leafvec & ((bit << 1).wrapping_sub(1))).count_ones() as usize;
            return Err(self.leaves[node.leaf_base as usize + run - 1]);
        }
        let below = (node.vector & (bit - 1)).count_ones() as usize;
        Ok(node.child_base as usize + below)
    }

    /// Heap bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        self.top.len() * size_of::<u32>()
            + self.nodes.len() * size_of::<Node>()
            + self.leaves.len() * size_of::<u16>()
    }
}
