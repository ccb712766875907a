//! Unit tests for the lint rules and front ends.

use super::*;

fn lint(name: &str, text: &str) -> LintReport {
    lint_source(name, text, &VarInputs::default())
}

fn codes(r: &LintReport) -> Vec<(&'static str, usize)> {
    r.findings.iter().map(|f| (f.code, f.line)).collect()
}

#[test]
fn smoke() {
    let r = lint(
        "a.pkr.hcl",
        "source \"amazon-ebs\" \"x\" {\n  region = \"us-east-1\"\n  encrypt_boot = true\n  ami_users = [\"111122223333\"]\n  snapshot_users = [\"111122223333\"]\n}\nbuild { sources = [\"source.amazon-ebs.x\"] }\n",
    );
    assert_eq!(codes(&r), vec![("AMK001", 3)], "{}", render_text(&r));
}
