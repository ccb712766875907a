//! `amikey lint`: static checks of Packer templates for KMS-encrypted, shared AMI pipelines,
//! before a build starts (packer-plugin-amazon #270, packer #8271, #12683: today these mistakes
//! surface at the very end of a build).
//!
//! Owns: the template model ([`Template`], built by the [`hcl`] and [`json`] front ends), the
//! rules over it, the report type and the one function that reads files ([`lint_paths`]).
//! Must not know: AWS (no calls, no SDK types), the CLI (the caller prints and exits).
//!
//! # Layout
//! - `mod.rs`: model, rules (pure), report, entry points.
//! - [`hcl`]: `.pkr.hcl` parsing and static evaluation (variables, locals, pure functions).
//! - [`json`]: a position-tracking JSON parser, `.pkr.json` (HCL2 JSON) and legacy JSON templates.
//! - [`render`]: compiler-style text and JSON.
//!
//! Values that cannot be evaluated statically (`timestamp()`, environment lookups, variables
//! without a value) become [`Val::Unknown`]: rules that need them are skipped and a note says so.
//!
//! # Rules
//!
//! | code | slug | severity | what |
//! |---|---|---|---|
//! | AMK000 | syntax-error | error | the file cannot be parsed as a template |
//! | AMK001 | encrypt-boot-shared-without-key | error | `encrypt_boot = true`, sharing, no key: AMIs get `aws/ebs`, which cannot be shared |
//! | AMK002 | copy-uses-default-key | error | `kms_key_id` + `ami_regions` + sharing without a `region_kms_key_ids` entry: copies get `aws/ebs` |
//! | AMK003 | region-keys-mismatch | error | `region_kms_key_ids` misses a region of `ami_regions`, or names one that is not in it |
//! | AMK004 | build-region-in-region-keys | warning | `region_kms_key_ids` names the build region: Packer 1.6.6 rejects it |
//! | AMK005 | key-region-mismatch | error | a key ARN's region differs from the region it is used for |
//! | AMK006 | aws-managed-key | error | `alias/aws/ebs` or any `alias/aws/*`: AWS-managed keys cannot be shared |
//! | AMK007 | ami-users-without-snapshot-users | warning | accounts in `ami_users` but not in `snapshot_users` cannot copy the AMI |
//! | AMK008 | org-sharing-without-ssm | warning | org/OU sharing without `ssm_path`: consumers cannot learn the AMI ids and key |
//! | AMK009 | amikey-key-disagrees | error | amikey's intended key for a region differs from the builder's |
//! | AMK010 | chain-destroys-amis | error | `keep_input_artifact = false` lets Packer deregister the AMIs |
//! | AMK011 | amikey-after-other-artifact | error | amikey follows a post-processor that does not pass the AMIs through |
//! | AMK012 | launch-mapping-key-differs | warning | a launch volume key that can break the build (a second key with `encrypt_boot`) or the result (without it) |
//! | AMK013 | amikey-unknown-key | error | a key the amikey post-processor does not accept |
//! | AMK014 | amikey-invalid-value | error | an amikey value of the wrong type or outside its allowed values |
//!
//! The same table, with reasoning and examples, is in `src/lint/rules.md`.

pub mod hcl;
pub mod intent;
pub mod json;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::core::config::{FIELDS, FieldKind};

pub use render::{render_json, render_text};

/// Variable inputs, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct VarInputs {
    /// `-var k=v`, in order.
    pub vars: Vec<(String, String)>,
    /// `-var-file PATH` (`.pkrvars.hcl`, `.hcl` or `.json`), in order.
    pub var_files: Vec<PathBuf>,
}

/// Errors that stop `lint` before it can report (exit code 2). Template problems are findings.
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    /// A path given on the command line or one found in a directory could not be read.
    #[error("cannot read {path}: {source}; check the path and its permissions")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A `-var-file` could not be parsed.
    #[error("cannot parse var file {path}: {message}; fix the file or drop -var-file")]
    VarFile {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A template does not parse (`preflight` needs the model; `lint` reports AMK000 instead).
    #[error("{file}: {message}; run `amikey lint` on it and fix the syntax first")]
    Invalid {
        /// `file:line:col`.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// No template was found under the given paths.
    #[error(
        "no Packer template (*.pkr.hcl, *.pkr.json, *.json) found in {paths}; pass a template file or a directory holding one"
    )]
    NoTemplates {
        /// The paths, comma-separated.
        paths: String,
    },
}

/// Severity of a finding. Both make `lint` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The build will fail late or produce AMIs consumers cannot use.
    Error,
    /// Likely a mistake; check it.
    Warning,
}

/// A rule: stable code, slug and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    /// `AMK0xx`.
    pub code: &'static str,
    /// kebab-case name.
    pub slug: &'static str,
    /// Severity.
    pub severity: Severity,
}

const fn rule(code: &'static str, slug: &'static str, severity: Severity) -> Rule {
    Rule { code, slug, severity }
}

use Severity::{Error as E, Warning as W};

/// AMK000.
pub const SYNTAX: Rule = rule("AMK000", "syntax-error", E);
/// AMK001.
pub const ENCRYPT_BOOT_SHARED_NO_KEY: Rule = rule("AMK001", "encrypt-boot-shared-without-key", E);
/// AMK002.
pub const COPY_DEFAULT_KEY: Rule = rule("AMK002", "copy-uses-default-key", E);
/// AMK003.
pub const REGION_KEYS_MISMATCH: Rule = rule("AMK003", "region-keys-mismatch", E);
/// AMK004.
pub const BUILD_REGION_IN_REGION_KEYS: Rule = rule("AMK004", "build-region-in-region-keys", W);
/// AMK005.
pub const KEY_REGION_MISMATCH: Rule = rule("AMK005", "key-region-mismatch", E);
/// AMK006.
pub const AWS_MANAGED_KEY: Rule = rule("AMK006", "aws-managed-key", E);
/// AMK007.
pub const AMI_USERS_NO_SNAPSHOT_USERS: Rule = rule("AMK007", "ami-users-without-snapshot-users", W);
/// AMK008.
pub const ORG_SHARING_NO_SSM: Rule = rule("AMK008", "org-sharing-without-ssm", W);
/// AMK009.
pub const AMIKEY_KEY_DISAGREES: Rule = rule("AMK009", "amikey-key-disagrees", E);
/// AMK010.
pub const CHAIN_DESTROYS_AMIS: Rule = rule("AMK010", "chain-destroys-amis", E);
/// AMK011.
pub const AMIKEY_AFTER_OTHER: Rule = rule("AMK011", "amikey-after-other-artifact", E);
/// AMK012.
pub const LAUNCH_KEY_DIFFERS: Rule = rule("AMK012", "launch-mapping-key-differs", W);
/// AMK013.
pub const AMIKEY_UNKNOWN_KEY: Rule = rule("AMK013", "amikey-unknown-key", E);
/// AMK014.
pub const AMIKEY_INVALID_VALUE: Rule = rule("AMK014", "amikey-invalid-value", E);

/// Every rule, in code order (for docs and tests).
pub const RULES: &[Rule] = &[
    SYNTAX,
    ENCRYPT_BOOT_SHARED_NO_KEY,
    COPY_DEFAULT_KEY,
    REGION_KEYS_MISMATCH,
    BUILD_REGION_IN_REGION_KEYS,
    KEY_REGION_MISMATCH,
    AWS_MANAGED_KEY,
    AMI_USERS_NO_SNAPSHOT_USERS,
    ORG_SHARING_NO_SSM,
    AMIKEY_KEY_DISAGREES,
    CHAIN_DESTROYS_AMIS,
    AMIKEY_AFTER_OTHER,
    LAUNCH_KEY_DIFFERS,
    AMIKEY_UNKNOWN_KEY,
    AMIKEY_INVALID_VALUE,
];

/// A 1-based line and column (column counted in characters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Pos {
    /// Index of the file within a multi-file HCL template (a directory); 0 otherwise.
    #[serde(skip)]
    pub file: usize,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl Pos {
    /// The position of byte `offset` in `text` (clamped to the text).
    pub fn of_offset(text: &str, offset: usize) -> Pos {
        let mut line = 1;
        let mut col = 1;
        for (i, c) in text.char_indices() {
            if i >= offset {
                break;
            }
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        Pos { file: 0, line, col }
    }
}

/// A statically evaluated value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// Could not be evaluated (function without implementation, variable without value, …).
    Unknown(String),
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// A list or tuple.
    List(Vec<Val>),
    /// A map or object.
    Map(BTreeMap<String, Val>),
}

impl Val {
    fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    fn scalar_string(&self) -> Option<String> {
        match self {
            Val::Str(s) => Some(s.clone()),
            Val::Bool(b) => Some(b.to_string()),
            Val::Num(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn is_unknown(&self) -> bool {
        match self {
            Val::Unknown(_) => true,
            Val::List(items) => items.iter().any(Val::is_unknown),
            Val::Map(m) => m.values().any(Val::is_unknown),
            _ => false,
        }
    }
}

/// One attribute: where its key is, its value, and where each literal map entry is.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    /// Position of the key.
    pub pos: Pos,
    /// The evaluated value.
    pub val: Val,
    /// Positions of the keys of a literal object value (for `region_kms_key_ids` entries).
    pub entries: BTreeMap<String, Pos>,
}

/// A builder (`source`) or post-processor block, after evaluation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Block {
    /// Builder or post-processor type (`amazon-ebs`, `amikey`, `manifest`).
    pub kind: String,
    /// Builder name used by `only`/`except` (`amazon-ebs.x` in HCL2, `name` or `type` in JSON).
    pub name: String,
    /// Position of the block's type label.
    pub pos: Pos,
    /// Attributes by key.
    pub attrs: BTreeMap<String, Attr>,
    /// Nested blocks (`launch_block_device_mappings`), in order.
    pub blocks: Vec<(String, Block)>,
}

/// One `build`: its builders and post-processor chains.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Build {
    /// Builders with build-level overrides applied.
    pub builders: Vec<Block>,
    /// Post-processor chains (a single post-processor is a chain of one).
    pub chains: Vec<Vec<Block>>,
}

/// A parsed and evaluated template.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    /// Builds.
    pub builds: Vec<Build>,
    /// `packer { required_plugins { amazon = … } }` is present: a current amazon plugin, which
    /// accepts the build region in `region_kms_key_ids`.
    pub requires_amazon_plugin: bool,
    /// Notes from the front end (constructs skipped).
    pub notes: Vec<(Pos, String)>,
    /// Findings from the front end (syntax errors).
    pub findings: Vec<RawFinding>,
}

/// A finding before it is tied to a file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFinding {
    /// Rule.
    pub rule: Rule,
    /// Position.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub help: String,
}

/// One finding in the report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// File name as given.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
    /// `AMK0xx`.
    pub code: &'static str,
    /// Rule slug.
    pub rule: &'static str,
    /// Severity.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub help: String,
    /// The source line, for carets.
    #[serde(skip)]
    pub source_line: String,
}

/// A note: something skipped, not a finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Note {
    /// File name as given.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
    /// What was skipped and why.
    pub message: String,
}

/// The result of linting: findings and notes, sorted by file, line, column, code.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LintReport {
    /// Files linted, sorted.
    pub files: Vec<String>,
    /// Var files read (auto var files and `-var-file`s), in the order Packer applies them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub var_files: Vec<String>,
    /// Findings.
    pub findings: Vec<Finding>,
    /// Notes (do not affect the exit code).
    pub notes: Vec<Note>,
}

impl LintReport {
    /// 0 when there is no finding, 1 otherwise. (2, for [`LintError`], is the caller's.)
    pub fn exit_code(&self) -> i32 {
        if self.findings.is_empty() { 0 } else { 1 }
    }

    fn merge(&mut self, other: LintReport) {
        self.files.extend(other.files);
        for v in other.var_files {
            if !self.var_files.contains(&v) {
                self.var_files.push(v);
            }
        }
        self.findings.extend(other.findings);
        self.notes.extend(other.notes);
    }

    fn finish(&mut self) {
        self.files.sort();
        self.files.dedup();
        self.findings.sort();
        self.findings.dedup();
        self.notes.sort();
        self.notes.dedup();
    }
}

/// A variable value from the command line or a var file.
#[derive(Debug, Clone, PartialEq)]
pub enum VarValue {
    /// `-var k=v`: a string, converted according to the variable's declared type.
    Cli(String),
    /// From a var file: already typed.
    Typed(::hcl::Value),
}

/// Variable values in precedence order (later wins): var files, then `-var`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadedVars {
    /// `(name, value)`.
    pub values: Vec<(String, VarValue)>,
}

impl LoadedVars {
    /// `-var` values only (what [`lint_source`] can use without reading files).
    pub fn from_cli(vars: &VarInputs) -> Self {
        let values = vars.vars.iter().map(|(k, v)| (k.clone(), VarValue::Cli(v.clone()))).collect();
        LoadedVars { values }
    }

    /// The last value given for `name`.
    pub fn get(&self, name: &str) -> Option<&VarValue> {
        self.values.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// Lints files and directories. Directories are walked (sorted, hidden entries and `target`
/// skipped) for `*.pkr.hcl`, `*.pkr.json` and `*.json`; a `.json` without `builders`, `source`
/// or `build` is not a template and is skipped with a note. The `*.pkr.hcl` files of one
/// directory are one template, as in Packer, unless each has its own `build` block (a folder of
/// standalone examples). A template found in a directory also gets that directory's
/// `*.auto.pkrvars.hcl` / `*.auto.pkrvars.json`, as `packer build DIR` does (see
/// [`var_file_order`]). The only function here that reads files.
pub fn lint_paths(paths: &[PathBuf], vars: &VarInputs) -> Result<LintReport, LintError> {
    let split = template_groups(paths)?;
    let mut report = LintReport::default();
    for group in split {
        let (loaded, var_files) = load_vars(vars, &group.auto_var_files)?;
        let mut texts = Vec::new();
        for file in &group.files {
            let bytes =
                std::fs::read(file).map_err(|source| LintError::Read { path: file.clone(), source })?;
            let name = file.display().to_string();
            match String::from_utf8(bytes) {
                Ok(text) => texts.push((name, text)),
                Err(_) => {
                    report.files.push(name.clone());
                    report.findings.push(finding(
                        &name,
                        "",
                        RawFinding {
                            rule: SYNTAX,
                            pos: Pos { file: 0, line: 1, col: 1 },
                            message: "the file is not UTF-8 text".into(),
                            help: "pass a Packer template (.pkr.hcl, .pkr.json or JSON)".into(),
                        },
                    ));
                }
            }
        }
        let mut r = lint_group(&texts, &loaded);
        if !texts.is_empty() {
            r.var_files = var_files;
        }
        for (file, beside) in &group.unloaded_auto {
            let names = beside.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
            r.notes.push(Note {
                file: file.display().to_string(),
                line: 1,
                col: 1,
                message: format!(
                    "{names} beside it not loaded: Packer loads *.auto.pkrvars.* only for a directory \
                     (`packer build DIR`); lint the directory to include them"
                ),
            });
        }
        report.merge(r);
    }
    report.finish();
    Ok(report)
}

/// One template found under the paths: its files, and the auto var files that go with it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Group {
    /// A JSON file, or the `*.pkr.hcl` files Packer reads together.
    files: Vec<PathBuf>,
    /// `*.auto.pkrvars.hcl` / `*.auto.pkrvars.json` of the directory the template was found in,
    /// sorted by name (empty for a file named on the command line, as in Packer).
    auto_var_files: Vec<PathBuf>,
    /// For an HCL file named on the command line: the auto var files beside it, which Packer
    /// does not load for a single file (said in a note).
    unloaded_auto: Vec<(PathBuf, Vec<PathBuf>)>,
}

/// Is `path` an auto var file Packer loads from a template directory?
fn is_auto_var_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.ends_with(".auto.pkrvars.hcl") || name.ends_with(".auto.pkrvars.json")
}

/// The auto var files directly in `dir`, sorted by name (Go's `ioutil.ReadDir` order).
fn auto_var_files(dir: &Path) -> Result<Vec<PathBuf>, LintError> {
    let rd = std::fs::read_dir(dir).map_err(|source| LintError::Read { path: dir.to_path_buf(), source })?;
    let mut out = Vec::new();
    for entry in rd {
        let p = entry.map_err(|source| LintError::Read { path: dir.to_path_buf(), source })?.path();
        if is_auto_var_file(&p) && !p.is_dir() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The var files in the order Packer applies them (later wins), as `hcl2template`'s parser does
/// (Packer 1.6 to 1.9): first every HCL file, then every JSON file; within each, the directory's
/// auto var files (sorted by name) before the `-var-file`s (in command-line order). So a
/// `-var-file x.pkrvars.hcl` is overridden by a `*.auto.pkrvars.json`, as in Packer. A
/// `-var-file` whose name does not end in `.json` is read as HCL. `-var` comes after all files.
pub fn var_file_order(auto: &[PathBuf], cli: &[PathBuf]) -> Vec<PathBuf> {
    let is_json = |p: &&PathBuf| p.extension().is_some_and(|e| e == "json");
    let hcl = auto.iter().filter(|p| !is_json(p)).chain(cli.iter().filter(|p| !is_json(p)));
    let json = auto.iter().filter(is_json).chain(cli.iter().filter(is_json));
    hcl.chain(json).cloned().collect()
}

/// The templates under `paths`: each a JSON file, or the `*.pkr.hcl` files Packer reads together.
fn template_groups(paths: &[PathBuf]) -> Result<Vec<Group>, LintError> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, true, &mut files)?;
    }
    if files.is_empty() {
        let paths = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(LintError::NoTemplates { paths });
    }
    files.sort();
    files.dedup();
    // Packer reads every *.pkr.hcl of a directory as one template (variables in one file, sources
    // in another); JSON files and files named on the command line stand alone. A directory
    // whose files each have their own `build` block is a set of standalone templates (an
    // examples folder) and is linted file by file.
    let mut groups: BTreeMap<(PathBuf, bool), Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        let is_hcl = !f.to_string_lossy().ends_with(".json");
        let walked = !paths.iter().any(|p| p == &f);
        let key = match (is_hcl && walked, f.parent()) {
            (true, Some(dir)) => (dir.to_path_buf(), true),
            _ => (f.clone(), false),
        };
        groups.entry(key).or_default().push(f);
    }
    let mut split: Vec<Group> = Vec::new();
    for ((key, is_dir), group) in groups {
        let standalone = group.len() > 1
            && group.iter().all(|f| {
                std::fs::read_to_string(f).is_ok_and(|t| {
                    t.lines().any(|l| {
                        let l = l.trim_start();
                        l.starts_with("build ") || l.starts_with("build{")
                    })
                })
            });
        // HCL2 templates found in a directory get its auto var files (legacy JSON has none).
        let hcl2 = |f: &Path| {
            let n = f.to_string_lossy();
            n.ends_with(".pkr.hcl") || n.ends_with(".pkr.json")
        };
        let dir_of = |f: &Path| match f.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let walked = is_dir || !paths.iter().any(|p| p == &key);
        let auto = match group.first() {
            Some(f) if walked && hcl2(f) => auto_var_files(&dir_of(f))?,
            _ => Vec::new(),
        };
        let mut unloaded = Vec::new();
        if !walked && key.to_string_lossy().ends_with(".pkr.hcl") {
            let beside: Vec<PathBuf> = auto_var_files(&dir_of(&key))
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.file_name().map(PathBuf::from))
                .collect();
            if !beside.is_empty() {
                unloaded.push((key.clone(), beside));
            }
        }
        if standalone {
            split.extend(group.into_iter().map(|f| Group {
                files: vec![f],
                auto_var_files: auto.clone(),
                unloaded_auto: Vec::new(),
            }));
        } else {
            split.push(Group { files: group, auto_var_files: auto, unloaded_auto: unloaded });
        }
    }
    Ok(split)
}

/// Reads and evaluates the templates under `paths` (as [`lint_paths`] finds them, auto var files
/// included) for `preflight`: the model, not findings. A file that does not parse is an error
/// naming it.
pub fn load_templates(paths: &[PathBuf], vars: &VarInputs) -> Result<Vec<Template>, LintError> {
    let mut out = Vec::new();
    for group in template_groups(paths)? {
        let (loaded, _) = load_vars(vars, &group.auto_var_files)?;
        let mut texts = Vec::new();
        for file in &group.files {
            let text = std::fs::read_to_string(file)
                .map_err(|source| LintError::Read { path: file.clone(), source })?;
            texts.push((file.display().to_string(), text));
        }
        let Some((first, first_text)) = texts.first() else { continue };
        let template = if first.ends_with(".json") {
            match json::parse_template(first_text, &loaded) {
                Some(t) => t,
                None => continue,
            }
        } else {
            let refs: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
            hcl::parse_templates(&refs, &loaded)
        };
        if let Some(f) = template.findings.iter().find(|f| f.rule == SYNTAX) {
            let file = texts.get(f.pos.file).map_or(first.as_str(), |(n, _)| n.as_str());
            return Err(LintError::Invalid {
                file: format!("{file}:{}:{}", f.pos.line, f.pos.col),
                message: f.message.clone(),
            });
        }
        out.push(template);
    }
    Ok(out)
}

fn is_template_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    (name.ends_with(".pkr.hcl") || name.ends_with(".json")) && !name.ends_with(".pkrvars.json")
}

fn collect(path: &Path, explicit: bool, out: &mut Vec<PathBuf>) -> Result<(), LintError> {
    let meta =
        std::fs::metadata(path).map_err(|source| LintError::Read { path: path.to_path_buf(), source })?;
    if meta.is_dir() {
        let rd =
            std::fs::read_dir(path).map_err(|source| LintError::Read { path: path.to_path_buf(), source })?;
        let mut entries = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| LintError::Read { path: path.to_path_buf(), source })?;
            entries.push(entry.path());
        }
        entries.sort();
        for p in entries {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with('.') || name == "target" || name == "node_modules" {
                continue;
            }
            if p.is_dir() || is_template_name(&p) {
                collect(&p, false, out)?;
            }
        }
    } else if explicit || is_template_name(path) {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// The variable values of one template: its auto var files and the `-var-file`s in Packer's
/// order ([`var_file_order`]), then `-var`. Also the files read, in that order.
fn load_vars(vars: &VarInputs, auto: &[PathBuf]) -> Result<(LoadedVars, Vec<String>), LintError> {
    let mut values = Vec::new();
    let order = var_file_order(auto, &vars.var_files);
    for path in &order {
        let text =
            std::fs::read_to_string(path).map_err(|source| LintError::Read { path: path.clone(), source })?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            json::var_file(&text)
        } else {
            hcl::var_file(&text)
        };
        let parsed = parsed.map_err(|message| LintError::VarFile { path: path.clone(), message })?;
        values.extend(parsed.into_iter().map(|(k, v)| (k, VarValue::Typed(v))));
    }
    values.extend(vars.vars.iter().map(|(k, v)| (k.clone(), VarValue::Cli(v.clone()))));
    Ok((LoadedVars { values }, order.iter().map(|p| p.display().to_string()).collect()))
}

/// Lints one template held in memory. `name` decides the syntax (`.pkr.hcl` → HCL, else JSON)
/// and is used in positions; `vars.var_files` is ignored (pure: use [`lint_paths`] for files).
pub fn lint_source(name: &str, text: &str, vars: &VarInputs) -> LintReport {
    let mut report = lint_loaded(name, text, &LoadedVars::from_cli(vars));
    report.finish();
    report
}

fn lint_loaded(name: &str, text: &str, vars: &LoadedVars) -> LintReport {
    lint_group(&[(name.to_string(), text.to_string())], vars)
}

/// Lints one template: a JSON file, or one or more `.pkr.hcl` files that Packer reads together
/// (a directory is one template: variables in one file may be used by sources in another).
fn lint_group(files: &[(String, String)], vars: &LoadedVars) -> LintReport {
    let mut report =
        LintReport { files: files.iter().map(|(n, _)| n.clone()).collect(), ..LintReport::default() };
    let Some((first_name, first_text)) = files.first() else {
        return report;
    };
    let template = if first_name.ends_with(".json") {
        match json::parse_template(first_text, vars) {
            Some(t) => t,
            None => {
                report.notes.push(Note {
                    file: first_name.clone(),
                    line: 1,
                    col: 1,
                    message: "not a Packer template (no `builders`, `source` or `build`); skipped".into(),
                });
                return report;
            }
        }
    } else {
        let texts: Vec<&str> = files.iter().map(|(_, t)| t.as_str()).collect();
        hcl::parse_templates(&texts, vars)
    };
    let lines: Vec<Vec<&str>> = files.iter().map(|(_, t)| t.lines().collect()).collect();
    let line_of =
        |p: Pos| lines.get(p.file).and_then(|l| l.get(p.line.saturating_sub(1))).copied().unwrap_or_default();
    let name_of = |p: Pos| files.get(p.file).map(|(n, _)| n.as_str()).unwrap_or(first_name);
    let mut raw = template.findings.clone();
    raw.extend(check(&template));
    for f in raw {
        let src = line_of(f.pos);
        report.findings.push(finding(name_of(f.pos), src, f));
    }
    for (pos, message) in template.notes {
        report.notes.push(Note { file: name_of(pos).to_string(), line: pos.line, col: pos.col, message });
    }
    report
}

fn finding(file: &str, source_line: &str, f: RawFinding) -> Finding {
    Finding {
        file: file.into(),
        line: f.pos.line,
        col: f.pos.col,
        code: f.rule.code,
        rule: f.rule.slug,
        severity: f.rule.severity,
        message: f.message,
        help: f.help,
        source_line: source_line.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Rules

/// Builder types whose artifact is a set of regional AMIs.
pub const AMI_BUILDERS: &[&str] = &["amazon-ebs", "amazon-ebssurrogate", "amazon-instance", "amazon-chroot"];

/// Post-processors that return their input artifact unchanged and force `keep` (Packer's
/// `manifest` and `shell-local` return `(source, true, true, nil)`), plus amikey itself.
pub const PASS_THROUGH: &[&str] = &["amikey", "manifest", "shell-local"];

/// Keys Packer accepts on every post-processor, besides the plugin's own.
const PP_COMMON_KEYS: &[&str] = &["keep_input_artifact", "only", "except", "name", "type"];

/// The attributes the rules read: a note is emitted when one of them cannot be evaluated.
pub const RELEVANT_KEYS: &[&str] = &[
    "region",
    "ami_regions",
    "encrypt_boot",
    "kms_key_id",
    "region_kms_key_ids",
    "ami_users",
    "ami_org_arns",
    "ami_ou_arns",
    "snapshot_users",
    "ssm_path",
    "keep_input_artifact",
    "encrypted",
    "on_violation",
    "check_key_policy",
];

/// Runs every rule over an evaluated template. Pure.
pub fn check(t: &Template) -> Vec<RawFinding> {
    let mut out = Vec::new();
    for build in &t.builds {
        for chain in &build.chains {
            for pp in chain.iter().filter(|p| p.kind == "amikey") {
                check_amikey_schema(pp, &mut out);
                check_amikey_blocks(pp, &mut out);
                check_amikey_keys(pp, &mut out);
            }
        }
        for b in build.builders.iter().filter(|b| AMI_BUILDERS.contains(&b.kind.as_str())) {
            let chains: Vec<&Vec<Block>> =
                build.chains.iter().filter(|c| chain_applies(c, &b.name)).collect();
            let amikeys: Vec<&Block> = chains
                .iter()
                .flat_map(|c| c.iter())
                .filter(|p| p.kind == "amikey" && applies(p, &b.name))
                .collect();
            check_builder(b, &amikeys, t.requires_amazon_plugin, &mut out);
            check_chains(b, &chains, &mut out);
        }
    }
    out.sort_by(|a, b| (a.pos, a.rule.code, &a.message).cmp(&(b.pos, b.rule.code, &b.message)));
    out.dedup();
    out
}

fn applies(pp: &Block, builder: &str) -> bool {
    let names = |k: &str| pp.list(k);
    if let Some(only) = names("only")
        && !only.is_empty()
        && !only.iter().any(|n| n == builder)
    {
        return false;
    }
    if let Some(except) = names("except")
        && except.iter().any(|n| n == builder)
    {
        return false;
    }
    true
}

fn chain_applies(chain: &[Block], builder: &str) -> bool {
    chain.first().is_some_and(|p| applies(p, builder))
}

impl Block {
    fn attr(&self, k: &str) -> Option<&Attr> {
        self.attrs.get(k)
    }

    fn val(&self, k: &str) -> Option<&Val> {
        self.attrs.get(k).map(|a| &a.val)
    }

    /// A known, non-empty string.
    fn string(&self, k: &str) -> Option<&str> {
        self.val(k).and_then(Val::as_str).filter(|s| !s.is_empty())
    }

    fn boolean(&self, k: &str) -> Option<bool> {
        match self.val(k)? {
            Val::Bool(b) => Some(*b),
            Val::Str(s) if s == "true" => Some(true),
            Val::Str(s) if s == "false" => Some(false),
            _ => None,
        }
    }

    /// A fully known list of scalars; `Some(vec![])` when absent or null.
    fn list(&self, k: &str) -> Option<Vec<String>> {
        match self.val(k) {
            None | Some(Val::Null) => Some(Vec::new()),
            Some(Val::List(items)) => items.iter().map(Val::scalar_string).collect(),
            _ => None,
        }
    }

    /// A map whose keys are known; values may be unknown (`None`).
    fn map(&self, k: &str) -> Option<BTreeMap<String, Option<String>>> {
        match self.val(k) {
            None | Some(Val::Null) => Some(BTreeMap::new()),
            Some(Val::Map(m)) => Some(m.iter().map(|(k, v)| (k.clone(), v.scalar_string())).collect()),
            _ => None,
        }
    }

    fn entry_pos(&self, k: &str, entry: &str) -> Pos {
        self.attr(k).map(|a| a.entries.get(entry).copied().unwrap_or(a.pos)).unwrap_or(self.pos)
    }

    fn pos_of(&self, k: &str) -> Pos {
        self.attr(k).map(|a| a.pos).unwrap_or(self.pos)
    }
}

fn push(out: &mut Vec<RawFinding>, rule: Rule, pos: Pos, message: String, help: impl Into<String>) {
    out.push(RawFinding { rule, pos, message, help: help.into() });
}

/// A KMS key reference, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyRef {
    /// Key id (UUID or `mrk-…`), with the ARN's region when given as an ARN.
    Id(String, Option<String>),
    /// Alias name without `alias/`, with the ARN's region when given as an ARN.
    Alias(String, Option<String>),
    /// Something else (left to Packer's own validation).
    Other,
}

fn parse_key(s: &str) -> KeyRef {
    if let Some(rest) = s.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        if let [_, "kms", region, _, resource] = parts.as_slice() {
            let region = Some(region.to_string()).filter(|r| !r.is_empty());
            if let Some(id) = resource.strip_prefix("key/") {
                return KeyRef::Id(id.to_string(), region);
            }
            if let Some(a) = resource.strip_prefix("alias/") {
                return KeyRef::Alias(a.to_string(), region);
            }
        }
        return KeyRef::Other;
    }
    if let Some(a) = s.strip_prefix("alias/") {
        return KeyRef::Alias(a.to_string(), None);
    }
    KeyRef::Id(s.to_string(), None)
}

fn is_aws_managed(s: &str) -> bool {
    matches!(parse_key(s), KeyRef::Alias(a, _) if a.starts_with("aws/"))
}

/// `Some(true)` same key, `Some(false)` different, `None` cannot tell statically (alias vs id).
fn same_key(a: &str, b: &str) -> Option<bool> {
    match (parse_key(a), parse_key(b)) {
        (KeyRef::Id(x, _), KeyRef::Id(y, _)) => Some(x == y),
        (KeyRef::Alias(x, _), KeyRef::Alias(y, _)) => Some(x == y),
        _ => None,
    }
}

fn arn_region(s: &str) -> Option<String> {
    crate::core::ids::pinned_key_region(s).map(str::to_string)
}

/// What a builder encrypts a region's AMI with.
#[derive(Debug, Clone, PartialEq)]
enum BuilderKey {
    /// The region's default EBS key (`aws/ebs` unless the account changed it).
    Default,
    /// This key.
    Key(String),
    /// Unknown statically.
    Unknown,
}

struct Sharing {
    ami_users: Vec<String>,
    snapshot_users: Vec<String>,
    orgs: Vec<String>,
    any: bool,
}

fn sharing(blocks: &[&Block]) -> Option<Sharing> {
    let mut s = Sharing { ami_users: vec![], snapshot_users: vec![], orgs: vec![], any: false };
    for b in blocks {
        s.ami_users.extend(b.list("ami_users")?);
        s.snapshot_users.extend(b.list("snapshot_users")?);
        s.orgs.extend(b.list("ami_org_arns")?);
        s.orgs.extend(b.list("ami_ou_arns")?);
    }
    s.any = !(s.ami_users.is_empty() && s.snapshot_users.is_empty() && s.orgs.is_empty());
    Some(s)
}

const SHARE_KEYS: &[&str] = &["ami_users", "ami_org_arns", "ami_ou_arns", "snapshot_users"];

fn first_share_attr(blocks: &[&Block]) -> Option<(String, Pos)> {
    blocks.iter().find_map(|b| {
        SHARE_KEYS.iter().find_map(|k| {
            b.attr(k)
                .filter(|a| !matches!(&a.val, Val::List(l) if l.is_empty()))
                .map(|a| (k.to_string(), a.pos))
        })
    })
}

/// What the rules of one AMI builder read: its keys, regions and sharing (builder ∪ the amikey
/// post-processors that apply to it), evaluated once.
struct BuilderCtx<'a> {
    b: &'a Block,
    kind: &'a str,
    amikeys: &'a [&'a Block],
    /// The builder and its amikey post-processors (sharing may be in either).
    all: Vec<&'a Block>,
    new_plugin: bool,
    encrypt_boot: Option<bool>,
    kms: Option<&'a str>,
    rk: Option<BTreeMap<String, Option<String>>>,
    build_region: Option<&'a str>,
    ami_regions: Option<Vec<String>>,
    /// `ami_regions` without the build region, sorted.
    copy_regions: Option<Vec<String>>,
    share: Option<Sharing>,
    shared: Option<bool>,
    share_at: Option<(String, Pos)>,
}

impl<'a> BuilderCtx<'a> {
    fn new(b: &'a Block, amikeys: &'a [&'a Block], new_plugin: bool) -> Self {
        let build_region = b.string("region");
        let ami_regions = b.list("ami_regions");
        let copy_regions = match (&ami_regions, build_region) {
            (Some(r), Some(br)) => {
                let set: BTreeSet<String> = r.iter().filter(|x| x.as_str() != br).cloned().collect();
                Some(set.into_iter().collect())
            }
            _ => None,
        };
        let mut all: Vec<&Block> = vec![b];
        all.extend(amikeys.iter().copied());
        let share = sharing(&all);
        let shared = share.as_ref().map(|s| s.any);
        let share_at = first_share_attr(&all);
        BuilderCtx {
            b,
            kind: &b.kind,
            amikeys,
            all,
            new_plugin,
            encrypt_boot: b.boolean("encrypt_boot"),
            kms: b.string("kms_key_id"),
            rk: b.map("region_kms_key_ids"),
            build_region,
            ami_regions,
            copy_regions,
            share,
            shared,
            share_at,
        }
    }

    /// The build region, then the copy regions.
    fn regions(&self) -> Vec<String> {
        let mut regions: Vec<String> = self.build_region.map(|r| vec![r.to_string()]).unwrap_or_default();
        regions.extend(self.copy_regions.clone().unwrap_or_default());
        regions
    }

    /// The key the builder encrypts region `r`'s AMI with (only known with `encrypt_boot`).
    fn builder_key(&self, r: &str) -> BuilderKey {
        if self.encrypt_boot != Some(true) {
            return BuilderKey::Unknown;
        }
        let Some(m) = &self.rk else {
            return BuilderKey::Unknown;
        };
        if self.build_region == Some(r) {
            if self.new_plugin
                && let Some(Some(k)) = m.get(r).filter(|k| k.as_deref() != Some(""))
            {
                return BuilderKey::Key(k.clone());
            }
            return match (self.kms, self.b.val("kms_key_id")) {
                (Some(k), _) => BuilderKey::Key(k.to_string()),
                (None, Some(v)) if v.is_unknown() => BuilderKey::Unknown,
                _ => BuilderKey::Default,
            };
        }
        match m.get(r) {
            Some(Some(k)) if !k.is_empty() => BuilderKey::Key(k.clone()),
            Some(Some(_)) | None => BuilderKey::Default,
            Some(None) => BuilderKey::Unknown,
        }
    }
}

/// The rules over one AMI builder, each a function of [`BuilderCtx`].
const BUILDER_RULES: &[fn(&BuilderCtx, &mut Vec<RawFinding>)] = &[
    aws_managed_builder_keys,
    builder_key_regions,
    encrypt_boot_shared_without_key,
    copy_uses_default_key,
    region_keys_mismatch,
    build_region_in_region_keys,
    ami_users_without_snapshot_users,
    org_sharing_without_ssm,
    amikey_key_disagrees,
    launch_mapping_keys,
];

fn check_builder(b: &Block, amikeys: &[&Block], new_plugin: bool, out: &mut Vec<RawFinding>) {
    let c = BuilderCtx::new(b, amikeys, new_plugin);
    for rule in BUILDER_RULES {
        rule(&c, out);
    }
}

/// AMK006: an AWS-managed key as the builder's `kms_key_id` or in its `region_kms_key_ids`.
fn aws_managed_builder_keys(c: &BuilderCtx, out: &mut Vec<RawFinding>) {
    if let Some(k) = c.kms
        && is_aws_managed(k)
    {
        push(
            out,
            AWS_MANAGED_KEY,
            c.b.pos_of("kms_key_id"),
            format!(
                "{} kms_key_id is the AWS-managed key `{k}`; AMIs encrypted with it cannot be shared with other accounts",
                c.kind
            ),
            "create a customer-managed key (aws kms create-key) whose policy allows the consumer accounts, and use its ARN or alias",
        );
    }
    for (r, k) in c.rk.iter().flatten() {
        if let Some(k) = k.as_deref()
            && is_aws_managed(k)
        {
            push(
                out,
                AWS_MANAGED_KEY,
                c.b.entry_pos("region_kms_key_ids", r),
                format!("region_kms_key_ids[\"{r}\"] is the AWS-managed key `{k}`; it cannot be shared"),
                format!("use a customer-managed key in {r}"),
            );
        }
    }
}

/// AMK005: a key ARN of the builder in another region than the one it encrypts.
fn builder_key_regions(c: &BuilderCtx, out: &mut Vec<RawFinding>) {
    for (r, k) in c.rk.iter().flatten() {
        if let Some(k) = k.as_deref()
            && let Some(kr) = arn_region(k)
            && kr != *r
        {
            push(
                out,
                KEY_REGION_MISMATCH,
                c.b.entry_pos("region_kms_key_ids", r),
                format!(
                    "region_kms_key_ids[\"{r}\"] is a key in {kr}; a KMS key can only encrypt in its own region (CopyImage fails with ResourceNotReady)"
                ),
                format!("use the ARN of a key in {r}, or a multi-Region replica (mrk-…) in {r}"),
            );
        }
    }
    if let (Some(k), Some(br)) = (c.kms, c.build_region)
        && let Some(kr) = arn_region(k)
        && kr != br
    {
        push(
            out,
            KEY_REGION_MISMATCH,
            c.b.pos_of("kms_key_id"),
            format!("kms_key_id is a key in {kr} but the build region is {br}"),
            format!("use a key in {br}; keys for other regions go in region_kms_key_ids"),
        );
    }
}

/// AMK001: `encrypt_boot` with sharing and no key at all.
fn encrypt_boot_shared_without_key(c: &BuilderCtx, out: &mut Vec<RawFinding>) {
    let rk_empty = c.rk.as_ref().is_some_and(BTreeMap::is_empty);
    if c.encrypt_boot == Some(true)
        && c.kms.is_none()
        && c.b.val("kms_key_id").is_none_or(|v| !v.is_unknown())
        && rk_empty
        && c.shared == Some(true)
    {
        let via = c.share_at.as_ref().map(|(k, _)| k.as_str()).unwrap_or("sharing");
        push(
            out,
            ENCRYPT_BOOT_SHARED_NO_KEY,
            c.b.pos_of("encrypt_boot"),
            format!(
                "encrypt_boot = true without kms_key_id encrypts with the account default key (aws/ebs), which cannot be shared, but `{via}` shares the AMIs"
            ),
            "set kms_key_id to a customer-managed key whose key policy allows the consumer accounts (and region_kms_key_ids for each of ami_regions)",
        );
    }
}

/// AMK002: shared copies encrypted with the default key (no `region_kms_key_ids` at all, or an
/// empty entry).
fn copy_uses_default_key(c: &BuilderCtx, out: &mut Vec<RawFinding>) {
    let (Some(copies), Some(m)) = (&c.copy_regions, &c.rk) else { return };
    if c.shared != Some(true) {
        return;
    }
    if m.is_empty() {
        if c.encrypt_boot == Some(true) && c.kms.is_some() && !copies.is_empty() {
            let br = c.build_region.unwrap_or_default();
            push(
                out,
                COPY_DEFAULT_KEY,
                c.b.pos_of("ami_regions"),
                format!(
                    "kms_key_id only applies to the build region {br}; the copies in {} would be encrypted with aws/ebs and sharing them fails at the end of the build (packer-plugin-amazon #270)",
                    copies.join(", ")
                ),
                format!(
                    "add region_kms_key_ids = {{ {} }}",
                    copies
                        .iter()
                        .map(|r| format!("\"{r}\" = \"<key ARN in {r}>\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        return;
    }
    for r in copies {
        if let Some(Some(k)) = m.get(r)
            && k.is_empty()
        {
            push(
                out,
                COPY_DEFAULT_KEY,
                c.b.entry_pos("region_kms_key_ids", r),
                format!(
                    "region_kms_key_ids[\"{r}\"] is empty, so the copy in {r} gets aws/ebs, which cannot be shared"
                ),
                format!("set a customer-managed key ARN in {r}"),
            );
        }
    }
}

/// AMK003: `region_kms_key_ids` misses a copy region, or names a region that is not copied to.
fn region_keys_mismatch(c: &BuilderCtx, out: &mut Vec<RawFinding>) {
    let (Some(copies), Some(m)) = (&c.copy_regions, &c.rk) else { return };
    if m.is_empty() {
        return;
    }
    let br = c.build_region.unwrap_or_default();
    for r in copies.iter().filter(|r| !m.contains_key(*r)) {
        push(
            out,
            REGION_KEYS_MISMATCH,
            c.b.pos_of("region_kms_key_ids"),
            format!("region_kms_key_ids has no key for {r}, which is in ami_regions; Packer rejects this"),
            format!("add \"{r}\" = \"<key ARN in {r}>\" to region_kms_key_ids"),
        );
    }
    for r in m.keys().filter(|r| r.as_str() != br && !copies.contains(r)) {
        push(
            out,
            REGION_KEYS_MISMATCH,
            c.b.entry_pos("region_kms_key_ids", r),
            format!("region_kms_key_ids names {r}, which is not in ami_regions; Packer rejects this"),
            format!("add \"{r}\" to ami_regions or remove the entry"),
        );
    }
}

/// AMK004: the build region in `region_kms_key_ids`, which Packer 1.6.6 rejects.
fn build_region_in_region_keys(c: &BuilderCtx, out: &mut Vec<RawFinding>) {
    let (Some(_), Some(m), Some(br)) = (&c.copy_regions, &c.rk, c.build_region) else { return };
    let listed = c.ami_regions.as_ref().is_some_and(|l| l.iter().any(|x| x == br));
    if m.contains_key(br) && !c.new_plugin && !listed {
        push(
            out,
            BUILD_REGION_IN_REGION_KEYS,
            c.b.entry_pos("region_kms_key_ids", br),
            format!(
                "region_kms_key_ids names the build region {br}; Packer 1.6.6 rejects this (\"Region {br} is in region_kms_key_ids but not in ami_regions\")"
            ),
            "remove the entry and set kms_key_id instead, or require a current amazon plugin in packer { required_plugins }",
        );
    }
}

/// AMK007: accounts that may launch the AMIs but not use their snapshots.
fn ami_users_without_snapshot_users(c: &BuilderCtx, out: &mut Vec<RawFinding>) {
    let Some(s) = &c.share else { return };
    let snap: BTreeSet<&String> = s.snapshot_users.iter().collect();
    let missing: BTreeSet<&String> =
        s.ami_users.iter().filter(|u| !snap.contains(u) && u.as_str() != "all").collect();
    if missing.is_empty() {
        return;
    }
    let at = c
        .all
        .iter()
        .find_map(|x| x.attr("ami_users").filter(|a| a.val != Val::List(vec![])))
        .map(|a| a.pos)
        .unwrap_or(c.b.pos);
    let list = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    push(
        out,
        AMI_USERS_NO_SNAPSHOT_USERS,
        at,
        format!(
            "{list} can launch the AMIs but not copy them or create volumes from their snapshots (no snapshot_users entry)"
        ),
        format!(
            "add snapshot_users = [{}]",
            missing.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
        ),
    );
}

/// AMK008: organization or OU sharing, and nothing publishes the ids and key.
fn org_sharing_without_ssm(c: &BuilderCtx, out: &mut Vec<RawFinding>) {
    let Some(s) = &c.share else { return };
    let has_ssm = c
        .amikeys
        .iter()
        .any(|a| a.string("ssm_path").is_some() || a.val("ssm_path").is_some_and(Val::is_unknown));
    if s.orgs.is_empty() || has_ssm {
        return;
    }
    let at = c
        .all
        .iter()
        .find_map(|x| x.attr("ami_org_arns").or(x.attr("ami_ou_arns")))
        .map(|a| a.pos)
        .unwrap_or(c.b.pos);
    push(out, ORG_SHARING_NO_SSM, at,
        "the AMIs are shared with an organization or OU, but nothing publishes their ids and key: consumers cannot find them or grant themselves the key".into(),
        "add post-processor \"amikey\" { ssm_path = \"/images/<name>\" ... } to publish <ssm_path>/image_id and <ssm_path>/kms_key_arn");
}

/// AMK009 (and AMK005 for amikey's `kms_key_id` reused in other regions): amikey's intended key
/// per region against the builder's.
fn amikey_key_disagrees(c: &BuilderCtx, out: &mut Vec<RawFinding>) {
    let regions = c.regions();
    for a in c.amikeys {
        let akms = a.string("kms_key_id");
        let Some(arm) = a.map("region_kms_key_ids") else {
            continue;
        };
        for r in &regions {
            let (intended, at) = match arm.get(r) {
                Some(Some(k)) => (k.clone(), a.entry_pos("region_kms_key_ids", r)),
                Some(None) => continue,
                None => match akms {
                    Some(k) => (k.to_string(), a.pos_of("kms_key_id")),
                    None => continue,
                },
            };
            if let Some(kr) = arn_region(&intended)
                && kr != *r
                && !arm.contains_key(r)
            {
                push(
                    out,
                    KEY_REGION_MISMATCH,
                    at,
                    format!(
                        "amikey kms_key_id is a key in {kr}, but it is also the intended key for {r} (no region_kms_key_ids entry)"
                    ),
                    format!("add \"{r}\" = \"<key ARN in {r}>\" to the amikey region_kms_key_ids"),
                );
            }
            let kind = c.kind;
            match c.builder_key(r) {
                BuilderKey::Default => push(
                    out,
                    AMIKEY_KEY_DISAGREES,
                    at,
                    format!(
                        "amikey expects {r} to be encrypted with `{intended}`, but {kind} will encrypt it with the default key (aws/ebs)"
                    ),
                    if c.build_region == Some(r.as_str()) {
                        format!("set kms_key_id = \"{intended}\" on the {kind} source")
                    } else {
                        format!("add \"{r}\" = \"{intended}\" to region_kms_key_ids on the {kind} source")
                    },
                ),
                BuilderKey::Key(bk) if same_key(&bk, &intended) == Some(false) => push(
                    out,
                    AMIKEY_KEY_DISAGREES,
                    at,
                    format!("amikey expects {r} to be encrypted with `{intended}`, but {kind} uses `{bk}`"),
                    "use the same key in both places (a shared variable or local avoids drift)",
                ),
                _ => {}
            }
        }
    }
}

/// AMK006 and AMK012 for each encrypted `launch_block_device_mappings` block.
fn launch_mapping_keys(c: &BuilderCtx, out: &mut Vec<RawFinding>) {
    for (name, m) in &c.b.blocks {
        if name != "launch_block_device_mappings" || m.boolean("encrypted") != Some(true) {
            continue;
        }
        if m.val("kms_key_id").is_some_and(Val::is_unknown) {
            continue;
        }
        if let Some(k) = m.string("kms_key_id")
            && is_aws_managed(k)
        {
            push(
                out,
                AWS_MANAGED_KEY,
                m.pos_of("kms_key_id"),
                format!("launch_block_device_mappings kms_key_id is the AWS-managed key `{k}`"),
                "use the customer-managed key of the AMI",
            );
        }
        launch_mapping_key_differs(c, m, out);
    }
}

/// AMK012 for one encrypted launch mapping: warns only where the launch volume's key can break
/// the build or the result (the reasoning is in `src/lint/rules.md`).
fn launch_mapping_key_differs(c: &BuilderCtx, m: &Block, out: &mut Vec<RawFinding>) {
    let lk = m.string("kms_key_id");
    let Some(br) = c.build_region else { return };
    let describe = |k: &BuilderKey| match k {
        BuilderKey::Key(k) => format!("`{k}`"),
        _ => "the default key (aws/ebs)".to_string(),
    };
    if c.encrypt_boot == Some(true) {
        // The AMI is a copy re-encrypted under the builder's key whatever the launch volume used,
        // and the builder can always use the default key: only a second, explicit key matters,
        // because the build then needs KMS permissions on it too.
        let Some(l) = lk else { return };
        let ami_key = c.builder_key(br);
        let differs = match &ami_key {
            BuilderKey::Key(a) => same_key(a, l) == Some(false),
            BuilderKey::Default => true,
            BuilderKey::Unknown => false,
        };
        if differs {
            let ak = describe(&ami_key);
            push(
                out,
                LAUNCH_KEY_DIFFERS,
                m.pos_of("kms_key_id"),
                format!(
                    "launch volume encrypted with `{l}`, a second key besides the AMI key {ak} in {br}: the build needs kms:CreateGrant, kms:Decrypt and kms:GenerateDataKey* on both (without them the instance terminates at launch with Client.InternalError or the copy fails), yet the AMI ends up under {ak} either way"
                ),
                match &ami_key {
                    BuilderKey::Key(k) => format!(
                        "remove kms_key_id from this block (the temporary launch volume can use the default key) or set it to \"{k}\""
                    ),
                    _ => "remove kms_key_id from this block (the temporary launch volume can use the default key)".into(),
                },
            );
        }
        return;
    }
    // Without encrypt_boot the AMI keeps the launch volume's key: compare it with amikey's.
    let Some(intended) = c.amikeys.iter().find_map(|a| {
        a.map("region_kms_key_ids")
            .and_then(|m| m.get(br).cloned().flatten())
            .or(a.string("kms_key_id").map(String::from))
    }) else {
        return;
    };
    let differs = match lk {
        Some(l) => same_key(&intended, l) == Some(false),
        None => true,
    };
    if differs {
        let lk_desc = lk.map(|k| format!("`{k}`")).unwrap_or_else(|| "the default key (aws/ebs)".into());
        push(
            out,
            LAUNCH_KEY_DIFFERS,
            m.pos_of("encrypted"),
            format!(
                "launch volume encrypted with {lk_desc}, but amikey's intended key in {br} is `{intended}`; without encrypt_boot the AMI snapshot keeps the launch volume's key, so amikey will fail the build"
            ),
            format!(
                "set kms_key_id = \"{intended}\" in this launch_block_device_mappings block, or set encrypt_boot = true and kms_key_id = \"{intended}\" on the source"
            ),
        );
    }
}

fn check_chains(b: &Block, chains: &[&Vec<Block>], out: &mut Vec<RawFinding>) {
    if !chains.iter().any(|c| c.iter().any(|p| p.kind == "amikey")) {
        return;
    }
    let keep_false = |p: &Block| p.boolean("keep_input_artifact") == Some(false);
    // Packer keeps the builder artifact when the first post-processor of at least one chain
    // keeps it; `keep_input_artifact = false` overrides a plugin's keep unless it forces it
    // (manifest and shell-local do). See Packer `CoreBuild.Run` (packer/build.go).
    let forces = |p: &Block| p.kind == "manifest" || p.kind == "shell-local";
    let kept = chains.iter().any(|c| c.first().is_none_or(|p| !keep_false(p) || forces(p)));
    if !kept && let Some(first) = chains.iter().find_map(|c| c.first()) {
        push(
            out,
            CHAIN_DESTROYS_AMIS,
            first.pos_of("keep_input_artifact"),
            format!(
                "keep_input_artifact = false on the first post-processor (`{}`) of every chain: Packer deregisters the {} AMIs and deletes their snapshots after the chain, so amikey would share and publish AMIs that no longer exist",
                first.kind, b.kind
            ),
            "remove keep_input_artifact = false (or set it to true)",
        );
    }
    for c in chains {
        let mut is_amis = true;
        let mut prev_other: Option<&Block> = None;
        for (i, p) in c.iter().enumerate() {
            if !applies(p, &b.name) {
                break;
            }
            if i > 0 && is_amis && keep_false(p) && !forces(p) {
                push(
                    out,
                    CHAIN_DESTROYS_AMIS,
                    p.pos_of("keep_input_artifact"),
                    format!(
                        "keep_input_artifact = false on `{}`: its input is still the {} artifact (passed through by the post-processors before it), so Packer destroys the AMIs",
                        p.kind, b.kind
                    ),
                    "remove keep_input_artifact = false",
                );
            }
            if p.kind == "amikey"
                && let Some(o) = prev_other
            {
                push(
                    out,
                    AMIKEY_AFTER_OTHER,
                    p.pos,
                    format!(
                        "amikey follows `{}`, which returns its own artifact, so amikey would not receive the AMI ids",
                        o.kind
                    ),
                    format!("move post-processor \"amikey\" before `{}` or into its own chain", o.kind),
                );
            }
            if !PASS_THROUGH.contains(&p.kind.as_str()) {
                is_amis = false;
                prev_other = prev_other.or(Some(p));
            }
        }
    }
}

/// Closest FIELDS name within edit distance 3.
fn suggest(key: &str) -> Option<&'static str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                let v = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
                cur.push(v);
            }
            prev = cur;
        }
        prev.last().copied().unwrap_or(usize::MAX)
    }
    FIELDS.iter().map(|f| (dist(key, f.name), f.name)).filter(|(d, _)| *d <= 3).min().map(|(_, n)| n)
}

fn check_amikey_schema(pp: &Block, out: &mut Vec<RawFinding>) {
    for (k, a) in &pp.attrs {
        if PP_COMMON_KEYS.contains(&k.as_str()) {
            continue;
        }
        let Some(field) = FIELDS.iter().find(|f| f.name == k) else {
            let help = match suggest(k) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "see the amikey configuration reference for the accepted keys".into(),
            };
            push(
                out,
                AMIKEY_UNKNOWN_KEY,
                a.pos,
                format!("the amikey post-processor has no key `{k}`; Packer rejects the template"),
                help,
            );
            continue;
        };
        if a.val.is_unknown() || a.val == Val::Null {
            continue;
        }
        let scalar = |v: &Val| matches!(v, Val::Str(_) | Val::Num(_) | Val::Bool(_));
        let ok = match field.kind {
            FieldKind::String => scalar(&a.val),
            FieldKind::Bool => {
                matches!(&a.val, Val::Bool(_)) || matches!(&a.val, Val::Str(s) if s == "true" || s == "false")
            }
            FieldKind::Number => {
                matches!(&a.val, Val::Num(_)) || matches!(&a.val, Val::Str(s) if s.parse::<f64>().is_ok())
            }
            FieldKind::ListOfString => matches!(&a.val, Val::List(l) if l.iter().all(scalar)),
            FieldKind::MapOfString => matches!(&a.val, Val::Map(m) if m.values().all(scalar)),
            // JSON templates write repeated blocks as a list of objects (or one object).
            FieldKind::Blocks(_) => {
                matches!(&a.val, Val::Map(_))
                    || matches!(&a.val, Val::List(l) if l.iter().all(|x| matches!(x, Val::Map(_))))
            }
        };
        if !ok {
            push(
                out,
                AMIKEY_INVALID_VALUE,
                a.pos,
                format!("amikey `{k}` must be {}, got {}", field.kind.hcl(), describe(&a.val)),
                format!("write {k} as {}", example_of(field.kind)),
            );
            continue;
        }
        let allowed: &[&str] = match *k {
            ref s if s == "on_violation" => &["fail", "warn"],
            ref s if s == "check_key_policy" => &["warn", "fail", "off"],
            _ => &[],
        };
        if let Some(v) = a.val.as_str()
            && !allowed.is_empty()
            && !allowed.contains(&v)
        {
            push(
                out,
                AMIKEY_INVALID_VALUE,
                a.pos,
                format!("amikey `{k}` is \"{v}\"; accepted values: {}", allowed.join(", ")),
                format!("set {k} = \"{}\"", allowed[0]),
            );
        }
    }
}

/// Nested blocks of the amikey post-processor (`copy_to { … }`): known block names, their keys,
/// the required `account`, no AWS managed key.
fn check_amikey_blocks(pp: &Block, out: &mut Vec<RawFinding>) {
    for (name, b) in &pp.blocks {
        let Some(FieldKind::Blocks(nested)) = FIELDS.iter().find(|f| f.name == name).map(|f| f.kind) else {
            push(
                out,
                AMIKEY_UNKNOWN_KEY,
                b.pos,
                format!("the amikey post-processor has no block `{name}`; Packer rejects the template"),
                "the only block amikey accepts is copy_to { … }",
            );
            continue;
        };
        for (k, a) in &b.attrs {
            if !nested.iter().any(|f| f.name == k) {
                let keys: Vec<&str> = nested.iter().map(|f| f.name).collect();
                push(
                    out,
                    AMIKEY_UNKNOWN_KEY,
                    a.pos,
                    format!("amikey `{name}` blocks have no key `{k}`; Packer rejects the template"),
                    format!("accepted keys: {}", keys.join(", ")),
                );
            }
        }
        if b.attr("account").is_none() {
            push(
                out,
                AMIKEY_INVALID_VALUE,
                b.pos,
                format!("amikey `{name}` block without `account`: amikey cannot tell where to copy"),
                "add account = \"<12-digit consumer account id>\"",
            );
        }
        if let Some(k) = b.string("kms_key_id")
            && is_aws_managed(k)
        {
            push(
                out,
                AWS_MANAGED_KEY,
                b.pos_of("kms_key_id"),
                format!(
                    "amikey `{name}` kms_key_id is the AWS-managed key `{k}`; a copy must be under the consumer's own key"
                ),
                "use a customer-managed key (an alias that exists in the consumer account in every region works)",
            );
        }
    }
}

fn check_amikey_keys(pp: &Block, out: &mut Vec<RawFinding>) {
    if let Some(k) = pp.string("kms_key_id")
        && is_aws_managed(k)
    {
        push(
            out,
            AWS_MANAGED_KEY,
            pp.pos_of("kms_key_id"),
            format!(
                "amikey kms_key_id is the AWS-managed key `{k}`; AMIs encrypted with it cannot be shared"
            ),
            "use the customer-managed key the builder encrypts with",
        );
    }
    if let Some(m) = pp.map("region_kms_key_ids") {
        for (r, k) in m {
            let Some(k) = k else { continue };
            let at = pp.entry_pos("region_kms_key_ids", &r);
            if is_aws_managed(&k) {
                push(
                    out,
                    AWS_MANAGED_KEY,
                    at,
                    format!("amikey region_kms_key_ids[\"{r}\"] is the AWS-managed key `{k}`"),
                    format!("use a customer-managed key in {r}"),
                );
            }
            if let Some(kr) = arn_region(&k)
                && kr != r
            {
                push(
                    out,
                    KEY_REGION_MISMATCH,
                    at,
                    format!("amikey region_kms_key_ids[\"{r}\"] is a key in {kr}"),
                    format!("use the ARN of the key in {r}"),
                );
            }
        }
    }
}

fn describe(v: &Val) -> String {
    match v {
        Val::Unknown(_) => "an unknown value".into(),
        Val::Null => "null".into(),
        Val::Bool(b) => format!("the bool {b}"),
        Val::Num(n) => format!("the number {n}"),
        Val::Str(s) => format!("the string \"{s}\""),
        Val::List(_) => "a list".into(),
        Val::Map(_) => "a map".into(),
    }
}

fn example_of(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::String => "a string: \"…\"",
        FieldKind::Bool => "true or false",
        FieldKind::Number => "a number",
        FieldKind::ListOfString => "a list of strings: [\"…\"]",
        FieldKind::MapOfString => "a map of strings: { key = \"…\" }",
        FieldKind::Blocks(_) => "a block: copy_to { account = \"…\" kms_key_id = \"…\" }",
    }
}

#[cfg(test)]
mod tests;
