//! Retrying after a lost race: backoff with jitter, a fairness rule, and a
//! deadline instead of a count.
//!
//! A read-modify-write that loses its commit to another writer starts over
//! from a fresh read. Retrying at once, all losers collide again; so after
//! the first immediate retry each waits a jittered, growing backoff (50 µs
//! doubling to at most 20 ms; half the window fixed, half random), so that
//! writers spread out. **Fairness:** the window shrinks as the writer's
//! total wait grows (divided by 1 + waited/50 ms), so a writer that has
//! waited long retries more often than a newcomer and is not starved by a
//! stream of fresh writers. **Deadline:** a writer gives up with
//! `contention` only when its deadline (10 s unless configured with
//! `retry_deadline_ms`) has passed, however many attempts that took.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Clock;

/// How long a writer retries lost races before `contention`, unless
/// configured.
pub const DEFAULT_DEADLINE_MS: u64 = 10_000;

const FIRST_WINDOW_US: u64 = 50;
const MAX_WINDOW_US: u64 = 20_000;
/// Waiting this long halves the window (the fairness rule).
const AGING_US: u64 = 50_000;

/// The retry state of one operation.
pub(super) struct Retry<'c> {
    clock: &'c dyn Clock,
    deadline_us: u64,
    started_us: Option<u64>,
    attempt: u32,
}

/// Tells apart retries that read the clock at the same microsecond.
static SALT: AtomicU64 = AtomicU64::new(0);

/// splitmix64: jitter from the clock and a counter. (Not std's
/// `RandomState`: on wasm it imports `wasi:random`, which the component
/// must not need.)
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<'c> Retry<'c> {
    pub(super) fn new(clock: &'c dyn Clock, deadline_ms: u64) -> Self {
        Self {
            clock,
            deadline_us: deadline_ms.saturating_mul(1000),
            started_us: None,
            attempt: 0,
        }
    }

    /// After a lost race: waits its backoff and returns `true`, or returns
    /// `false` when the deadline has passed (then give up: `contention`).
    pub(super) fn again(&mut self) -> bool {
        let now = self.clock.monotonic_us();
        let started = *self.started_us.get_or_insert(now);
        let waited = now.saturating_sub(started);
        if waited >= self.deadline_us {
            return false;
        }
        self.attempt = self.attempt.saturating_add(1);
        if self.attempt == 1 {
            return true;
        }
        let doubling = FIRST_WINDOW_US.saturating_mul(1 << (self.attempt - 2).min(20));
        let window = doubling.min(MAX_WINDOW_US) / (1 + waited / AGING_US);
        let window = window.max(FIRST_WINDOW_US);
        let salt = SALT.fetch_add(1, Ordering::Relaxed);
        let jitter = mix(now ^ salt.rotate_left(32) ^ u64::from(self.attempt)) % (window / 2 + 1);
        let wait = (window / 2 + jitter).min(self.deadline_us - waited);
        self.clock.sleep_us(wait);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ManualClock;

    #[test]
    fn gives_up_at_the_deadline_not_at_a_count() {
        let clock = ManualClock::at(0);
        let mut retry = Retry::new(&clock, 1_000);
        let mut attempts = 0u32;
        while retry.again() {
            attempts += 1;
            assert!(attempts < 100_000, "the deadline ends the retries");
        }
        // Waited the whole deadline, and not much more.
        let waited = clock.monotonic_us();
        assert!(
            (1_000_000..1_000_000 + 20_000).contains(&waited),
            "{waited}"
        );
        assert!(attempts > 40, "many attempts fit in 1 s: {attempts}");
    }

    #[test]
    fn windows_grow_then_shrink_with_age() {
        let clock = ManualClock::at(0);
        let mut retry = Retry::new(&clock, 60_000);
        let mut waits = Vec::new();
        for _ in 0..200 {
            let before = clock.monotonic_us();
            assert!(retry.again());
            waits.push(clock.monotonic_us() - before);
        }
        assert_eq!(waits[0], 0, "the first retry is immediate");
        assert!(waits[1] >= FIRST_WINDOW_US / 2 && waits[1] <= FIRST_WINDOW_US);
        let peak = *waits.iter().max().unwrap_or(&0);
        assert!(peak <= MAX_WINDOW_US, "{peak}");
        assert!(
            waits[199] < peak / 4,
            "an old writer retries more often: {} vs {peak}",
            waits[199]
        );
    }
}
