//! `amikey lint PATH…`: the command-line face of [`crate::lint`]. Parses `-var k=v` and
//! `-var-file F` (spelled as Packer spells them; `--var`/`--var-file` work too), runs
//! [`lint_paths`](crate::lint::lint_paths) and prints the report compiler-style or as JSON.
//! Owns only flag handling and the exit code; the rules and the reading of files are the lint
//! module's, and printing is [`super::output`]'s.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{CliError, Format, output};
use crate::lint::{self, VarInputs};

/// Examples and exit codes under `amikey lint --help`.
pub const AFTER_HELP: &str = "Examples:
  amikey lint build.pkr.hcl
  amikey lint packer/ -var-file prod.pkrvars.hcl -var region=eu-west-1
  amikey lint --format json templates/ | jq '.findings[] | {code, file, line}'

A template found in a directory also gets that directory's *.auto.pkrvars.hcl and
*.auto.pkrvars.json, as `packer build DIR` does. Packer's order (later wins): defaults, HCL var
files (auto ones by name, then -var-file), JSON var files (the same), then -var.

Rules AMK000-AMK014 are listed in the README (src/lint/rules.md). Values lint cannot evaluate
(env(), timestamp(), variables without a value) skip the rules that need them, with a note.

Exit codes: 0 no finding, 1 findings (errors or warnings), 2 the lint could not run (unreadable
path, bad var file, no template found, bad -var).";

/// `amikey lint` flags.
#[derive(Debug, Args)]
pub struct LintArgs {
    /// Template files or directories (`*.pkr.hcl`, `*.pkr.json`, legacy `*.json`). The
    /// `*.pkr.hcl` files of one directory are one template, as in Packer.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Set a template variable, as `packer build -var` (repeatable; later wins).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from a `.pkrvars.hcl` or `.json` file, as `packer build -var-file`
    /// (repeatable; after the directory's auto var files; `-var` wins over files).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
    /// Output format: compiler-style text, or JSON (`files`, `findings`, `notes`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Parses `NAME=VALUE` pairs (the value may contain `=`).
pub fn parse_vars(vars: &[String]) -> Result<Vec<(String, String)>, CliError> {
    vars.iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) if !k.trim().is_empty() => Ok((k.trim().to_string(), val.to_string())),
            _ => Err(CliError::Input(format!("-var {v:?}: expected NAME=VALUE, e.g. -var region=eu-west-1"))),
        })
        .collect()
}

/// The variable inputs of `-var`/`-var-file` flags.
pub fn var_inputs(vars: &[String], var_files: &[PathBuf]) -> Result<VarInputs, CliError> {
    Ok(VarInputs { vars: parse_vars(vars)?, var_files: var_files.to_vec() })
}

/// Packer spells its flags with one dash (`-var`, `-var-file`); clap wants two. Rewrites those
/// two (alone or with `=VALUE`) so `amikey lint -var k=v t.pkr.hcl` works as in Packer.
pub fn normalize_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some(s)
                if s == "-var"
                    || s == "-var-file"
                    || s.starts_with("-var=")
                    || s.starts_with("-var-file=") =>
            {
                format!("-{s}").into()
            }
            _ => a,
        })
        .collect()
}

/// Runs `amikey lint`.
pub async fn run(args: LintArgs) -> Result<ExitCode, CliError> {
    let inputs = var_inputs(&args.vars, &args.var_files)?;
    let report = lint::lint_paths(&args.paths, &inputs).map_err(|e| CliError::Input(e.to_string()))?;
    match args.format {
        Format::Text => output::stdout(&lint::render_text(&report)),
        Format::Json => output::stdout(&(lint::render_json(&report) + "\n")),
    }
    Ok(ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packer_style_single_dash_flags_are_rewritten() {
        let got =
            normalize_args(["amikey", "lint", "-var", "a=b", "-var-file=x.json", "-v", "t"].map(Into::into));
        let got: Vec<String> = got.into_iter().map(|s| s.into_string().unwrap()).collect();
        assert_eq!(got, ["amikey", "lint", "--var", "a=b", "--var-file=x.json", "-v", "t"]);
    }

    #[test]
    fn vars_need_a_name_and_an_equals_sign() {
        assert_eq!(parse_vars(&["k=a=b".into()]).unwrap(), [("k".to_string(), "a=b".to_string())]);
        assert!(parse_vars(&["novalue".into()]).is_err());
        assert!(parse_vars(&["=x".into()]).is_err());
    }
}
