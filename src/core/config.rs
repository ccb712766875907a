//! The validated amikey configuration: the keys of the `post-processor "amikey"` block, of an HCL
//! `--config` file, and of the CLI flags, all spelled the same way.
//!
//! Owns: the one declaration of the schema ([`FIELDS`]), from which the Packer ConfigSpec (gob and
//! protobuf), the README table and the docs page are derived; and [`Settings`], the typed value.
//! Must not know: AWS SDK types, the wire, I/O.
//!
//! Key names mirror packer-plugin-amazon where the meaning is identical (`kms_key_id`,
//! `region_kms_key_ids`, `ami_users`, `ami_org_arns`, `ami_ou_arns`, `snapshot_users`, `region`,
//! `profile`, `access_key`, `secret_key`, `token`, `assume_role`, `skip_region_validation`,
//! `max_retries`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The HCL type of one configuration attribute. The schema is kept flat (no nested blocks) so
/// it encodes identically in Packer's gob and protobuf ConfigSpec forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// `string`
    String,
    /// `bool`
    Bool,
    /// `number`
    Number,
    /// `list(string)`
    ListOfString,
    /// `map(string)`
    MapOfString,
    /// A repeated nested block (`name { … }` any number of times) with these attributes
    /// (flat, no deeper blocks). Encoded as an hcldec `BlockListSpec` of an `ObjectSpec`.
    Blocks(&'static [Field]),
}

impl FieldKind {
    /// The HCL spelling of the type, as shown in docs and errors.
    pub fn hcl(self) -> &'static str {
        match self {
            FieldKind::String => "string",
            FieldKind::Bool => "bool",
            FieldKind::Number => "number",
            FieldKind::ListOfString => "list(string)",
            FieldKind::MapOfString => "map(string)",
            FieldKind::Blocks(_) => "block",
        }
    }
}

/// One attribute of the schema: its name, type, default and documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// snake_case key, as written in HCL.
    pub name: &'static str,
    /// HCL type.
    pub kind: FieldKind,
    /// Default, as documented (`""` when there is none).
    pub default: &'static str,
    /// One-paragraph documentation; the single source for README and the docs page.
    pub doc: &'static str,
}

const fn f(name: &'static str, kind: FieldKind, default: &'static str, doc: &'static str) -> Field {
    Field { name, kind, default, doc }
}

use FieldKind::*;

/// Every key amikey accepts, alphabetically. None is required by Packer itself: amikey's own
/// validation reports what is missing, with a message that says what to add.
pub const FIELDS: &[Field] = &[
    f(
        "access_key",
        String,
        "",
        "AWS access key id. Default: the standard credential chain (environment, profile, SSO cache, container/instance role).",
    ),
    f(
        "allow_public",
        Bool,
        "false",
        "Allow `ami_users` to contain `all`, which makes the AMIs public. Refused otherwise.",
    ),
    f(
        "ami_org_arns",
        ListOfString,
        "[]",
        "AWS Organizations ARNs (`arn:aws:organizations::ACCOUNT:organization/o-…`) to grant launch permission to.",
    ),
    f(
        "ami_ou_arns",
        ListOfString,
        "[]",
        "Organizational unit ARNs (`arn:aws:organizations::ACCOUNT:ou/o-…/ou-…`) to grant launch permission to.",
    ),
    f(
        "ami_users",
        ListOfString,
        "[]",
        "12-digit account ids to grant launch permission on every regional AMI.",
    ),
    f(
        "assume_role",
        MapOfString,
        "{}",
        "Assume this role before any call: `{ role_arn = \"…\", session_name = \"…\", external_id = \"…\" }` (attribute form, with `=`).",
    ),
    f(
        "check_key_policy",
        String,
        "\"warn\"",
        "Evaluate each key policy for `ami_users` and `publish_accounts`: `warn`, `fail` or `off`.",
    ),
    f(
        "copy_timeout",
        String,
        "\"2h\"",
        "How long `copy_to` waits for each copy to become `available` (`45m`, `2h`, `1h30m`). A copy still pending then is reported; it keeps going in AWS and the next run adopts it.",
    ),
    f(
        "copy_to",
        Blocks(COPY_TO_FIELDS),
        "",
        "Repeated block: copy every AMI into a consumer account, encrypted with that account's own key, then verify and publish it there. Its account is implied in `ami_users` and `snapshot_users`. Packer 1.7+ in HCL2 (Packer 1.6.x: JSON templates only). Keys below.",
    ),
    f(
        "deprecate_after",
        String,
        "",
        "Deprecate every regional AMI this long after its creation (`90d`, `2w`, `36h`, `1d12h`): `EnableImageDeprecation`, read back and verified; the same time on every re-run. Not with `deprecate_at`.",
    ),
    f(
        "deprecate_at",
        String,
        "",
        "Deprecate every regional AMI at this RFC 3339 time (`2027-01-31T00:00:00Z`; AWS rounds to the minute): `EnableImageDeprecation`, read back and verified, written only when it differs.",
    ),
    f(
        "deregistration_protection",
        Bool,
        "false",
        "Turn on deregistration protection on every regional AMI (`EnableImageDeregistrationProtection`), read back and verified. `amikey retire` never deregisters a protected AMI.",
    ),
    f(
        "deregistration_protection_cooldown",
        Bool,
        "false",
        "With `deregistration_protection`: keep the AMI protected for 24 hours after protection is turned off (`WithCooldown`).",
    ),
    f(
        "endpoint_url",
        String,
        "",
        "Send every EC2, KMS, SSM and STS call to this endpoint (an emulator such as moto). `AWS_ENDPOINT_URL` is honoured too.",
    ),
    f(
        "kms_key_id",
        String,
        "",
        "The intended KMS key for every region without an entry in `region_kms_key_ids`: key id, key ARN, `alias/NAME`, alias ARN or multi-Region `mrk-…` id, resolved in each region.",
    ),
    f(
        "max_retries",
        Number,
        "4",
        "Times an AWS call is retried after its first attempt, as in packer-plugin-amazon (standard retry mode with backoff, including throttling): at most `max_retries + 1` attempts; 1 to 50. amikey 0.1.0 counted attempts here: the same value now allows one more try, and the default (4 retries, 5 attempts) is unchanged.",
    ),
    f(
        "on_copy_failure",
        String,
        "\"warn\"",
        "What a failed `copy_to` copy does to the build: `warn` (report through the UI, keep the producer's AMIs) or `fail` (error; Packer then deletes the producer's AMIs).",
    ),
    f(
        "on_violation",
        String,
        "\"fail\"",
        "What a finding does to the build: `fail` (error; Packer then deletes the AMIs) or `warn` (report through the UI, share and publish nothing, keep the AMIs).",
    ),
    f("profile", String, "", "Shared-config profile to use (as `AWS_PROFILE`)."),
    f(
        "prune",
        Bool,
        "false",
        "Remove launch and create-volume permissions that are not in the configuration. Without it amikey only adds.",
    ),
    f(
        "publish_accounts",
        ListOfString,
        "[]",
        "Consumer account ids to write the SSM parameters in as well, through the role `publish_role_name`. Each also gets launch permission.",
    ),
    f(
        "publish_role_name",
        String,
        "",
        "Role name assumed in each of `publish_accounts` (`arn:aws:iam::ACCOUNT:role/NAME`).",
    ),
    f(
        "region",
        String,
        "",
        "Home region for STS and for clients not tied to an AMI region. Default: the SDK region chain, else the first AMI region.",
    ),
    f(
        "region_kms_key_ids",
        MapOfString,
        "{}",
        "Intended KMS key per region (`region = key`), as in amazon-ebs; overrides `kms_key_id` for that region.",
    ),
    f("secret_key", String, "", "AWS secret access key, with `access_key`."),
    f(
        "skip_region_validation",
        Bool,
        "false",
        "Accept region names amikey does not know (new or partition regions).",
    ),
    f(
        "snapshot_users",
        ListOfString,
        "[]",
        "12-digit account ids to grant `createVolumePermission` on every snapshot of every AMI.",
    ),
    f(
        "ssm_path",
        String,
        "",
        "Publish per region `<ssm_path>/image_id` (DataType `aws:ec2:image`), `<ssm_path>/kms_key_arn` and `<ssm_path>/snapshot_ids`.",
    ),
    f("token", String, "", "AWS session token, with `access_key` and `secret_key`."),
];

/// The keys of one `copy_to` block, alphabetically.
pub const COPY_TO_FIELDS: &[Field] = &[
    f("account", String, "", "Required. The 12-digit consumer account id to copy into."),
    f(
        "kms_key_id",
        String,
        "",
        "The consumer's key for every region without an entry in `region_kms_key_ids`: an alias (`alias/NAME`, resolved in that account and each region), key id or key ARN. Never `aws/ebs`.",
    ),
    f(
        "region_kms_key_ids",
        MapOfString,
        "{}",
        "The consumer's key per region (`region = key`); overrides `kms_key_id` there.",
    ),
    f("regions", ListOfString, "[]", "Copy only the AMIs of these regions (empty: every AMI region)."),
    f(
        "role_name",
        String,
        "",
        "Role assumed in the consumer account (`arn:aws:iam::ACCOUNT:role/NAME`) to copy, verify and publish there. Default: `publish_role_name`.",
    ),
    f(
        "ssm_path",
        String,
        "",
        "Publish the copy in the consumer account under this path (`image_id`, `kms_key_arn`, `snapshot_ids`, `source_image_id`). Default: the top-level `ssm_path`, else nothing is published.",
    ),
];

/// Keys of which at least one must be set: every AMI region needs an intended key, from
/// `region_kms_key_ids` or else `kms_key_id` (a region with neither is a `NO_INTENDED_KEY`
/// finding). Every other key is optional.
pub const REQUIRED_ONE_OF: &[&str] = &["kms_key_id", "region_kms_key_ids"];

fn doc_entry(f: &Field) -> std::string::String {
    let mut line = entry_line(f.name, f);
    if let FieldKind::Blocks(nested) = f.kind {
        for n in nested {
            line.push_str("  ");
            line.push_str(&entry_line(&format!("{}.{}", f.name, n.name), n));
        }
    }
    line
}

fn entry_line(name: &str, f: &Field) -> std::string::String {
    let mut line = format!("- `{name}` ({}) - {}", f.kind.hcl(), f.doc);
    if !f.default.is_empty() {
        line.push_str(&format!(" Default: `{}`.", f.default));
    }
    line.push('\n');
    line
}

/// `name (type)` of each key of a nested block, for one-line summaries.
fn nested_summary(nested: &[Field]) -> std::string::String {
    nested.iter().map(|n| format!("`{}` ({})", n.name, n.kind.hcl())).collect::<Vec<_>>().join(", ")
}

/// The "Configuration" section of the post-processor docs page (Packer plugin shape: Required
/// and Optional, each alphabetical, `- \`key\` (type) - doc. Default: …`), from [`FIELDS`].
pub fn docs_markdown() -> std::string::String {
    let mut out = std::string::String::from(
        "### Required\n\nAt least one of these, so that every AMI region has an intended key (a region with neither fails with `NO_INTENDED_KEY`):\n\n",
    );
    for f in FIELDS.iter().filter(|f| REQUIRED_ONE_OF.contains(&f.name)) {
        out.push_str(&doc_entry(f));
    }
    out.push_str("\n### Optional\n\n");
    for f in FIELDS.iter().filter(|f| !REQUIRED_ONE_OF.contains(&f.name)) {
        out.push_str(&doc_entry(f));
    }
    out
}

/// The README's configuration table, from [`FIELDS`].
pub fn readme_table() -> std::string::String {
    let mut out = std::string::String::from("| key | type | default | meaning |\n|---|---|---|---|\n");
    for f in FIELDS {
        let default =
            if f.default.is_empty() { std::string::String::new() } else { format!("`{}`", f.default) };
        let mut doc = f.doc.replace('|', "\\|");
        if let FieldKind::Blocks(nested) = f.kind {
            doc = format!("{} Keys: {}.", doc.trim_end_matches(" Keys below."), nested_summary(nested));
        }
        out.push_str(&format!("| `{}` | {} | {default} | {doc} |\n", f.name, f.kind.hcl()));
    }
    out
}

/// The text between `<!-- BEGIN GENERATED name -->` and `<!-- END GENERATED name -->` lines of
/// `doc`, or `None` if the markers are missing.
pub fn generated_section<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let begin = format!("<!-- BEGIN GENERATED {name} -->\n");
    let end = format!("<!-- END GENERATED {name} -->");
    let start = doc.find(&begin)? + begin.len();
    let len = doc[start..].find(&end)?;
    Some(&doc[start..start + len])
}

/// Retries after the first attempt when `max_retries` is not set (the `FIELDS` default says the
/// same; a test keeps them equal): 5 attempts, as before `max_retries` counted retries.
pub const DEFAULT_MAX_RETRIES: u32 = 4;

/// Attempts per AWS call for a `max_retries` setting: the first attempt plus `max_retries`
/// retries, as packer-plugin-amazon counts them (its `max_retries` is the AWS SDK for Go's
/// `MaxRetries`, retries after the first attempt).
pub fn max_attempts(max_retries: Option<u32>) -> u32 {
    max_retries.unwrap_or(DEFAULT_MAX_RETRIES).saturating_add(1)
}

/// What a finding does to a Packer build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnViolation {
    /// Fail the build (Packer then destroys the builder's AMIs).
    #[default]
    Fail,
    /// Report, share and publish nothing, keep the AMIs.
    Warn,
}

/// How the key-policy check reacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyCheck {
    /// Do not evaluate key policies.
    Off,
    /// Report problems as warnings.
    #[default]
    Warn,
    /// Treat problems as findings.
    Fail,
}

/// The typed configuration. Field names are exactly the keys of [`FIELDS`]; a test keeps the two
/// in step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct Settings {
    pub access_key: Option<std::string::String>,
    pub allow_public: bool,
    pub ami_org_arns: Vec<std::string::String>,
    pub ami_ou_arns: Vec<std::string::String>,
    pub ami_users: Vec<std::string::String>,
    pub assume_role: BTreeMap<std::string::String, std::string::String>,
    pub check_key_policy: PolicyCheck,
    pub copy_timeout: Option<std::string::String>,
    #[serde(deserialize_with = "one_or_many")]
    pub copy_to: Vec<CopyTo>,
    pub deprecate_after: Option<std::string::String>,
    pub deprecate_at: Option<std::string::String>,
    pub deregistration_protection: bool,
    pub deregistration_protection_cooldown: bool,
    pub endpoint_url: Option<std::string::String>,
    pub kms_key_id: Option<std::string::String>,
    pub max_retries: Option<u32>,
    pub on_copy_failure: Option<OnViolation>,
    pub on_violation: OnViolation,
    pub profile: Option<std::string::String>,
    pub prune: bool,
    pub publish_accounts: Vec<std::string::String>,
    pub publish_role_name: Option<std::string::String>,
    pub region: Option<std::string::String>,
    pub region_kms_key_ids: BTreeMap<std::string::String, std::string::String>,
    pub secret_key: Option<std::string::String>,
    pub skip_region_validation: bool,
    pub snapshot_users: Vec<std::string::String>,
    pub ssm_path: Option<std::string::String>,
    pub token: Option<std::string::String>,
}

/// One `copy_to` block: a consumer account to copy the AMIs into. Keys are [`COPY_TO_FIELDS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct CopyTo {
    pub account: std::string::String,
    pub kms_key_id: Option<std::string::String>,
    pub region_kms_key_ids: BTreeMap<std::string::String, std::string::String>,
    pub regions: Vec<std::string::String>,
    pub role_name: Option<std::string::String>,
    pub ssm_path: Option<std::string::String>,
}

/// A repeated block: HCL gives one block as a map and several as a list.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error as _;
    let v = match serde_json::Value::deserialize(d)? {
        serde_json::Value::Object(m) => serde_json::Value::Array(vec![serde_json::Value::Object(m)]),
        other => other,
    };
    serde_json::from_value(v).map_err(D::Error::custom)
}

/// Parses an HCL configuration file holding the post-processor block's keys (the block body,
/// without the `post-processor "amikey" {}` wrapper). Unknown keys and wrong types are errors
/// naming the key.
pub fn parse_hcl(text: &str) -> Result<Settings, std::string::String> {
    hcl::from_str::<Settings>(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_max_retries_default_is_the_one_used() {
        let f = FIELDS.iter().find(|f| f.name == "max_retries").unwrap();
        assert_eq!(f.default, DEFAULT_MAX_RETRIES.to_string());
    }

    /// `max_retries` counts retries, as in packer-plugin-amazon: one more attempt than retries.
    #[test]
    fn max_retries_counts_retries_not_attempts() {
        assert_eq!(max_attempts(None), 5, "the default: 4 retries, 5 attempts (unchanged)");
        assert_eq!(max_attempts(Some(1)), 2);
        assert_eq!(max_attempts(Some(2)), 3);
        assert_eq!(max_attempts(Some(50)), 51);
        assert_eq!(max_attempts(Some(u32::MAX)), u32::MAX, "no overflow");
    }

    #[test]
    fn fields_and_settings_have_the_same_keys() {
        let v = serde_json::to_value(Settings::default()).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        let names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        assert_eq!(keys, names, "FIELDS must list exactly the Settings fields, alphabetically");
    }

    fn iam_block(root: &std::path::Path) -> std::string::String {
        let policy = std::fs::read_to_string(root.join("docs/iam-producer-policy.json")).unwrap();
        format!("```json\n{}\n```\n", policy.trim_end())
    }

    /// The docs page and the README carry the tables [`FIELDS`] renders, so they cannot drift.
    /// `AMIKEY_UPDATE_DOCS=1 cargo test --lib core::config` rewrites them.
    #[test]
    fn docs_page_and_readme_match_fields() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (file, name, want) in [
            ("docs/post-processor-amikey.md", "configuration", docs_markdown()),
            ("README.md", "configuration", readme_table()),
            ("docs/post-processor-amikey.md", "iam-policy", iam_block(root)),
        ] {
            let path = root.join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let have = generated_section(&text, name)
                .unwrap_or_else(|| panic!("{file}: no `<!-- BEGIN GENERATED {name} -->` … END markers"));
            if have == want {
                continue;
            }
            if std::env::var_os("AMIKEY_UPDATE_DOCS").is_some() {
                let begin = format!("<!-- BEGIN GENERATED {name} -->\n");
                let start = text.find(&begin).unwrap() + begin.len();
                let spliced = format!("{}{want}{}", &text[..start], &text[start + have.len()..]);
                std::fs::write(&path, spliced).unwrap();
                continue;
            }
            panic!(
                "{file} is out of date with core::config::FIELDS; run `AMIKEY_UPDATE_DOCS=1 cargo test --lib core::config`.\nExpected:\n{want}"
            );
        }
    }

    #[test]
    fn docs_list_every_field_once_required_first() {
        let md = docs_markdown();
        for f in FIELDS {
            assert_eq!(md.matches(&format!("- `{}` (", f.name)).count(), 1, "{}", f.name);
        }
        let (required, optional) = md.split_once("### Optional").unwrap();
        assert!(
            required.contains("- `kms_key_id` (string)")
                && required.contains("- `region_kms_key_ids` (map(string))")
        );
        assert!(optional.contains("- `max_retries` (number) - ") && optional.contains("Default: `4`."));
        assert_eq!(readme_table().lines().count(), FIELDS.len() + 2);
        assert_eq!(
            generated_section("a\n<!-- BEGIN GENERATED x -->\nbody\n<!-- END GENERATED x -->\n", "x"),
            Some("body\n")
        );
        assert_eq!(generated_section("no markers", "x"), None);
    }

    #[test]
    fn hcl_config_parses_and_rejects_unknown_keys() {
        let s = parse_hcl("kms_key_id = \"alias/x\"\nami_users = [\"111122223333\"]\nregion_kms_key_ids = { eu-west-1 = \"alias/eu\" }\non_violation = \"warn\"\n").unwrap();
        assert_eq!(s.kms_key_id.as_deref(), Some("alias/x"));
        assert_eq!(s.on_violation, OnViolation::Warn);
        assert_eq!(s.region_kms_key_ids["eu-west-1"], "alias/eu");
        let e = parse_hcl("kms_key = \"x\"").unwrap_err();
        assert!(e.contains("kms_key"), "{e}");
        assert!(parse_hcl("ami_users = 3").is_err());
    }

    #[test]
    fn copy_to_blocks_parse_repeated_and_reject_unknown_keys() {
        let s = parse_hcl(
            "kms_key_id = \"alias/x\"\ncopy_to {\n  account = \"210987654321\"\n  role_name = \"r\"\n  kms_key_id = \"alias/mine\"\n  region_kms_key_ids = { eu-west-1 = \"alias/eu\" }\n}\ncopy_to {\n  account = \"111122223333\"\n  regions = [\"us-east-1\"]\n}\n",
        )
        .unwrap();
        assert_eq!(s.copy_to.len(), 2);
        assert_eq!(s.copy_to[0].account, "210987654321");
        assert_eq!(s.copy_to[0].region_kms_key_ids["eu-west-1"], "alias/eu");
        assert_eq!(s.copy_to[1].regions, vec!["us-east-1".to_string()]);
        let one = parse_hcl("copy_to {\n  account = \"210987654321\"\n}\n").unwrap();
        assert_eq!(one.copy_to.len(), 1);
        let e = parse_hcl("copy_to {\n  acount = \"210987654321\"\n}\n").unwrap_err();
        assert!(e.contains("acount"), "{e}");
        let md = docs_markdown();
        assert!(md.contains("  - `copy_to.account` (string) - Required."), "{md}");
        assert!(readme_table().contains("Keys: `account` (string)"));
    }
}
