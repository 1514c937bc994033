//! The control plane's layers hold: only the HTTP layer (and the binary's
//! start-up: `main.rs`, `app.rs`, `dev.rs`) knows axum or the HTTP layer's
//! types; the contexts below it depend on each other without cycles; the
//! store and the support helpers depend on no context.
//!
//! Reads the source tree, so a new file that breaks a rule fails here with
//! its name and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules above the contexts: they may use everything.
const TOP: [&str; 7] = ["http", "console", "app", "main", "dev", "config", "lib"];
/// The bottom layers: they may use nothing above them.
const BOTTOM: [(&str, &[&str]); 3] = [
    ("store", &["support", "domain"]),
    ("domain", &[]),
    ("support", &["domain"]),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`connections/execute.rs` →
/// `connections`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Code lines (comments dropped) with their line numbers.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or_default()))
}

/// `crate::x` mentions: the modules a line uses.
fn uses(line: &str) -> impl Iterator<Item = &str> {
    line.match_indices("crate::").filter_map(|(at, _)| {
        let rest = &line[at + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    })
}

struct Tree {
    /// module → the modules it uses, with one place each.
    edges: BTreeMap<String, BTreeMap<String, String>>,
    /// Places outside the top layer that name axum or the HTTP layer.
    http_outside: Vec<String>,
}

fn read_tree() -> Tree {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    assert!(files.len() > 40, "the source tree was not found at {src:?}");
    let mut tree = Tree {
        edges: BTreeMap::new(),
        http_outside: Vec::new(),
    };
    for file in files {
        let module = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(&src).unwrap().display().to_string();
        for (n, line) in code_lines(&text) {
            if !TOP.contains(&module.as_str())
                && (line.contains("axum") || line.contains("crate::http"))
            {
                tree.http_outside
                    .push(format!("src/{shown}:{n}: {}", line.trim()));
            }
            for used in uses(line) {
                if used != module && !TOP.contains(&used) {
                    tree.edges
                        .entry(module.clone())
                        .or_default()
                        .entry(used.to_owned())
                        .or_insert_with(|| format!("src/{shown}:{n}"));
                }
            }
        }
    }
    tree
}

#[test]
fn only_the_http_layer_knows_axum() {
    let tree = read_tree();
    assert!(
        tree.http_outside.is_empty(),
        "below the HTTP layer, code names axum or the HTTP layer (return a context's error \
         and map it in http/error.rs instead):\n{}",
        tree.http_outside.join("\n")
    );
}

#[test]
fn contexts_depend_on_each_other_without_cycles() {
    let tree = read_tree();
    let contexts: BTreeSet<&String> = tree
        .edges
        .keys()
        .filter(|m| !TOP.contains(&m.as_str()))
        .collect();
    // Depth-first search for a back edge; report the cycle with a place per arrow.
    fn visit<'a>(
        m: &'a str,
        tree: &'a Tree,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|p| *p == m) {
            let cycle: Vec<String> = path[at..]
                .iter()
                .zip(path[at + 1..].iter().chain(std::iter::once(&m)))
                .map(|(a, b)| format!("{a} → {b} ({})", tree.edges[*a][*b]))
                .collect();
            return Some(cycle.join("\n"));
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for next in tree.edges.get(m).into_iter().flat_map(|e| e.keys()) {
            if let Some(cycle) = visit(next, tree, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in &contexts {
        if let Some(cycle) = visit(m, &tree, &mut Vec::new(), &mut done) {
            panic!("the contexts depend on each other in a cycle:\n{cycle}");
        }
    }
    // The graph really has the contexts in it (the scan works).
    for expected in ["connections", "orchestration", "identity", "catalogue"] {
        assert!(
            contexts.iter().any(|c| *c == expected),
            "{expected} not found"
        );
    }
    assert!(tree.edges["orchestration"].contains_key("connections"));
}

#[test]
fn the_store_and_support_depend_on_no_context() {
    let tree = read_tree();
    for (module, allowed) in BOTTOM {
        for (used, place) in tree.edges.get(module).into_iter().flatten() {
            assert!(
                allowed.contains(&used.as_str()),
                "{module} uses {used} ({place}): the bottom layers depend on nothing above them"
            );
        }
    }
}
