//! Fast random numbers for sampling decisions and trace/span ids: unique and evenly spread,
//! not secret. A per-thread splitmix64 sequence seeded once from the OS, so the request path
//! makes no system call (one `getrandom` per request and id cost measurable CPU, issue 19).
//! Session ids and anything else that must be unguessable use the OS CSPRNG
//! (`session::id`), never this.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        // The OS source failing is unheard of; the clock still keeps threads apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        b = (t as u64).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

/// The next 64 random bits of this thread's sequence. splitmix64 walks every 64-bit state
/// once per period, so a thread never repeats itself; threads start at independent seeds.
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let state = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(state);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&next_u64().to_le_bytes()[..chunk.len()]);
    }
    out
}

/// True with probability `ratio` (0 never, 1 always).
pub fn sampled(ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    // The top 53 bits as a uniform float in [0, 1).
    ((next_u64() >> 11) as f64 / (1u64 << 53) as f64) < ratio
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_do_not_repeat_and_fill_every_byte() {
        let ids: HashSet<[u8; 16]> = (0..100_000).map(|_| bytes::<16>()).collect();
        assert_eq!(ids.len(), 100_000);
        // Every byte position takes many values (no fixed or zero bytes).
        for i in 0..16 {
            let seen: HashSet<u8> = ids.iter().take(5_000).map(|id| id[i]).collect();
            assert!(seen.len() > 200, "byte {i} took {} values", seen.len());
        }
        let odd: HashSet<[u8; 5]> = (0..1000).map(|_| bytes::<5>()).collect();
        assert_eq!(odd.len(), 1000);
    }

    #[test]
    fn threads_get_different_sequences() {
        let here: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        let there = std::thread::spawn(|| (0..4).map(|_| next_u64()).collect::<Vec<u64>>())
            .join()
            .unwrap();
        assert_ne!(here, there);
    }

    #[test]
    fn sampling_follows_the_ratio() {
        assert!((0..1000).all(|_| sampled(1.0)));
        assert!((0..1000).all(|_| !sampled(0.0)));
        let hits = (0..100_000).filter(|_| sampled(0.25)).count();
        assert!((23_500..26_500).contains(&hits), "{hits} of 100000 at 0.25");
    }
}
