//! A fast, non-cryptographic hasher for the maps of the ingest and export paths.
//!
//! The standard library's SipHash resists flooding with chosen keys, which these
//! maps do not need: their keys are dictionary ids, rollup keys made of ids and
//! times, and dictionary texts the store itself interns, looked up several times
//! per event. This is the multiply-rotate word hash known as FxHash (eight bytes
//! per step), which makes those lookups several times cheaper.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` hashed with [`FxHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A `HashSet` hashed with [`FxHasher`].
pub(crate) type FastSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// The multiplier: 2^64 divided by the golden ratio, rounded to odd.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// See the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    #[inline]
    fn write_i64(&mut self, value: i64) {
        self.add(value as u64);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The table takes its bucket from the low bits and a tag from the high
        // ones; the last multiply leaves the low bits weakest, so fold the high
        // half in.
        self.hash ^ (self.hash >> 32)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    fn hash<T: std::hash::Hash>(value: T) -> u64 {
        BuildHasherDefault::<FxHasher>::default().hash_one(value)
    }

    #[test]
    fn equal_keys_hash_equal_and_near_keys_differ() {
        assert_eq!(hash("gpt-5.5"), hash(String::from("gpt-5.5")));
        assert_ne!(hash("a"), hash("a\0"));
        assert_ne!(hash("gpt-5.5"), hash("gpt-5.4"));
        assert_ne!(hash([1_i64, 2]), hash([2_i64, 1]));
        let buckets: std::collections::HashSet<u64> =
            (0..10_000_i64).map(|id| hash(id) & 0x3ff).collect();
        assert!(buckets.len() > 900, "ids spread over the low bits");
    }

    #[test]
    fn maps_work_with_every_key_shape() {
        let mut map: FastMap<String, i64> = FastMap::default();
        for id in 0..1000 {
            map.insert(format!("value-{id}"), id);
        }
        assert!((0..1000).all(|id| map.get(format!("value-{id}").as_str()) == Some(&id)));
    }
}
