//! Unit tests for the lint rules and front ends, the fixture corpus and the robustness checks.

use std::path::PathBuf;

use super::*;

fn lint(name: &str, text: &str) -> LintReport {
    lint_source(name, text, &VarInputs::default())
}

fn codes(r: &LintReport) -> Vec<(&'static str, usize)> {
    r.findings.iter().map(|f| (f.code, f.line)).collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The entries of a fixture directory, sorted; fails the test when it is unreadable or empty.
fn files_in(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("fixture directory {dir} unreadable: {e}"))
        .map(|e| e.map(|e| e.path()).unwrap_or_else(|e| panic!("fixture directory {dir}: {e}")))
        .collect();
    assert!(!v.is_empty(), "fixture directory {dir} is empty");
    v.sort();
    v
}

/// A fixture's text; fails the test when it is unreadable.
fn read_fixture(f: &std::path::Path) -> String {
    std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()))
}

/// Writes a test input; fails the test when it cannot.
fn write_input(path: PathBuf, text: impl AsRef<[u8]>) {
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const EBS: &str = r#"
source "amazon-ebs" "x" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ami_name      = "x"
  encrypt_boot  = true
  kms_key_id    = "alias/ami"
  EXTRA
}
build {
  sources = ["source.amazon-ebs.x"]
  PP
}
"#;

fn ebs(extra: &str, pp: &str) -> String {
    EBS.replace("EXTRA", extra).replace("PP", pp)
}

#[test]
fn encrypt_boot_with_sharing_and_no_key_is_amk001() {
    let r = lint(
        "a.pkr.hcl",
        "source \"amazon-ebs\" \"x\" {\n  region = \"us-east-1\"\n  encrypt_boot = true\n  ami_users = [\"111122223333\"]\n  snapshot_users = [\"111122223333\"]\n}\nbuild { sources = [\"source.amazon-ebs.x\"] }\n",
    );
    assert_eq!(codes(&r), vec![("AMK001", 3)], "{}", render_text(&r));
    assert_eq!(r.findings[0].col, 3);
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn clean_single_region_template_has_no_findings() {
    let r = lint(
        "a.pkr.hcl",
        &ebs(
            "ami_users = [\"1\"]\n snapshot_users = [\"1\"]",
            "post-processor \"amikey\" { kms_key_id = \"alias/ami\" }",
        ),
    );
    assert!(r.findings.is_empty(), "{}", render_text(&r));
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn amikey_sharing_counts_for_copy_default_key() {
    // The builder shares nothing; amikey shares, so the copy's aws/ebs key still breaks sharing.
    let t = ebs(
        "ami_regions = [\"eu-west-1\"]",
        "post-processor \"amikey\" {\n kms_key_id = \"alias/ami\"\n ami_users = [\"1\"]\n snapshot_users = [\"1\"]\n }",
    );
    let r = lint("a.pkr.hcl", &t);
    let c: Vec<_> = r.findings.iter().map(|f| f.code).collect();
    assert!(c.contains(&"AMK002"), "{}", render_text(&r));
    assert!(c.contains(&"AMK009"), "{}", render_text(&r));
}

#[test]
fn unknown_function_value_is_a_note_not_a_finding() {
    let t = ebs(
        "ami_regions = [\"eu-west-1\"]\n region_kms_key_ids = { \"eu-west-1\" = \"alias/${timestamp()}\" }\n ami_users = [\"1\"]\n snapshot_users = [\"1\"]",
        "",
    );
    let r = lint("a.pkr.hcl", &t);
    assert!(r.findings.is_empty(), "{}", render_text(&r));
    assert!(
        r.notes.iter().any(|n| n.message.contains("region_kms_key_ids") && n.message.contains("timestamp")),
        "{:?}",
        r.notes
    );
}

#[test]
fn variable_without_value_is_a_note() {
    let t = "variable \"key\" { type = string }\n".to_string()
        + &ebs("", "post-processor \"amikey\" { kms_key_id = var.key }");
    let r = lint("a.pkr.hcl", &t);
    assert!(r.findings.is_empty(), "{}", render_text(&r));
    assert!(r.notes.iter().any(|n| n.message.contains("variable `key` has no default")));
}

#[test]
fn cli_vars_override_defaults_and_are_typed() {
    let t = "variable \"regions\" {\n type = list(string)\n default = []\n}\nvariable \"k\" {\n default = \"alias/ami\"\n}\n"
        .to_string()
        + &ebs("ami_regions = var.regions\n ami_users = [\"1\"]\n snapshot_users = [\"1\"]", "post-processor \"amikey\" { kms_key_id = var.k }");
    assert!(lint("a.pkr.hcl", &t).findings.is_empty());
    let vars = VarInputs {
        vars: vec![("regions".into(), "[\"eu-west-1\"]".into()), ("k".into(), "alias/aws/ebs".into())],
        var_files: vec![],
    };
    let r = lint_source("a.pkr.hcl", &t, &vars);
    let c: Vec<_> = r.findings.iter().map(|f| f.code).collect();
    assert!(c.contains(&"AMK002") && c.contains(&"AMK006"), "{}", render_text(&r));
}

#[test]
fn locals_functions_and_for_expressions_are_evaluated() {
    let t = r#"
locals {
  regions = concat(["eu-west-1"], [lower("US-WEST-2")])
  keys    = merge({ for r in local.regions : r => format("alias/ami-%s", r) }, {})
  all     = join(",", local.regions)
}
source "amazon-ebs" "x" {
  region             = "us-east-1"
  encrypt_boot       = true
  kms_key_id         = "alias/ami"
  ami_regions        = local.regions
  region_kms_key_ids = local.keys
  ami_users          = ["1"]
  snapshot_users     = ["1"]
}
build {
  sources = ["source.amazon-ebs.x"]
  post-processor "amikey" {
    kms_key_id = "alias/ami"
    region_kms_key_ids = { "eu-west-1" = "alias/ami-eu-west-1", "us-west-2" = format("alias/%s", upper("other")) }
  }
}
"#;
    let r = lint("a.pkr.hcl", t);
    assert_eq!(codes(&r), vec![("AMK009", 20)], "{}", render_text(&r));
    assert!(r.findings[0].message.contains("us-west-2"));
}

#[test]
fn build_region_in_region_keys_depends_on_plugin_generation() {
    let body = ebs(
        "ami_regions = [\"eu-west-1\"]\n region_kms_key_ids = { \"us-east-1\" = \"alias/ami\", \"eu-west-1\" = \"alias/ami\" }",
        "",
    );
    let r = lint("a.pkr.hcl", &body);
    assert_eq!(r.findings.iter().map(|f| f.code).collect::<Vec<_>>(), vec!["AMK004"], "{}", render_text(&r));
    let modern = "packer {\n required_plugins {\n amazon = { source = \"github.com/hashicorp/amazon\", version = \">= 1.0\" }\n }\n}\n".to_string() + &body;
    assert!(lint("a.pkr.hcl", &modern).findings.is_empty());
}

#[test]
fn build_source_overrides_and_only_except_apply() {
    let t = r#"
source "amazon-ebs" "base" {
  region       = "us-east-1"
  encrypt_boot = true
  kms_key_id   = "alias/ami"
}
build {
  source "source.amazon-ebs.base" {
    name       = "other"
    kms_key_id = "alias/other"
  }
  post-processor "amikey" {
    only       = ["amazon-ebs.other"]
    kms_key_id = "alias/ami"
  }
  post-processor "amikey" {
    except     = ["amazon-ebs.other"]
    kms_key_id = "alias/never"
  }
}
"#;
    let r = lint("a.pkr.hcl", t);
    assert_eq!(codes(&r), vec![("AMK009", 14)], "{}", render_text(&r));
}

#[test]
fn legacy_json_user_variables_and_positions() {
    let t = r#"{
  "variables": { "k": "alias/aws/ebs", "t": "{{timestamp}}" },
  "builders": [{ "type": "amazon-ebs", "region": "us-east-1", "encrypt_boot": true,
                 "kms_key_id": "{{ user `k` }}" }]
}"#;
    let r = lint("t.json", t);
    assert_eq!(codes(&r), vec![("AMK006", 4)], "{}", render_text(&r));
    assert_eq!(r.findings[0].col, 18);
    let vars = VarInputs { vars: vec![("k".into(), "alias/ami".into())], var_files: vec![] };
    assert!(lint_source("t.json", t, &vars).findings.is_empty());
}

#[test]
fn encrypt_boot_with_a_default_key_launch_volume_is_quiet() {
    // The ordinary pattern: the AMI is re-encrypted under kms_key_id, and the builder can
    // always use the default key for the temporary launch volume.
    let t = ebs("launch_block_device_mappings {\n device_name = \"/dev/xvda\"\n encrypted = true\n }", "");
    let r = lint("a.pkr.hcl", &t);
    assert!(r.findings.is_empty(), "{}", render_text(&r));
    // The same key for the launch volume: one key, nothing to say.
    let same = ebs(
        "launch_block_device_mappings {\n device_name = \"/dev/xvda\"\n encrypted = true\n kms_key_id = \"alias/ami\"\n }",
        "",
    );
    assert!(lint("a.pkr.hcl", &same).findings.is_empty());
}

#[test]
fn amk012_fires_only_where_the_launch_key_can_break_the_build_or_the_result() {
    let mapping = |key: &str| {
        let k = if key.is_empty() { String::new() } else { format!("\n kms_key_id = \"{key}\"") };
        format!("launch_block_device_mappings {{\n device_name = \"/dev/xvda\"\n encrypted = true{k}\n }}")
    };
    // (encrypt_boot, launch key, amikey key) → AMK012?
    let cases: &[(bool, &str, &str, bool)] = &[
        // encrypt_boot: only a second explicit key (more KMS permissions the build needs).
        (true, "", "alias/ami", false),
        (true, "alias/ami", "alias/ami", false),
        (true, "alias/build-temp", "alias/ami", true),
        // Alias vs key id cannot be compared statically: quiet.
        (true, "1234abcd-12ab-34cd-56ef-1234567890ab", "alias/ami", false),
        // Without encrypt_boot the launch key is the AMI key: it must be amikey's.
        (false, "", "alias/ami", true),
        (false, "alias/ami", "alias/ami", false),
        (false, "alias/build-temp", "alias/ami", true),
        (false, "alias/build-temp", "", false),
    ];
    for (eb, launch, amikey, want) in cases {
        let mut t = ebs(
            &mapping(launch),
            &if amikey.is_empty() {
                String::new()
            } else {
                format!("post-processor \"amikey\" {{ kms_key_id = \"{amikey}\" }}")
            },
        );
        if !eb {
            t = t.replace("encrypt_boot  = true", "").replace("kms_key_id    = \"alias/ami\"", "");
        }
        let r = lint("a.pkr.hcl", &t);
        let got = r.findings.iter().any(|f| f.code == "AMK012");
        assert_eq!(got, *want, "encrypt_boot={eb} launch={launch:?} amikey={amikey:?}:\n{}", render_text(&r));
        let others: Vec<_> = r.findings.iter().filter(|f| f.code != "AMK012").map(|f| f.code).collect();
        assert!(others.is_empty(), "{others:?}\n{}", render_text(&r));
    }
}

#[test]
fn amikey_after_manifest_is_fine_but_after_compress_is_not() {
    let ok = ebs(
        "",
        "post-processors {\n post-processor \"manifest\" {}\n post-processor \"amikey\" { kms_key_id = \"alias/ami\" }\n }",
    );
    assert!(lint("a.pkr.hcl", &ok).findings.is_empty());
    let bad = ok.replace("\"manifest\"", "\"compress\"");
    assert_eq!(lint("a.pkr.hcl", &bad).findings.iter().map(|f| f.code).collect::<Vec<_>>(), vec!["AMK011"]);
}

#[test]
fn keep_input_artifact_false_on_manifest_is_ignored_by_packer() {
    let t = ebs(
        "",
        "post-processors {\n post-processor \"manifest\" { keep_input_artifact = false }\n post-processor \"amikey\" { kms_key_id = \"alias/ami\" }\n }",
    );
    assert!(lint("a.pkr.hcl", &t).findings.is_empty());
}

#[test]
fn render_text_shows_location_source_caret_and_help() {
    let r = lint("a.pkr.hcl", &ebs("", "post-processor \"amikey\" { kms_key_idd = \"alias/ami\" }"));
    let text = render_text(&r);
    assert!(text.contains("error[AMK013 amikey-unknown-key]"), "{text}");
    assert!(text.contains("--> a.pkr.hcl:12:29"), "{text}");
    assert!(text.contains("   |                             ^"), "{text}");
    assert!(text.contains("= help: did you mean `kms_key_id`?"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&render_json(&r)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["findings"][0]["code"], "AMK013");
    assert_eq!(json["findings"][0]["line"], 12);
}

#[test]
fn positions_count_characters_not_bytes() {
    let t = "# ünïcödé\n".to_string()
        + &ebs("", "post-processor \"amikey\" { kms_key_id = \"alias/aws/ebs\" } # é");
    let r = lint("a.pkr.hcl", &t);
    assert_eq!((r.findings[0].line, r.findings[0].col), (13, 29));
}

#[test]
fn output_is_deterministic() {
    let fixtures = files_in("tests/fixtures/lint/bad");
    for f in fixtures {
        let text = read_fixture(&f);
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        assert_eq!(render_text(&lint(&name, &text)), render_text(&lint(&name, &text)));
    }
}

#[test]
fn lint_paths_walks_directories_and_var_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let t = "variable \"k\" { default = \"alias/ami\" }\n".to_string()
        + &ebs("", "post-processor \"amikey\" { kms_key_id = var.k }");
    write_input(dir.path().join("a.pkr.hcl"), t);
    write_input(dir.path().join("vars.json"), "{\"k\": \"alias/aws/ebs\"}");
    let clean = lint_paths(&[dir.path().to_path_buf()], &VarInputs::default());
    let clean = clean.unwrap_or_else(|e| panic!("{e}"));
    assert!(clean.findings.is_empty(), "{}", render_text(&clean));
    assert_eq!(clean.files.len(), 2);
    assert!(clean.notes.iter().any(|n| n.message.contains("not a Packer template")));
    let vars = VarInputs { vars: vec![], var_files: vec![dir.path().join("vars.json")] };
    let r = lint_paths(&[dir.path().join("a.pkr.hcl")], &vars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.findings.iter().map(|f| f.code).collect::<Vec<_>>(), vec!["AMK006", "AMK009"]);
    let missing = lint_paths(&[dir.path().join("nope")], &VarInputs::default());
    assert!(matches!(missing, Err(LintError::Read { .. })));
}

// ---------------------------------------------------------------------------------------------
// Fixtures and examples.

fn expectations(path: &std::path::Path, text: &str) -> Vec<(String, usize)> {
    let sidecar = PathBuf::from(format!("{}.expect", path.display()));
    let spec = std::fs::read_to_string(&sidecar).unwrap_or_else(|_| text.to_string());
    let mut v: Vec<(String, usize)> = spec
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches('#').trim();
            let l = l.strip_prefix("expect:").unwrap_or(l).trim();
            let (code, line) = l.split_once(" at ")?;
            Some((code.trim().to_string(), line.trim().parse().ok()?))
        })
        .filter(|(c, _)| c.starts_with("AMK"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_bad_fixture_produces_exactly_its_expected_findings() {
    let files: Vec<PathBuf> = files_in("tests/fixtures/lint/bad")
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".expect"))
        .collect();
    assert!(files.len() >= 14, "fixtures missing: {files:?}");
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        let text = read_fixture(&f);
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let want = expectations(&f, &text);
        assert!(!want.is_empty(), "{name}: no `expect:` lines");
        let r = lint(&name, &text);
        let mut got: Vec<(String, usize)> = r.findings.iter().map(|x| (x.code.to_string(), x.line)).collect();
        got.sort();
        assert_eq!(got, want, "{name}:\n{}", render_text(&r));
        seen.extend(got.into_iter().map(|(c, _)| c));
    }
    for rule in RULES {
        assert!(seen.contains(rule.code), "no fixture exercises {}", rule.code);
    }
}

#[test]
fn packer_examples_lint_clean() {
    let r = lint_paths(&[root().join("packer-examples")], &VarInputs::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.files.len() >= 3, "{:?}", r.files);
    assert!(r.findings.is_empty(), "{}", render_text(&r));
    assert!(r.notes.is_empty(), "{}", render_text(&r));
}

// ---------------------------------------------------------------------------------------------
// Robustness: no input may panic.

#[test]
fn garbage_inputs_do_not_panic() {
    let files = files_in("tests/fixtures/lint/garbage");
    assert!(files.len() >= 10);
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let text = String::from_utf8_lossy(&bytes);
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let _ = render_text(&lint(&name, &text));
        let _ = render_json(&lint(&format!("{name}.json"), &text));
        let _ = render_json(&lint(&format!("{name}.pkr.hcl"), &text));
    }
    let r = lint_paths(&[root().join("tests/fixtures/lint/garbage")], &VarInputs::default());
    assert!(r.is_ok());
}

/// xorshift64*: deterministic mutations without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    const PIECES: &[&str] = &[
        "{", "}", "[", "]", "(", ")", "\"", "${", "%{", "}}", "{{", "=", ",", ":", ".", "\n", "\\",
        "<<EOT\n", "-", "*", "é", "var.", "local.", "null", "0", "true", "`", "#", "/*",
    ];
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 => chars.truncate(at),
            1 => {
                let end = (at + rng.below(40)).min(chars.len());
                chars.drain(at..end);
            }
            2 => {
                let p = PIECES[rng.below(PIECES.len())];
                chars.splice(at..at, p.chars());
            }
            3 => {
                let end = (at + rng.below(60)).min(chars.len());
                let dup: Vec<char> = chars[at..end].to_vec();
                let to = rng.below(chars.len() + 1);
                chars.splice(to..to, dup);
            }
            _ => {
                if at < chars.len() {
                    chars[at] = char::from_u32(rng.below(0x250) as u32).unwrap_or('x');
                }
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn random_mutations_of_fixtures_and_examples_do_not_panic() {
    let mut files = files_in("tests/fixtures/lint/bad");
    files.extend(files_in("packer-examples"));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut runs = 0;
    for f in files.iter().filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".expect")) {
        let text = read_fixture(f);
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        for _ in 0..120 {
            let m = mutate(&mut rng, &text);
            let r = lint(&name, &m);
            let _ = render_text(&r);
            runs += 1;
        }
    }
    assert!(runs > 1000);
}

/// `cargo test --lib lint::tests::show_fixture_reports -- --ignored --nocapture` prints what
/// every bad fixture reports (for docs and review).
#[test]
#[ignore]
fn show_fixture_reports() {
    for f in
        files_in("tests/fixtures/lint/bad").into_iter().filter(|p| !p.to_string_lossy().ends_with(".expect"))
    {
        let text = read_fixture(&f);
        let name =
            format!("tests/fixtures/lint/bad/{}", f.file_name().and_then(|n| n.to_str()).unwrap_or_default());
        print!("{}", render_text(&lint(&name, &text)));
    }
}

#[test]
fn a_directory_of_hcl_files_is_one_template() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let vars = "variable \"key\" {\n  default = \"alias/aws/ebs\"\n}\n";
    let main = "source \"amazon-ebs\" \"x\" {\n  region     = \"us-east-1\"\n  encrypt_boot = true\n  kms_key_id = var.key\n}\nbuild { sources = [\"source.amazon-ebs.x\"] }\n";
    write_input(dir.path().join("variables.pkr.hcl"), vars);
    write_input(dir.path().join("main.pkr.hcl"), main);
    let r = lint_paths(&[dir.path().to_path_buf()], &VarInputs::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.findings.len(), 1, "{}", render_text(&r));
    assert!(r.findings[0].file.ends_with("main.pkr.hcl"));
    assert_eq!((r.findings[0].code, r.findings[0].line), ("AMK006", 4));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
}

// ---------------------------------------------------------------------------------------------
// Auto var files (`*.auto.pkrvars.hcl` / `*.auto.pkrvars.json`), as Packer loads them.

#[test]
fn var_files_follow_packers_order_hcl_before_json_auto_before_cli() {
    let p = |s: &str| PathBuf::from(s);
    let auto = [p("d/a.auto.pkrvars.hcl"), p("d/b.auto.pkrvars.json"), p("d/c.auto.pkrvars.hcl")];
    let cli = [p("x.json"), p("prod.pkrvars.hcl"), p("y.hcl")];
    let got = var_file_order(&auto, &cli);
    let want = [
        "d/a.auto.pkrvars.hcl",
        "d/c.auto.pkrvars.hcl",
        "prod.pkrvars.hcl",
        "y.hcl",
        "d/b.auto.pkrvars.json",
        "x.json",
    ];
    assert_eq!(got, want.map(p));
    assert!(var_file_order(&[], &[]).is_empty());
}

#[test]
fn the_auto_var_files_fixture_is_caught_in_the_directory_only() {
    let dir = root().join("tests/fixtures/lint/autovars");
    assert!(files_in("tests/fixtures/lint/autovars").len() >= 4, "fixture missing");
    let r = lint_paths(std::slice::from_ref(&dir), &VarInputs::default()).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<_> = r.findings.iter().map(|f| (f.code, f.line, f.file.ends_with("main.pkr.hcl"))).collect();
    assert_eq!(got, [("AMK003", 12, true), ("AMK009", 21, true)], "{}", render_text(&r));
    assert!(r.findings[0].message.contains("eu-west-1"), "{}", render_text(&r));
    assert_eq!(r.var_files.len(), 2, "{:?}", r.var_files);
    assert!(r.var_files[0].ends_with("10-regions.auto.pkrvars.hcl"), "{:?}", r.var_files);
    assert!(render_text(&r).contains("variables from: "), "{}", render_text(&r));
    // The var files are not templates: no "not a Packer template" note for the .json one.
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert_eq!(r.files.len(), 2, "{:?}", r.files);

    // Packer given the two files does not load the auto var files: neither does lint, and says so.
    let files = [dir.join("main.pkr.hcl"), dir.join("variables.pkr.hcl")];
    let single = lint_paths(&files, &VarInputs::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(single.var_files.is_empty());
    assert!(single.findings.is_empty(), "{}", render_text(&single));
    assert!(
        single
            .notes
            .iter()
            .any(|n| n.message.contains("10-regions.auto.pkrvars.hcl, 20-key.auto.pkrvars.json")
                && n.message.contains("only for a directory")),
        "{:?}",
        single.notes
    );
}

#[test]
fn auto_var_file_precedence_matches_packer() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap_or_else(|e| panic!("{e}"));
    write(
        "main.pkr.hcl",
        &("variable \"k\" {\n  default = \"alias/ami\"\n}\n".to_string()
            + &ebs("", "post-processor \"amikey\" { kms_key_id = var.k }")),
    );
    let key = |r: &LintReport| r.findings.iter().any(|f| f.code == "AMK006");
    let run = |vars: &VarInputs| lint_paths(&[d.to_path_buf()], vars).unwrap_or_else(|e| panic!("{e}"));
    assert!(!key(&run(&VarInputs::default())), "defaults are clean");
    // An auto .hcl file overrides the default.
    write("a.auto.pkrvars.hcl", "k = \"alias/aws/ebs\"\n");
    assert!(key(&run(&VarInputs::default())));
    // A later auto .hcl file (lexical order) overrides an earlier one.
    write("b.auto.pkrvars.hcl", "k = \"alias/ami\"\n");
    assert!(!key(&run(&VarInputs::default())));
    // -var-file (HCL) overrides the auto .hcl files.
    std::fs::create_dir(d.join("vars")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("vars/bad.pkrvars.hcl"), "k = \"alias/aws/ebs\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("vars/bad.json"), "{\"k\": \"alias/aws/ebs\"}").unwrap_or_else(|e| panic!("{e}"));
    let hcl_file = VarInputs { vars: vec![], var_files: vec![d.join("vars/bad.pkrvars.hcl")] };
    assert!(key(&run(&hcl_file)));
    // Packer reads JSON var files after HCL ones: an auto .json beats an HCL -var-file.
    write("c.auto.pkrvars.json", "{\"k\": \"alias/ami\"}");
    assert!(!key(&run(&hcl_file)));
    // A JSON -var-file beats the auto .json; -var beats every file.
    let json_file = VarInputs { vars: vec![], var_files: vec![d.join("vars/bad.json")] };
    assert!(key(&run(&json_file)));
    let cli =
        VarInputs { vars: vec![("k".into(), "alias/ami".into())], var_files: vec![d.join("vars/bad.json")] };
    assert!(!key(&run(&cli)));
    // A broken auto var file stops the lint (exit 2), as it stops Packer.
    write("d.auto.pkrvars.hcl", "k = [\n");
    assert!(matches!(lint_paths(&[d.to_path_buf()], &VarInputs::default()), Err(LintError::VarFile { .. })));
}

#[test]
fn copy_to_blocks_are_known_and_their_keys_checked() {
    let good = ebs(
        "",
        "post-processor \"amikey\" {\n    kms_key_id = \"alias/ami\"\n    copy_to {\n      account = \"210987654321\"\n      kms_key_id = \"alias/mine\"\n    }\n  }",
    );
    let r = lint("a.pkr.hcl", &good);
    assert!(r.findings.is_empty(), "{}", render_text(&r));
    let bad = ebs(
        "",
        "post-processor \"amikey\" {\n    kms_key_id = \"alias/ami\"\n    copy_to {\n      acount = \"210987654321\"\n      kms_key_id = \"alias/aws/ebs\"\n    }\n    copy_too {\n      account = \"1\"\n    }\n  }",
    );
    let r = lint("a.pkr.hcl", &bad);
    let got: Vec<&str> = r.findings.iter().map(|f| f.code).collect();
    assert!(got.contains(&"AMK013"), "{}", render_text(&r));
    assert!(got.contains(&"AMK014"), "{}", render_text(&r));
    assert!(got.contains(&"AMK006"), "{}", render_text(&r));
    let text = render_text(&r);
    assert!(text.contains("no key `acount`") && text.contains("no block `copy_too`"), "{text}");
}

#[test]
fn every_good_fixture_lints_clean() {
    let files = files_in("tests/fixtures/lint/good");
    assert!(files.len() >= 2, "fixtures missing: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let r = lint(&name, &text);
        assert!(r.findings.is_empty(), "{}", render_text(&r));
        assert!(r.notes.is_empty(), "{}", render_text(&r));
    }
}

#[test]
fn locals_built_with_pure_functions_run_the_rules() {
    // split/lookup/regex_replace in locals: the regions and keys are known, so AMK003 fires
    // (eu-west-1 has no key) instead of a "cannot be evaluated" note.
    let t = r#"
locals {
  regions = split(",", "us-east-1,eu-west-1")
  keys    = { "us-west-2" = regex_replace("alias/AMI", "AMI$", "ami") }
}
source "amazon-ebs" "x" {
  region             = element(local.regions, 0)
  encrypt_boot       = true
  kms_key_id         = lookup(local.keys, "us-west-2", "alias/ami")
  ami_regions        = local.regions
  region_kms_key_ids = local.keys
}
build { sources = ["source.amazon-ebs.x"] }
"#;
    let r = lint("a.pkr.hcl", t);
    let got: Vec<_> = r.findings.iter().map(|f| f.code).collect();
    assert_eq!(got, ["AMK003", "AMK003"], "{}", render_text(&r));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    // An impure function still skips the rule, with a note.
    let impure = t.replace("split(\",\", \"us-east-1,eu-west-1\")", "split(\",\", env(\"REGIONS\"))");
    let r = lint("a.pkr.hcl", &impure);
    assert!(r.findings.is_empty(), "{}", render_text(&r));
    assert!(r.notes.iter().any(|n| n.message.contains("regions")), "{:?}", r.notes);
}
