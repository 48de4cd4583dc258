//! Single-producer/single-consumer descriptor rings in shared memory.
//!
//! One side of each ring is us, the other the kernel. The same code serves
//! both roles so that the unit tests can run a ring over plain memory with a
//! [`RingProd`] on one end and a [`RingCons`] on the other, playing the
//! kernel.
//!
//! Indices are free-running `u32`s that wrap at `u32::MAX`; a slot is
//! `index & (size - 1)`, and `producer - consumer` (wrapping) is the number
//! of entries in the ring, from 0 to `size`.
//!
//! Memory ordering (the kernel's side is `smp_load_acquire` /
//! `smp_store_release` in `net/xdp/xsk_queue.h`):
//! - a producer writes descriptors, then publishes them with a `Release`
//!   store of `producer`; a consumer `Acquire`-loads `producer` before it
//!   reads them;
//! - a consumer reads descriptors, then gives the slots back with a
//!   `Release` store of `consumer`; a producer `Acquire`-loads `consumer`
//!   before it overwrites them.
//!
//! Each side keeps its own index locally and only touches the other side's
//! (shared, contended) cache line when its cached copy can't satisfy a
//! request: one `Acquire` load per batch at most, never one per entry.

use std::{
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering, fence},
};

/// `XDP_RING_NEED_WAKEUP` in a ring's `flags` word.
const NEED_WAKEUP: u32 = libc::XDP_RING_NEED_WAKEUP;

/// Where one ring's shared words and descriptor array are.
#[derive(Debug)]
pub(super) struct RawRing<T> {
    /// The producer index (written by the producer only).
    pub(super) producer: NonNull<AtomicU32>,
    /// The consumer index (written by the consumer only).
    pub(super) consumer: NonNull<AtomicU32>,
    /// The kernel's flags word (`XDP_RING_NEED_WAKEUP`).
    pub(super) flags: NonNull<AtomicU32>,
    /// The first of `size` descriptors.
    pub(super) descs: NonNull<T>,
    /// Number of descriptors; a power of two.
    pub(super) size: u32,
}

/// The shared part of either end: pointers and the index mask.
#[derive(Debug)]
struct Shared<T> {
    raw: RawRing<T>,
    mask: u32,
}

impl<T: Copy> Shared<T> {
    /// # Safety
    /// Same contract as [`RingProd::new`].
    unsafe fn new(raw: RawRing<T>) -> Self {
        assert!(
            raw.size.is_power_of_two(),
            "ring size must be a power of two"
        );
        Self {
            mask: raw.size - 1,
            raw,
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: `new`'s contract: valid, aligned and alive as long as the
        // ring; only ever accessed atomically.
        unsafe { self.raw.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { self.raw.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { self.raw.flags.as_ref() }
    }

    /// The slot of free-running index `idx`.
    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & mask < size`, and `descs` points to `size`
        // descriptors (`new`'s contract), so the result stays in bounds.
        unsafe { self.raw.descs.as_ptr().add((idx & self.mask) as usize) }
    }

    fn needs_wakeup(&self) -> bool {
        // Our last `Release` store of an index must not be ordered after this
        // load (store→load needs a full fence), or we could read a flag
        // older than the entries we just published and skip a wakeup the
        // kernel asked for. Called once per batch, not per entry.
        fence(Ordering::SeqCst);
        self.flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}

/// Our end of a ring we produce into (fill, TX; the kernel's RX and
/// completion rings in the unit tests).
///
/// Entries go through three states: free → reserved (ours to write, not
/// yet visible) → published (the consumer's). `reserve` and `cancel` move
/// the reservation head; `submit` publishes from the oldest reserved entry.
#[derive(Debug)]
pub(super) struct RingProd<T> {
    ring: Shared<T>,
    /// Producer index as last published (stored to `producer`).
    published: u32,
    /// Producer index including reservations: `published..reserved` are ours.
    reserved: u32,
    /// Cached `consumer + size`: we may reserve up to (excluding) this index.
    limit: u32,
}

// SAFETY: the handle owns our end of the ring exclusively (it is not `Clone`
// and every mutation takes `&mut self`); the shared memory is only reached
// through atomics and the slots that the protocol gives to this end, and it
// lives as long as whoever owns the mapping keeps it (`new`'s contract),
// independent of the thread.
unsafe impl<T: Send> Send for RingProd<T> {}

impl<T: Copy> RingProd<T> {
    /// Takes the producer end of a ring.
    ///
    /// # Safety
    /// - `producer`, `consumer` and `flags` are valid, 4-byte aligned `u32`s
    ///   that are only accessed atomically, and `descs` points to
    ///   `size` (a power of two) properly aligned `T`s; all stay valid for
    ///   the life of the returned value.
    /// - Nobody else produces into this ring: the other side only consumes
    ///   entries once published and only advances `consumer`.
    pub(super) unsafe fn new(raw: RawRing<T>) -> Self {
        // SAFETY: forwarded contract.
        let ring = unsafe { Shared::new(raw) };
        let published = ring.producer().load(Ordering::Relaxed);
        let limit = ring
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(ring.raw.size);
        Self {
            ring,
            published,
            reserved: published,
            limit,
        }
    }

    /// Ring size in entries.
    pub(super) fn size(&self) -> u32 {
        self.ring.raw.size
    }

    /// Reserves up to `n` entries (fewer if the ring is fuller) and returns
    /// how many; they are written with [`write`](Self::write) at relative
    /// indices after those already reserved.
    pub(super) fn reserve(&mut self, n: u32) -> u32 {
        let mut free = self.limit.wrapping_sub(self.reserved);
        if free < n {
            self.limit = self
                .ring
                .consumer()
                .load(Ordering::Acquire)
                .wrapping_add(self.ring.raw.size);
            free = self.limit.wrapping_sub(self.reserved);
        }
        let n = n.min(free);
        self.reserved = self.reserved.wrapping_add(n);
        n
    }

    /// Entries reserved and not yet submitted.
    pub(super) fn pending(&self) -> u32 {
        self.reserved.wrapping_sub(self.published)
    }

    /// Writes the `i`-th reserved, unsubmitted entry.
    ///
    /// # Panics
    /// If `i >= self.pending()`: that slot may belong to the consumer.
    pub(super) fn write(&mut self, i: u32, value: T) {
        assert!(i < self.pending(), "write outside the reservation");
        // SAFETY: the slot is reserved by us and not yet published, so the
        // consumer does not read it (it reads below `producer` only) and it
        // is not unconsumed data (`reserve` stayed below consumer + size).
        unsafe { self.ring.slot(self.published.wrapping_add(i)).write(value) }
    }

    /// Publishes the oldest `n` reserved entries with one `Release` store.
    ///
    /// # Panics
    /// If `n > self.pending()`.
    pub(super) fn submit(&mut self, n: u32) {
        assert!(n <= self.pending(), "submit more than reserved");
        if n == 0 {
            return;
        }
        self.published = self.published.wrapping_add(n);
        self.ring
            .producer()
            .store(self.published, Ordering::Release);
    }

    /// Gives back the newest `n` reserved entries (rollback).
    ///
    /// # Panics
    /// If `n > self.pending()`.
    pub(super) fn cancel(&mut self, n: u32) {
        assert!(n <= self.pending(), "cancel more than reserved");
        self.reserved = self.reserved.wrapping_sub(n);
    }

    /// Published entries the consumer has not consumed yet (reads the
    /// consumer index).
    pub(super) fn in_flight(&self) -> u32 {
        self.published
            .wrapping_sub(self.ring.consumer().load(Ordering::Acquire))
    }

    /// Whether the kernel asked to be woken up (`XDP_RING_NEED_WAKEUP`).
    pub(super) fn needs_wakeup(&self) -> bool {
        self.ring.needs_wakeup()
    }
}

/// Our end of a ring we consume from (RX, completion; the kernel's fill and
/// TX rings in the unit tests).
///
/// Entries go through: published by the producer → peeked (ours to read) →
/// released (back to the producer). `peek` and `cancel` move the peek
/// head; `release` gives back from the oldest peeked entry.
#[derive(Debug)]
pub(super) struct RingCons<T> {
    ring: Shared<T>,
    /// Consumer index as last released (stored to `consumer`).
    released: u32,
    /// Consumer index including peeked entries: `released..peeked` are ours.
    peeked: u32,
    /// Cached producer index: entries below it are published.
    limit: u32,
}

// SAFETY: as for `RingProd`: exclusive ownership of this end, shared memory
// reached through atomics and our own slots only, lifetime guaranteed by
// `new`'s contract rather than by any thread.
unsafe impl<T: Send> Send for RingCons<T> {}

impl<T: Copy> RingCons<T> {
    /// Takes the consumer end of a ring.
    ///
    /// # Safety
    /// As for [`RingProd::new`], with the roles swapped: nobody else
    /// consumes from this ring, and the other side only writes entries
    /// before publishing them and only advances `producer`.
    pub(super) unsafe fn new(raw: RawRing<T>) -> Self {
        // SAFETY: forwarded contract.
        let ring = unsafe { Shared::new(raw) };
        let released = ring.consumer().load(Ordering::Relaxed);
        let limit = ring.producer().load(Ordering::Acquire);
        Self {
            ring,
            released,
            peeked: released,
            limit,
        }
    }

    /// Ring size in entries.
    pub(super) fn size(&self) -> u32 {
        self.ring.raw.size
    }

    /// Takes up to `n` published entries (fewer if fewer are there) and
    /// returns how many; they are read with [`read`](Self::read) at
    /// relative indices after those already peeked.
    pub(super) fn peek(&mut self, n: u32) -> u32 {
        let mut avail = self.limit.wrapping_sub(self.peeked);
        if avail < n {
            self.limit = self.ring.producer().load(Ordering::Acquire);
            avail = self.limit.wrapping_sub(self.peeked);
        }
        let n = n.min(avail);
        self.peeked = self.peeked.wrapping_add(n);
        n
    }

    /// Entries peeked and not yet released.
    pub(super) fn pending(&self) -> u32 {
        self.peeked.wrapping_sub(self.released)
    }

    /// Reads the `i`-th peeked, unreleased entry.
    ///
    /// # Panics
    /// If `i >= self.pending()`: that slot may belong to the producer.
    pub(super) fn read(&self, i: u32) -> T {
        assert!(i < self.pending(), "read outside the peeked entries");
        // SAFETY: the slot is published (below the producer index we
        // acquired) and not released, so the producer won't write it, and
        // its contents were written before the `Release` we synchronised
        // with.
        unsafe { self.ring.slot(self.released.wrapping_add(i)).read() }
    }

    /// Releases the oldest `n` peeked entries with one `Release` store.
    ///
    /// # Panics
    /// If `n > self.pending()`.
    pub(super) fn release(&mut self, n: u32) {
        assert!(n <= self.pending(), "release more than peeked");
        if n == 0 {
            return;
        }
        self.released = self.released.wrapping_add(n);
        self.ring.consumer().store(self.released, Ordering::Release);
    }

    /// Un-peeks the newest `n` peeked entries (rollback): they will be
    /// returned again by the next `peek`.
    ///
    /// # Panics
    /// If `n > self.pending()`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn cancel(&mut self, n: u32) {
        assert!(n <= self.pending(), "cancel more than peeked");
        self.peeked = self.peeked.wrapping_sub(n);
    }

    /// Whether the producer has published entries we have not peeked (reads
    /// the producer index when the cache says no).
    pub(super) fn has_entries(&mut self) -> bool {
        if self.limit != self.peeked {
            return true;
        }
        self.limit = self.ring.producer().load(Ordering::Acquire);
        self.limit != self.peeked
    }

    /// Whether the kernel asked to be woken up (`XDP_RING_NEED_WAKEUP`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn needs_wakeup(&self) -> bool {
        self.ring.needs_wakeup()
    }
}

/// Ring memory on the heap, for tests: the shared words and the
/// descriptor array of one ring, as the kernel lays them out (minus the
/// cache-line padding).
#[cfg(test)]
pub(super) struct TestRing<T> {
    producer: Box<AtomicU32>,
    consumer: Box<AtomicU32>,
    pub(super) flags: Box<AtomicU32>,
    descs: Box<[std::cell::UnsafeCell<T>]>,
}

#[cfg(test)]
impl<T: Copy> TestRing<T> {
    /// A ring of `size` entries, each `init`, whose indices both start at
    /// `start`.
    pub(super) fn new(size: u32, start: u32, init: T) -> Self {
        Self {
            producer: Box::new(AtomicU32::new(start)),
            consumer: Box::new(AtomicU32::new(start)),
            flags: Box::new(AtomicU32::new(0)),
            descs: (0..size)
                .map(|_| std::cell::UnsafeCell::new(init))
                .collect(),
        }
    }

    /// Pointers for [`RingProd::new`] / [`RingCons::new`]; the `TestRing`
    /// must outlive both ends.
    pub(super) fn raw(&self) -> RawRing<T> {
        RawRing {
            producer: NonNull::from(&*self.producer),
            consumer: NonNull::from(&*self.consumer),
            flags: NonNull::from(&*self.flags),
            // `UnsafeCell<T>` has `T`'s layout; writes through this pointer
            // are allowed because they go through `UnsafeCell`.
            descs: NonNull::new(std::cell::UnsafeCell::raw_get(self.descs.as_ptr()))
                .expect("non-null"),
            size: self.descs.len() as u32,
        }
    }

    /// Both ends of this ring.
    pub(super) fn ends(&self) -> (RingProd<T>, RingCons<T>) {
        // SAFETY: the boxes are valid, aligned, only accessed atomically (or
        // through `UnsafeCell`) and outlive the ends in every test; one
        // producer end and one consumer end.
        unsafe { (RingProd::new(self.raw()), RingCons::new(self.raw())) }
    }

    /// The shared producer index.
    pub(super) fn producer(&self) -> u32 {
        self.producer.load(Ordering::Relaxed)
    }

    /// The shared consumer index.
    pub(super) fn consumer(&self) -> u32 {
        self.consumer.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `values` through `prod` (one batch) and returns how many went.
    fn push(prod: &mut RingProd<u64>, values: &[u64]) -> u32 {
        let n = prod.reserve(values.len() as u32);
        for i in 0..n {
            prod.write(i, values[i as usize]);
        }
        prod.submit(n);
        n
    }

    /// Pops up to `max` entries from `cons` (one batch).
    fn pop(cons: &mut RingCons<u64>, max: u32) -> Vec<u64> {
        let n = cons.peek(max);
        let out = (0..n).map(|i| cons.read(i)).collect();
        cons.release(n);
        out
    }

    #[test]
    fn empty_and_full() {
        let mem = TestRing::<u64>::new(8, 0, 0);
        let (mut prod, mut cons) = mem.ends();
        assert_eq!(cons.peek(4), 0, "empty ring has nothing to peek");
        assert!(!cons.has_entries());
        assert_eq!(push(&mut prod, &[1, 2, 3, 4, 5, 6, 7, 8]), 8);
        assert_eq!(prod.reserve(1), 0, "full ring has no room");
        assert_eq!(prod.in_flight(), 8);
        assert!(cons.has_entries());
        assert_eq!(pop(&mut cons, 3), [1, 2, 3]);
        assert_eq!(push(&mut prod, &[9, 10, 11, 12]), 3, "partial: 3 free");
        assert_eq!(pop(&mut cons, 100), [4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(prod.in_flight(), 0);
        assert_eq!(cons.peek(1), 0);
    }

    #[test]
    fn wraps_at_u32_max() {
        // Start 5 before the wrap so that the batches straddle it.
        let start = u32::MAX - 4;
        let mem = TestRing::<u64>::new(4, start, 0);
        let (mut prod, mut cons) = mem.ends();
        let mut next = 0u64;
        let mut expect = 0u64;
        for round in 0..10 {
            let batch: Vec<u64> = (next..next + 3).collect();
            let n = push(&mut prod, &batch);
            next += u64::from(n);
            assert!(n > 0, "round {round}");
            for v in pop(&mut cons, 2) {
                assert_eq!(v, expect);
                expect += 1;
            }
        }
        for v in pop(&mut cons, 4) {
            assert_eq!(v, expect);
            expect += 1;
        }
        assert_eq!(expect, next);
        assert_eq!(mem.producer(), start.wrapping_add(next as u32));
        assert_eq!(mem.consumer(), mem.producer());
        assert!(mem.producer() < start, "indices wrapped");
    }

    #[test]
    fn full_across_the_wrap() {
        let mem = TestRing::<u64>::new(4, u32::MAX - 1, 0);
        let (mut prod, mut cons) = mem.ends();
        assert_eq!(push(&mut prod, &[1, 2, 3, 4, 5]), 4);
        assert_eq!(prod.reserve(1), 0);
        assert_eq!(prod.in_flight(), 4);
        assert_eq!(pop(&mut cons, 8), [1, 2, 3, 4]);
        assert_eq!(prod.reserve(4), 4, "room again after release");
        prod.cancel(4);
    }

    #[test]
    fn reserved_entries_are_invisible_until_submitted() {
        let mem = TestRing::<u64>::new(8, 7, 0);
        let (mut prod, mut cons) = mem.ends();
        assert_eq!(prod.reserve(3), 3);
        prod.write(0, 10);
        prod.write(1, 11);
        prod.write(2, 12);
        assert_eq!(cons.peek(8), 0);
        prod.submit(2);
        assert_eq!(pop(&mut cons, 8), [10, 11]);
        prod.submit(1);
        assert_eq!(pop(&mut cons, 8), [12]);
    }

    #[test]
    fn producer_rollback() {
        let mem = TestRing::<u64>::new(8, 0, 0);
        let (mut prod, mut cons) = mem.ends();
        assert_eq!(prod.reserve(5), 5);
        for i in 0..5 {
            prod.write(i, 100 + u64::from(i));
        }
        // Keep two, roll back three.
        prod.cancel(3);
        prod.submit(2);
        assert_eq!(mem.producer(), 2);
        // The cancelled slots are reserved again by the next batch.
        assert_eq!(push(&mut prod, &[7, 8]), 2);
        assert_eq!(pop(&mut cons, 8), [100, 101, 7, 8]);
        // Rolling back everything leaves the shared index alone.
        assert_eq!(prod.reserve(4), 4);
        prod.cancel(4);
        assert_eq!(prod.pending(), 0);
        assert_eq!(mem.producer(), 4);
    }

    #[test]
    fn consumer_rollback() {
        let mem = TestRing::<u64>::new(8, u32::MAX, 0);
        let (mut prod, mut cons) = mem.ends();
        push(&mut prod, &[1, 2, 3, 4]);
        assert_eq!(cons.peek(3), 3);
        assert_eq!(cons.read(0), 1);
        cons.cancel(2);
        cons.release(1);
        assert_eq!(mem.consumer(), 0, "released one across the wrap");
        assert_eq!(pop(&mut cons, 8), [2, 3, 4]);
    }

    #[test]
    #[should_panic(expected = "write outside the reservation")]
    fn write_outside_reservation_panics() {
        let mem = TestRing::<u64>::new(4, 0, 0);
        let (mut prod, _cons) = mem.ends();
        assert_eq!(prod.reserve(1), 1);
        prod.write(1, 0);
    }

    #[test]
    #[should_panic(expected = "read outside the peeked entries")]
    fn read_outside_peek_panics() {
        let mem = TestRing::<u64>::new(4, 0, 0);
        let (mut prod, mut cons) = mem.ends();
        push(&mut prod, &[1]);
        assert_eq!(cons.peek(4), 1);
        cons.read(1);
    }

    #[test]
    fn cached_limit_refreshes_only_when_short() {
        let mem = TestRing::<u64>::new(8, 0, 0);
        let (mut prod, mut cons) = mem.ends();
        push(&mut prod, &[1, 2]);
        assert_eq!(cons.peek(1), 1);
        // The cache holds 2; a later publication is seen once it runs short.
        push(&mut prod, &[3]);
        assert_eq!(cons.peek(1), 1);
        assert_eq!(cons.peek(5), 1);
        cons.release(3);
    }

    #[test]
    fn need_wakeup_flag() {
        let mem = TestRing::<u64>::new(4, 0, 0);
        let (prod, cons) = mem.ends();
        assert!(!prod.needs_wakeup() && !cons.needs_wakeup());
        mem.flags.store(NEED_WAKEUP, Ordering::Relaxed);
        assert!(prod.needs_wakeup() && cons.needs_wakeup());
    }

    /// Two threads, a small ring, many wraps: checks order and the
    /// Acquire/Release pairing under real concurrency.
    #[test]
    fn concurrent_fifo() {
        const N: u64 = 200_000;
        let mem = TestRing::<u64>::new(16, u32::MAX - 100, 0);
        let (mut prod, mut cons) = mem.ends();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut next = 0;
                while next < N {
                    let n = prod.reserve(5.min((N - next) as u32));
                    for i in 0..n {
                        prod.write(i, next + u64::from(i));
                    }
                    prod.submit(n);
                    next += u64::from(n);
                    if n == 0 {
                        std::hint::spin_loop();
                    }
                }
            });
            let mut expect = 0;
            while expect < N {
                let n = cons.peek(7);
                for i in 0..n {
                    assert_eq!(cons.read(i), expect);
                    expect += 1;
                }
                cons.release(n);
                if n == 0 {
                    std::hint::spin_loop();
                }
            }
        });
    }
}
