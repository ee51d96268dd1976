//! Time, read at most once per operation.

use std::cell::Cell;

/// Wall-clock milliseconds since the UNIX epoch.
pub trait Clock {
    fn now_ms(&self) -> u64;

    /// Monotonic microseconds from an arbitrary start, for deadlines.
    fn monotonic_us(&self) -> u64;

    /// Waits `us` microseconds (the backoff between retries).
    fn sleep_us(&self, us: u64);
}

/// The clock of one operation: read on first use, then fixed, so an
/// operation sees one instant and an operation that meets no expiry never
/// reads the clock (on wasm each read is a host call).
pub struct Now<'c> {
    clock: &'c dyn Clock,
    at: Cell<Option<u64>>,
}

impl<'c> Now<'c> {
    pub fn new(clock: &'c dyn Clock) -> Self {
        Self {
            clock,
            at: Cell::new(None),
        }
    }

    pub fn ms(&self) -> u64 {
        match self.at.get() {
            Some(at) => at,
            None => {
                let at = self.clock.now_ms();
                self.at.set(Some(at));
                at
            }
        }
    }

    /// Whether a record with this expiry is gone.
    pub fn expired(&self, expires_at_ms: Option<u64>) -> bool {
        expires_at_ms.is_some_and(|at| at <= self.ms())
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Cell<u64>,
    reads: Cell<u64>,
    /// Time slept: moves the monotonic clock, not the wall clock.
    slept_us: Cell<u64>,
}

impl ManualClock {
    pub fn at(ms: u64) -> Self {
        Self {
            now: Cell::new(ms),
            reads: Cell::new(0),
            slept_us: Cell::new(0),
        }
    }

    pub fn advance(&self, ms: u64) {
        self.now.set(self.now.get() + ms);
    }

    /// How often the clock was read.
    pub fn reads(&self) -> u64 {
        self.reads.get()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.reads.set(self.reads.get() + 1);
        self.now.get()
    }

    fn monotonic_us(&self) -> u64 {
        self.now
            .get()
            .saturating_mul(1000)
            .saturating_add(self.slept_us.get())
    }

    fn sleep_us(&self, us: u64) {
        self.slept_us.set(self.slept_us.get().saturating_add(us));
    }
}

impl<C: Clock + ?Sized> Clock for std::rc::Rc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }

    fn monotonic_us(&self) -> u64 {
        (**self).monotonic_us()
    }

    fn sleep_us(&self, us: u64) {
        (**self).sleep_us(us);
    }
}
