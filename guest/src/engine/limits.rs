//! What one instance accepts: the longest key, the largest value, the
//! deepest JSON nesting and the longest batch. A store configures them
//! (`"limits"` at its root, [`crate::config`]); they are checked when a
//! value is written, so whatever is stored every operation can read.
//!
//! They are the instance's (an instance serves one configuration), kept
//! where every check can read them without threading them through each
//! call: set when the configuration opens, [`Limits::DEFAULT`] before.

use std::cell::Cell;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key (and key prefix, cursor key, lock name), in bytes.
    pub key_bytes: usize,
    /// Largest value, in bytes, as written or as a path write leaves it.
    pub value_bytes: usize,
    /// Deepest nesting of arrays and objects in a JSON value.
    pub depth: usize,
    /// Most keys of one batch call, and checks plus mutations of one
    /// transaction.
    pub batch: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        key_bytes: 4096,
        value_bytes: 8 << 20,
        depth: 127,
        batch: 1000,
    };

    /// The most each may be configured to. Depth: serde_json, which reads
    /// values back, reads 127 levels. Value: a write holds a few copies of
    /// its value in an instance's memory (256 MiB by default). Keys and
    /// batches: the backends' own requests (etcd takes 1.5 MiB by default).
    pub const MOST: Limits = Limits {
        key_bytes: 64 << 10,
        value_bytes: 64 << 20,
        depth: 127,
        batch: 10_000,
    };
}

thread_local! {
    static LIMITS: Cell<Limits> = const { Cell::new(Limits::DEFAULT) };
}

/// This instance's limits.
pub fn limits() -> Limits {
    LIMITS.with(Cell::get)
}

/// Sets this instance's limits (when its configuration opens; tests).
pub fn set_limits(limits: Limits) {
    LIMITS.with(|cell| cell.set(limits));
}
