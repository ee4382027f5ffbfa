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

pub(crate) fn lint() -> anyhow::Result<()> {
    let root = shell::workspace_root();
    println!(
        "lint: layers (kernel/, detect/, sinks/, fleet/ never import cli/; no module import cycles at any level)"
    );
    layers(&root)?;
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
/// the top, and `kernel/`, `detect/`, `sinks/` and `fleet/` never use it.
/// And in every crate, at every level, sibling modules import each other
/// without cycles (`daemon::start` and `daemon::serve`, as `daemon` and
/// `kernel`).
fn layers(root: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for krate in [
        "scanner-userspace",
        "scanner-common",
        "scanner-ebpf",
        "xtask",
        "tests",
    ] {
        let src = root.join(krate).join("src");
        let graphs = sibling_graphs(&src)?;
        if krate == "scanner-userspace"
            && let Some(top) = graphs.get(&Vec::new())
        {
            for low in ["kernel", "detect", "sinks", "fleet"] {
                if top.get(low).is_some_and(|u| u.contains("cli")) {
                    problems.push(format!("{low}/ imports cli/"));
                }
            }
        }
        for (parent, graph) in &graphs {
            if let Some(cycle) = find_cycle(graph) {
                let at = if parent.is_empty() {
                    krate.to_owned()
                } else {
                    format!("{krate} {}", parent.join("::"))
                };
                problems.push(format!("import cycle in {at}: {}", cycle.join(" -> ")));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("layering: {}", problems.join("; "))
    }
}

/// A module's path from its crate's root (`["daemon", "start"]`).
type ModPath = Vec<String>;

/// For each module with submodules: which of its children import which
/// (an edge from the child whose file, or descendant's file, names a path
/// inside another child).
fn sibling_graphs(
    src: &Path,
) -> anyhow::Result<BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>>> {
    let mut files = Vec::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).unwrap_or(&file).to_owned();
        files.push((module_of(&rel), file));
    }
    let modules: BTreeSet<ModPath> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graphs: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, file) in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        // A mod.rs is its directory's module: `super` is the parent's.
        for path in used_paths(&text, module) {
            let Some(target) = longest_module(&path, &modules) else {
                continue;
            };
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if let (Some(from), Some(to)) = (module.get(common), target.get(common)) {
                graphs
                    .entry(module[..common].to_vec())
                    .or_default()
                    .entry(from.clone())
                    .or_default()
                    .insert(to.clone());
            }
        }
    }
    Ok(graphs)
}

/// The module a file under src is (`daemon/mod.rs` and `daemon.rs` are
/// `daemon`; `main.rs` and `lib.rs` the root).
fn module_of(rel: &Path) -> ModPath {
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        let is_root = parts.is_empty() && (stem == "main" || stem == "lib");
        if stem != "mod" && !is_root {
            parts.push(stem.to_owned());
        }
    }
    parts
}

/// The longest prefix of `path` that is a module of the crate.
fn longest_module(path: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

/// Every path `text` (the file of `module`) names through `crate::`,
/// `super::` or `self::`, as a path from the crate's root, groups
/// (`use crate::{kernel::{load, pin}, sinks}`) expanded. Comments are
/// skipped, and so is a file's unit-test module (from `#[cfg(test)]` on, at
/// the end by habit): a test may borrow a sibling's fixtures.
fn used_paths(text: &str, module: &[String]) -> Vec<ModPath> {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let base: Option<(usize, ModPath)> = if !boundary {
            None
        } else if rest.starts_with("crate::") {
            Some(("crate::".len(), Vec::new()))
        } else if rest.starts_with("super::") {
            Some((
                "super::".len(),
                module[..module.len().saturating_sub(1)].to_vec(),
            ))
        } else if rest.starts_with("self::") {
            Some(("self::".len(), module.to_vec()))
        } else {
            None
        };
        match base {
            Some((skip, base)) => {
                let (paths, used) = use_tree(&code[i + skip..], &base);
                out.extend(paths);
                i += skip + used.max(1);
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    out
}

/// The paths of a use tree starting at `text` (`a::b`, `a::{b, c::d}`),
/// each under `base`; and how many bytes it took.
fn use_tree(text: &str, base: &[String]) -> (Vec<ModPath>, usize) {
    let mut path = base.to_vec();
    let mut i = 0;
    loop {
        let rest = &text[i..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut out = Vec::new();
            let mut j = 1;
            loop {
                let inner = &group[j - 1..];
                let trimmed = inner.trim_start_matches([' ', '\n', '\t', '\r', ',']);
                j += inner.len() - trimmed.len();
                if trimmed.starts_with('}') || trimmed.is_empty() {
                    return (out, i + j + usize::from(!trimmed.is_empty()));
                }
                let (paths, used) = use_tree(trimmed, &path);
                out.extend(paths);
                j += used.max(1);
            }
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            return (vec![path], i);
        }
        i += name.len();
        if name != "self" {
            path.push(name);
        }
        match text[i..].strip_prefix("::") {
            Some(_) => i += 2,
            None => return (vec![path], i),
        }
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
    fn paths_groups_and_super_resolve_from_the_crate_root() {
        let text = "use crate::{\n    cli::Args,\n    kernel::{load, pin::PinDir},\n    sinks,\n};\n// crate::commented::out\nfn f() { crate::detect::x(); super::serve::run(); }\nuse self::inner::{self, Thing};";
        let module = vec!["daemon".to_owned(), "start".to_owned()];
        let found: BTreeSet<String> = used_paths(text, &module)
            .into_iter()
            .map(|p| p.join("::"))
            .collect();
        let expected: BTreeSet<String> = [
            "cli::Args",
            "kernel::load",
            "kernel::pin::PinDir",
            "sinks",
            "detect::x",
            "daemon::serve::run",
            "daemon::start::inner",
            "daemon::start::inner::Thing",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn files_are_modules_and_edges_join_siblings() {
        assert_eq!(module_of(Path::new("daemon/mod.rs")), ["daemon"]);
        assert_eq!(module_of(Path::new("daemon/start.rs")), ["daemon", "start"]);
        assert!(module_of(Path::new("main.rs")).is_empty());
        let dir = std::env::temp_dir().join(format!("xtask-lint-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("daemon")).unwrap();
        std::fs::write(dir.join("lib.rs"), "mod daemon; mod kernel;").unwrap();
        std::fs::write(dir.join("kernel.rs"), "").unwrap();
        std::fs::write(dir.join("daemon/mod.rs"), "mod serve; mod start;").unwrap();
        std::fs::write(
            dir.join("daemon/start.rs"),
            "use super::serve; use crate::kernel::x;",
        )
        .unwrap();
        std::fs::write(dir.join("daemon/serve.rs"), "use crate::daemon::start::Y;").unwrap();
        let graphs = sibling_graphs(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let daemon = &graphs[&vec!["daemon".to_owned()]];
        assert_eq!(
            find_cycle(daemon),
            Some(vec!["serve".into(), "start".into(), "serve".into()])
        );
        let top = &graphs[&Vec::new()];
        assert!(top["daemon"].contains("kernel") && find_cycle(top).is_none());
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
