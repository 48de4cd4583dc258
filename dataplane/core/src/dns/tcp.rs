//! DNS over TCP as an on-path observer sees it: each direction of a
//! connection is a byte stream of `[u16 length][message]` (RFC 1035
//! 4.2.2). Segments are followed strictly in order from the SYN: a gap or
//! an overlap with new bytes ends the observation of that stream (nothing
//! installs from a stream it cannot follow exactly); plain retransmissions
//! are ignored. Memory is bounded: at most `max_streams` streams of at most
//! one message each (64 KiB + 2).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

/// One direction of a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// Sender.
    pub from: SocketAddr,
    /// Receiver.
    pub to: SocketAddr,
}

/// The parts of a TCP segment the observer needs.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// Sequence number.
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// FIN or RST: the stream ends after this segment.
    pub end: bool,
    /// Payload.
    pub payload: &'a [u8],
}

/// What happened to a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Taken (possibly completing messages).
    Taken,
    /// No stream: its SYN was not seen (or it was given up).
    Untracked,
    /// Old bytes again: ignored.
    Retransmission,
    /// A gap or overlap: the stream was given up.
    Lost,
    /// A message longer than allowed: the stream was given up.
    Oversize,
}

#[derive(Debug)]
struct Stream {
    next: u32,
    buf: Vec<u8>,
}

/// Largest buffered bytes per stream: one maximal message and its prefix.
const MAX_BUF: usize = 2 + 65_535;

/// The streams being followed.
#[derive(Debug)]
pub struct TcpStreams {
    streams: HashMap<StreamKey, Stream>,
    order: VecDeque<StreamKey>,
    max_streams: usize,
    evicted: u64,
}

impl TcpStreams {
    /// Follows at most `max_streams` streams (the oldest is dropped).
    pub fn new(max_streams: usize) -> Self {
        Self {
            streams: HashMap::new(),
            order: VecDeque::new(),
            max_streams: max_streams.max(1),
            evicted: 0,
        }
    }

    /// Streams dropped to make room.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Streams being followed.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when none is followed.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Feeds one segment of `key`'s direction; calls `message` with each
    /// DNS message it completes.
    pub fn push(
        &mut self,
        key: StreamKey,
        seg: Segment<'_>,
        mut message: impl FnMut(&[u8]),
    ) -> Outcome {
        if seg.syn {
            if !self.streams.contains_key(&key) {
                while self.streams.len() >= self.max_streams {
                    let Some(old) = self.order.pop_front() else {
                        break;
                    };
                    if self.streams.remove(&old).is_some() {
                        self.evicted += 1;
                    }
                }
                self.order.push_back(key);
            }
            self.streams.insert(
                key,
                Stream {
                    next: seg.seq.wrapping_add(1),
                    buf: Vec::new(),
                },
            );
            // Data on a SYN (TCP Fast Open) starts after it.
            if seg.payload.is_empty() {
                if seg.end {
                    self.streams.remove(&key);
                }
                return Outcome::Taken;
            }
        }
        let Some(s) = self.streams.get_mut(&key) else {
            return Outcome::Untracked;
        };
        let seq = if seg.syn {
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        let len = seg.payload.len() as u32;
        let outcome = if seq == s.next {
            if s.buf.len() + seg.payload.len() > MAX_BUF {
                Outcome::Oversize
            } else {
                s.buf.extend_from_slice(seg.payload);
                s.next = s.next.wrapping_add(len);
                // Complete messages, then keep the rest at the front.
                let mut at = 0;
                while let [a, b, ..] = s.buf[at..] {
                    let n = usize::from(u16::from_be_bytes([a, b]));
                    let Some(m) = s.buf.get(at + 2..at + 2 + n) else {
                        break;
                    };
                    message(m);
                    at += 2 + n;
                }
                s.buf.drain(..at);
                Outcome::Taken
            }
        } else if seq.wrapping_add(len).wrapping_sub(s.next) as i32 <= 0 {
            // Entirely before `next`: a retransmission.
            return Outcome::Retransmission;
        } else {
            Outcome::Lost
        };
        if outcome != Outcome::Taken || seg.end {
            self.streams.remove(&key);
        }
        // Keep the order queue from growing past the live streams.
        if self.order.len() > 2 * self.max_streams {
            let live = &self.streams;
            self.order.retain(|k| live.contains_key(k));
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> StreamKey {
        StreamKey {
            from: SocketAddr::from(([192, 0, 2, 10], port)),
            to: SocketAddr::from(([203, 0, 113, 53], 53)),
        }
    }

    fn seg(seq: u32, payload: &[u8]) -> Segment<'_> {
        Segment {
            seq,
            syn: false,
            end: false,
            payload,
        }
    }

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for m in msgs {
            v.extend_from_slice(&(m.len() as u16).to_be_bytes());
            v.extend_from_slice(m);
        }
        v
    }

    #[test]
    fn messages_split_across_segments_come_out_whole() {
        let mut t = TcpStreams::new(4);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let syn = Segment {
            seq: u32::MAX - 3,
            syn: true,
            end: false,
            payload: &[],
        };
        assert_eq!(t.push(key(1), syn, |_| {}), Outcome::Taken);
        let bytes = framed(&[b"hello", b"", b"world!"]);
        // Byte by byte, across the sequence number wrap.
        let mut seq = u32::MAX - 2;
        for b in &bytes {
            assert_eq!(
                t.push(key(1), seg(seq, std::slice::from_ref(b)), |m| got
                    .push(m.to_vec())),
                Outcome::Taken
            );
            seq = seq.wrapping_add(1);
        }
        assert_eq!(got, [b"hello".to_vec(), vec![], b"world!".to_vec()]);
        // A retransmission of the start is ignored; the stream goes on.
        assert_eq!(
            t.push(key(1), seg(u32::MAX - 2, &bytes[..4]), |_| panic!()),
            Outcome::Retransmission
        );
        let tail = framed(&[b"again"]);
        let fin = Segment {
            seq,
            syn: false,
            end: true,
            payload: &tail,
        };
        assert_eq!(
            t.push(key(1), fin, |m| got.push(m.to_vec())),
            Outcome::Taken
        );
        assert_eq!(got.len(), 4);
        assert!(t.is_empty(), "FIN ends the stream");
    }

    #[test]
    fn gaps_unknown_streams_and_oversize_give_up() {
        let mut t = TcpStreams::new(2);
        let syn = |seq| Segment {
            seq,
            syn: true,
            end: false,
            payload: &[],
        };
        assert_eq!(
            t.push(key(1), seg(100, b"\x00\x01x"), |_| panic!()),
            Outcome::Untracked
        );
        t.push(key(1), syn(100), |_| {});
        // A gap (bytes 101..103 missing).
        assert_eq!(
            t.push(key(1), seg(103, b"\x00\x01x"), |_| panic!()),
            Outcome::Lost
        );
        assert_eq!(
            t.push(key(1), seg(101, b"\x00\x01x"), |_| panic!()),
            Outcome::Untracked
        );
        // An overlap carrying new bytes.
        t.push(key(1), syn(100), |_| {});
        t.push(key(1), seg(101, b"\x00\x05ab"), |_| panic!());
        assert_eq!(
            t.push(key(1), seg(102, b"\x05abcdef"), |_| panic!()),
            Outcome::Lost
        );
        // Oversize: more than one maximal message buffered.
        t.push(key(1), syn(0), |_| {});
        let big = vec![0xffu8; 40_000];
        assert_eq!(t.push(key(1), seg(1, &big), |_| {}), Outcome::Taken);
        assert_eq!(t.push(key(1), seg(40_001, &big), |_| {}), Outcome::Oversize);
        // Bounded: a third SYN evicts the oldest.
        t.push(key(1), syn(0), |_| {});
        t.push(key(2), syn(0), |_| {});
        t.push(key(3), syn(0), |_| {});
        assert_eq!(t.len(), 2);
        assert_eq!(t.evicted(), 1);
        assert_eq!(
            t.push(key(1), seg(1, b"\x00\x01x"), |_| panic!()),
            Outcome::Untracked
        );
        for i in 0..1000u16 {
            t.push(key(10 + i), syn(0), |_| {});
        }
        assert!(t.order.len() <= 5, "{}", t.order.len());
    }
}
