//! `cargo xtask lint`: the habits CI checks, before the tests. Formatting
//! (nightly rustfmt: the import grouping in rustfmt.toml is unstable),
//! clippy with warnings as errors over every host crate and target, and
//! clippy over the XDP program for the BPF target, the only one it builds for.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::shell;

pub fn lint() -> anyhow::Result<()> {
    let root = shell::workspace_root();
    println!(
        "lint: layers (kernel/, detect/, sinks/, fleet/ never import cli/; no module import cycles)"
    );
    layers(&root.join("scanner-userspace").join("src"))?;
    println!("lint: rustfmt (nightly)");
    shell::status(nightly().args(["fmt", "--all", "--", "--check"]))?;
    println!("lint: clippy, host crates");
    shell::status(shell::cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "scanner-ebpf",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("lint: clippy, the XDP program for the BPF target");
    let mut bpf = nightly();
    bpf.args([
        "clippy",
        "--package",
        "scanner-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--locked",
        "--target-dir",
    ])
    .arg(root.join("target").join("lint-bpf"))
    .args(["--", "-D", "warnings"])
    // As aya-build builds it: the helpers are chosen by this cfg.
    .env(
        "CARGO_ENCODED_RUSTFLAGS",
        format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
    );
    shell::status(&mut bpf)
}

/// cargo of the nightly toolchain (which builds the XDP program), run from
/// the workspace root.
fn nightly() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"])
        .current_dir(shell::workspace_root());
    // The stable toolchain that runs xtask must not leak into nightly's.
    for key in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
    ] {
        cmd.env_remove(key);
    }
    cmd
}

/// The layers of scanner-userspace/src must not import upward: the CLI is
/// the top, and `kernel/`, `detect/`, `sinks/` and `fleet/` never use it. And the
/// top-level modules import each other without cycles.
fn layers(src: &Path) -> anyhow::Result<()> {
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let Some(module) = rel.components().next() else {
            continue;
        };
        let module = module
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let used = imports.entry(module.clone()).or_default();
        for target in crate_modules(&text) {
            if target != module {
                used.insert(target);
            }
        }
    }
    let mut problems = Vec::new();
    for low in ["kernel", "detect", "sinks", "fleet"] {
        if imports.get(low).is_some_and(|u| u.contains("cli")) {
            problems.push(format!("{low}/ imports cli/"));
        }
    }
    if let Some(cycle) = find_cycle(&imports) {
        problems.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("layering: {}", problems.join("; "))
    }
}

/// Every .rs file under `dir`.
fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// The top-level modules `text` names through `crate::`: in paths
/// (`crate::kernel::load`) and in `use crate::{kernel::..., sinks::...}`.
fn crate_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The names at the group's top level.
            let mut depth = 0;
            let mut name = String::new();
            let mut at_start = true;
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if depth == 0 && at_start && (c.is_alphanumeric() || c == '_') => {
                        name.push(c)
                    }
                    _ if depth == 0 && at_start && !name.is_empty() => {
                        found.insert(std::mem::take(&mut name));
                        at_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// A cycle in the module graph, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_paths_and_groups_name_their_modules() {
        let text = "use crate::{\n    cli::Args,\n    kernel::{load, pin::PinDir},\n    sinks,\n};\nfn f() { crate::detect::x(); }";
        let found: Vec<String> = crate_modules(text).into_iter().collect();
        assert_eq!(found, ["cli", "detect", "kernel", "sinks"]);
    }

    #[test]
    fn cycles_are_found_and_a_tree_has_none() {
        let edge = |a: &str, b: &[&str]| (a.to_owned(), b.iter().map(|s| s.to_string()).collect());
        let tree: BTreeMap<String, BTreeSet<String>> = [
            edge("cli", &["daemon", "kernel"]),
            edge("daemon", &["kernel"]),
            edge("kernel", &[]),
        ]
        .into_iter()
        .collect();
        assert_eq!(find_cycle(&tree), None);
        let cyclic: BTreeMap<String, BTreeSet<String>> = [
            edge("cli", &["kernel"]),
            edge("kernel", &["pin"]),
            edge("pin", &["cli"]),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            find_cycle(&cyclic),
            Some(vec![
                "cli".into(),
                "kernel".into(),
                "pin".into(),
                "cli".into()
            ])
        );
    }
}
