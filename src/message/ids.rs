//! [`IdTable`]: values keyed by message id, laid out for queues of ten
//! million messages. A hash index maps each id, packed into 14 bytes, to a
//! 4-byte slot number (18 bytes an entry instead of the 32 + value of a
//! map of ids); the values live in one dense vector, so a table's memory is
//! the index plus the values themselves, and freed slots are reused.
//!
//! Owns the layout only. May call: `runtime::hash` (the index's map), std.
//! Must never: do I/O, or know what the values mean.

use crate::runtime::hash::Map;

use super::MessageId;

/// A message id packed to 2-byte alignment (14 bytes instead of 16).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C, packed(2))]
struct Key {
    epoch_ms: u64,
    seq: u32,
    shard: u16,
}

impl Key {
    fn of(id: &MessageId) -> Key {
        Key {
            epoch_ms: id.epoch_ms,
            seq: id.seq,
            shard: id.shard,
        }
    }

    fn id(self) -> MessageId {
        MessageId {
            epoch_ms: self.epoch_ms,
            shard: self.shard,
            seq: self.seq,
        }
    }
}

/// A slot number as two halves, so that an index entry (key and slot) keeps
/// 2-byte alignment: 18 bytes, not 20.
#[derive(Clone, Copy)]
struct Slot([u16; 2]);

impl Slot {
    fn new(n: usize) -> Slot {
        let n = u32::try_from(n).expect("fewer than 2^32 messages in one table");
        Slot([n as u16, (n >> 16) as u16])
    }

    fn get(self) -> usize {
        usize::from(self.0[0]) | usize::from(self.0[1]) << 16
    }
}

/// Values keyed by message id (see the module header).
pub struct IdTable<T> {
    index: Map<Key, Slot>,
    slots: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable {
            index: Map::default(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for IdTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T> IdTable<T> {
    /// Values held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// True when `id` has a value.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.index.contains_key(&Key::of(id))
    }

    /// The value of `id`.
    pub fn get(&self, id: &MessageId) -> Option<&T> {
        let slot = self.index.get(&Key::of(id))?;
        self.slots[slot.get()].as_ref()
    }

    /// The value of `id`, to change.
    pub fn get_mut(&mut self, id: &MessageId) -> Option<&mut T> {
        let slot = self.index.get(&Key::of(id))?;
        self.slots[slot.get()].as_mut()
    }

    /// Sets the value of `id`, returning the one it replaces.
    pub fn insert(&mut self, id: MessageId, value: T) -> Option<T> {
        let key = Key::of(&id);
        if let Some(slot) = self.index.get(&key) {
            return self.slots[slot.get()].replace(value);
        }
        let n = match self.free.pop() {
            Some(n) => {
                self.slots[n as usize] = Some(value);
                n as usize
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, Slot::new(n));
        None
    }

    /// Takes the value of `id` out. An emptied table gives its memory back.
    pub fn remove(&mut self, id: &MessageId) -> Option<T> {
        let n = self.index.remove(&Key::of(id))?.get();
        let value = self.slots[n].take();
        if self.index.is_empty() {
            *self = IdTable::default();
        } else {
            self.free.push(n as u32);
        }
        value
    }

    /// Every id and its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (MessageId, &T)> + '_ {
        self.index
            .iter()
            .filter_map(|(k, slot)| self.slots[slot.get()].as_ref().map(|v| (k.id(), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(epoch_ms: u64, shard: u16, seq: u32) -> MessageId {
        MessageId {
            epoch_ms,
            shard,
            seq,
        }
    }

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<(Key, Slot)>(), 18);
    }

    #[test]
    fn insert_get_remove_and_slot_reuse() {
        let mut t: IdTable<String> = IdTable::default();
        let (a, b) = (id(u64::MAX, 7, 1), id(1, 7, u32::MAX));
        assert_eq!(t.insert(a, "a".into()), None);
        assert_eq!(t.insert(b, "b".into()), None);
        assert_eq!(t.insert(a, "a2".into()).as_deref(), Some("a"));
        assert_eq!((t.len(), t.get(&a).map(String::as_str)), (2, Some("a2")));
        assert_eq!(t.remove(&a).as_deref(), Some("a2"));
        assert!(!t.contains(&a) && t.get(&a).is_none() && t.remove(&a).is_none());
        // The freed slot is reused, and nothing else moves.
        t.insert(id(3, 0, 0), "c".into());
        assert_eq!(t.slots.len(), 2);
        t.get_mut(&b).unwrap().push('!');
        let mut all: Vec<(MessageId, String)> = t.iter().map(|(k, v)| (k, v.clone())).collect();
        all.sort();
        assert_eq!(
            all,
            vec![(id(1, 7, u32::MAX), "b!".into()), (id(3, 0, 0), "c".into())]
        );
        t.remove(&b);
        t.remove(&id(3, 0, 0));
        assert!(
            t.is_empty() && t.slots.capacity() == 0,
            "emptied: memory back"
        );
    }

    #[test]
    fn slot_numbers_above_16_bits() {
        for n in [0, 1, 0xFFFF, 0x1_0000, 0x1234_5678, u32::MAX as usize] {
            assert_eq!(Slot::new(n).get(), n);
        }
    }
}
