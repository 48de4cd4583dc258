//! Ring batch round trip: the `AF_XDP` descriptor ring's producer and
//! consumer ends over heap memory, one batch at a time.
//!
//! - `ring_round_trip/<batch>` (16 and 64): producer `reserve(batch)`, `write` of each
//!   `xdp_desc`, `submit`; then consumer `peek(batch)`, `read` of each,
//!   `release`. One thread plays both ends, so this is the instruction and
//!   fence cost of the protocol with the shared lines in the local cache,
//!   not cross-core cache-line transfer. The ring has 2048 entries (the
//!   default `rx_size`/`tx_size`), so the indices keep moving through it
//!   and wrap. Throughput is in descriptors.
//!
//! The ring code is `pub(super)` inside the private `sys::xsk::ring` module,
//! and this bench may not change the dataplane's module tree, so it compiles
//! `ring.rs` itself into this binary with `#[path]`: the same source, built
//! with the same bench profile, not a copy. (Exposing it from the dataplane
//! would need a `pub` re-export in `sys/xsk/mod.rs`.)
use std::{cell::UnsafeCell, hint::black_box, ptr::NonNull, sync::atomic::AtomicU32};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

// The bench only uses part of the ring API; the file's own lints apply in
// the dataplane.
#[allow(dead_code)]
#[path = "../../dataplane/sys/src/xsk/ring.rs"]
mod ring;

use ring::{RawRing, RingCons, RingProd};

/// Entries in the ring (the default RX/TX ring size).
const RING_SIZE: u32 = 2048;

/// Heap memory laid out like one mapped ring: the three shared words and the
/// descriptor array. Must outlive both ends (it is leaked in the bench).
struct HeapRing {
    producer: AtomicU32,
    consumer: AtomicU32,
    flags: AtomicU32,
    descs: Box<[UnsafeCell<libc::xdp_desc>]>,
}

impl HeapRing {
    fn new(size: u32) -> Self {
        let zero = libc::xdp_desc {
            addr: 0,
            len: 0,
            options: 0,
        };
        Self {
            producer: AtomicU32::new(0),
            consumer: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            descs: (0..size).map(|_| UnsafeCell::new(zero)).collect(),
        }
    }

    fn raw(&self) -> RawRing<libc::xdp_desc> {
        RawRing {
            producer: NonNull::from(&self.producer),
            consumer: NonNull::from(&self.consumer),
            flags: NonNull::from(&self.flags),
            // `UnsafeCell<T>` has `T`'s layout and permits writes through
            // this pointer.
            descs: NonNull::new(UnsafeCell::raw_get(self.descs.as_ptr())).expect("non-null"),
            size: self.descs.len() as u32,
        }
    }
}

fn ring_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_round_trip");
    for batch in [16u32, 64] {
        let mem: &'static HeapRing = Box::leak(Box::new(HeapRing::new(RING_SIZE)));
        // SAFETY: `mem` is leaked, so the words and descriptors stay valid
        // for the program's life; they are only accessed atomically or
        // through `UnsafeCell`; there is exactly one producer end and one
        // consumer end.
        let (mut prod, mut cons) = unsafe {
            (
                RingProd::<libc::xdp_desc>::new(mem.raw()),
                RingCons::<libc::xdp_desc>::new(mem.raw()),
            )
        };
        let mut frame = 0u64;
        g.throughput(Throughput::Elements(u64::from(batch)));
        g.bench_function(format!("{batch}"), |b| {
            b.iter(|| {
                let reserved = prod.reserve(black_box(batch));
                for i in 0..reserved {
                    prod.write(
                        i,
                        libc::xdp_desc {
                            addr: frame * 4096,
                            len: 1400,
                            options: 0,
                        },
                    );
                    frame = (frame + 1) & 4095;
                }
                prod.submit(reserved);
                let peeked = cons.peek(black_box(batch));
                let mut sum = 0u64;
                for i in 0..peeked {
                    let desc = cons.read(i);
                    sum = sum.wrapping_add(desc.addr) ^ u64::from(desc.len);
                }
                cons.release(peeked);
                assert_eq!(peeked, reserved, "round trip returns the batch");
                black_box(sum)
            });
        });
    }
    g.finish();
}

criterion_group!(ring_benches, ring_round_trip);
criterion_main!(ring_benches);
