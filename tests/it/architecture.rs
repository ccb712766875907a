//! The layering rules, checked on the source by module, so that crossing a layer fails a test:
//!
//! * `src/wire` (Packer's plugin protocol) imports nothing of the crate outside `wire`, and no
//!   AWS crate: only `src/postprocessor.rs` and `src/datasource.rs` compose it with the rest.
//! * `src/core` (the pure decide-core) imports nothing of the crate outside `core`, no `tokio`
//!   (nor `tokio_util`), no `aws_*` crate, and none of `std::fs`, `std::net`, `std::process`.
//!
//! Each `.rs` file is lexed (comments, strings and char literals dropped), every `use` tree is
//! expanded into full paths and every other path (`a::b::c`, macro paths, attribute paths) is
//! collected; `crate::`, `self::` and `super::` paths are resolved against the file's module
//! path (inline `mod x { … }` blocks included). Items under `#[cfg(test)]` (and files declared
//! by a `#[cfg(test)] mod x;`) are test code and exempt: the docs drift tests read files.
//! What the compiler can enforce (no `unsafe`, no `dbg!`, …) is in `Cargo.toml`'s `[lints]`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One token of Rust source, as far as paths are concerned.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    /// Any other punctuation character.
    Punct(char),
}

/// Tokens of `src`, without comments, string, byte-string, raw-string and char literals and
/// lifetimes; numbers are dropped as well.
fn lex(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_start = |ch: char| ch == '_' || ch.is_alphabetic();
    let ident_char = |ch: char| ch == '_' || ch.is_alphanumeric();
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1);
        } else if (ch == 'r' || ch == 'b' || ch == 'c') && raw_or_prefixed_string(&c, i).is_some() {
            i = raw_or_prefixed_string(&c, i).unwrap_or(i + 1);
        } else if ch == '\'' {
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                // A lifetime or label: drop it with its name.
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            while i < c.len()
                && (ident_char(c[i]) || c[i] == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
            {
                i += 1;
            }
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let mut word: String = c[start..i].iter().collect();
            if word == "r" && c.get(i) == Some(&'#') && c.get(i + 1).is_some_and(|&x| ident_start(x)) {
                let s = i + 1;
                i = s;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
                word = c[s..i].iter().collect();
            }
            out.push(Tok::Ident(word));
        } else if ch == ':' && next == Some(':') {
            out.push(Tok::Sep);
            i += 2;
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// The index after a `"…"` body starting at `i` (just after the opening quote).
fn skip_string(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// If a `b"…"`, `c"…"`, `b'…'`, `r"…"`, `r#"…"#`, `br#"…"#` or `cr"…"` literal starts at `i`, the
/// index after it.
fn raw_or_prefixed_string(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(c.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if c.get(j) == Some(&'r') {
        j += 1;
        let mut hashes = 0;
        while c.get(j) == Some(&'#') {
            hashes += 1;
            j += 1;
        }
        if c.get(j) != Some(&'"') {
            return None;
        }
        j += 1;
        while j < c.len() {
            if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                return Some(j + 1 + hashes);
            }
            j += 1;
        }
        return Some(j);
    }
    if j == i {
        return None;
    }
    match c.get(j) {
        Some('"') => Some(skip_string(c, j + 1)),
        Some('\'') if c[i] == 'b' => {
            let mut k = j + 1;
            if c.get(k) == Some(&'\\') {
                k += 2;
            } else {
                k += 1;
            }
            while k < c.len() && c[k] != '\'' {
                k += 1;
            }
            Some(k + 1)
        }
        _ => None,
    }
}

/// What one file refers to: resolved paths (`crate::…` absolute, with `crate` as first segment;
/// extern paths as written) and the child modules a `#[cfg(test)] mod x;` declares.
#[derive(Debug, Default)]
struct Refs {
    paths: BTreeSet<String>,
    test_children: BTreeSet<String>,
}

/// Resolves a path written in module `module` (segments below the crate root).
fn resolve(module: &[String], path: &[String]) -> Option<String> {
    let first = path.first()?;
    let mut abs: Vec<String> = match first.as_str() {
        "crate" => vec![],
        "self" => module.to_vec(),
        "super" => {
            let mut m = module.to_vec();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                m.pop()?;
                rest = &rest[1..];
            }
            m.extend(rest.iter().cloned());
            return Some(format!("crate::{}", m.join("::")).trim_end_matches("::").to_string());
        }
        "Self" => return None,
        _ => return Some(path.join("::")),
    };
    abs.extend(path[1..].iter().cloned());
    Some(format!("crate::{}", abs.join("::")).trim_end_matches("::").to_string())
}

/// Expands the `use` tree at `toks[*i..]` (after `use`, up to `;`) into full paths.
fn use_tree(toks: &[Tok], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        match toks.get(*i) {
            Some(Tok::Ident(w)) if w == "as" => {
                *i += 2; // `as name`
                out.push(path);
                return;
            }
            Some(Tok::Ident(w)) => {
                path.push(w.clone());
                *i += 1;
            }
            Some(Tok::Sep) => *i += 1,
            Some(Tok::Punct('*')) => {
                path.push("*".into());
                *i += 1;
                out.push(path);
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i) {
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        None => return,
                        _ => use_tree(toks, i, path.clone(), out),
                    }
                }
            }
            _ => {
                if !path.is_empty() {
                    out.push(path);
                }
                return;
            }
        }
    }
}

/// Every path `toks` refers to outside `#[cfg(test)]` items, resolved in module `module`.
fn refs(toks: &[Tok], module: &[String]) -> Refs {
    let mut r = Refs::default();
    // Inline modules: (brace depth at which the module's `{` was opened, name).
    let mut mods: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    let mut cfg_test = false;
    let mut i = 0;
    let here = |mods: &[(usize, String)]| {
        let mut m = module.to_vec();
        m.extend(mods.iter().map(|(_, n)| n.clone()));
        m
    };
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('#') => {
                // An attribute: `#[…]` or `#![…]`; note `cfg(test)`, collect its paths.
                let mut j = i + 1;
                if toks.get(j) == Some(&Tok::Punct('!')) {
                    j += 1;
                }
                if toks.get(j) == Some(&Tok::Punct('[')) {
                    let start = j;
                    let mut d = 0;
                    while j < toks.len() {
                        match toks[j] {
                            Tok::Punct('[') => d += 1,
                            Tok::Punct(']') => {
                                d -= 1;
                                if d == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                    let attr = &toks[start..j];
                    let is = |k: usize, w: &str| matches!(attr.get(k), Some(Tok::Ident(x)) if x == w);
                    if is(1, "cfg") && is(3, "test") && attr.get(4) == Some(&Tok::Punct(')')) {
                        cfg_test = true;
                    }
                    // The paths inside an attribute (`#[tokio::main]`) count, unless it belongs
                    // to a `#[cfg(test)]` item.
                    i = if cfg_test { j + 1 } else { start + 1 };
                    continue;
                }
                i += 1;
            }
            _ if cfg_test => {
                // Skip the whole `#[cfg(test)]` item: to its `;` or its closing brace.
                cfg_test = false;
                let (mut d, mut j) = (0usize, i);
                let mut name = None;
                while j < toks.len() {
                    match &toks[j] {
                        Tok::Ident(m) if m == "mod" && d == 0 && name.is_none() => {
                            if let Some(Tok::Ident(n)) = toks.get(j + 1) {
                                name = Some(n.clone());
                            }
                        }
                        Tok::Punct('{' | '(' | '[') => d += 1,
                        Tok::Punct(')' | ']') => d = d.saturating_sub(1),
                        Tok::Punct('}') => {
                            d = d.saturating_sub(1);
                            if d == 0 {
                                break;
                            }
                        }
                        Tok::Punct(';') if d == 0 => {
                            if let Some(n) = &name {
                                r.test_children.insert(n.clone());
                            }
                            break;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                i = j + 1;
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some(Tok::Ident(n)), Some(Tok::Punct('{'))) = (toks.get(i + 1), toks.get(i + 2)) {
                    depth += 1;
                    mods.push((depth, n.clone()));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Tok::Ident(w) if w == "use" => {
                i += 1;
                let mut trees = Vec::new();
                if toks.get(i) == Some(&Tok::Sep) {
                    i += 1; // `use ::tokio::…`: an extern path
                }
                use_tree(toks, &mut i, Vec::new(), &mut trees);
                let m = here(&mods);
                r.paths.extend(trees.iter().filter_map(|p| resolve(&m, p)));
            }
            Tok::Ident(w) => {
                // A path starts here unless this identifier follows `::` (then it is a tail).
                let continues = i > 0 && toks[i - 1] == Tok::Sep;
                let mut path = vec![w.clone()];
                let mut j = i + 1;
                while toks.get(j) == Some(&Tok::Sep) {
                    match toks.get(j + 1) {
                        Some(Tok::Ident(n)) => {
                            path.push(n.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                if !continues
                    && path.len() > 1
                    && let Some(p) = resolve(&here(&mods), &path)
                {
                    r.paths.insert(p);
                }
                i = j;
            }
            Tok::Sep => {
                // A global path `::name::…` (extern crate), unless it is a tail (`x::<T>::y`).
                if let Some(Tok::Ident(n)) = toks.get(i + 1)
                    && !matches!(
                        i.checked_sub(1).and_then(|k| toks.get(k)),
                        Some(Tok::Ident(_) | Tok::Punct('>'))
                    )
                {
                    r.paths.insert(n.clone());
                }
                i += 1;
            }
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if mods.last().is_some_and(|(d, _)| *d == depth) {
                    mods.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Punct(_) => i += 1,
        }
    }
    r
}

/// The rule for one layer: which paths a file in it may not refer to.
struct Layer {
    /// Directory below `src/`, which is also the module name.
    dir: &'static str,
    /// Extern path prefixes banned in the layer (`tokio`, `aws_`, `std::fs` …).
    banned_extern: &'static [&'static str],
}

const WIRE: Layer = Layer { dir: "wire", banned_extern: &["aws_"] };
const CORE: Layer = Layer {
    dir: "core",
    banned_extern: &["tokio", "tokio_util", "aws_", "std::fs", "std::net", "std::process"],
};

/// Violations of `layer` by the paths a file refers to.
fn violations(layer: &Layer, paths: &BTreeSet<String>) -> Vec<String> {
    let own = format!("crate::{}", layer.dir);
    paths
        .iter()
        .filter(|p| {
            if *p == "crate" || p.starts_with("crate::") {
                // Inside the crate only the layer itself is allowed.
                *p != &own && !p.starts_with(&format!("{own}::"))
            } else {
                layer.banned_extern.iter().any(|b| {
                    if b.ends_with('_') {
                        p.starts_with(b)
                    } else {
                        *p == *b || p.starts_with(&format!("{b}::"))
                    }
                })
            }
        })
        .cloned()
        .collect()
}

/// The module path of a file below `src/` (`src/wire/mux.rs` → `wire::mux`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut m: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if m.last().is_some_and(|l| l == "mod") {
        m.pop();
    }
    m
}

/// Every `.rs` file below `dir`, sorted; fails on an unreadable directory.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap_or_else(|e| panic!("{}: {e}", d.display())).path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Checks every non-test file of `layer`; returns `file: path` violations.
fn check_layer(layer: &Layer) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src.join(layer.dir));
    assert!(
        files.len() >= 3,
        "src/{} holds only {} Rust files: is the layout still right?",
        layer.dir,
        files.len()
    );
    // Files that a `#[cfg(test)] mod x;` declares are test code.
    let mut test_files = BTreeSet::new();
    let mut parsed = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let r = refs(&lex(&text), &module_of(&src, f));
        let dir = if f.file_name().is_some_and(|n| n == "mod.rs") {
            f.parent().map(Path::to_path_buf)
        } else {
            Some(f.with_extension(""))
        };
        for child in &r.test_children {
            if let Some(d) = &dir {
                test_files.insert(d.join(format!("{child}.rs")));
                test_files.insert(d.join(child).join("mod.rs"));
            }
        }
        parsed.push((f.clone(), r));
    }
    let mut out = Vec::new();
    for (f, r) in parsed {
        if test_files.iter().any(|t| f.starts_with(t.with_extension("")) || f == *t) {
            continue;
        }
        let rel = f.strip_prefix(&src).unwrap_or(&f).display().to_string();
        out.extend(violations(layer, &r.paths).into_iter().map(|p| format!("src/{rel}: {p}")));
    }
    out
}

#[test]
fn wire_imports_nothing_of_the_crate_outside_wire_and_no_aws() {
    let v = check_layer(&WIRE);
    assert!(
        v.is_empty(),
        "src/wire crosses its layer (it may use only crate::wire and no AWS crate):\n{}",
        v.join("\n")
    );
}

#[test]
fn core_does_no_io_no_async_no_aws_and_imports_only_core() {
    let v = check_layer(&CORE);
    assert!(
        v.is_empty(),
        "src/core crosses its layer (no crate module outside core, no tokio, no aws_* crate, no std::fs/net/process):\n{}",
        v.join("\n")
    );
}

/// The checker itself: each way of crossing a layer is caught, and what only looks like one
/// (comments, strings, test code, paths inside the layer) is not.
#[test]
fn the_checker_catches_each_way_of_crossing_a_layer() {
    let core: Vec<String> = vec!["core".into(), "verify".into()];
    let wire: Vec<String> = vec!["wire".into(), "mux".into()];
    let check =
        |layer: &Layer, module: &[String], src: &str| violations(layer, &refs(&lex(src), module).paths);
    // Caught.
    for (layer, module, src, want) in [
        (&CORE, &core, "use tokio::sync::mpsc;", "tokio::sync::mpsc"),
        (&CORE, &core, "use std::{fmt, fs::read};", "std::fs::read"),
        (&CORE, &core, "use std::{collections::BTreeMap, net};", "std::net"),
        (&CORE, &core, "fn f() { let _ = std::process::Command::new(\"x\"); }", "std::process::Command::new"),
        (&CORE, &core, "fn f() { aws_sdk_ec2::Client::new(); }", "aws_sdk_ec2::Client::new"),
        (&CORE, &core, "use ::tokio::time;", "tokio::time"),
        (&CORE, &core, "use crate::aws::gather;", "crate::aws::gather"),
        (&CORE, &core, "use super::super::engine as e;", "crate::engine"),
        (&CORE, &core, "#[tokio::main] async fn main() {}", "tokio::main"),
        (&WIRE, &wire, "use crate::{wire::codec, aws};", "crate::aws"),
        (&WIRE, &wire, "fn f() -> crate::core::report::Report { todo!() }", "crate::core::report::Report"),
        (&WIRE, &vec!["wire".into()], "use super::postprocessor;", "crate::postprocessor"),
        (&WIRE, &wire, "mod inner { use super::super::super::engine; }", "crate::engine"),
        (&WIRE, &wire, "use aws_sdk_kms as kms;", "aws_sdk_kms"),
        (&WIRE, &wire, "#[cfg(feature = \"x\")] use crate::cli;", "crate::cli"),
    ] {
        let got = check(layer, module, src);
        assert!(got.iter().any(|g| g == want), "{src:?}: want {want:?}, got {got:?}");
    }
    // Not crossings.
    for (layer, module, src) in [
        (&CORE, &core, "// use tokio::net;\n/* std::fs::read */ fn f() {}"),
        (
            &CORE,
            &core,
            "const S: &str = \"crate::aws tokio::spawn std::fs\"; const R: &str = r#\"std::net\"#;",
        ),
        (&CORE, &core, "fn f<'a>(x: &'a str) -> char { let _ = b'\"'; '\"' }"),
        (&CORE, &core, "use std::{collections::BTreeMap, fmt::Write as _, io::Read};"),
        (&CORE, &core, "use super::artifact::AmiSet; use crate::core::config::FIELDS; use self::x::Y;"),
        (
            &CORE,
            &core,
            "#[cfg(test)]\nmod tests { use std::fs; use crate::aws; #[tokio::test] async fn t() {} }",
        ),
        (&CORE, &core, "#[cfg(test)]\n#[allow(dead_code)]\nfn helper() { std::fs::read(\"x\").unwrap(); }"),
        (&CORE, &core, "fn f() { let v: Vec<u8> = Vec::<u8>::new(); let _ = serde_json::to_string(&v); }"),
        (
            &WIRE,
            &wire,
            "use super::codec::{self, Frame}; use crate::wire::cty; use tokio::net::UnixListener;",
        ),
    ] {
        let got = check(layer, module, src);
        assert!(got.is_empty(), "{src:?}: flagged {got:?}");
    }
    let r = refs(&lex("#[cfg(test)]\nmod tests;\nmod real;\n#[cfg(test)]\npub(crate) mod fixtures;"), &core);
    assert_eq!(r.test_children.iter().collect::<Vec<_>>(), ["fixtures", "tests"]);
}
