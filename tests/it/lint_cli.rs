//! `amikey lint` on the command line: exit codes 0/1/2, compiler-style text with
//! `file:line:col` and a caret, the JSON shape, Packer-style `-var`/`-var-file`, and no panic on
//! any input file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn amikey() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_amikey"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = amikey().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fixture files of `dir` (sidecars aside), sorted. Fails the test when the directory is
/// unreadable or holds no fixture: a corpus that vanished must not pass as "nothing wrong".
fn files(dir: &str) -> Vec<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("fixture directory {dir} unreadable: {e}"))
        .map(|e| e.unwrap_or_else(|e| panic!("fixture directory {dir}: {e}")).path())
        .filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".expect"))
        .collect();
    assert!(!v.is_empty(), "fixture directory {dir} holds no fixture");
    v.sort();
    v
}

/// `(code, line)` from `# expect: AMK002 at 15` lines or the `.expect` sidecar.
fn expectations(path: &Path) -> Vec<(String, usize)> {
    let sidecar = PathBuf::from(format!("{}.expect", path.display()));
    let text = match std::fs::read_to_string(&sidecar) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: unreadable: {e}", path.display()))
        }
        Err(e) => panic!("{}: unreadable: {e}", sidecar.display()),
    };
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(['#', '/', ' ']);
            let l = l.strip_prefix("expect:").unwrap_or(l).trim();
            let (code, line) = l.split_once(" at ")?;
            Some((code.trim().to_string(), line.trim().parse().ok()?))
        })
        .filter(|(c, _)| c.starts_with("AMK"))
        .collect()
}

#[test]
fn every_bad_fixture_prints_its_code_at_file_line_col_with_a_caret_and_exits_1() {
    for f in files("tests/fixtures/lint/bad") {
        let want = expectations(&f);
        assert!(!want.is_empty(), "{}: no expectations", f.display());
        let rel = f.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().to_string_lossy().into_owned();
        let (code, out, err) = run(&["lint", &rel]);
        assert_eq!(code, 1, "{rel}: {out}{err}");
        for (c, line) in want {
            let head = out
                .lines()
                .position(|l| l.contains(&format!("[{c} ")))
                .unwrap_or_else(|| panic!("{rel}: {c} missing:\n{out}"));
            let loc = format!("--> {rel}:{line}:");
            assert!(out.contains(&loc), "{rel}: {c} not at line {line}:\n{out}");
            if c != "AMK000" || !out.contains("not UTF-8") {
                assert!(
                    out.lines().skip(head).take(6).any(|l| l.trim_end().ends_with('^')),
                    "{rel}: no caret:\n{out}"
                );
            }
        }
    }
}

#[test]
fn every_example_lints_clean() {
    let (code, out, err) = run(&["lint", "packer-examples"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 error(s), 0 warning(s)"), "{out}");
}

#[test]
fn json_output_has_files_findings_and_notes() {
    let (code, out, _) =
        run(&["lint", "--format", "json", "tests/fixtures/lint/bad/amk002-copy-uses-default-key.pkr.hcl"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["files"].as_array().unwrap().len(), 1);
    assert!(v["notes"].is_array());
    let f = &v["findings"][0];
    assert_eq!(f["code"], "AMK002");
    assert_eq!(f["rule"], "copy-uses-default-key");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["line"], 15);
    for k in ["file", "col", "message", "help"] {
        assert!(!f[k].is_null(), "{k} missing: {f}");
    }
}

#[test]
fn packer_style_var_and_var_file_change_the_result() {
    let t = "tests/fixtures/lint/bad/amk002-copy-uses-default-key.pkr.hcl";
    let (code, out, _) = run(&["lint", "-var", "key=alias/aws/ebs", t]);
    assert_eq!(code, 1);
    assert!(out.contains("AMK006"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let vf = dir.path().join("v.pkrvars.hcl");
    std::fs::write(&vf, "key = \"alias/aws/ebs\"\n").unwrap();
    let (code, out, _) = run(&["lint", "-var-file", vf.to_str().unwrap(), t]);
    assert_eq!(code, 1);
    assert!(out.contains("AMK006"), "{out}");
    let (code, out, _) = run(&["lint", "--var=key=alias/aws/ebs", t]);
    assert_eq!((code, out.contains("AMK006")), (1, true), "{out}");
}

#[test]
fn bad_inputs_exit_2_with_a_next_step() {
    let (code, _, err) = run(&["lint", "/nonexistent/t.pkr.hcl"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/t.pkr.hcl") && err.contains("check the path"), "{err}");
    let (code, _, err) = run(&["lint", "-var", "novalue", "packer-examples"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected NAME=VALUE"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["lint", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no Packer template"), "{err}");
    let vf = dir.path().join("bad.pkrvars.hcl");
    std::fs::write(&vf, "key = {{{\n").unwrap();
    let (code, _, err) = run(&["lint", "-var-file", vf.to_str().unwrap(), "packer-examples"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot parse var file"), "{err}");
    let (code, _, _) = run(&["lint"]);
    assert_eq!(code, 2, "no path is a usage error");
}

#[test]
fn garbage_files_never_panic() {
    for f in files("tests/fixtures/lint/garbage") {
        let (code, out, err) = run(&["lint", f.to_str().unwrap()]);
        assert!(matches!(code, 0..=2), "{}: exit {code}\n{out}{err}", f.display());
        assert!(!err.contains("panicked"), "{}: {err}", f.display());
    }
}

#[test]
fn help_teaches_examples_and_exit_codes() {
    let (code, out, _) = run(&["lint", "--help"]);
    assert_eq!(code, 0);
    for needle in ["Examples:", "-var-file", "Exit codes: 0", "AMK000"] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
}
