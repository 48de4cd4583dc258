//! Steering a reuseport group's datagrams by a field of their payload: a
//! classic BPF program (`SO_ATTACH_REUSEPORT_CBPF`) that returns the index
//! of the socket that must receive each datagram, so that the edge worker
//! owning a session (by its receiver id) gets all of that session's
//! datagrams, whatever their source address (NAT rebinding included).
//!
//! # What the program sees, and what it returns
//! For UDP the kernel runs the program on the datagram with the data
//! pointer advanced past the UDP header (`udp4_lib_lookup2` and its IPv6
//! twin pass `hdr_len = sizeof(struct udphdr)` to
//! `reuseport_select_sock`, whose `run_bpf_filter` pulls that much before
//! running the program): offset 0 is the first byte of the UDP payload,
//! and `len` is the payload's length. The program:
//!
//! ```text
//! ld  #len                 ; A = payload length
//! jge #offset+4, 0, short  ; too short for the field?
//! ld  [offset]             ; A = big-endian u32 at offset
//! rsh #shift
//! mod #sockets
//! ret a
//! short: ret #0            ; SHORT_DATAGRAM_INDEX
//! ```
//!
//! So a datagram goes to socket `(field >> shift) % sockets`
//! ([`ReuseportSteering::index`] computes the same in Rust, for choosing
//! receiver ids), and a datagram too short to hold the field goes to
//! socket [`SHORT_DATAGRAM_INDEX`] (0): defined, not hashed. (The kernel
//! would also answer 0 for an out-of-bounds load; the explicit check
//! keeps that from being an accident.)
//!
//! # Which socket has which index
//! Index `i` is the `i`-th socket bound to the port with `SO_REUSEPORT`
//! (bind the workers' sockets in worker order). If the group has fewer
//! sockets than the program's `sockets` (still being built), an index
//! past the end falls back to the kernel's 4-tuple hash, as it does if
//! any socket of the group is connected (the group then stops using the
//! program). When a socket is closed the kernel moves the group's last
//! socket into its index: the indices of a group with a dead member are
//! wrong, so the edge must rebuild the whole group (it exits when a
//! worker dies, which does that).
//!
//! # Coalescing
//! With UDP GRO on a NIC, several datagrams of one 4-tuple may be merged
//! before the program runs, which then sees only the first one's field.
//! A gateway therefore sends each session's datagrams from its own
//! socket (source port), and the edge's worker still checks the receiver
//! id of every datagram it gets.

use std::io;

/// Where the receiver id sits in a datagram record (bytes 4 to 7 of the
/// UDP payload, big-endian: see `sluice_core::wire::datagram`).
pub const DATAGRAM_RECEIVER_OFFSET: u32 = 4;

/// The socket index a datagram too short for the steering field gets.
pub const SHORT_DATAGRAM_INDEX: u32 = 0;

/// A steering rule: socket index = `(be32 at offset >> shift) % sockets`
/// over the UDP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseportSteering {
    offset: u32,
    shift: u32,
    sockets: u32,
}

impl ReuseportSteering {
    /// The rule for a group of `sockets` sockets, reading the big-endian
    /// `u32` at payload byte `offset` and shifting it right by `shift`.
    ///
    /// # Errors
    /// `InvalidInput` if `shift` is 32 or more, `sockets` is 0 or more
    /// than the kernel's group limit (65535), or the field would end past
    /// the largest UDP payload.
    pub fn new(offset: u32, shift: u32, sockets: u32) -> io::Result<Self> {
        let bad = |what| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if shift >= 32 {
            return bad("reuseport steering: shift must be below 32");
        }
        if sockets == 0 || sockets > u32::from(u16::MAX) {
            return bad("reuseport steering: 1 to 65535 sockets");
        }
        if offset as usize + 4 > super::MAX_PAYLOAD {
            return bad("reuseport steering: field past the largest payload");
        }
        Ok(Self {
            offset,
            shift,
            sockets,
        })
    }

    /// The rule for the edge: the datagram record's receiver id, low bits
    /// first (`shift` 0): a worker `w` of `workers` owns the receiver ids
    /// `id` with `id % workers == w`.
    ///
    /// # Errors
    /// As [`ReuseportSteering::new`].
    pub fn receiver_id(workers: u32) -> io::Result<Self> {
        Self::new(DATAGRAM_RECEIVER_OFFSET, 0, workers)
    }

    /// The group size the rule was made for.
    pub fn sockets(&self) -> u32 {
        self.sockets
    }

    /// The socket index of a field value.
    pub fn index_of(&self, field: u32) -> u32 {
        (field >> self.shift) % self.sockets
    }

    /// The socket index the program gives a UDP payload.
    pub fn index(&self, payload: &[u8]) -> u32 {
        let at = self.offset as usize;
        match payload.get(at..at + 4) {
            Some(b) => self.index_of(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            None => SHORT_DATAGRAM_INDEX,
        }
    }

    /// The classic BPF program (see the module's documentation).
    pub fn program(&self) -> [libc::sock_filter; 7] {
        const fn insn(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
            libc::sock_filter {
                code: code as u16,
                jt,
                jf,
                k,
            }
        }
        use libc::{
            BPF_A, BPF_ABS, BPF_ALU, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_LEN, BPF_MOD, BPF_RET,
            BPF_RSH, BPF_W,
        };
        // `new` keeps `offset + 4` far below `u32::MAX`.
        let need = self.offset + 4;
        [
            insn(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),
            // Long enough: go on; else jump over the next 4 to `short`.
            insn(BPF_JMP | BPF_JGE | BPF_K, 0, 4, need),
            insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, self.offset),
            insn(BPF_ALU | BPF_RSH | BPF_K, 0, 0, self.shift),
            insn(BPF_ALU | BPF_MOD | BPF_K, 0, 0, self.sockets),
            insn(BPF_RET | BPF_A, 0, 0, 0),
            insn(BPF_RET | BPF_K, 0, 0, SHORT_DATAGRAM_INDEX),
        ]
    }
}
