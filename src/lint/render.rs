//! Renders a [`LintReport`]: compiler-style text (`file:line:col`, rule code, message, the
//! source line with a caret, a `help:` line) or JSON. Pure: returns strings, prints nothing.

use std::fmt::Write as _;

use super::{LintReport, Severity};

/// Compiler-style text, ending with a summary line.
///
/// ```text
/// error[AMK002 copy-uses-default-key]: kms_key_id only applies to …
///   --> multi.pkr.hcl:12:3
///    |
/// 12 |   ami_regions = ["eu-west-1"]
///    |   ^
///    = help: add region_kms_key_ids = { … }
/// ```
pub fn render_text(report: &LintReport) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let num = f.line.to_string();
        let pad = " ".repeat(num.len());
        let _ = writeln!(out, "{sev}[{} {}]: {}", f.code, f.rule, f.message);
        let _ = writeln!(out, "{pad}--> {}:{}:{}", f.file, f.line, f.col);
        if !f.source_line.is_empty() {
            let line: String = f.source_line.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{num} | {}", line.trim_end());
            let caret = " ".repeat(f.col.saturating_sub(1).min(line.chars().count()));
            let _ = writeln!(out, "{pad} | {caret}^");
        }
        let _ = writeln!(out, "{pad} = help: {}", f.help);
        out.push('\n');
    }
    for n in &report.notes {
        let _ = writeln!(out, "note: {}:{}:{}: {}", n.file, n.line, n.col, n.message);
    }
    if !report.var_files.is_empty() {
        let _ =
            writeln!(out, "variables from: {} (in Packer's order, later wins)", report.var_files.join(", "));
    }
    let errors = report.findings.iter().filter(|f| f.severity == Severity::Error).count();
    let warnings = report.findings.len() - errors;
    let _ = writeln!(
        out,
        "{} file(s) checked: {errors} error(s), {warnings} warning(s), {} note(s)",
        report.files.len(),
        report.notes.len()
    );
    out
}

/// The report as pretty JSON (`files`, `findings`, `notes`).
pub fn render_json(report: &LintReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
