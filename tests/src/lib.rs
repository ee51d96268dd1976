//! Integration tests live in `tests/tests/`; this library holds what they
//! and the `hammer` binary share.

pub mod history;
