//! The anti-replay window, in the manner of RFC 6479: a ring of 64-bit
//! blocks holding one bit per counter, where moving the window forward
//! clears the blocks it enters and never shifts the map.
//!
//! [`BLOCKS`] blocks make [`BLOCKS`] × 64 bits; one block is always being
//! entered, so the window proper (the counters below the highest seen
//! that are still told apart) is [`WINDOW`] = ([`BLOCKS`] − 1) × 64 =
//! 4032 counters. Counters further back are refused as too old; counters
//! inside are accepted once each, in any order.
//!
//! [`Window::check`] does not change the window: the session calls it
//! before the AEAD (a replay costs no decryption), then
//! [`Window::update`] only after the record authenticated, so a forged
//! record can never move the window or mark a counter seen.

/// 64-bit blocks in the ring (a power of two: the index is a mask).
pub const BLOCKS: usize = 64;
/// Counters below the highest seen that the window still tells apart.
pub const WINDOW: u64 = ((BLOCKS - 1) * 64) as u64;

const INDEX_MASK: u64 = BLOCKS as u64 - 1;

/// Why [`Window::check`] refused a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Inside the window and seen before.
    Replayed,
    /// Below the window: cannot be told apart from a replay.
    TooOld,
}

/// The receive side's record of the counters it has accepted.
#[derive(Clone)]
pub struct Window {
    /// One bit per counter (internally `counter + 1`, so that 0 is "none
    /// yet"): bit `n % 64` of block `(n / 64) % BLOCKS`.
    bitmap: [u64; BLOCKS],
    /// The highest accepted counter, plus one (0: none yet).
    top: u64,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("highest", &self.highest())
            .finish_non_exhaustive()
    }
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

impl Window {
    /// An empty window: every counter is new.
    pub const fn new() -> Self {
        Self {
            bitmap: [0; BLOCKS],
            top: 0,
        }
    }

    /// The highest accepted counter, if any.
    pub fn highest(&self) -> Option<u64> {
        self.top.checked_sub(1)
    }

    /// Whether `counter` would be accepted, without recording it.
    /// `u64::MAX` is never accepted (no sender uses it: it cannot be
    /// followed).
    ///
    /// # Errors
    /// [`Refused::Replayed`] or [`Refused::TooOld`].
    #[inline]
    pub fn check(&self, counter: u64) -> Result<(), Refused> {
        let Some(n) = counter.checked_add(1) else {
            return Err(Refused::TooOld);
        };
        if n > self.top {
            return Ok(());
        }
        if self.top - n >= WINDOW {
            return Err(Refused::TooOld);
        }
        let block = self.bitmap[((n >> 6) & INDEX_MASK) as usize];
        if block & (1 << (n & 63)) != 0 {
            return Err(Refused::Replayed);
        }
        Ok(())
    }

    /// Records `counter` as accepted (after the record authenticated);
    /// returns true if it is the highest so far. Call only after
    /// [`Window::check`] accepted it.
    #[inline]
    pub fn update(&mut self, counter: u64) -> bool {
        let Some(n) = counter.checked_add(1) else {
            return false;
        };
        let index = n >> 6;
        let newest = n > self.top;
        if newest {
            // Clear the blocks the window moves into (all of them after a
            // jump of a whole ring or more), never shifting the map.
            let current = self.top >> 6;
            let steps = (index - current).min(BLOCKS as u64);
            for i in 1..=steps {
                self.bitmap[((current + i) & INDEX_MASK) as usize] = 0;
            }
            self.top = n;
        }
        self.bitmap[(index & INDEX_MASK) as usize] |= 1 << (n & 63);
        newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut Window, c: u64) -> Result<bool, Refused> {
        w.check(c)?;
        Ok(w.update(c))
    }

    #[test]
    fn in_order_then_replays() {
        let mut w = Window::new();
        assert_eq!(w.highest(), None);
        for c in 0..200 {
            assert_eq!(accept(&mut w, c), Ok(true), "counter {c}");
        }
        for c in 0..200 {
            assert_eq!(w.check(c), Err(Refused::Replayed), "counter {c}");
        }
        assert_eq!(w.highest(), Some(199));
    }

    #[test]
    fn reordered_within_the_window_once_each() {
        let mut w = Window::new();
        assert_eq!(accept(&mut w, 5000), Ok(true));
        // Everything down to highest - WINDOW + 1 is still new, once.
        let oldest = 5000 - WINDOW + 1;
        for c in (oldest..5000).rev().step_by(7) {
            assert_eq!(accept(&mut w, c), Ok(false), "counter {c}");
            assert_eq!(w.check(c), Err(Refused::Replayed), "counter {c}");
        }
        assert_eq!(w.check(oldest - 1), Err(Refused::TooOld));
        assert_eq!(w.check(0), Err(Refused::TooOld));
        assert_eq!(w.check(u64::MAX), Err(Refused::TooOld));
    }

    #[test]
    fn jumps_clear_only_what_they_enter() {
        let mut w = Window::new();
        for c in [0, 1, 2, 63, 64, 65] {
            accept(&mut w, c).unwrap();
        }
        // A jump of less than a ring keeps the recent past.
        assert_eq!(accept(&mut w, 2000), Ok(true));
        assert_eq!(w.check(65), Err(Refused::Replayed));
        assert_eq!(w.check(66), Ok(()));
        // A jump beyond a whole ring clears everything, and stale bits of
        // reused blocks never read as seen.
        assert_eq!(accept(&mut w, 1_000_000), Ok(true));
        for c in (1_000_000 - WINDOW + 1)..1_000_000 {
            assert_eq!(w.check(c), Ok(()), "counter {c}");
        }
        assert_eq!(w.check(2000), Err(Refused::TooOld));
    }

    /// Against a reference that remembers every counter: random
    /// reordering, duplicates and jumps give the same verdicts.
    #[test]
    fn agrees_with_a_set() {
        let mut rng = crate::testutil::XorShift::new(6479);
        let mut w = Window::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut top: Option<u64> = None;
        let mut base = 0u64;
        for _ in 0..200_000 {
            base += rng.below(3);
            if rng.below(1000) == 0 {
                base += rng.below(10_000);
            }
            let c = base.saturating_sub(rng.below(WINDOW + 300));
            let expect = match top {
                Some(t) if c + WINDOW <= t => Err(Refused::TooOld),
                _ if seen.contains(&c) => Err(Refused::Replayed),
                _ => Ok(top.is_none_or(|t| c > t)),
            };
            assert_eq!(accept(&mut w, c), expect, "counter {c}, top {top:?}");
            if expect.is_ok() {
                seen.insert(c);
                top = Some(top.map_or(c, |t| t.max(c)));
            }
        }
    }
}
