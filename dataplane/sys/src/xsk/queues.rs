//! The per-packet path: the four rings, the UMEM frames and the free list,
//! and the `#[must_use]` batches handed to the caller.
//!
//! Nothing here allocates, locks or makes a syscall per packet: a batch
//! costs at most one `Acquire` load and one `Release` store per ring it
//! touches, and a syscall only when the kernel asked for a wakeup.

use std::{io, os::fd::RawFd, ptr::NonNull};

use super::ring::{RingCons, RingProd};

/// `XDP_PACKET_HEADROOM`: what the kernel leaves before received data in
/// every RX frame, ahead of the configured headroom.
pub(super) const XDP_PACKET_HEADROOM: u32 = 256;

/// Simple counters kept by the socket (user-space side; see
/// [`XskStatistics`](super::XskStatistics) for the kernel's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskCounters {
    /// Frames received (released from the RX ring).
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames submitted to the TX ring.
    pub tx_packets: u64,
    /// Bytes submitted to the TX ring.
    pub tx_bytes: u64,
    /// TX frames returned by the completion ring.
    pub tx_completed: u64,
    /// `sendto` calls made to wake up TX.
    pub tx_wakeups: u64,
    /// `recvfrom` calls made because the fill ring asked for a wakeup.
    pub fill_wakeups: u64,
}

/// A view of the UMEM area: `len` bytes split into `frame_size` frames.
/// The mapping itself is owned elsewhere (and outlives this view).
#[derive(Debug)]
pub(super) struct Umem {
    base: NonNull<u8>,
    len: u64,
    frame_size: u32,
}

// SAFETY: a plain pointer to process-wide memory whose lifetime is
// guaranteed by `new`'s contract; which frames may be touched is decided by
// the ring protocol, not by threads.
unsafe impl Send for Umem {}

impl Umem {
    /// # Safety
    /// `base..base + len` is readable and writable memory that stays mapped
    /// for the life of the value and that nothing in this process reaches
    /// other than through it; `frame_size` is a power of two dividing
    /// `len`.
    pub(super) unsafe fn new(base: NonNull<u8>, len: usize, frame_size: u32) -> Self {
        assert!(frame_size.is_power_of_two() && len.is_multiple_of(frame_size as usize));
        Self {
            base,
            len: len as u64,
            frame_size,
        }
    }

    /// The frame (its first byte's address) that `addr` falls into.
    fn frame_of(&self, addr: u64) -> u64 {
        addr & !u64::from(self.frame_size - 1)
    }

    fn frame_count(&self) -> u32 {
        (self.len / u64::from(self.frame_size)) as u32
    }

    /// Whether `addr..addr + len` lies inside one frame of the area.
    fn in_one_frame(&self, addr: u64, len: u64) -> bool {
        let frame = self.frame_of(addr);
        frame < self.len && addr + len <= frame + u64::from(self.frame_size)
    }

    /// The bytes `addr..addr + len`, or nothing if they are not inside one
    /// frame.
    ///
    /// # Safety
    /// The caller owns that frame (it is in no ring the kernel reads or
    /// writes) for `'a`, and makes no `&mut` to it during `'a`.
    unsafe fn bytes<'a>(&self, addr: u64, len: u32) -> &'a [u8] {
        if !self.in_one_frame(addr, u64::from(len)) {
            return &[];
        }
        // SAFETY: in bounds (checked above, `addr < len` fits `usize` as the
        // mapping does), and the caller owns the frame for `'a`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(addr as usize), len as usize) }
    }

    /// A whole frame, writable.
    ///
    /// # Safety
    /// The caller owns `frame` (a frame start, in no ring) for `'a` and
    /// makes no other reference to it during `'a`.
    unsafe fn frame_mut<'a>(&self, frame: u64) -> &'a mut [u8] {
        assert!(self.in_one_frame(frame, u64::from(self.frame_size)));
        // SAFETY: in bounds (asserted), exclusively owned for `'a`.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.as_ptr().add(frame as usize),
                self.frame_size as usize,
            )
        }
    }
}

/// Our ends of a socket's four rings.
#[derive(Debug)]
pub(super) struct Rings {
    /// Frames we give the kernel to receive into.
    pub(super) fill: RingProd<u64>,
    /// Frames the kernel has sent.
    pub(super) comp: RingCons<u64>,
    /// Frames the kernel has received.
    pub(super) rx: RingCons<libc::xdp_desc>,
    /// Frames we ask the kernel to send.
    pub(super) tx: RingProd<libc::xdp_desc>,
}

/// The rings of one socket, its UMEM and the frames user space holds.
///
/// Every frame is in exactly one place: the fill ring (or the kernel's
/// hands, or the RX ring), an [`RxBatch`] being read, the free list, a
/// [`TxBatch`] being written, or the TX ring (or the kernel's hands, or
/// the completion ring).
pub(super) struct Queues {
    fill: RingProd<u64>,
    comp: RingCons<u64>,
    rx: RingCons<libc::xdp_desc>,
    tx: RingProd<libc::xdp_desc>,
    umem: Umem,
    /// Idle frames for TX, used as a stack (the most recently completed
    /// frame is the warmest). Its capacity is the frame count, allocated
    /// once: pushing never reallocates.
    free: Vec<u64>,
    counters: XskCounters,
    /// The socket to kick (`-1` in tests: kicks then fail with `EBADF`).
    fd: RawFd,
    /// Zero-copy drivers transmit asynchronously after one kick; copy mode
    /// transmits inside `sendto`, a bounded number of frames per call.
    zero_copy: bool,
    /// Received frames start with the metadata
    /// ([`super::XskConfig::meta_in_head`]); [`Queues::desc`] skips it.
    meta_in_head: bool,
}

/// A received frame's descriptor as every reader sees it
/// ([`Queues::desc`]): where its data lies and where its metadata lies.
#[derive(Debug, Clone, Copy)]
struct RxDesc {
    /// The data's first byte (the Ethernet header), a UMEM address.
    addr: u64,
    /// The data's length.
    len: u32,
    /// The [`sluice_common::META_LEN`] bytes of metadata, a UMEM address in
    /// the same frame as `addr`; `None` if the frame has no room for them.
    meta: Option<u64>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("free_frames", &self.free.len())
            .field("tx_in_flight", &self.tx.in_flight())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Queues {
    /// Takes the four rings and the UMEM, posts `fill_frames` frames (at
    /// most the fill ring's size) to the fill ring for RX and puts the
    /// others on the free list for TX.
    pub(super) fn new(
        rings: Rings,
        umem: Umem,
        fd: RawFd,
        zero_copy: bool,
        meta_in_head: bool,
        fill_frames: u32,
    ) -> Self {
        let Rings {
            mut fill,
            comp,
            rx,
            tx,
        } = rings;
        let count = umem.frame_count();
        let frame = |i: u32| u64::from(i) * u64::from(umem.frame_size);
        let posted = fill.reserve(fill_frames.min(count));
        for i in 0..posted {
            fill.write(i, frame(i));
        }
        fill.submit(posted);
        let mut free = Vec::with_capacity(count as usize);
        // Highest first, so that the lowest addresses are used first.
        free.extend((posted..count).rev().map(frame));
        Self {
            fill,
            comp,
            rx,
            tx,
            umem,
            free,
            counters: XskCounters::default(),
            fd,
            zero_copy,
            meta_in_head,
        }
    }

    pub(super) fn frame_size(&self) -> u32 {
        self.umem.frame_size
    }

    pub(super) fn free_frames(&self) -> usize {
        self.free.len()
    }

    pub(super) fn counters(&self) -> XskCounters {
        self.counters
    }

    pub(super) fn tx_in_flight(&self) -> u32 {
        self.tx.in_flight()
    }

    pub(super) fn rx_ready(&mut self) -> bool {
        self.rx.has_entries()
    }

    /// Moves every frame in the completion ring to the free list.
    pub(super) fn complete(&mut self) -> usize {
        let n = self.comp.peek(self.comp.size());
        for i in 0..n {
            let frame = self.umem.frame_of(self.comp.read(i));
            self.give_back(frame);
        }
        self.comp.release(n);
        self.counters.tx_completed += u64::from(n);
        n as usize
    }

    /// Puts a frame on the free list. The list can hold every frame, so it
    /// never grows; an address outside the UMEM (which the kernel never
    /// returns) is dropped rather than trusted.
    fn give_back(&mut self, frame: u64) {
        if frame < self.umem.len && self.free.len() < self.free.capacity() {
            self.free.push(frame);
        }
    }

    /// The `i`-th peeked RX descriptor, as the caller sees it: the one
    /// place that knows where the metadata lies.
    ///
    /// Metadata in front ([`Queues::meta_in_head`] off): the data is the
    /// descriptor's, the metadata the [`sluice_common::META_LEN`] bytes
    /// before it (if they are in the same frame). Metadata in the head:
    /// the descriptor covers `[meta][data]`, so the data starts
    /// `META_LEN` bytes later and is as much shorter, and the metadata is
    /// at the descriptor's address; a descriptor of at most `META_LEN`
    /// bytes has no data (a runt: its readers see an empty frame). Either
    /// way the data lies within the descriptor's own bytes, so it is in
    /// the same UMEM frame as the address the kernel gave.
    fn desc(&self, i: u32) -> RxDesc {
        let d = self.rx.read(i);
        // 4: fits every integer type.
        let meta_len = sluice_common::META_LEN as u32;
        if self.meta_in_head {
            if d.len <= meta_len {
                return RxDesc {
                    addr: d.addr,
                    len: 0,
                    meta: (d.len == meta_len).then_some(d.addr),
                };
            }
            return RxDesc {
                addr: d.addr + u64::from(meta_len),
                len: d.len - meta_len,
                meta: Some(d.addr),
            };
        }
        let meta = d
            .addr
            .checked_sub(u64::from(meta_len))
            .filter(|&m| self.umem.frame_of(m) == self.umem.frame_of(d.addr));
        RxDesc {
            addr: d.addr,
            len: d.len,
            meta,
        }
    }

    pub(super) fn rx(&mut self, max: usize) -> RxBatch<'_> {
        let n = self.rx.peek(u32::try_from(max).unwrap_or(u32::MAX));
        if n == 0 && self.fill.needs_wakeup() {
            self.wakeup_fill();
        }
        RxBatch { q: self, len: n }
    }

    /// Releases the first `n` peeked RX entries and posts their frames
    /// straight back to the fill ring.
    fn recycle_rx(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        // Frames in the fill ring + in the kernel + in the RX ring + in this
        // batch never exceed what was posted at start, which fits the fill
        // ring: `room == n`. The free list is the fallback all the same.
        let room = self.fill.reserve(n);
        let mut bytes = 0;
        for i in 0..n {
            let desc = self.desc(i);
            bytes += u64::from(desc.len);
            let frame = self.umem.frame_of(desc.addr);
            if i < room {
                self.fill.write(i, frame);
            } else {
                self.give_back(frame);
            }
        }
        self.fill.submit(room);
        // Only now: the descriptors were read above.
        self.rx.release(n);
        self.counters.rx_packets += u64::from(n);
        self.counters.rx_bytes += bytes;
        if self.fill.needs_wakeup() {
            self.wakeup_fill();
        }
    }

    /// Asks the driver to refill from the fill ring. Best effort: if it
    /// fails the flag stays set and the next `rx` asks again.
    fn wakeup_fill(&mut self) {
        self.counters.fill_wakeups += 1;
        // SAFETY: a zero-length, non-blocking receive with no buffer and no
        // address: the kernel writes nothing to our memory.
        unsafe {
            libc::recvfrom(
                self.fd,
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    pub(super) fn tx(&mut self, max: usize) -> TxBatch<'_> {
        self.complete();
        let want = max.min(self.free.len()) as u32;
        let reserved = self.tx.reserve(want);
        TxBatch {
            q: self,
            reserved,
            filled: 0,
            bytes: 0,
        }
    }

    /// Wakes the kernel up to transmit the TX ring's entries, if it asked
    /// for it (`XDP_RING_NEED_WAKEUP` on the TX ring).
    ///
    /// In copy mode the kernel sets that flag when the TX ring is created
    /// and never clears it (only zero-copy drivers do), and `sendto` is
    /// what transmits: at most 32 frames per call (`TX_BATCH_SIZE` in
    /// `net/xdp/xsk.c`, then `EAGAIN`), stopping early when the completion
    /// ring or the socket's send buffer is full. So kick again while the
    /// kernel makes progress, reaping completions in between; whatever is
    /// left goes at the next kick.
    pub(super) fn wakeup_tx(&mut self) -> io::Result<()> {
        if !self.tx.needs_wakeup() {
            return Ok(());
        }
        let rounds = if self.zero_copy {
            1
        } else {
            self.tx.size() / 32 + 2
        };
        for _ in 0..rounds {
            let before = self.tx.in_flight();
            if before == 0 {
                break;
            }
            self.counters.tx_wakeups += 1;
            // SAFETY: a zero-length, non-blocking send with no buffer and no
            // address: the kernel reads nothing from our memory but the
            // rings it already shares with us.
            let rc = unsafe {
                libc::sendto(
                    self.fd,
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                // More to send / queue busy / a frame dropped by the qdisc:
                // all mean "try again", not "broken".
                if !matches!(
                    err.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR)
                ) {
                    return Err(err);
                }
            }
            if self.tx.in_flight() >= before {
                break;
            }
            self.complete();
        }
        Ok(())
    }
}

/// Frames received, borrowed from the RX ring (zero copy).
///
/// Dropping the batch (or [`commit`](Self::commit)) releases its RX ring
/// entries and posts its frames straight back to the fill ring, with one
/// store per ring.
#[must_use = "the frames are released as soon as the batch is dropped; read them first"]
#[derive(Debug)]
pub struct RxBatch<'a> {
    q: &'a mut Queues,
    len: u32,
}

impl RxBatch<'_> {
    /// Number of frames in the batch.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the batch has no frames.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th frame, from its Ethernet header on.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let i = u32::try_from(i).ok().filter(|&i| i < self.len)?;
        let desc = self.q.desc(i);
        // SAFETY: the frame came out of the RX ring and stays ours until
        // `recycle_rx`, which needs `&mut self` and so waits until this
        // shared borrow ends; frames are never handed out mutably while in
        // an RX batch. `desc` keeps the data inside the bytes the kernel
        // described, and `bytes` gives nothing outside one frame.
        Some(unsafe { self.q.umem.bytes(desc.addr, desc.len) })
    }

    /// The 4 bytes of XDP metadata of the `i`-th frame (what the
    /// classifier wrote: [`sluice_common::META_LEN`] bytes), in front of
    /// its data, or with [`super::XskConfig::meta_in_head`] the first bytes
    /// the kernel received. Frames only reach this socket through the
    /// classifier, which writes them for every frame it redirects.
    pub fn meta(&self, i: usize) -> Option<[u8; sluice_common::META_LEN]> {
        let i = u32::try_from(i).ok().filter(|&i| i < self.len)?;
        let addr = self.q.desc(i).meta?;
        // SAFETY: as in `get`: the frame is ours until the batch is
        // released, and `desc` puts the metadata in the same frame as the
        // data (the kernel puts received data at least
        // `XDP_PACKET_HEADROOM` into the frame, so there is room).
        let b = unsafe { self.q.umem.bytes(addr, sluice_common::META_LEN as u32) };
        b.try_into().ok()
    }

    /// The frames, in order of arrival.
    pub fn iter(&self) -> RxIter<'_> {
        RxIter {
            batch: self,
            next: 0,
        }
    }

    /// The frames, writable, in order of arrival: each whole UMEM frame
    /// (headroom included) with where its data lies and its XDP metadata.
    /// For work done where a frame lies (the gateway seals a packet in
    /// place and sends it from there); what is written is lost when the
    /// batch is released.
    pub fn frames_mut(&mut self) -> RxFramesMut<'_> {
        RxFramesMut {
            q: &*self.q,
            len: self.len,
            next: 0,
        }
    }

    /// Releases the frames now (the same as dropping the batch).
    pub fn commit(self) {}
}

/// One received frame, writable ([`RxBatch::frames_mut`]).
#[derive(Debug)]
pub struct RxFrameMut<'b> {
    /// The whole UMEM frame.
    pub frame: &'b mut [u8],
    /// Where the received data (from its Ethernet header on) lies in
    /// `frame`.
    pub data: std::ops::Range<usize>,
    /// The frame's XDP metadata (as [`RxBatch::meta`]): the
    /// [`sluice_common::META_LEN`] bytes right in front of `data`, in both
    /// of [`super::XskConfig::meta_in_head`]'s modes.
    pub meta: Option<[u8; sluice_common::META_LEN]>,
}

/// Iterator over the writable frames of an [`RxBatch`].
#[derive(Debug)]
pub struct RxFramesMut<'b> {
    q: &'b Queues,
    len: u32,
    next: u32,
}

impl<'b> Iterator for RxFramesMut<'b> {
    type Item = RxFrameMut<'b>;

    fn next(&mut self) -> Option<RxFrameMut<'b>> {
        if self.next >= self.len {
            return None;
        }
        let desc = self.q.desc(self.next);
        self.next += 1;
        if !self.q.umem.in_one_frame(desc.addr, u64::from(desc.len)) {
            // A descriptor outside one frame (the kernel never gives
            // one): an empty view, as `get` gives.
            return Some(RxFrameMut {
                frame: &mut [],
                data: 0..0,
                meta: None,
            });
        }
        let start = self.q.umem.frame_of(desc.addr);
        let off = (desc.addr - start) as usize;
        let data = off..off + desc.len as usize;
        // SAFETY: the frame came out of the RX ring and stays ours until
        // the batch is released, which needs `&mut` to the batch that this
        // iterator borrows for `'b`; each RX descriptor is in a frame of
        // its own (every frame is in exactly one place, see `Queues`), so
        // the frames handed out are disjoint, and nothing else reaches
        // them during `'b` (`get`, `meta` and `iter` need the batch too).
        // `desc` keeps the data inside the bytes the kernel described, so
        // `start` is the frame the kernel received into.
        let frame = unsafe { self.q.umem.frame_mut(start) };
        let meta = desc
            .meta
            .and_then(|m| usize::try_from(m.checked_sub(start)?).ok())
            .and_then(|m| frame.get(m..m + sluice_common::META_LEN))
            .and_then(|b| b.try_into().ok());
        Some(RxFrameMut { frame, data, meta })
    }
}

impl Drop for RxBatch<'_> {
    fn drop(&mut self) {
        self.q.recycle_rx(self.len);
    }
}

impl<'b> IntoIterator for &'b RxBatch<'_> {
    type Item = &'b [u8];
    type IntoIter = RxIter<'b>;

    fn into_iter(self) -> RxIter<'b> {
        self.iter()
    }
}

/// Iterator over the frames of an [`RxBatch`].
#[derive(Debug)]
pub struct RxIter<'b> {
    batch: &'b RxBatch<'b>,
    next: usize,
}

impl<'b> Iterator for RxIter<'b> {
    type Item = &'b [u8];

    fn next(&mut self) -> Option<&'b [u8]> {
        let frame = self.batch.get(self.next)?;
        self.next += 1;
        Some(frame)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batch.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for RxIter<'_> {}

/// Why [`TxBatch::push`] did not take a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Every frame of the batch is already used.
    #[error("TX batch full")]
    Full,
    /// The packet is longer than a UMEM frame.
    #[error("packet longer than a UMEM frame")]
    TooLong,
}

/// Up to [`capacity`](Self::capacity) free frames reserved for TX, with as
/// many TX ring slots.
///
/// Write frames with [`next_frame`](Self::next_frame) or
/// [`push`](Self::push), then [`commit`](Self::commit): one producer store
/// for the whole batch and at most one wakeup. Frames reserved but not
/// written, and every frame of a batch dropped without `commit`, go back
/// to the free list; nothing reaches the kernel.
#[must_use = "nothing is sent unless the batch is committed; dropping it rolls back"]
#[derive(Debug)]
pub struct TxBatch<'a> {
    q: &'a mut Queues,
    /// TX ring slots reserved (and free frames set aside: the top
    /// `reserved` of the free list).
    reserved: u32,
    /// Frames written so far: slots `0..filled`, free list top `filled`.
    filled: u32,
    bytes: u64,
}

impl<'a> TxBatch<'a> {
    /// Frames this batch can take.
    pub fn capacity(&self) -> usize {
        self.reserved as usize
    }

    /// Frames written so far.
    pub fn len(&self) -> usize {
        self.filled as usize
    }

    /// Whether no frame was written yet.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Whether every reserved frame is written.
    pub fn is_full(&self) -> bool {
        self.filled == self.reserved
    }

    /// The size of one frame: the longest packet that fits.
    pub fn frame_size(&self) -> usize {
        self.q.umem.frame_size as usize
    }

    /// The next free frame to write into, or `None` when the batch is full.
    /// Its contents are unspecified (a previous packet's bytes).
    pub fn next_frame(&mut self) -> Option<TxFrame<'_, 'a>> {
        if self.is_full() {
            return None;
        }
        let frame = self.q.free[self.q.free.len() - 1 - self.filled as usize];
        Some(TxFrame { batch: self, frame })
    }

    /// Copies `packet` into the next free frame and queues it.
    pub fn push(&mut self, packet: &[u8]) -> Result<(), PushError> {
        if packet.len() > self.frame_size() {
            return Err(PushError::TooLong);
        }
        let mut frame = self.next_frame().ok_or(PushError::Full)?;
        frame.buf()[..packet.len()].copy_from_slice(packet);
        frame.send(packet.len());
        Ok(())
    }

    /// Submits the written frames to the TX ring (one `Release` store) and
    /// wakes the kernel up if it asked for it; returns how many were
    /// submitted.
    ///
    /// An error comes from the wakeup only (e.g. `ENETDOWN`): the frames are
    /// in the TX ring all the same and go out at a later successful
    /// [`kick_tx`](super::XskSocket::kick_tx) or commit.
    pub fn commit(mut self) -> io::Result<usize> {
        let n = self.filled;
        self.q.tx.cancel(self.reserved - n);
        self.q.tx.submit(n);
        let free = self.q.free.len() - n as usize;
        self.q.free.truncate(free);
        self.q.counters.tx_packets += u64::from(n);
        self.q.counters.tx_bytes += self.bytes;
        // Nothing left for `drop` to roll back.
        self.reserved = 0;
        self.filled = 0;
        if n == 0 {
            return Ok(0);
        }
        self.q.wakeup_tx().map(|()| n as usize)
    }
}

impl Drop for TxBatch<'_> {
    fn drop(&mut self) {
        // Written descriptors are simply abandoned in unpublished slots;
        // the frames never left the free list.
        self.q.tx.cancel(self.reserved);
    }
}

/// One free frame of a [`TxBatch`], to be written and then
/// [`send`](Self::send)-ed. Dropping it queues nothing (the frame stays
/// available to the batch).
#[derive(Debug)]
pub struct TxFrame<'b, 'a> {
    batch: &'b mut TxBatch<'a>,
    frame: u64,
}

impl TxFrame<'_, '_> {
    /// The whole frame ([`TxBatch::frame_size`] bytes) to write a packet
    /// into, from its Ethernet header on.
    pub fn buf(&mut self) -> &mut [u8] {
        // SAFETY: the frame is on the free list (in no ring) and set aside
        // for this batch's slot `filled`; the batch is borrowed mutably by
        // this `TxFrame`, so no other view of it exists, and the returned
        // borrow ends before the frame can be submitted (`send` takes
        // `self`).
        unsafe { self.batch.q.umem.frame_mut(self.frame) }
    }

    /// Queues the first `len` bytes of the frame for transmission at
    /// [`TxBatch::commit`]. A zero `len` queues nothing (the kernel counts
    /// empty descriptors as invalid and would not give the frame back).
    ///
    /// # Panics
    /// If `len` is larger than the frame.
    pub fn send(self, len: usize) {
        assert!(
            len <= self.batch.frame_size(),
            "TX length {len} exceeds the UMEM frame"
        );
        if len == 0 {
            return;
        }
        let batch = self.batch;
        batch.q.tx.write(
            batch.filled,
            libc::xdp_desc {
                addr: self.frame,
                len: len as u32,
                options: 0,
            },
        );
        batch.filled += 1;
        batch.bytes += len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::{super::mmap::Mmap, super::ring::TestRing, *};

    const FRAME: u32 = 2048;
    const HEADROOM: u32 = 64;
    const DESC0: libc::xdp_desc = libc::xdp_desc {
        addr: 0,
        len: 0,
        options: 0,
    };

    /// The kernel's ends of the four rings, writing into the UMEM.
    struct FakeKernel {
        fill: RingCons<u64>,
        comp: RingProd<u64>,
        rx: RingProd<libc::xdp_desc>,
        tx: RingCons<libc::xdp_desc>,
        base: NonNull<u8>,
    }

    impl FakeKernel {
        /// Receives one packet into a frame from the fill ring.
        fn receive(&mut self, packet: &[u8]) -> bool {
            self.receive_after(&[], packet)
        }

        /// Receives one packet with `front` just before it (the metadata
        /// area, which the descriptor does not cover), as copy mode does
        /// for a frame the program gave metadata with `bpf_xdp_adjust_meta`.
        fn receive_after(&mut self, front: &[u8], packet: &[u8]) -> bool {
            if self.fill.peek(1) == 0 {
                return false;
            }
            if self.rx.reserve(1) == 0 {
                self.fill.cancel(1);
                return false;
            }
            let addr = self.fill.read(0) + u64::from(XDP_PACKET_HEADROOM + HEADROOM);
            // SAFETY: the frame came from the fill ring, so it is the
            // kernel's; in bounds for the test frame sizes (`front` is
            // shorter than the headroom).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    front.as_ptr(),
                    self.base.as_ptr().add(addr as usize - front.len()),
                    front.len(),
                );
                std::ptr::copy_nonoverlapping(
                    packet.as_ptr(),
                    self.base.as_ptr().add(addr as usize),
                    packet.len(),
                );
            }
            self.fill.release(1);
            self.rx.write(
                0,
                libc::xdp_desc {
                    addr,
                    len: packet.len() as u32,
                    options: 0,
                },
            );
            self.rx.submit(1);
            true
        }

        /// Transmits everything in the TX ring, completing each frame.
        fn transmit(&mut self) -> Vec<Vec<u8>> {
            let n = self.tx.peek(u32::MAX);
            assert_eq!(self.comp.reserve(n), n, "completion ring full");
            let mut out = Vec::new();
            for i in 0..n {
                let desc = self.tx.read(i);
                // SAFETY: the frame is in the TX ring, so the kernel's.
                out.push(unsafe {
                    std::slice::from_raw_parts(
                        self.base.as_ptr().add(desc.addr as usize),
                        desc.len as usize,
                    )
                    .to_vec()
                });
                self.comp.write(i, desc.addr);
            }
            self.tx.release(n);
            self.comp.submit(n);
            out
        }

        /// Entries waiting in the fill ring.
        fn fill_level(&mut self) -> u32 {
            let n = self.fill.peek(u32::MAX);
            self.fill.cancel(n);
            n
        }
    }

    /// Four rings in test memory, a UMEM, our `Queues` and the fake kernel.
    struct Harness {
        q: Queues,
        kernel: FakeKernel,
        tx_mem: TestRing<libc::xdp_desc>,
        // Owned memory last: the ends above point into it.
        _mems: (TestRing<u64>, TestRing<u64>, TestRing<libc::xdp_desc>),
        _umem: Mmap,
    }

    /// 16 frames, 8 of them posted to the fill ring; rings of 8 whose
    /// indices start just before the `u32` wrap; the metadata in front of
    /// the received data.
    fn harness() -> Harness {
        harness_with(false)
    }

    /// [`harness`], with received frames that start with their metadata
    /// if `meta_in_head`.
    fn harness_with(meta_in_head: bool) -> Harness {
        let start = u32::MAX - 2;
        let fill = TestRing::new(8, start, 0u64);
        let comp = TestRing::new(8, start, 0u64);
        let rx = TestRing::new(8, start, DESC0);
        let tx_mem = TestRing::new(8, start, DESC0);
        let umem = Mmap::anonymous(16 * FRAME as usize, false).expect("mmap");
        // SAFETY: the mapping outlives `q` and `kernel` (field order).
        let view = unsafe { Umem::new(umem.ptr(), umem.len(), FRAME) };
        let (fill_p, fill_c) = fill.ends();
        let (comp_p, comp_c) = comp.ends();
        let (rx_p, rx_c) = rx.ends();
        let (tx_p, tx_c) = tx_mem.ends();
        let rings = Rings {
            fill: fill_p,
            comp: comp_c,
            rx: rx_c,
            tx: tx_p,
        };
        let q = Queues::new(rings, view, -1, false, meta_in_head, 8);
        Harness {
            q,
            kernel: FakeKernel {
                fill: fill_c,
                comp: comp_p,
                rx: rx_p,
                tx: tx_c,
                base: umem.ptr(),
            },
            tx_mem,
            _mems: (fill, comp, rx),
            _umem: umem,
        }
    }

    fn packet(seq: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| seq.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn frames_split_between_fill_ring_and_free_list() {
        let mut h = harness();
        assert_eq!(h.kernel.fill_level(), 8);
        assert_eq!(h.q.free_frames(), 8);
        let mut posted: Vec<u64> = (0..8)
            .map(|_| {
                assert_eq!(h.kernel.fill.peek(1), 1);
                let a = h.kernel.fill.read(0);
                h.kernel.fill.release(1);
                a
            })
            .collect();
        posted.extend(&h.q.free);
        posted.sort_unstable();
        let all: Vec<u64> = (0..16).map(|i| i * u64::from(FRAME)).collect();
        assert_eq!(posted, all, "every frame in exactly one place");
    }

    #[test]
    fn rx_views_and_recycles_to_fill_ring() {
        let mut h = harness();
        for seq in 0..3 {
            assert!(h.kernel.receive(&packet(seq, 60 + usize::from(seq))));
        }
        assert_eq!(h.kernel.fill_level(), 5);
        {
            let batch = h.q.rx(10);
            assert_eq!(batch.len(), 3);
            for (seq, frame) in batch.iter().enumerate() {
                assert_eq!(frame, packet(seq as u8, 60 + seq).as_slice());
            }
            assert_eq!(batch.get(3), None);
        }
        assert_eq!(h.kernel.fill_level(), 8, "frames went straight back");
        assert_eq!(h.q.free_frames(), 8, "no free-list traffic");
        let c = h.q.counters();
        assert_eq!((c.rx_packets, c.rx_bytes), (3, 60 + 61 + 62));
        assert!(h.q.rx(10).is_empty());
    }

    #[test]
    fn rx_partial_batches_keep_order() {
        let mut h = harness();
        // More packets than ring entries over several rounds: wraps too.
        let mut next_in = 0u8;
        let mut next_out = 0u8;
        for _ in 0..10 {
            for _ in 0..5 {
                assert!(h.kernel.receive(&packet(next_in, 100)));
                next_in += 1;
            }
            for max in [2, 10] {
                let batch = h.q.rx(max);
                for frame in &batch {
                    assert_eq!(frame, packet(next_out, 100).as_slice());
                    next_out += 1;
                }
            }
        }
        assert_eq!(next_out, next_in);
        assert_eq!(h.kernel.fill_level(), 8);
    }

    const META: [u8; sluice_common::META_LEN] = [0xa5, 7, 0x34, 0x12];
    /// Where the fake kernel puts received bytes in a frame.
    const DATA_AT: usize = (XDP_PACKET_HEADROOM + HEADROOM) as usize;

    #[test]
    fn meta_in_front_is_read_before_the_data() {
        let mut h = harness();
        assert!(h.kernel.receive_after(&META, &packet(1, 60)));
        let mut batch = h.q.rx(10);
        assert_eq!(batch.get(0), Some(packet(1, 60).as_slice()));
        assert_eq!(batch.meta(0), Some(META));
        let f = batch.frames_mut().next().expect("one frame");
        assert_eq!(f.frame.len(), FRAME as usize, "the whole frame");
        assert_eq!(f.data, DATA_AT..DATA_AT + 60);
        assert_eq!(f.meta, Some(META));
        assert_eq!(&f.frame[f.data], packet(1, 60).as_slice());
    }

    #[test]
    fn meta_in_head_is_skipped_by_every_view() {
        let mut h = harness_with(true);
        // What the classifier's `classify_head` hands the socket:
        // [meta][frame], the descriptor covering both.
        for seq in 0..3 {
            let mut received = META.to_vec();
            received.extend(packet(seq, 60 + usize::from(seq)));
            assert!(h.kernel.receive(&received));
        }
        {
            let mut batch = h.q.rx(10);
            assert_eq!(batch.len(), 3);
            for (seq, frame) in batch.iter().enumerate() {
                assert_eq!(frame, packet(seq as u8, 60 + seq).as_slice());
                assert_eq!(batch.meta(seq), Some(META));
            }
            for (seq, f) in batch.frames_mut().enumerate() {
                // The data starts after the metadata; the frame is whole.
                let start = DATA_AT + sluice_common::META_LEN;
                assert_eq!(f.data, start..start + 60 + seq);
                assert_eq!(f.meta, Some(META));
                assert_eq!(f.frame.len(), FRAME as usize);
                assert_eq!(&f.frame[f.data], packet(seq as u8, 60 + seq).as_slice());
            }
        }
        assert_eq!(h.kernel.fill_level(), 8, "frames went straight back");
        assert_eq!(h.q.free_frames(), 8, "no free-list traffic");
        let c = h.q.counters();
        assert_eq!(
            (c.rx_packets, c.rx_bytes),
            (3, 60 + 61 + 62),
            "data bytes, as in front mode"
        );
    }

    #[test]
    fn meta_in_head_frames_are_written_in_place() {
        // The gateway seals a datagram where the frame lies: it writes in
        // front of the data (the record's header, over the metadata) and
        // after it (the tag). The view it writes through is the frame the
        // readers see.
        let mut h = harness_with(true);
        let mut received = META.to_vec();
        received.extend(packet(9, 100));
        assert!(h.kernel.receive(&received));
        let mut batch = h.q.rx(10);
        let mut headroom = 0;
        for f in batch.frames_mut() {
            let RxFrameMut { frame, data, meta } = f;
            assert_eq!(meta, Some(META), "read before it is overwritten");
            headroom = data.start;
            frame[data.start - 16..data.start].fill(0xee);
            frame[data.clone()].reverse();
            frame[data.end..data.end + 16].fill(0xff);
        }
        // As much room in front as the kernel's headroom plus the
        // metadata: the in-place seal's header fits.
        assert_eq!(headroom, DATA_AT + sluice_common::META_LEN);
        let mut reversed = packet(9, 100);
        reversed.reverse();
        assert_eq!(batch.get(0), Some(reversed.as_slice()));
        assert_eq!(batch.meta(0), Some([0xee; 4]), "the header went over it");
        drop(batch);
        assert_eq!(h.kernel.fill_level(), 8);
    }

    #[test]
    fn meta_in_head_runts_read_as_empty() {
        let mut h = harness_with(true);
        // Shorter than the metadata: neither metadata nor data. Exactly
        // the metadata: no data.
        assert!(h.kernel.receive(&[0xa5, 1]));
        assert!(h.kernel.receive(&META));
        {
            let mut batch = h.q.rx(10);
            assert_eq!(batch.len(), 2);
            assert_eq!(batch.get(0), Some(&[][..]));
            assert_eq!(batch.meta(0), None);
            assert_eq!(batch.get(1), Some(&[][..]));
            assert_eq!(batch.meta(1), Some(META));
            let frames: Vec<_> = batch.frames_mut().map(|f| (f.data, f.meta)).collect();
            assert_eq!(
                frames,
                [(DATA_AT..DATA_AT, None), (DATA_AT..DATA_AT, Some(META))]
            );
        }
        assert_eq!(h.kernel.fill_level(), 8, "runts are recycled too");
        let c = h.q.counters();
        assert_eq!((c.rx_packets, c.rx_bytes), (2, 0));
    }

    #[test]
    fn tx_commit_then_complete() {
        let mut h = harness();
        let mut batch = h.q.tx(4);
        assert_eq!(batch.capacity(), 4);
        for seq in 0..3 {
            batch.push(&packet(seq, 64)).expect("room");
        }
        assert_eq!(batch.commit().expect("no wakeup asked"), 3);
        assert_eq!(h.q.free_frames(), 5);
        let sent = h.kernel.transmit();
        assert_eq!(sent, (0..3).map(|s| packet(s, 64)).collect::<Vec<_>>());
        assert_eq!(h.q.complete(), 3);
        assert_eq!(h.q.free_frames(), 8);
        let c = h.q.counters();
        assert_eq!((c.tx_packets, c.tx_bytes, c.tx_completed), (3, 192, 3));
        assert_eq!(c.tx_wakeups, 0, "no syscall unless the kernel asks");
    }

    #[test]
    fn tx_rollback_returns_frames() {
        let mut h = harness();
        let before = h.tx_mem.producer();
        {
            let mut batch = h.q.tx(4);
            batch.push(&packet(1, 64)).expect("room");
            batch.push(&packet(2, 64)).expect("room");
            // Dropped without commit.
        }
        assert_eq!(h.tx_mem.producer(), before, "nothing published");
        assert_eq!(h.q.free_frames(), 8);
        assert!(h.kernel.transmit().is_empty());
        // The next batch gets the same slots and frames and works.
        let mut batch = h.q.tx(2);
        batch.push(&packet(3, 70)).expect("room");
        assert_eq!(batch.commit().expect("ok"), 1);
        assert_eq!(h.kernel.transmit(), [packet(3, 70)]);
    }

    #[test]
    fn tx_unsent_frames_stay_free() {
        let mut h = harness();
        let mut batch = h.q.tx(3);
        // Written but not sent: the same frame is offered again.
        batch.next_frame().expect("frame").buf()[..4].copy_from_slice(b"abcd");
        let mut f = batch.next_frame().expect("frame");
        f.buf()[..2].copy_from_slice(b"xy");
        f.send(4);
        batch.next_frame().expect("frame").send(0); // zero length: not queued
        assert_eq!(
            batch.push(&vec![0; FRAME as usize + 1]),
            Err(PushError::TooLong)
        );
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.commit().expect("ok"), 1);
        assert_eq!(h.kernel.transmit(), [b"xycd".to_vec()]);
        assert_eq!(h.q.free_frames(), 7);
        h.q.complete();
        assert_eq!(h.q.free_frames(), 8);
    }

    #[test]
    fn tx_bounded_by_free_frames_and_ring() {
        let mut h = harness();
        let mut batch = h.q.tx(100);
        assert_eq!(batch.capacity(), 8);
        while batch.push(&packet(0, 60)).is_ok() {}
        assert_eq!(batch.push(&packet(0, 60)), Err(PushError::Full));
        assert_eq!(batch.commit().expect("ok"), 8);
        assert_eq!(h.q.tx(1).capacity(), 0, "no free frame left");
        assert_eq!(h.kernel.transmit().len(), 8);
        // `tx` reaps the completion ring itself.
        assert_eq!(h.q.tx(100).capacity(), 8);
    }

    #[test]
    fn tx_wakes_up_only_when_asked() {
        let mut h = harness();
        h.tx_mem.flags.store(
            libc::XDP_RING_NEED_WAKEUP,
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut batch = h.q.tx(1);
        batch.push(&packet(0, 60)).expect("room");
        // The fd is -1: the wakeup's sendto fails, which commit reports.
        let err = batch.commit().expect_err("EBADF");
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert_eq!(h.q.counters().tx_wakeups, 1);
        // The frame is queued all the same.
        assert_eq!(h.kernel.transmit().len(), 1);
        // Nothing in flight: no syscall.
        h.q.wakeup_tx().expect("nothing to do");
        assert_eq!(h.q.counters().tx_wakeups, 1);
    }
}
