//! The caller-owned buffers of batched sends and receives: slabs of
//! fixed-size slots allocated once, with each slot's length and address.

use std::{mem, net::SocketAddr};

use super::{ControlBuf, GRO_SLOT_LEN, MAX_BATCH, MAX_PAYLOAD, SockAddr, UNSPECIFIED};

/// Datagrams waiting to be sent: `capacity` slots of `slot_len` bytes,
/// each with its length and destination. A worker writes (seals) a
/// datagram into [`SendBatch::slot`], then [`SendBatch::commit`]s it;
/// [`UdpSocket::send_batch`](super::UdpSocket::send_batch) sends the
/// waiting ones, oldest first, and removes those that went.
#[derive(Debug)]
pub struct SendBatch {
    slab: Box<[u8]>,
    slot_len: usize,
    lens: Box<[usize]>,
    dests: Box<[Option<SocketAddr>]>,
    /// Waiting datagrams are slots `head..tail`.
    head: usize,
    tail: usize,
}

impl SendBatch {
    /// `capacity` slots (at least 1) of `slot_len` bytes (1 to
    /// [`MAX_PAYLOAD`]), allocated now and never again.
    pub fn new(capacity: usize, slot_len: usize) -> Self {
        let capacity = capacity.max(1);
        let slot_len = slot_len.clamp(1, MAX_PAYLOAD);
        Self {
            slab: vec![0; capacity * slot_len].into_boxed_slice(),
            slot_len,
            lens: vec![0; capacity].into_boxed_slice(),
            dests: vec![None; capacity].into_boxed_slice(),
            head: 0,
            tail: 0,
        }
    }

    /// How many datagrams it holds at most.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// The longest datagram a slot holds.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// How many datagrams wait to be sent.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// True if none wait.
    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// True if every slot holds a waiting datagram.
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// The next free slot, to write a datagram into from its start; `None`
    /// if the batch is full. Nothing is sent until
    /// [`SendBatch::commit`]; asking again gives the same slot.
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        if self.tail == self.capacity() {
            if self.head == 0 {
                return None;
            }
            // Some went and some wait (the socket was full): move the
            // waiting ones to the front to free the slots behind them.
            let (h, t, s) = (self.head, self.tail, self.slot_len);
            self.slab.copy_within(h * s..t * s, 0);
            self.lens.copy_within(h..t, 0);
            self.dests.copy_within(h..t, 0);
            self.tail -= h;
            self.head = 0;
        }
        let s = self.slot_len;
        Some(&mut self.slab[self.tail * s..(self.tail + 1) * s])
    }

    /// Makes the first `len` bytes of the slot [`SendBatch::slot`] gave a
    /// datagram to `to` (`None`: the socket's connected peer).
    ///
    /// # Panics
    /// If there is no free slot (call [`SendBatch::slot`] first) or `len`
    /// is longer than a slot: both are the caller's bugs.
    pub fn commit(&mut self, len: usize, to: Option<SocketAddr>) {
        assert!(
            self.tail < self.capacity(),
            "SendBatch::commit without a free slot"
        );
        assert!(len <= self.slot_len, "SendBatch::commit longer than a slot");
        self.lens[self.tail] = len;
        self.dests[self.tail] = to;
        self.tail += 1;
    }

    /// Copies `datagram` into the next free slot and commits it: false
    /// (and nothing queued) if the batch is full or `datagram` is longer
    /// than a slot.
    pub fn push(&mut self, datagram: &[u8], to: Option<SocketAddr>) -> bool {
        if datagram.len() > self.slot_len {
            return false;
        }
        let Some(slot) = self.slot() else {
            return false;
        };
        slot[..datagram.len()].copy_from_slice(datagram);
        self.commit(datagram.len(), to);
        true
    }

    /// The `i`-th waiting datagram (0: the oldest) and its destination.
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        let k = self.head.checked_add(i).filter(|&k| k < self.tail)?;
        let start = k * self.slot_len;
        Some((&self.slab[start..start + self.lens[k]], self.dests[k]))
    }

    /// Forgets every waiting datagram.
    pub fn clear(&mut self) {
        self.head = 0;
        self.tail = 0;
    }

    /// Drops the `n` oldest waiting datagrams (sent, or given up).
    pub fn discard(&mut self, n: usize) {
        self.head = (self.head + n).min(self.tail);
        if self.head == self.tail {
            self.clear();
        }
    }

    /// Fills `records` and `dests` with up to [`MAX_BATCH`] of the oldest
    /// waiting datagrams; returns how many.
    pub(super) fn pending_into<'a>(
        &'a self,
        records: &mut [&'a [u8]; MAX_BATCH],
        dests: &mut [Option<SocketAddr>; MAX_BATCH],
    ) -> usize {
        let n = self.len().min(MAX_BATCH);
        for i in 0..n {
            let k = self.head + i;
            let start = k * self.slot_len;
            records[i] = &self.slab[start..start + self.lens[k]];
            dests[i] = self.dests[k];
        }
        n
    }
}

/// What a receive put into one slot.
#[derive(Debug, Clone, Copy)]
struct Meta {
    /// Bytes of the slot that hold data (whole segments only, if cut).
    len: usize,
    /// The segment size of a coalesced receive (0: one datagram).
    seg: usize,
    from: SocketAddr,
    /// Nothing usable (a plain datagram cut short).
    skip: bool,
    /// Longer than its slot (or its segment size lost).
    cut: bool,
}

const EMPTY: Meta = Meta {
    len: 0,
    seg: 0,
    from: UNSPECIFIED,
    skip: true,
    cut: false,
};

/// Room for one receive: up to [`MAX_BATCH`] slots of `slot_len` bytes
/// with their sources, filled by
/// [`UdpSocket::recv_batch`](super::UdpSocket::recv_batch). Each
/// receive replaces the previous one's contents.
#[derive(Debug)]
pub struct RecvBatch {
    slab: Box<[u8]>,
    slot_len: usize,
    metas: Box<[Meta]>,
    names: Box<[SockAddr]>,
    controls: Box<[ControlBuf]>,
    /// Messages of the last receive.
    count: usize,
}

impl RecvBatch {
    /// `slots` slots (1 to [`MAX_BATCH`]) of `slot_len` bytes (1 to
    /// [`GRO_SLOT_LEN`]), allocated now and never again. A slot must hold
    /// the longest datagram expected (longer ones are cut and dropped);
    /// with GRO on, give [`GRO_SLOT_LEN`] so coalesced receives are whole.
    pub fn new(slots: usize, slot_len: usize) -> Self {
        let slots = slots.clamp(1, MAX_BATCH);
        let slot_len = slot_len.clamp(1, GRO_SLOT_LEN);
        Self {
            slab: vec![0; slots * slot_len].into_boxed_slice(),
            slot_len,
            metas: vec![EMPTY; slots].into_boxed_slice(),
            names: vec![SockAddr::ZERO; slots].into_boxed_slice(),
            controls: vec![ControlBuf([0; 64]); slots].into_boxed_slice(),
            count: 0,
        }
    }

    /// How many messages one receive takes at most.
    pub fn slots(&self) -> usize {
        self.metas.len()
    }

    /// The longest message a slot holds.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Messages of the last receive (a coalesced one counts once).
    pub fn messages(&self) -> usize {
        self.count
    }

    /// Datagrams of the last receive, as [`RecvBatch::records`] gives them.
    pub fn len(&self) -> usize {
        self.metas[..self.count]
            .iter()
            .map(|m| match (m.skip, m.seg) {
                (true, _) => 0,
                (false, 0) => 1,
                (false, s) => m.len.div_ceil(s),
            })
            .sum()
    }

    /// True if the last receive gave no datagram.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages of the last receive that were longer than their slot.
    pub fn truncated(&self) -> usize {
        self.metas[..self.count].iter().filter(|m| m.cut).count()
    }

    /// The datagrams of the last receive with their sources, in arrival
    /// order, coalesced receives split into their segments.
    pub fn records(&self) -> Records<'_> {
        Records {
            batch: self,
            msg: 0,
            off: 0,
        }
    }

    /// As [`RecvBatch::records`], each datagram writable (to open it in
    /// place).
    pub fn records_mut(&mut self) -> RecordsMut<'_> {
        RecordsMut {
            metas: &self.metas[..self.count],
            slab: &mut self.slab,
            slot_len: self.slot_len,
            cur: Default::default(),
            seg: 0,
            from: UNSPECIFIED,
            emit_empty: false,
        }
    }

    pub(super) fn clear(&mut self) {
        self.count = 0;
    }

    /// Base pointers of the slab, the address slots and the control
    /// buffers, derived once for one receive (each slot `i` is at
    /// `slab + i * slot_len`).
    pub(super) fn raw_parts(&mut self) -> (*mut u8, *mut SockAddr, *mut ControlBuf) {
        (
            self.slab.as_mut_ptr(),
            self.names.as_mut_ptr(),
            self.controls.as_mut_ptr(),
        )
    }

    pub(super) fn names(&self) -> &[SockAddr] {
        &self.names
    }

    pub(super) fn controls(&self) -> &[ControlBuf] {
        &self.controls
    }

    /// Records what the kernel put in slot `i`: `len` bytes copied, the
    /// segment size of a coalesced receive, the source, and whether the
    /// message was cut (by the slot or, for the segment size, by the
    /// control buffer).
    pub(super) fn set(
        &mut self,
        i: usize,
        len: usize,
        seg: Option<usize>,
        from: SocketAddr,
        cut: bool,
    ) {
        let len = len.min(self.slot_len);
        // A "coalesced" receive of one segment or less is one datagram.
        let seg = seg.filter(|&s| s < len).unwrap_or(0);
        let (len, skip) = match (cut, seg) {
            (false, _) => (len, false),
            (true, 0) => (0, true),
            (true, s) => {
                let whole = len / s * s;
                (whole, whole == 0)
            }
        };
        self.metas[i] = Meta {
            len,
            seg,
            from,
            skip,
            cut,
        };
    }

    pub(super) fn set_count(&mut self, count: usize) {
        self.count = count.min(self.metas.len());
    }
}

/// The datagrams of a [`RecvBatch`]: `(source, bytes)`.
#[derive(Debug)]
pub struct Records<'a> {
    batch: &'a RecvBatch,
    msg: usize,
    /// Offset of the next segment in the current message; `usize::MAX`
    /// once it is done.
    off: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = (SocketAddr, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.batch;
        while self.msg < b.count {
            let m = &b.metas[self.msg];
            let start = self.msg * b.slot_len;
            let data = &b.slab[start..start + m.len];
            // The first piece of a message (even an empty datagram), then
            // each further segment.
            if !m.skip && (self.off == 0 || self.off < m.len) {
                let end = if m.seg == 0 {
                    m.len
                } else {
                    (self.off + m.seg).min(m.len)
                };
                let rec = &data[self.off..end];
                self.off = if end == m.len { usize::MAX } else { end };
                return Some((m.from, rec));
            }
            self.msg += 1;
            self.off = 0;
        }
        None
    }
}

/// The datagrams of a [`RecvBatch`], writable: `(source, bytes)`.
#[derive(Debug)]
pub struct RecordsMut<'a> {
    metas: &'a [Meta],
    /// The slots not yet reached.
    slab: &'a mut [u8],
    slot_len: usize,
    /// What is left of the current message.
    cur: &'a mut [u8],
    seg: usize,
    from: SocketAddr,
    /// The current message is an empty datagram, not yet given.
    emit_empty: bool,
}

impl<'a> Iterator for RecordsMut<'a> {
    type Item = (SocketAddr, &'a mut [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if mem::take(&mut self.emit_empty) {
                return Some((self.from, Default::default()));
            }
            if !self.cur.is_empty() {
                let cur = mem::take(&mut self.cur);
                let take = if self.seg == 0 {
                    cur.len()
                } else {
                    self.seg.min(cur.len())
                };
                let (rec, rest) = cur.split_at_mut(take);
                self.cur = rest;
                return Some((self.from, rec));
            }
            let (m, metas) = self.metas.split_first()?;
            self.metas = metas;
            let slab = mem::take(&mut self.slab);
            let (slot, rest) = slab.split_at_mut(self.slot_len.min(slab.len()));
            self.slab = rest;
            if m.skip {
                continue;
            }
            self.from = m.from;
            self.seg = m.seg;
            self.cur = &mut slot[..m.len];
            self.emit_empty = m.len == 0;
        }
    }
}
