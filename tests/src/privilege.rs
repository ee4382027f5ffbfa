//! Root-only tests skip with a clear message for developers, and fail loudly
//! in CI (where `CI` is set) so a missing privilege can never pass silently.

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when the test may go on. Without root: panics under CI, otherwise
/// prints why the test is skipped and returns false.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    assert!(
        !ci,
        "{test}: needs root (network namespaces, XDP) but runs as uid {}; CI must run as root",
        // SAFETY: as above.
        unsafe { libc::geteuid() }
    );
    eprintln!(
        "SKIPPED {test}: needs root for network namespaces and XDP (run `sudo cargo xtask test`)"
    );
    false
}
