//! Counted slots per key (a client address, a user): at most `max` held at
//! once per key, each given back when dropped. Keys with no slot held are
//! forgotten, so the map holds only keys in use.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct Slots<K> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    max: usize,
}

impl<K> Clone for Slots<K> {
    fn clone(&self) -> Self {
        Self {
            held: self.held.clone(),
            max: self.max,
        }
    }
}

/// One slot of `key`, until dropped.
#[derive(Debug)]
pub struct Slot<K: Eq + Hash> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Slots<K> {
    pub fn new(max: usize) -> Self {
        Self {
            held: Arc::default(),
            max,
        }
    }

    /// A slot of `key`, or `None` when `key` holds `max` already.
    pub fn take(&self, key: K) -> Option<Slot<K>> {
        let mut held = self.held.lock().ok()?;
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            held: self.held.clone(),
            key,
        })
    }

    /// The most slots one key may hold.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.lock() {
            if let Some(count) = held.get_mut(&self.key) {
                *count -= 1;
                if *count == 0 {
                    held.remove(&self.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_max_and_is_forgotten_when_free() {
        let slots = Slots::new(2);
        let a = slots.take("a").expect("first");
        let b = slots.take("a").expect("second");
        assert!(slots.take("a").is_none(), "third refused");
        assert!(slots.take("b").is_some(), "other keys unaffected");
        drop(a);
        let again = slots.take("a").expect("given back");
        drop((b, again));
        assert!(slots.held.lock().expect("lock").is_empty());
    }
}
