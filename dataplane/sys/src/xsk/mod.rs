//! `AF_XDP` sockets: a UMEM, its fill and completion rings, and the RX and TX
//! rings of one socket bound to one queue of one interface.
//!
//! This layer moves frames between the kernel and the caller, in batches,
//! without copying on RX and without allocating, locking or making a
//! syscall per packet. It does not parse, route or decide anything; it does
//! not load XDP programs (the caller puts the socket's fd in the XSKMAP of
//! its program: [`XskSocket`] implements [`AsFd`](std::os::fd::AsFd)).
//!
//! # The ring protocol
//!
//! The UMEM is one anonymous mapping split into equal frames, addressed by
//! their byte offset in it. Four single-producer, single-consumer rings,
//! mapped from the socket, pass frames between user space and the kernel:
//!
//! | ring       | producer   | consumer   | entries                         |
//! |------------|------------|------------|---------------------------------|
//! | fill       | user space | kernel     | `u64` frames to receive into    |
//! | RX         | kernel     | user space | `xdp_desc` received frames      |
//! | TX         | user space | kernel     | `xdp_desc` frames to send       |
//! | completion | kernel     | user space | `u64` frames sent, given back   |
//!
//! Each ring has a `producer` and a `consumer` index (free-running `u32`s,
//! wrapping) and a `flags` word. The producer writes entries and then
//! publishes them with a `Release` store of `producer`; the consumer
//! `Acquire`-loads it, reads, and gives the slots back with a `Release`
//! store of `consumer`. See `ring.rs` for the details.
//!
//! # Frame ownership
//!
//! At start, half the frames (at most the fill ring's size) are posted to
//! the fill ring for RX; the others are on a free list (a `Vec<u64>`
//! allocated once) for TX. Then:
//! - RX: [`XskSocket::rx`] returns an [`RxBatch`] of `&[u8]` views into
//!   the UMEM; dropping it releases the RX entries and posts the same
//!   frames straight back to the fill ring (no free-list traffic). Each
//!   frame comes with the classifier's metadata ([`RxBatch::meta`]),
//!   either in front of the descriptor's address or, with
//!   [`XskConfig::meta_in_head`], as its first bytes (skipped by every
//!   view).
//! - TX: [`XskSocket::tx`] first reaps the completion ring into the free
//!   list, then returns a [`TxBatch`] of free frames to write; committing
//!   it publishes them to the TX ring, rolling back (or dropping) returns
//!   them to the free list. The kernel gives sent frames back through the
//!   completion ring, which [`XskSocket::complete`] reaps.
//!
//! # Wakeups
//!
//! Sockets are bound with `XDP_USE_NEED_WAKEUP`: the kernel sets
//! `XDP_RING_NEED_WAKEUP` in a ring's flags when it wants a syscall, and
//! otherwise none is made. For the fill ring that is a `recvfrom`
//! (`MSG_DONTWAIT`) when the driver ran out of frames; for the TX ring a
//! `sendto` (`MSG_DONTWAIT`) after a batch is submitted. In copy mode
//! (every driver without zero-copy support, veth included) the kernel sets
//! the TX flag when the ring is created and never clears it, and `sendto`
//! itself transmits, at most 32 frames per call: [`TxBatch::commit`] keeps
//! kicking while the kernel makes progress (about one syscall per 32
//! frames, inherent to copy mode); in zero-copy mode one kick, and only
//! when the driver asked.
//!
//! # Readiness
//!
//! The fd is readable when the RX ring is not empty, writable when the TX
//! ring is at most half full. With an edge-triggered poller (mio), drain
//! with [`XskSocket::rx`] until it returns an empty batch.

mod error;
mod mmap;
mod queues;
mod ring;
mod socket;

pub use error::{RingKind, SetupStep, XskError};
pub use queues::{
    PushError, RxBatch, RxFrameMut, RxFramesMut, RxIter, TxBatch, TxFrame, XskCounters,
};
pub use socket::XskSocket;

/// Ring and UMEM sizes of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// Bytes per UMEM frame: 2048 or 4096 (the default). One frame holds one
    /// packet.
    pub frame_size: u32,
    /// Frames in the UMEM (default 4096): half for RX, half for TX.
    pub frame_count: u32,
    /// Bytes the kernel leaves free before each received packet, on top of
    /// its own 256 (`XDP_PACKET_HEADROOM`). Default 0.
    pub frame_headroom: u32,
    /// Fill ring entries, a power of two (default 2048).
    pub fill_size: u32,
    /// Completion ring entries, a power of two (default 2048).
    pub completion_size: u32,
    /// RX ring entries, a power of two (default 2048).
    pub rx_size: u32,
    /// TX ring entries, a power of two (default 2048).
    pub tx_size: u32,
    /// Put the UMEM on 2 MiB huge pages (default off; needs reserved huge
    /// pages and a UMEM size that is a multiple of 2 MiB).
    pub hugepages: bool,
    /// Every received frame starts with the classifier's
    /// [`sluice_common::META_LEN`] bytes of metadata (it put them there with
    /// `bpf_xdp_adjust_head`, on kernels that refuse it
    /// `bpf_xdp_adjust_meta`). Default off: the metadata lies in front of
    /// the received data. When on, each RX descriptor reads as its
    /// address plus `META_LEN` and its length minus `META_LEN` (a frame
    /// shorter than that reads as empty), and [`RxBatch::meta`] reads the
    /// bytes at the descriptor's own address; everything else about the
    /// frame (its UMEM frame, recycling, counters of data bytes) is the
    /// same in both modes.
    pub meta_in_head: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            frame_size: 4096,
            frame_count: 4096,
            frame_headroom: 0,
            fill_size: 2048,
            completion_size: 2048,
            rx_size: 2048,
            tx_size: 2048,
            hugepages: false,
            meta_in_head: false,
        }
    }
}

impl XskConfig {
    /// Checks the sizes against what the kernel and this module accept.
    pub fn validate(&self) -> Result<(), XskError> {
        self.checked_umem_len().map(drop)
    }

    /// Validates, and returns the UMEM size in bytes.
    fn checked_umem_len(&self) -> Result<usize, XskError> {
        let bad = |field, reason| Err(XskError::Config { field, reason });
        if !matches!(self.frame_size, 2048 | 4096) {
            return bad("frame_size", "must be 2048 or 4096");
        }
        if self.frame_count < 2 {
            return bad("frame_count", "must be at least 2 (one RX, one TX)");
        }
        if self.frame_headroom >= self.frame_size - queues::XDP_PACKET_HEADROOM {
            return bad(
                "frame_headroom",
                "must leave room for data after the kernel's 256 bytes",
            );
        }
        for (field, size) in [
            ("fill_size", self.fill_size),
            ("completion_size", self.completion_size),
            ("rx_size", self.rx_size),
            ("tx_size", self.tx_size),
        ] {
            if !size.is_power_of_two() {
                return bad(field, "must be a non-zero power of two");
            }
        }
        let len = u64::from(self.frame_count) * u64::from(self.frame_size);
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|&l| isize::try_from(l).is_ok())
        else {
            return bad("frame_count", "UMEM too large for the address space");
        };
        if self.hugepages && !len.is_multiple_of(2 << 20) {
            return bad(
                "frame_count",
                "UMEM on huge pages must be a multiple of 2 MiB",
            );
        }
        Ok(len)
    }

    /// Frames posted to the fill ring at start: half, at most the ring.
    fn rx_frames(&self) -> u32 {
        (self.frame_count / 2).min(self.fill_size)
    }
}

/// How to bind: the kernel's zero-copy or copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Copy mode (`XDP_COPY`): the kernel copies packets into and out of
    /// the UMEM. Works on every driver with XDP, veth included.
    Copy,
    /// Zero-copy mode (`XDP_ZEROCOPY`): the driver DMAs into the UMEM;
    /// binding fails (`EOPNOTSUPP`) where the driver can't.
    ZeroCopy,
    /// Zero-copy where the driver supports it, copy mode otherwise (no
    /// flag: the kernel itself falls back). See [`XskSocket::is_zero_copy`].
    #[default]
    Auto,
}

/// The interface to bind to, by index or by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface<'a> {
    /// An interface index.
    Index(u32),
    /// An interface name, resolved in the calling thread's network
    /// namespace.
    Name(&'a str),
}

impl From<u32> for Interface<'_> {
    fn from(index: u32) -> Self {
        Self::Index(index)
    }
}

impl<'a> From<&'a str> for Interface<'a> {
    fn from(name: &'a str) -> Self {
        Self::Name(name)
    }
}

/// The kernel's counters for one socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStatistics {
    /// Frames dropped for a reason other than the two below (e.g. too long
    /// for a frame, or no frame to receive into in copy mode).
    pub rx_dropped: u64,
    /// Invalid descriptors in the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors in the TX ring.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty when asked to send.
    pub tx_ring_empty_descs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        XskConfig::default().validate().expect("valid");
        assert_eq!(XskConfig::default().rx_frames(), 2048);
    }

    #[test]
    fn config_errors_name_the_field() {
        let field = |c: XskConfig| match c.validate() {
            Err(XskError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let d = XskConfig::default();
        assert_eq!(
            field(XskConfig {
                frame_size: 3000,
                ..d
            }),
            "frame_size"
        );
        assert_eq!(
            field(XskConfig {
                frame_count: 1,
                ..d
            }),
            "frame_count"
        );
        assert_eq!(
            field(XskConfig {
                frame_headroom: 4096 - 256,
                ..d
            }),
            "frame_headroom"
        );
        assert_eq!(field(XskConfig { rx_size: 1000, ..d }), "rx_size");
        assert_eq!(field(XskConfig { tx_size: 0, ..d }), "tx_size");
        assert_eq!(
            field(XskConfig {
                frame_count: 100,
                hugepages: true,
                ..d
            }),
            "frame_count"
        );
        XskConfig {
            frame_count: 512,
            hugepages: true,
            ..d
        }
        .validate()
        .expect("2 MiB");
    }

    #[test]
    fn rx_frames_bounded_by_fill_ring() {
        let c = XskConfig {
            frame_count: 8192,
            fill_size: 1024,
            ..XskConfig::default()
        };
        assert_eq!(c.rx_frames(), 1024);
    }
}
