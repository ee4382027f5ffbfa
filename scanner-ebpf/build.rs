// Rebuild the object when the linker changes (e.g. after `cargo xtask setup`).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
