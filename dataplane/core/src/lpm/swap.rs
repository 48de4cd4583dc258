//! Publishing a rebuilt table to the workers in one step.
//!
//! [`Swap`] holds the current `Arc<T>` and a generation counter. Each worker
//! keeps a [`Reader`], which caches an `Arc<T>` and its generation: on the
//! hot path [`Reader::get`] is one atomic load and a compare, with no lock
//! and no reference-count traffic. Only after a [`Swap::store`] does a reader
//! take the mutex, once, to clone the new `Arc` (this keeps the crate free of
//! `unsafe`, which a lock-free pointer swap would need). A reader sees either
//! the old table or the new one, never a mix: a table is immutable and is
//! replaced as a whole. The old table is freed when the last reader has
//! moved on, outside the lock.
use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

#[derive(Debug)]
struct Shared<T> {
    current: Mutex<Arc<T>>,
    /// Bumped under the lock after `current` changes.
    generation: AtomicU64,
}

/// The current version of a table, replaced atomically as a whole.
///
/// Clones are handles to the same slot.
#[derive(Debug)]
pub struct Swap<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Swap<T> {
    /// A slot holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: Mutex::new(Arc::new(value)),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Replaces the current value; readers pick it up on their next
    /// [`Reader::get`]. Build `value` before calling: this only swaps.
    pub fn store(&self, value: T) {
        let new = Arc::new(value);
        let old = {
            let mut current = self.lock();
            let old = std::mem::replace(&mut *current, new);
            self.shared.generation.fetch_add(1, Ordering::Release);
            old
        };
        // The old table (maybe hundreds of MiB) is dropped here, unlocked,
        // unless a reader still holds it.
        drop(old);
    }

    /// The current value (takes the lock: not for the hot path).
    pub fn load(&self) -> Arc<T> {
        Arc::clone(&self.lock())
    }

    /// A per-worker cached view of the current value.
    pub fn reader(&self) -> Reader<T> {
        let current = self.lock();
        Reader {
            generation: self.shared.generation.load(Ordering::Relaxed),
            cached: Arc::clone(&current),
            shared: Arc::clone(&self.shared),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<T>> {
        // The guarded `Arc` is valid even if a holder panicked.
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One worker's view of a [`Swap`]: cheap to read, refreshed after a store.
#[derive(Debug)]
pub struct Reader<T> {
    cached: Arc<T>,
    generation: u64,
    shared: Arc<Shared<T>>,
}

impl<T> Reader<T> {
    /// The current value: one atomic load when nothing changed.
    #[inline]
    pub fn get(&mut self) -> &T {
        if self.shared.generation.load(Ordering::Acquire) != self.generation {
            self.refresh();
        }
        &self.cached
    }

    #[cold]
    fn refresh(&mut self) {
        let current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Under the lock, `current` and `generation` agree.
        self.generation = self.shared.generation.load(Ordering::Relaxed);
        self.cached = Arc::clone(&current);
    }
}
