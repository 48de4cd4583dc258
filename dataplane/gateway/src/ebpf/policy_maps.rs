//! The compiled policy in the classifier's maps, and the atomic swap.
//!
//! Every policy entry is keyed by a slot (0 or 1): the source tries by the
//! slot itself, the destination tries by [`sluice_common::profile_id`],
//! which includes it, and the domain entries hold one half per slot. The
//! classifier reads [`PolicyState`] once per frame and then looks only at
//! the live slot's entries. A new policy is therefore written into the
//! other slot while the live one keeps serving ([`Programs::prepare_policy`]),
//! and made live by one atomic store of the state word
//! ([`Programs::commit_policy`], through the memory-mapped
//! [`sluice_common::map_names::POLICY_STATE`]): no frame is classified by a
//! mix of two policies or sees half of a state change, and none waits. The slot that was live keeps its entries until
//! the next prepare, which first waits [`SLOT_QUIET`] after the last commit
//! so that frames still being classified with it are done.
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, LpmTrie, lpm_trie::Key};
use sluice_common::{
    DestEntry, DnsEntry, DnsKey, POLICY_MAX_TENANTS, PROFILE_FAIL_OPEN, PolicyKeyV4, PolicyKeyV6,
    PolicyState, ProfileEntry, map_names, profile_id, state_index,
};

use super::{EbpfError, Programs, layout, removed};
use crate::{net::Prefix, policy::compile::Tables};

/// How long after a commit the slot that was live may be rewritten: a frame
/// is classified in microseconds, so every frame that read the old slot
/// number is long done.
pub const SLOT_QUIET: Duration = Duration::from_millis(5);

/// Which keys a slot holds (so that the next prepare of that slot can
/// remove exactly those).
#[derive(Default)]
pub(super) struct SlotKeys {
    src_v4: Vec<Key<PolicyKeyV4>>,
    src_v6: Vec<Key<PolicyKeyV6>>,
    dst_v4: Vec<Key<PolicyKeyV4>>,
    dst_v6: Vec<Key<PolicyKeyV6>>,
}

impl std::fmt::Debug for SlotKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotKeys")
            .field("sources", &(self.src_v4.len() + self.src_v6.len()))
            .field("destinations", &(self.dst_v4.len() + self.dst_v6.len()))
            .finish()
    }
}

/// The policy slots' bookkeeping, kept by the [`Programs`].
#[derive(Debug, Default)]
pub(super) struct Slots {
    keys: [SlotKeys; 2],
    /// The state as last written.
    state: PolicyState,
    last_commit: Option<Instant>,
}

/// A policy written into the slot that is not live, ready to commit.
#[derive(Debug)]
#[must_use = "a prepared policy takes effect only when committed"]
pub struct Prepared {
    /// The slot it was written into.
    pub slot: u32,
    /// Source entries written.
    pub sources: usize,
    /// Destination entries written.
    pub destinations: usize,
    /// How long writing took.
    pub took: Duration,
}

fn key_v4(tag: u32, p: &Prefix) -> Option<Key<PolicyKeyV4>> {
    let IpAddr::V4(a) = p.addr() else {
        return None;
    };
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&tag.to_be_bytes());
    k[4..].copy_from_slice(&a.octets());
    Some(Key::new(32 + u32::from(p.len()), k))
}

fn key_v6(tag: u32, p: &Prefix) -> Option<Key<PolicyKeyV6>> {
    let IpAddr::V6(a) = p.addr() else {
        return None;
    };
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&tag.to_be_bytes());
    k[4..].copy_from_slice(&a.octets());
    Some(Key::new(32 + u32::from(p.len()), k))
}

/// The [`DnsKey`] of `addr` under `slot`: IPv4 in the first four bytes of
/// the address part.
pub fn dns_key(slot: u32, addr: IpAddr) -> DnsKey {
    let a = match addr {
        IpAddr::V4(a) => {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&a.octets());
            k
        }
        IpAddr::V6(a) => a.octets(),
    };
    sluice_common::dns_key(slot, &a)
}

fn saturating_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Programs {
    /// The slot that is not live (the one a new policy goes into).
    pub(crate) fn next_policy_slot(&self) -> u32 {
        let s = &self.slots.state;
        if s.installed == 0 {
            0
        } else {
            1 - (s.slot & 1)
        }
    }

    /// The policy state as last written (live slot, generation, runtime).
    pub fn policy_state(&self) -> PolicyState {
        self.slots.state
    }

    /// How long [`Programs::prepare_policy`] would wait now for the
    /// previous slot to go quiet (so that a caller can wait without
    /// holding a lock).
    pub(crate) fn slot_quiet_left(&self) -> Duration {
        self.slots
            .last_commit
            .map_or(Duration::ZERO, |t| SLOT_QUIET.saturating_sub(t.elapsed()))
    }

    /// Writes `tables` into the slot that is not live. Nothing changes for
    /// traffic until [`Programs::commit_policy`].
    pub fn prepare_policy(&mut self, tables: &Tables) -> Result<Prepared, EbpfError> {
        let wait = self.slot_quiet_left();
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let started = Instant::now();
        let slot = self.next_policy_slot();
        self.clear_slot(slot)?;
        let mut keys = SlotKeys::default();
        // Every key written is recorded in the slot's list even if a later
        // write fails: the next prepare of this slot clears them, so no
        // entry of a failed prepare goes live with the next policy.
        let written = self.write_slot(slot, tables, &mut keys);
        if let Err(e) = written {
            self.slots.keys[slot as usize] = keys;
            return Err(e);
        }
        let prepared = Prepared {
            slot,
            sources: keys.src_v4.len() + keys.src_v6.len(),
            destinations: keys.dst_v4.len() + keys.dst_v6.len(),
            took: started.elapsed(),
        };
        self.slots.keys[slot as usize] = keys;
        Ok(prepared)
    }

    /// Makes the prepared slot live, with the forwarding profile's
    /// internet-direct flag for the new policy, in one update of the state.
    /// Returns the new generation.
    pub fn commit_policy(
        &mut self,
        prepared: Prepared,
        internet_direct: bool,
    ) -> Result<u32, EbpfError> {
        let mut s = self.slots.state;
        s.slot = prepared.slot;
        s.internet_direct = u32::from(internet_direct);
        s.installed = 1;
        s.generation = s.generation.wrapping_add(1);
        self.write_state(s);
        self.slots.last_commit = Some(Instant::now());
        Ok(s.generation)
    }

    /// Sets whether the forwarding profile sends internet traffic direct.
    pub fn set_internet_direct(&mut self, direct: bool) -> Result<(), EbpfError> {
        let mut s = self.slots.state;
        s.internet_direct = u32::from(direct);
        self.write_state(s);
        Ok(())
    }

    /// Marks tunnel `tenant` down since `since_ns` (`CLOCK_MONOTONIC`), or
    /// up (`None`). Down: the time is stored before the state word's down
    /// bit; up: the bit is cleared first (a frame that sees the bit never
    /// sees a later time than the outage's: the grace only ever shortens).
    pub fn set_tunnel_down(&mut self, tenant: u8, since_ns: Option<u64>) -> Result<(), EbpfError> {
        let mut s = self.slots.state;
        let i = u32::from(tenant) % POLICY_MAX_TENANTS;
        let slot = (state_index::DOWN_SINCE + i) as usize;
        if let Some(t) = since_ns {
            self.state_words.store(slot, t.max(1));
            s.down |= 1 << i;
            self.write_state(s);
        } else {
            s.down &= !(1 << i);
            self.write_state(s);
            self.state_words.store(slot, 0);
        }
        Ok(())
    }

    /// Since when tunnel `tenant` has been down as the classifier sees it
    /// (`CLOCK_MONOTONIC` ns), `None` while up.
    pub fn tunnel_down_since(&self, tenant: u8) -> Option<u64> {
        let i = u32::from(tenant) % POLICY_MAX_TENANTS;
        PolicyState::from_word(self.state_words.load(state_index::WORD as usize))
            .is_down(i as usize)
            .then(|| {
                self.state_words
                    .load((state_index::DOWN_SINCE + i) as usize)
            })
    }

    /// The state word as the classifier reads it now.
    pub fn live_policy_state(&self) -> PolicyState {
        PolicyState::from_word(self.state_words.load(state_index::WORD as usize))
    }

    /// Stores the state word: one atomic store, seen whole by every frame.
    fn write_state(&mut self, s: PolicyState) {
        self.state_words
            .store(state_index::WORD as usize, s.to_word());
        self.slots.state = s;
    }

    /// Writes (or replaces) the domain entry of `addr` under `slot`. Only
    /// the idle slot's entries are ever replaced (a swap's prepare); the
    /// live slot's are only added and removed.
    pub fn set_policy_dns(
        &mut self,
        slot: u32,
        addr: IpAddr,
        e: DnsEntry,
    ) -> Result<(), EbpfError> {
        let name = map_names::POLICY_DNS;
        let mut m =
            HashMap::<_, DnsKey, DnsEntry>::try_from(self.map_mut(name)?).map_err(layout(name))?;
        m.insert(dns_key(slot & 1, addr), e, 0)
            .map_err(|source| EbpfError::MapUpdate {
                name,
                action: "insert",
                item: format!("{addr} (slot {})", slot & 1),
                source: source.into(),
            })
    }

    /// Removes the domain entries of `addr` under both slots, if there.
    pub fn remove_policy_dns(&mut self, addr: IpAddr) -> Result<(), EbpfError> {
        let name = map_names::POLICY_DNS;
        let mut m =
            HashMap::<_, DnsKey, DnsEntry>::try_from(self.map_mut(name)?).map_err(layout(name))?;
        for slot in 0..2 {
            removed(name, || addr.to_string(), m.remove(&dns_key(slot, addr)))?;
        }
        Ok(())
    }

    /// Writes `tables` into `slot`, recording each key in `keys`.
    fn write_slot(
        &mut self,
        slot: u32,
        tables: &Tables,
        keys: &mut SlotKeys,
    ) -> Result<(), EbpfError> {
        let src_entry = |profile: u16| {
            let p = &tables.profiles[usize::from(profile)];
            let mut e = ProfileEntry {
                profile: profile_id(slot, u32::from(profile)),
                flags: if p.fail_open { PROFILE_FAIL_OPEN } else { 0 },
                grace_ns: saturating_ns(p.grace),
                source_ports: [0; sluice_common::POLICY_SOURCE_PORTS],
            };
            for (s, port) in e.source_ports.iter_mut().zip(&p.source_ports) {
                *s = *port;
            }
            e
        };
        let sources = || tables.sources.iter().map(|(p, v)| (p, src_entry(*v)));
        let src_v4 = sources().map(|(p, e)| (key_v4(slot, p), e, p));
        fill(self, map_names::POLICY_SRC_V4, src_v4, &mut keys.src_v4)?;
        let src_v6 = sources().map(|(p, e)| (key_v6(slot, p), e, p));
        fill(self, map_names::POLICY_SRC_V6, src_v6, &mut keys.src_v6)?;
        for (i, prof) in tables.profiles.iter().enumerate() {
            let tag = profile_id(slot, u32::try_from(i).unwrap_or(u32::MAX));
            let dst_v4 = prof.nodes.iter().map(|(p, e)| (key_v4(tag, p), *e, p));
            fill(self, map_names::POLICY_DST_V4, dst_v4, &mut keys.dst_v4)?;
            let dst_v6 = prof.nodes.iter().map(|(p, e)| (key_v6(tag, p), *e, p));
            fill(self, map_names::POLICY_DST_V6, dst_v6, &mut keys.dst_v6)?;
        }
        Ok(())
    }

    /// Removes every entry of `slot` (it is not live).
    fn clear_slot(&mut self, slot: u32) -> Result<(), EbpfError> {
        let keys = std::mem::take(&mut self.slots.keys[slot as usize]);
        let mut remove = || {
            remove_all::<PolicyKeyV4, ProfileEntry>(self, map_names::POLICY_SRC_V4, &keys.src_v4)?;
            remove_all::<PolicyKeyV6, ProfileEntry>(self, map_names::POLICY_SRC_V6, &keys.src_v6)?;
            remove_all::<PolicyKeyV4, DestEntry>(self, map_names::POLICY_DST_V4, &keys.dst_v4)?;
            remove_all::<PolicyKeyV6, DestEntry>(self, map_names::POLICY_DST_V6, &keys.dst_v6)
        };
        let removed = remove();
        if removed.is_err() {
            // Keys already removed are skipped next time (not found).
            self.slots.keys[slot as usize] = keys;
        }
        removed
    }
}

/// Inserts the entries of one family that have a key (the others are of
/// the other family) into trie `name`, recording each key as it goes.
fn fill<'a, K: aya::Pod, V: aya::Pod>(
    c: &mut Programs,
    name: &'static str,
    items: impl Iterator<Item = (Option<Key<K>>, V, &'a Prefix)>,
    keys: &mut Vec<Key<K>>,
) -> Result<(), EbpfError> {
    let mut t = LpmTrie::<_, K, V>::try_from(c.map_mut(name)?).map_err(layout(name))?;
    for (k, v, p) in items {
        if let Some(k) = k {
            insert(&mut t, name, &k, v, p)?;
            keys.push(k);
        }
    }
    Ok(())
}

fn insert<K: aya::Pod, V: aya::Pod>(
    t: &mut LpmTrie<&mut aya::maps::MapData, K, V>,
    name: &'static str,
    k: &Key<K>,
    v: V,
    p: &Prefix,
) -> Result<(), EbpfError> {
    t.insert(k, v, 0).map_err(|source| EbpfError::MapUpdate {
        name,
        action: "insert",
        item: p.to_string(),
        source: source.into(),
    })
}

fn remove_all<K: aya::Pod, V: aya::Pod>(
    c: &mut Programs,
    name: &'static str,
    keys: &[Key<K>],
) -> Result<(), EbpfError> {
    let mut t = LpmTrie::<_, K, V>::try_from(c.map_mut(name)?).map_err(layout(name))?;
    for k in keys {
        removed(name, || format!("a /{} entry", k.prefix_len()), t.remove(k))?;
    }
    Ok(())
}
