//! The repository stands on its own: every file path its code, docs, scripts and comments cite
//! resolves inside the repository, and none of them names an absolute path of a build machine
//! or a directory beside the checkout.
//!
//! A cited path is a word that starts with one of the repository's top-level directories
//! (`src/`, `tests/`, `docs/` …) or with `../`, or a bare `NAME.md`; it must exist relative to
//! the repository root or to the citing file. URLs are not citations of this repository.
//! Recorded sessions under `tests/fixtures/` are data (they hold the paths of the machine they
//! were recorded on, byte for byte) and are not scanned; `docs/protocol.md` describes them.
//! Nor is this file, whose self-test spells out the bad citations it must catch.

use std::path::{Path, PathBuf};

/// This file: its scanner self-test spells out the citations it must catch, so it is not scanned.
const THIS_FILE: &str = "tests/it/references.rs";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directories that are not part of the repository's content (build output, virtualenvs, VCS).
fn skipped_dir(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name == ".git"
        || name == "target"
        || name == "__pycache__"
        || name == "node_modules"
        || name.starts_with(".venv")
        || ["dist", "fuzz/corpus", "fuzz/artifacts", "tests/fixtures"].contains(&s.as_ref())
}

/// Every text file of the repository that is scanned, relative to the root, sorted.
fn scanned_files() -> Vec<PathBuf> {
    let root = root();
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let e = e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let r = rel.join(e.file_name());
            if e.path().is_dir() {
                if !skipped_dir(&r) {
                    stack.push(r);
                }
            } else if ![".git", "LICENSE", "Cargo.lock", THIS_FILE].contains(&r.to_string_lossy().as_ref()) {
                out.push(r);
            }
        }
    }
    out.sort();
    assert!(out.len() > 50, "only {} files found under {}", out.len(), root.display());
    out
}

/// Path prefixes that belong to a build machine, never to the repository. Spelled in pieces so
/// this file does not cite them itself.
fn machine_prefixes() -> Vec<String> {
    [["/wo", "rk/"], ["/ho", "me/"], ["/ro", "ot/"], ["/Us", "ers/"], ["../sh", "ared"]]
        .iter()
        .map(|p| p.concat())
        .collect()
}

/// The words of `line` that could be paths, with URLs removed and sentence punctuation trimmed.
fn words(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in line.split(|c: char| !(c.is_ascii_alphanumeric() || "_./-~$@{}<>*".contains(c))) {
        let w = w.trim_end_matches(['.', '-']);
        if !w.is_empty() {
            out.push(w);
        }
    }
    out
}

/// The top-level entries of the repository (what a cited relative path may start with).
fn top_level() -> Vec<String> {
    std::fs::read_dir(root())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') || n == ".ci")
        .collect()
}

/// The citations in `text` (of the file at `rel`) that do not resolve, with their line numbers.
fn unresolved(rel: &Path, text: &str, tops: &[String], md_names: &[String]) -> Vec<(usize, String)> {
    let root = root();
    let here = rel.parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut l = line.to_string();
        // URLs cite other repositories and sites.
        while let Some(start) = l.find("://") {
            let begin = l[..start].rfind(|c: char| !c.is_ascii_alphanumeric()).map_or(0, |b| b + 1);
            let end = l[start..]
                .find(|c: char| c.is_whitespace() || ")>\"'`]".contains(c))
                .map_or(l.len(), |e| start + e);
            l.replace_range(begin..end, " ");
        }
        for w in words(&l) {
            if w.contains(['{', '}', '<', '>', '*', '$', '~', '@']) {
                continue; // a pattern or placeholder, not a path
            }
            let cited = if let Some((first, _)) = w.split_once('/') {
                (first == ".." || tops.iter().any(|t| t == first)) && !w.contains("//")
            } else {
                w.ends_with(".md") && w.len() > 3 && !w.starts_with('.')
            };
            if !cited {
                continue;
            }
            let exists = if w.contains('/') {
                root.join(w).exists() || root.join(here).join(w).exists()
            } else {
                md_names.iter().any(|m| m == w)
            };
            if !exists {
                out.push((n + 1, w.to_string()));
            }
        }
    }
    out
}

#[test]
fn every_cited_path_resolves_inside_the_repository() {
    let files = scanned_files();
    let tops = top_level();
    let md_names: Vec<String> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "md"))
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut bad = Vec::new();
    for rel in &files {
        let Ok(text) = std::fs::read_to_string(root().join(rel)) else {
            continue; // not text
        };
        for (line, w) in unresolved(rel, &text, &tops, &md_names) {
            bad.push(format!("{}:{line}: {w}", rel.display()));
        }
    }
    assert!(bad.is_empty(), "paths cited that are not in the repository:\n{}", bad.join("\n"));
}

#[test]
fn no_absolute_machine_paths() {
    let prefixes = machine_prefixes();
    let mut bad = Vec::new();
    for rel in scanned_files() {
        let Ok(text) = std::fs::read_to_string(root().join(&rel)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if let Some(p) = prefixes.iter().find(|p| line.contains(p.as_str())) {
                bad.push(format!("{}:{}: {p} in {:?}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "absolute machine paths or paths beside the checkout:\n{}", bad.join("\n"));
}

/// The scanner finds what it must and lets through what is not a citation.
#[test]
fn the_scanner_tells_citations_from_the_rest() {
    let tops = top_level();
    let md = vec!["README.md".to_string()];
    let rel = Path::new("src/wire/mux.rs");
    let miss = |text: &str| unresolved(rel, text, &tops, &md).into_iter().map(|(_, w)| w).collect::<Vec<_>>();
    assert_eq!(miss("// See PROTOCOL.md §3.1."), ["PROTOCOL.md"]);
    assert_eq!(
        miss("// captures in tests/fixtures/wire/no-such-capture.txt"),
        ["tests/fixtures/wire/no-such-capture.txt"]
    );
    assert_eq!(
        miss("include_str!(\"../../tests/fixtures/wire/nope.txt\")"),
        ["../../tests/fixtures/wire/nope.txt"]
    );
    // A path above the repository (a sibling folder of notes) is outside it, so unresolved.
    let outside = ["../sh", "ared/packer/NOTES.md"].concat();
    assert_eq!(miss(&format!("read {outside}")), [outside.as_str()]);
    assert!(miss("see docs/post-processor-amikey.md, README.md and src/wire/mux.rs.").is_empty());
    assert!(miss("include_str!(\"../../tests/fixtures/wire/gob-configspec-examples.txt\")").is_empty());
    assert!(
        miss("https://github.com/hashicorp/packer/blob/main/PROTOCOL.md and rpc/mux_broker.go").is_empty()
    );
    assert!(miss("format!(\"tests/fixtures/lint/bad/{}\", name); tests/*.rs").is_empty());
    assert!(machine_prefixes().iter().any(|p| ["x /wo", "rk/main y"].concat().contains(p.as_str())));
}
