//! The synthetic profile ids of the replica benches: 36-byte UUID-shaped strings, one per index.
//! One source for `benches/lookup.rs` and `benches/lookup_tail.rs` of this crate and
//! `appliance/benches/profile_order.rs` (each includes this file with `#[path = ...] mod ids;`).
//!
//! Pure functions, and [`draws`]: the benches' deterministic draws (state owned by the caller).

/// Length of every id [`id`] makes.
pub const ID_LEN: usize = 36;

/// The id of profile `i`.
pub fn id(i: u64) -> String {
    let a = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = a.rotate_left(29) ^ 0x5555_AAAA_5555_AAAA;
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xffff,
        b & 0xffff_ffff_ffff
    )
}

/// The benches' draws: xorshift64 from `seed` (non-zero), each call a value below `m`. The same
/// seed gives every bench and every variant the same sequence of profile indices.
pub fn draws(seed: u64) -> impl FnMut(u64) -> u64 {
    debug_assert!(seed != 0, "xorshift64 never leaves 0");
    let mut x = seed;
    move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    }
}
