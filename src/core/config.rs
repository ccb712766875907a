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
        }
    }
}

/// One attribute of the schema: its name, type, default and documentation.
#[derive(Debug, Clone, Copy)]
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
    Field {
        name,
        kind,
        default,
        doc,
    }
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
        "10",
        "Maximum attempts per AWS call (the SDK's standard retry mode with backoff, including throttling).",
    ),
    f(
        "on_violation",
        String,
        "\"fail\"",
        "What a finding does to the build: `fail` (error; Packer then deletes the AMIs) or `warn` (report through the UI, share and publish nothing, keep the AMIs).",
    ),
    f(
        "profile",
        String,
        "",
        "Shared-config profile to use (as `AWS_PROFILE`).",
    ),
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
    f(
        "secret_key",
        String,
        "",
        "AWS secret access key, with `access_key`.",
    ),
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
    f(
        "token",
        String,
        "",
        "AWS session token, with `access_key` and `secret_key`.",
    ),
];

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
    pub endpoint_url: Option<std::string::String>,
    pub kms_key_id: Option<std::string::String>,
    pub max_retries: Option<u32>,
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
