//! What every test app shares: a check that fails the app (exit status 1,
//! the reason on stderr) instead of trapping, so a failed assertion and a
//! trap are told apart by the tests.

/// Exits with status 1 and `what` on stderr unless `ok`.
pub fn check(ok: bool, what: &str) {
    if !ok {
        eprintln!("check failed: {what}");
        std::process::exit(1);
    }
}

/// The app's first argument, if any.
pub fn arg(n: usize) -> Option<String> {
    std::env::args().nth(n)
}
