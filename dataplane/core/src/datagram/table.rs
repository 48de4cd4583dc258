//! Which session a received datagram belongs to: the receiver id in its
//! header, chosen by the receiving side when it set the session up.
//!
//! The edge (many sessions on one UDP socket) keeps one [`ReceiverTable`]
//! from id to whatever it keeps per session (its `DatagramSession`, the
//! gateway's address); a gateway with one session per edge can compare
//! the id itself. The ids are the caller's to pick (at random: an id
//! tells an off-path sender nothing it could use, the AEAD stops forgery
//! anyway); the table refuses 0 and duplicates, and holds at most the
//! capacity it was given.

use std::collections::HashMap;

use super::DropReason;
use crate::wire::datagram::Packet;

/// Why an id was not inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// 0 is never an id (it reads as "none" in logs and configuration).
    #[error("receiver id 0 is reserved")]
    Zero,
    /// Another session has this id: pick another.
    #[error("receiver id in use")]
    Taken,
    /// The table holds its capacity.
    #[error("receiver table full")]
    Full,
}

/// Receiver id to per-session value, bounded.
#[derive(Debug)]
pub struct ReceiverTable<V> {
    map: HashMap<u32, V>,
    capacity: usize,
    malformed: u64,
    unknown: u64,
}

impl<V> ReceiverTable<V> {
    /// An empty table for at most `capacity` sessions.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            capacity,
            malformed: 0,
            unknown: 0,
        }
    }

    /// Adds `value` under `id`.
    ///
    /// # Errors
    /// See [`TableError`]; the table is unchanged.
    pub fn insert(&mut self, id: u32, value: V) -> Result<(), TableError> {
        if id == 0 {
            return Err(TableError::Zero);
        }
        if self.map.contains_key(&id) {
            return Err(TableError::Taken);
        }
        if self.map.len() >= self.capacity {
            return Err(TableError::Full);
        }
        self.map.insert(id, value);
        Ok(())
    }

    /// Removes and returns what `id` held.
    pub fn remove(&mut self, id: u32) -> Option<V> {
        self.map.remove(&id)
    }

    /// What `id` holds.
    pub fn get(&self, id: u32) -> Option<&V> {
        self.map.get(&id)
    }

    /// What `id` holds, mutable.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut V> {
        self.map.get_mut(&id)
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The session a received datagram names, before any decryption.
    ///
    /// # Errors
    /// [`DropReason::Malformed`] (not a record this version reads) or
    /// [`DropReason::UnknownReceiver`]; both counted
    /// ([`ReceiverTable::drops`]).
    pub fn route(&mut self, datagram: &[u8]) -> Result<(u32, &mut V), DropReason> {
        let Ok(p) = Packet::new_checked(datagram) else {
            self.malformed += 1;
            return Err(DropReason::Malformed);
        };
        let id = p.receiver();
        if let Some(v) = self.map.get_mut(&id) {
            Ok((id, v))
        } else {
            self.unknown += 1;
            Err(DropReason::UnknownReceiver)
        }
    }

    /// Datagrams [`ReceiverTable::route`] refused: (malformed, unknown
    /// receiver).
    pub fn drops(&self) -> (u64, u64) {
        (self.malformed, self.unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(receiver: u32) -> Vec<u8> {
        let mut b = vec![0u8; crate::wire::datagram::MIN_LEN];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_record_type(crate::wire::datagram::RecordType::Data);
        p.set_receiver(receiver);
        b
    }

    #[test]
    fn ids_are_unique_non_zero_and_bounded() {
        let mut t = ReceiverTable::new(2);
        assert_eq!(t.insert(0, "zero"), Err(TableError::Zero));
        assert_eq!(t.insert(7, "a"), Ok(()));
        assert_eq!(t.insert(7, "b"), Err(TableError::Taken));
        assert_eq!(t.insert(9, "b"), Ok(()));
        assert_eq!(t.insert(11, "c"), Err(TableError::Full));
        assert_eq!((t.len(), t.get(7), t.get(11)), (2, Some(&"a"), None));
        assert_eq!(t.remove(7), Some("a"));
        assert_eq!(t.insert(11, "c"), Ok(()));
        *t.get_mut(11).unwrap() = "d";
        assert_eq!(t.get(11), Some(&"d"));
        assert!(!t.is_empty());
    }

    #[test]
    fn route_names_the_session_or_counts_the_drop() {
        let mut t = ReceiverTable::new(4);
        t.insert(0x0102_0304, 1u8).unwrap();
        assert_eq!(
            t.route(&record(0x0102_0304)).map(|(id, v)| (id, *v)),
            Ok((0x0102_0304, 1))
        );
        assert_eq!(
            t.route(&record(5)).unwrap_err(),
            DropReason::UnknownReceiver
        );
        assert_eq!(t.route(&[1, 0, 0]).unwrap_err(), DropReason::Malformed);
        assert_eq!(t.drops(), (1, 1));
    }
}
