//! The module graph stays a layered, acyclic one: every top-level module
//! of src/ appears in the README's module map with its layer, and a module
//! only uses modules of its own layer or below, never in a cycle. Edges are
//! read from the source (`crate::name`), outside test code.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level modules and the .rs files of each.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(src()).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut files = Vec::new();
            collect_rs(&path, &mut files);
            out.insert(name, files);
        } else if path.extension().is_some_and(|x| x == "rs") && name != "lib" && name != "main" {
            out.insert(name, vec![path]);
        }
    }
    out
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules a source text names as `crate::x` or `crate::{x, y::z}`,
/// test code excluded (a `tests.rs` file, or a trailing `mod tests`).
fn uses(text: &str) -> BTreeSet<String> {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        // `$crate::` and `rewind_crate::` are not paths into this crate.
        if text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|p| ident(p.trim())));
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    mods.iter()
        .map(|(m, files)| {
            let mut to = BTreeSet::new();
            for f in files {
                if f.file_name().unwrap() == "tests.rs" {
                    continue;
                }
                let text = std::fs::read_to_string(f).unwrap();
                to.extend(
                    uses(&text)
                        .into_iter()
                        .filter(|t| t != m && mods.contains_key(t)),
                );
            }
            (m.clone(), to)
        })
        .collect()
}

/// `| 2 | `repo` | ... |` rows of the README's "Module map" section.
fn readme_layers() -> BTreeMap<String, u32> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Module map")
        .nth(1)
        .expect("README.md has a \"## Module map\" section");
    let section = section.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(layer), Some(module)) = (cols.get(1), cols.get(2)) else {
            continue;
        };
        let Ok(layer) = layer.parse::<u32>() else {
            continue;
        };
        let module = module.trim_matches('`').trim_start_matches("src/");
        let module = module.trim_end_matches(".rs").trim_end_matches('/');
        assert!(
            out.insert(module.to_string(), layer).is_none(),
            "{module} listed twice in the README's module map"
        );
    }
    out
}

#[test]
fn no_import_cycles() {
    let g = edges();
    // Depth-first search for a back edge; report the cycle's path.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for t in &g[m] {
            if let Some(c) = visit(t, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(cycle) = visit(m, &g, &mut Vec::new(), &mut done) {
            panic!(
                "import cycle between top-level modules: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn readme_module_map_matches_src_and_layers_hold() {
    let layers = readme_layers();
    let mods = modules();
    let listed: BTreeSet<&String> = layers.keys().collect();
    let present: BTreeSet<&String> = mods.keys().collect();
    assert_eq!(listed, present, "the README's module map and src/ differ");
    let mut upward = Vec::new();
    for (m, to) in edges() {
        for t in to {
            if layers[&t] > layers[&m] {
                upward.push(format!(
                    "{m} (layer {}) uses {t} (layer {})",
                    layers[&m], layers[&t]
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "edges against the flow:\n{}",
        upward.join("\n")
    );
}

#[test]
fn edge_reader_sees_paths_and_groups() {
    let u = uses(
        "use crate::repo::Repo;\nuse crate::{util::hex, tree};\nlet x = $crate::no;\n#[cfg(test)]\nmod tests;\nuse crate::init;\n#[cfg(test)]\nmod tests { use crate::cli; }",
    );
    assert_eq!(
        u.into_iter().collect::<Vec<_>>(),
        ["init", "repo", "tree", "util"]
    );
}
