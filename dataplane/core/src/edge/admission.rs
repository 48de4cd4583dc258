//! Caps on connections that have not authenticated yet, sans I/O.
//!
//! Before its handshake is over a connection is anyone's: it costs a
//! descriptor, a rustls state and a few KiB, and a `ClientHello` costs a key
//! exchange and a signature. So at most `max_handshakes` are in their
//! handshake at once, and at most `max_handshakes_per_prefix` from one
//! source prefix (a /24 or a /64 by default: one attacker's addresses).
//!
//! When the global cap is reached, a newcomer from a prefix with fewer
//! handshakes under way than the busiest prefixes takes the place of the
//! oldest handshake among those (it is closed): a flood from a few
//! prefixes cannot keep a gateway from another prefix from reconnecting.
//! A flood spread over many prefixes (one handshake each) can still evict
//! a gateway's handshake, but only by opening `max_handshakes` newer ones
//! within that handshake's round trip. The core also bounds each
//! handshake in time (an absolute deadline), so every slot comes free.
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use super::EdgeLimits;

/// A source prefix, as the per-prefix cap counts: the family and the
/// address masked to `handshake_prefix_len_v4` / `_v6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct PrefixKey(bool, u128);

/// What to do with a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Take it.
    Yes,
    /// Take it, after closing this handshake (slot, generation) to make
    /// room.
    Evicting(u32, u32),
    /// Its source prefix has `max_handshakes_per_prefix` under way.
    PrefixCap,
    /// `max_handshakes` are under way, none from a busier prefix.
    GlobalCap,
}

/// The handshakes under way, by source prefix.
#[derive(Debug)]
pub(super) struct Admission {
    max: u32,
    per_prefix_max: u32,
    v4_len: u8,
    v6_len: u8,
    count: u32,
    per_prefix: HashMap<PrefixKey, u32>,
    /// Handshakes in accept order (slot, generation, prefix); entries of
    /// handshakes that ended are skipped, and dropped when the queue is
    /// compacted.
    order: VecDeque<(u32, u32, PrefixKey)>,
}

impl Admission {
    /// Caps from the configuration (`max_handshakes` may have been lowered
    /// to fit the descriptor limit).
    pub(super) fn new(limits: &EdgeLimits) -> Self {
        Self {
            max: limits.max_handshakes.max(1),
            per_prefix_max: limits.max_handshakes_per_prefix.max(1),
            v4_len: limits.handshake_prefix_v4.min(32),
            v6_len: limits.handshake_prefix_v6.min(128),
            count: 0,
            per_prefix: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Handshakes under way.
    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// The prefix `ip` counts in.
    pub(super) fn key(&self, ip: IpAddr) -> PrefixKey {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        match ip {
            IpAddr::V4(a) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.v4_len))
                    .unwrap_or(0);
                PrefixKey(false, u128::from(u32::from(a) & m))
            }
            IpAddr::V6(a) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.v6_len))
                    .unwrap_or(0);
                PrefixKey(true, u128::from(a) & m)
            }
        }
    }

    /// Decides on a connection from `key`. `pending(slot, generation)`
    /// says whether a queued handshake is still under way.
    pub(super) fn admit(&mut self, key: PrefixKey, pending: impl Fn(u32, u32) -> bool) -> Admit {
        let mine = self.per_prefix.get(&key).copied().unwrap_or(0);
        if mine >= self.per_prefix_max {
            return Admit::PrefixCap;
        }
        if self.count < self.max {
            return Admit::Yes;
        }
        let Some(&n) = self.per_prefix.values().max() else {
            return Admit::GlobalCap;
        };
        if n <= mine {
            return Admit::GlobalCap;
        }
        while self.order.front().is_some_and(|&(s, g, _)| !pending(s, g)) {
            self.order.pop_front();
        }
        // The oldest handshake of the busiest prefixes (ties: the oldest
        // of all of them, so a newcomer's is the last to go).
        let counts = &self.per_prefix;
        self.order
            .iter()
            .find(|&&(s, g, k)| counts.get(&k) == Some(&n) && pending(s, g))
            .map_or(Admit::GlobalCap, |&(s, g, _)| Admit::Evicting(s, g))
    }

    /// A handshake began (after [`Admit::Yes`], or after the evicted one
    /// was [`Admission::end`]ed). `pending` as for [`Admission::admit`].
    pub(super) fn begin(
        &mut self,
        slot: u32,
        generation: u32,
        key: PrefixKey,
        pending: impl Fn(u32, u32) -> bool,
    ) {
        self.count += 1;
        *self.per_prefix.entry(key).or_insert(0) += 1;
        self.order.push_back((slot, generation, key));
        if self.order.len() > 4 * self.max as usize + 64 {
            self.order.retain(|&(s, g, _)| pending(s, g));
        }
    }

    /// A handshake from `key` ended (authenticated, failed, timed out,
    /// evicted).
    pub(super) fn end(&mut self, key: PrefixKey) {
        self.count = self.count.saturating_sub(1);
        if let Some(n) = self.per_prefix.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_prefix.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::HashSet};

    use super::*;

    fn limits(max: u32, per_prefix: u32) -> EdgeLimits {
        EdgeLimits {
            max_handshakes: max,
            max_handshakes_per_prefix: per_prefix,
            ..EdgeLimits::default()
        }
    }

    /// A model of the core: live handshakes by (slot, generation).
    struct Model {
        a: Admission,
        live: RefCell<HashSet<(u32, u32)>>,
        keys: HashMap<(u32, u32), PrefixKey>,
        next: u32,
    }

    impl Model {
        fn new(max: u32, per_prefix: u32) -> Self {
            Self {
                a: Admission::new(&limits(max, per_prefix)),
                live: RefCell::default(),
                keys: HashMap::new(),
                next: 0,
            }
        }

        fn connect(&mut self, ip: &str) -> Admit {
            let key = self.a.key(ip.parse().unwrap());
            let live = &self.live;
            let d = self.a.admit(key, |s, g| live.borrow().contains(&(s, g)));
            if let Admit::Evicting(s, g) = d {
                self.end((s, g));
            }
            if matches!(d, Admit::Yes | Admit::Evicting(..)) {
                self.next += 1;
                let id = (self.next, self.next);
                self.live.borrow_mut().insert(id);
                self.keys.insert(id, key);
                let live = &self.live;
                self.a
                    .begin(id.0, id.1, key, |s, g| live.borrow().contains(&(s, g)));
            }
            d
        }

        fn end(&mut self, id: (u32, u32)) {
            assert!(self.live.borrow_mut().remove(&id));
            self.a.end(self.keys[&id]);
        }
    }

    #[test]
    fn prefix_keys_mask_to_the_configured_lengths() {
        let a = Admission::new(&EdgeLimits::default());
        let k = |s: &str| a.key(s.parse().unwrap());
        assert_eq!(k("203.0.113.1"), k("203.0.113.254"));
        assert_ne!(k("203.0.113.1"), k("203.0.114.1"));
        assert_eq!(k("::ffff:203.0.113.9"), k("203.0.113.1"), "v4-mapped is v4");
        assert_eq!(k("2001:db8:66:1::1"), k("2001:db8:66:1:ffff::2"));
        assert_ne!(k("2001:db8:66:1::1"), k("2001:db8:66:2::1"));
    }

    #[test]
    fn per_prefix_and_global_caps() {
        let mut m = Model::new(8, 3);
        for _ in 0..3 {
            assert_eq!(m.connect("203.0.113.200"), Admit::Yes);
        }
        assert_eq!(m.connect("203.0.113.201"), Admit::PrefixCap, "same /24");
        for n in 1..=5 {
            assert_eq!(m.connect(&format!("2001:db8:66:{n}::1")), Admit::Yes);
        }
        assert_eq!(m.a.count(), 8);
        // Full: one handshake per v6 prefix, three from the v4 /24. A
        // newcomer from a new prefix takes the /24's oldest place, twice.
        assert_eq!(m.connect("2001:db8:66:9::1"), Admit::Evicting(1, 1));
        assert_eq!(m.connect("2001:db8:66:a::1"), Admit::Evicting(2, 2));
        // Now every prefix has one: a second from any of them is refused...
        assert_eq!(m.connect("2001:db8:66:1::7"), Admit::GlobalCap);
        assert_eq!(m.a.count(), 8);
        // ...and a first from a new prefix takes the oldest place of all.
        assert_eq!(m.connect("198.51.100.1"), Admit::Evicting(3, 3));
        assert_eq!(m.a.count(), 8);
        m.end((4, 4));
        assert_eq!(m.connect("2001:db8:66:1::7"), Admit::Yes, "room again");
    }

    /// A flood from a few prefixes, each at its cap, never keeps a
    /// newcomer from another prefix out.
    #[test]
    fn a_gateway_gets_in_during_a_flood() {
        let mut m = Model::new(64, 16);
        for i in 0..1000 {
            let _ = m.connect(&format!("2001:db8:66:{}::{}", i % 4, i % 200 + 1));
            let _ = m.connect(&format!("203.0.113.{}", 200 + i % 4));
        }
        assert_eq!(m.a.count(), 64);
        assert!(matches!(m.connect("198.51.100.1"), Admit::Evicting(..)));
        assert!(m.a.order.len() <= 4 * 64 + 64 + 1, "queue bounded");
    }
}
