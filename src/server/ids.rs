//! Decision ids: UUIDv4 strings, unique within a process without a system
//! call each.
//!
//! The process draws random bits once: 60 of them go into the first half
//! of every id, 62 into a starting point for the second half. Each id's
//! second half is that start plus a counter, scrambled by a bijection of
//! 62-bit numbers (the variant bits take the other two), so no two ids of
//! one process are equal and ids of different processes share nothing but
//! chance.
//!
//! `uuid` does the formatting and the version and variant bits; the bits
//! themselves are not `Uuid::new_v4()` per id because that asks the kernel
//! (`getrandom`) for 16 bytes on every decision, a system call on the hot
//! path, and `uuid`'s `fast-rng` feature would add `rand` to the tree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static KEY: OnceLock<(u64, u64)> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

const MASK: u64 = (1 << 62) - 1;

fn key() -> (u64, u64) {
    *KEY.get_or_init(|| {
        let random = uuid::Uuid::new_v4().as_u128();
        ((random >> 64) as u64, random as u64)
    })
}

/// A bijection of 62-bit numbers: an odd multiplier and a right xor-shift,
/// each invertible modulo 2^62.
fn scramble(x: u64) -> u64 {
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15) & MASK;
    x ^ (x >> 31)
}

/// The next decision id, as a hyphenated UUIDv4.
pub(crate) fn next() -> String {
    let (high, low) = key();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let second = scramble(low.wrapping_add(n) & MASK);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&second.to_be_bytes());
    // Sets the version nibble in the first half and the two variant bits,
    // which `second` leaves clear.
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_uuid_v4() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| next()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4);
        }
    }
}
