//! `scanner`: the daemon and its CLI (the library's `entry`).

fn main() -> std::process::ExitCode {
    scanner_userspace::main()
}
