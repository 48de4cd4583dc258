//! What the edge's workers hand each other, off their packet path.
//!
//! - Replies the kernel put on the wrong worker's TUN queue (the flow's
//!   entry in the tun driver's flow table expired, or it never had one:
//!   a fragment, an ICMP error, more flows than the table holds): the
//!   worker copies the packet into one of the owning worker's buffers and
//!   queues it there ([`Port::hand_off`]); the owner sends it into its
//!   tunnel ([`Port::handed`]). Each worker owns [`BUFFERS`] buffers,
//!   allocated at start: a full inbox drops the reply and counts it
//!   (`sluice_edge_reply_handoff_drops_total`); nothing allocates per
//!   packet, no worker takes a lock another takes.
//! - Control messages ([`Control`]): a handshake the admission books
//!   evicted to make room on another worker, a connection accepted by one
//!   worker for another with fewer ([`Port::place`]: the kernel's
//!   `SO_REUSEPORT` hash alone can put a gateway's two tunnels on one
//!   worker).
//!
//! Every queue is a bounded lock-free `ArrayQueue`; a worker that queued
//! something for another wakes it once per loop turn ([`Port::wake`],
//! its `mio::Waker`). A worker that fails sets [`Mesh::fail`], which
//! wakes and stops the others.
use std::{
    net::SocketAddr,
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
    },
};

use crossbeam_queue::ArrayQueue;
use mio::net::TcpStream;
use sluice_core::edge::WorkerId;

/// Reply buffers each worker owns (its inbox's depth).
pub(crate) const BUFFERS: usize = 1024;

/// A message for a worker's loop.
#[derive(Debug)]
pub(crate) enum Control {
    /// Close this handshake if it is still one (the admission books
    /// evicted it for a connection accepted elsewhere).
    Evict { slot: u32, generation: u32 },
    /// A connection accepted by another worker, for this one.
    Adopt { stream: TcpStream, peer: SocketAddr },
}

/// One worker's counters of the mesh.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    /// Replies this worker handed to another.
    pub(crate) handoffs: AtomicU64,
    /// Replies this worker could not hand over (the owner's inbox was
    /// full, or the packet longer than a buffer): dropped.
    pub(crate) handoff_drops: AtomicU64,
    /// Replies other workers handed to this one.
    pub(crate) handed_in: AtomicU64,
    /// Connections accepted here and passed to a worker with fewer.
    pub(crate) passed: AtomicU64,
}

#[derive(Debug)]
struct Inbox {
    packets: ArrayQueue<Vec<u8>>,
    free: ArrayQueue<Vec<u8>>,
    control: ArrayQueue<Control>,
    waker: OnceLock<mio::Waker>,
    /// Connections the worker holds (or is being handed).
    load: AtomicU32,
    stats: WorkerStats,
}

/// The workers' inboxes.
#[derive(Debug)]
pub(crate) struct Mesh {
    inboxes: Vec<Inbox>,
    /// Longest packet a buffer holds.
    buf_len: usize,
    failed: AtomicBool,
}

impl Mesh {
    /// Inboxes for `workers` workers, with buffers of `buf_len` bytes
    /// (none with one worker: nothing to hand over), control queues of
    /// `control` messages.
    pub(crate) fn new(workers: usize, buf_len: usize, control: usize) -> Self {
        let buffers = if workers > 1 { BUFFERS } else { 1 };
        Self {
            inboxes: (0..workers)
                .map(|_| {
                    let free = ArrayQueue::new(buffers);
                    if workers > 1 {
                        for _ in 0..buffers {
                            let _ = free.push(Vec::with_capacity(buf_len));
                        }
                    }
                    Inbox {
                        packets: ArrayQueue::new(buffers),
                        free,
                        control: ArrayQueue::new(control.max(1)),
                        waker: OnceLock::new(),
                        load: AtomicU32::new(0),
                        stats: WorkerStats::default(),
                    }
                })
                .collect(),
            buf_len,
            failed: AtomicBool::new(false),
        }
    }

    /// Workers.
    pub(crate) fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// Worker `w`'s counters.
    pub(crate) fn stats(&self, w: usize) -> Option<&WorkerStats> {
        self.inboxes.get(w).map(|i| &i.stats)
    }

    /// Connections worker `w` holds.
    pub(crate) fn load(&self, w: usize) -> u32 {
        self.inboxes.get(w).map_or(0, |i| i.load.load(Relaxed))
    }

    /// Worker `w`'s end, waking its poller with `waker`. `None` if the
    /// index is out of range or already taken.
    pub(crate) fn port(&self, w: usize, waker: mio::Waker) -> Option<Port> {
        self.inboxes.get(w)?.waker.set(waker).ok()?;
        Some(Port { me: w, woken: 0 })
    }

    /// A worker failed: every worker stops (and is woken to see it).
    pub(crate) fn fail(&self) {
        self.failed.store(true, Relaxed);
        for i in &self.inboxes {
            if let Some(w) = i.waker.get() {
                let _ = w.wake();
            }
        }
    }

    /// A connection placed on worker `to` ([`Port::place`]) could not be
    /// handed over (its queue is full): not counted there.
    pub(crate) fn unplace(&self, to: usize) {
        if let Some(i) = self.inboxes.get(to) {
            i.load.fetch_sub(1, Relaxed);
        }
    }

    /// Whether a worker failed.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Relaxed)
    }
}

/// A worker's end of the mesh.
#[derive(Debug)]
pub(crate) struct Port {
    me: usize,
    /// Workers queued to since the last [`Port::wake`] (bit per worker).
    woken: u64,
}

impl Port {
    fn mine<'m>(&self, mesh: &'m Mesh) -> &'m Inbox {
        &mesh.inboxes[self.me]
    }

    /// Copies `pkt` into worker `to`'s inbox; false (counted) if it has no
    /// free buffer or `pkt` is longer than one.
    pub(crate) fn hand_off(&mut self, mesh: &Mesh, to: WorkerId, pkt: &[u8]) -> bool {
        let stats = &self.mine(mesh).stats;
        let ok = mesh.inboxes.get(usize::from(to)).is_some_and(|inbox| {
            if pkt.len() > mesh.buf_len {
                return false;
            }
            let Some(mut buf) = inbox.free.pop() else {
                return false;
            };
            buf.clear();
            buf.extend_from_slice(pkt);
            match inbox.packets.push(buf) {
                Ok(()) => true,
                // Cannot happen (the queue holds every buffer); the
                // buffer stays.
                Err(buf) => {
                    let _ = inbox.free.push(buf);
                    false
                }
            }
        });
        if ok {
            stats.handoffs.fetch_add(1, Relaxed);
            self.woken |= 1u64.checked_shl(u32::from(to)).unwrap_or(0);
        } else {
            stats.handoff_drops.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Up to `budget` replies handed to this worker, each through `send`;
    /// true if more may be waiting.
    pub(crate) fn handed(
        &mut self,
        mesh: &Mesh,
        budget: usize,
        mut send: impl FnMut(&[u8]),
    ) -> bool {
        let inbox = self.mine(mesh);
        let mut n = 0u64;
        for _ in 0..budget {
            let Some(buf) = inbox.packets.pop() else {
                inbox.stats.handed_in.fetch_add(n, Relaxed);
                return false;
            };
            send(&buf);
            n += 1;
            let _ = inbox.free.push(buf);
        }
        inbox.stats.handed_in.fetch_add(n, Relaxed);
        !inbox.packets.is_empty()
    }

    /// Whether anything waits in this worker's inbox.
    pub(crate) fn has_mail(&self, mesh: &Mesh) -> bool {
        let i = self.mine(mesh);
        !i.packets.is_empty() || !i.control.is_empty()
    }

    /// The next control message for this worker.
    pub(crate) fn control(&mut self, mesh: &Mesh) -> Option<Control> {
        self.mine(mesh).control.pop()
    }

    /// Queues `msg` for worker `to`; gives it back if that queue is full.
    pub(crate) fn send(&mut self, mesh: &Mesh, to: usize, msg: Control) -> Result<(), Control> {
        let Some(inbox) = mesh.inboxes.get(to) else {
            return Err(msg);
        };
        inbox.control.push(msg)?;
        self.woken |= 1u64.checked_shl(to as u32).unwrap_or(0);
        Ok(())
    }

    /// Where a connection this worker accepted goes: `None` to keep it
    /// (counted in this worker's load), or the worker with the fewest
    /// connections if it has fewer than this one (counted in its load
    /// now, so that the next connection sees it).
    pub(crate) fn place(&self, mesh: &Mesh) -> Option<usize> {
        let mine = mesh.load(self.me);
        let (best, load) = (0..mesh.workers())
            .map(|w| (w, mesh.load(w)))
            .min_by_key(|&(w, l)| (l, w != self.me))?;
        if best == self.me || load >= mine {
            return None;
        }
        mesh.inboxes[best].load.fetch_add(1, Relaxed);
        Some(best)
    }

    /// This worker took (`true`) or let go of a connection.
    pub(crate) fn count(&self, mesh: &Mesh, up: bool) {
        let l = &self.mine(mesh).load;
        if up {
            l.fetch_add(1, Relaxed);
        } else {
            l.fetch_sub(1, Relaxed);
        }
    }

    /// Counts a connection passed to another worker.
    pub(crate) fn passed(&self, mesh: &Mesh) {
        self.mine(mesh).stats.passed.fetch_add(1, Relaxed);
    }

    /// Wakes the workers queued to since the last call (once per loop
    /// turn: one `eventfd` write per worker, not per packet).
    pub(crate) fn wake(&mut self, mesh: &Mesh) {
        let mut w = std::mem::take(&mut self.woken);
        while w != 0 {
            let i = w.trailing_zeros() as usize;
            w &= w - 1;
            if let Some(Some(waker)) = mesh.inboxes.get(i).map(|x| x.waker.get())
                && let Err(e) = waker.wake()
            {
                log::warn!("waking edge worker {i}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(mesh: &Mesh, w: usize) -> (mio::Poll, Port) {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(9)).unwrap();
        (poll, mesh.port(w, waker).unwrap())
    }

    /// Replies handed over arrive in order and give their buffers back;
    /// a full inbox drops and counts, never allocates or blocks.
    #[test]
    fn handoffs_are_bounded_and_counted() {
        let mesh = Mesh::new(2, 1500, 16);
        let (_p0, mut a) = port(&mesh, 0);
        let (mut p1, mut b) = port(&mesh, 1);
        for i in 0..BUFFERS {
            assert!(a.hand_off(&mesh, 1, &[(i % 251) as u8; 100]), "{i}");
        }
        assert!(!a.hand_off(&mesh, 1, &[0; 100]), "inbox full");
        assert!(!a.hand_off(&mesh, 0, &[0; 1501]), "longer than a buffer");
        a.wake(&mesh);
        let mut events = mio::Events::with_capacity(4);
        p1.poll(&mut events, Some(std::time::Duration::from_secs(1)))
            .unwrap();
        assert!(!events.is_empty(), "worker 1 woken");
        assert!(b.has_mail(&mesh));
        let mut seen = Vec::new();
        while b.handed(&mesh, 100, |p| seen.push(p[0])) {}
        assert_eq!(seen.len(), BUFFERS);
        assert!(seen.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
        let s0 = mesh.stats(0).unwrap();
        assert_eq!(
            (s0.handoffs.load(Relaxed), s0.handoff_drops.load(Relaxed)),
            (BUFFERS as u64, 2)
        );
        assert_eq!(
            mesh.stats(1).unwrap().handed_in.load(Relaxed),
            BUFFERS as u64
        );
        assert!(a.hand_off(&mesh, 1, &[7; 10]), "buffers came back");
    }

    /// Connections go to the worker with the fewest: two in a row split.
    #[test]
    fn connections_are_placed_on_the_least_loaded_worker() {
        let mesh = Mesh::new(3, 1500, 16);
        let (_p0, a) = port(&mesh, 0);
        assert_eq!(a.place(&mesh), None, "all equal: keep");
        a.count(&mesh, true);
        assert_eq!(a.place(&mesh), Some(1));
        assert_eq!(a.place(&mesh), Some(2));
        assert_eq!(a.place(&mesh), None, "1 each");
        a.count(&mesh, true);
        mesh.unplace(2);
        assert_eq!(a.place(&mesh), Some(2));
        assert_eq!((mesh.load(0), mesh.load(1), mesh.load(2)), (2, 1, 1));
    }
}
