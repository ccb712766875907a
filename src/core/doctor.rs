//! `amikey doctor`: walk the launch chain of one shared encrypted AMI in one consumer account
//! and region, and say which link is broken and which command fixes it.
//!
//! Owns: the checklist ([`diagnose`]) over plain observed facts ([`DoctorFacts`]), the likely
//! cause of `Client.InternalError: Client error on launch`, and the text rendering. Must not
//! know: AWS SDK types, how facts were gathered, the clock (`now` is passed in, as Unix
//! seconds).
//!
//! Check ids are stable (`ami.visible`, `key.reachable:<arn>`, `grant:<label>:<arn>`, …) so
//! pipelines can match on them in the JSON output.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::core::facts::KeyManager;
use crate::core::grants::{ExistingGrant, Grantee, catalog_entry, explain_access_denied, satisfies};
use crate::core::ids::{arn_region, is_aws_managed_alias};
use crate::core::policy::generate_command;

/// The outcome of `DescribeKey` on one key ARN from the consumer account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum KeyDescribe {
    /// Described.
    Ok {
        /// `KeyManager`.
        key_manager: KeyManager,
        /// `KeyState` (`Enabled`, `Disabled`, `PendingDeletion`, …).
        state: String,
        /// `MultiRegion`.
        multi_region: bool,
    },
    /// `NotFoundException`.
    NotFound,
    /// `AccessDeniedException`.
    AccessDenied,
    /// Any other error, with its message.
    Error {
        /// The message.
        message: String,
    },
}

/// The AMI as `DescribeImages` shows it to the consumer (the producer's view is
/// [`crate::core::facts::ImageFacts`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerImage {
    /// `State` (`available`, `pending`, `failed`, …).
    pub state: String,
    /// `OwnerId`.
    pub owner_id: String,
    /// `Name`.
    pub name: Option<String>,
    /// `DeprecationTime` (RFC 3339, as AWS returns it).
    pub deprecation_time: Option<String>,
}

impl ConsumerImage {
    /// What doctor shows of the image DescribeImages returned.
    pub fn from_facts(image: &crate::core::facts::ImageFacts) -> ConsumerImage {
        ConsumerImage {
            state: image.state.clone(),
            owner_id: image.owner.clone().unwrap_or_default(),
            name: image.name.clone(),
            deprecation_time: image.deprecation_time.clone(),
        }
    }
}

/// One EBS snapshot of the AMI's block-device mapping, as the consumer sees it (the producer's
/// view is [`crate::core::facts::SnapshotFacts`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerSnapshot {
    /// Device name (`/dev/xvda`).
    pub device_name: String,
    /// Snapshot id.
    pub snapshot_id: String,
    /// Whether `DescribeSnapshots` returned it (needs `createVolumePermission` cross-account).
    pub visible: bool,
    /// `Encrypted` (from the AMI's mapping or the snapshot).
    pub encrypted: Option<bool>,
    /// `KmsKeyId` of the snapshot, when visible.
    pub kms_key_id: Option<String>,
    /// Key manager, when known.
    pub key_manager: Option<KeyManager>,
}

/// A service-linked role (or other grantee) the launch depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceRoleFacts {
    /// The grantee.
    pub grantee: Grantee,
    /// Its ARN in the consumer account.
    pub role_arn: String,
    /// Whether it exists: `Some(true)` when a grant names it (or IAM was read), `Some(false)` when
    /// KMS rejected it as a grantee, `None` when unknown (amikey does not call IAM).
    pub exists: Option<bool>,
    /// Its grants on the keys involved (`ListGrants` filtered by grantee).
    pub grants: Vec<ExistingGrant>,
}

/// A launch-template or Auto Scaling block-device mapping that changes a volume's encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockDeviceOverride {
    /// Where it is (`launch template lt-0abc version 3`, `ASG web`).
    pub source: String,
    /// Device name.
    pub device_name: String,
    /// `Encrypted`, when set.
    pub encrypted: Option<bool>,
    /// `KmsKeyId`, when set (ARN, key id or alias).
    pub kms_key_id: Option<String>,
}

/// Everything doctor looks at, gathered read-only by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorFacts {
    /// The consumer account.
    pub consumer_account: String,
    /// The region.
    pub region: String,
    /// The AMI id.
    pub ami_id: String,
    /// `None` when `DescribeImages` does not return it.
    pub image: Option<ConsumerImage>,
    /// The AMI's EBS snapshots.
    pub snapshots: Vec<ConsumerSnapshot>,
    /// The key ARN published for this AMI (SSM `…/kms_key_arn`) or given with `--key-arn`.
    pub published_key_arn: Option<String>,
    /// `DescribeKey` per key ARN.
    pub keys: BTreeMap<String, KeyDescribe>,
    /// Service-linked roles (and other grantees) to check.
    pub service_roles: Vec<ServiceRoleFacts>,
    /// What `--asg` / `--launch-template` named, if anything.
    pub launch_target: Option<String>,
    /// Block-device overrides found in that target.
    pub overrides: Vec<BlockDeviceOverride>,
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// ✔
    Pass,
    /// ✘
    Fail,
    /// Not applicable, or not decidable from the facts.
    Skip,
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id.
    pub id: String,
    /// One-line title.
    pub title: String,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The exact command that fixes a failure, when there is one.
    pub fix: Option<String>,
}

/// The checklist and its conclusion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorReport {
    /// AMI id.
    pub ami_id: String,
    /// Region.
    pub region: String,
    /// Consumer account.
    pub account: String,
    /// Checks, in chain order.
    pub checks: Vec<Check>,
    /// The most likely cause of `Client.InternalError: Client error on launch`, when a failing
    /// check explains it.
    pub likely_cause: Option<String>,
}

impl DoctorReport {
    /// 0 when nothing failed, 1 otherwise (2, for errors, is the caller's).
    pub fn exit_code(&self) -> u8 {
        u8::from(self.checks.iter().any(|c| c.status == Status::Fail))
    }

    /// The checklist as text: `✔`, `✘` or `–` per check, the fix under each failure, and the
    /// likely cause last.
    pub fn render_text(&self) -> String {
        let mut out =
            format!("amikey doctor {} in {} (account {})\n", self.ami_id, self.region, self.account);
        for c in &self.checks {
            let mark = match c.status {
                Status::Pass => "✔",
                Status::Fail => "✘",
                Status::Skip => "–",
            };
            let _ = writeln!(out, "{mark} {}: {}", c.title, c.detail);
            if let (Status::Fail, Some(fix)) = (c.status, &c.fix) {
                let _ = writeln!(out, "    fix: {fix}");
            }
        }
        if let Some(cause) = &self.likely_cause {
            let _ = writeln!(out, "likely cause of Client.InternalError: {cause}");
        }
        out
    }
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp (`2024-05-01T00:00:00.000Z`,
/// `…+02:00`). `None` when it does not parse.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse::<i64>().ok() };
    let (y, mo, d, h, mi, se) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.get(3..4) == Some(":") =>
        {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest.get(1..3)?.parse::<i64>().ok()? * 3600 + rest.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

fn check(
    id: impl Into<String>,
    title: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check { id: id.into(), title: title.into(), status, detail: detail.into(), fix }
}

fn grant_command(grantee: &Grantee, key_arn: &str) -> String {
    match grantee {
        Grantee::Service { service, suffix: None } => {
            format!("amikey grant --key-arn {key_arn} --service {service}")
        }
        Grantee::Service { service, suffix: Some(s) } => {
            let role = catalog_entry(service)
                .map(|e| e.role_name_with(Some(s)))
                .unwrap_or_else(|| format!("{service}_{s}"));
            format!("amikey grant --key-arn {key_arn} --service {role}")
        }
        Grantee::Role { arn } => format!("amikey grant --key-arn {key_arn} --grantee-role {arn}"),
    }
}

/// Runs the checklist over `facts` at time `now` (Unix seconds).
pub fn diagnose(facts: &DoctorFacts, now: i64) -> DoctorReport {
    let acct = &facts.consumer_account;
    let region = &facts.region;
    let ami = &facts.ami_id;
    let mut checks = Vec::new();
    let mut causes: Vec<(u8, String)> = Vec::new();

    // 1. The AMI is shared with this account.
    match &facts.image {
        Some(img) => checks.push(check(
            "ami.visible",
            "AMI shared with this account",
            Status::Pass,
            format!("{ami} is visible (owner {})", img.owner_id),
            None,
        )),
        None => checks.push(check(
            "ami.visible",
            "AMI shared with this account",
            Status::Fail,
            format!("DescribeImages does not return {ami} in {region}: not shared with {acct}, deregistered, or in another region"),
            Some(format!(
                "aws ec2 modify-image-attribute --region {region} --image-id {ami} --launch-permission \"Add=[{{UserId={acct}}}]\"  # in the producer account"
            )),
        )),
    }

    // 2. State and deprecation.
    match &facts.image {
        None => {
            checks.push(check("ami.state", "AMI available", Status::Skip, "AMI not visible", None));
            checks.push(check(
                "ami.deprecation",
                "AMI not deprecated",
                Status::Skip,
                "AMI not visible",
                None,
            ));
        }
        Some(img) => {
            if img.state == "available" {
                checks.push(check("ami.state", "AMI available", Status::Pass, "state available", None));
            } else {
                checks.push(check(
                    "ami.state",
                    "AMI available",
                    Status::Fail,
                    format!("state {}: only an available AMI can be launched", img.state),
                    None,
                ));
            }
            match img.deprecation_time.as_deref() {
                None => checks.push(check(
                    "ami.deprecation",
                    "AMI not deprecated",
                    Status::Pass,
                    "no deprecation time",
                    None,
                )),
                Some(t) => match parse_rfc3339(t) {
                    None => checks.push(check(
                        "ami.deprecation",
                        "AMI not deprecated",
                        Status::Skip,
                        format!("deprecation time {t:?} is not RFC 3339"),
                        None,
                    )),
                    Some(at) if at > now => checks.push(check(
                        "ami.deprecation",
                        "AMI not deprecated",
                        Status::Pass,
                        format!("deprecates at {t}"),
                        None,
                    )),
                    Some(_) => checks.push(check(
                        "ami.deprecation",
                        "AMI not deprecated",
                        Status::Fail,
                        format!(
                            "deprecated since {t}: still launchable by id, but hidden from DescribeImages \
                             listings and filters; move to the producer's current AMI"
                        ),
                        None,
                    )),
                },
            }
        }
    }

    // 3. Snapshots visible, and which keys encrypt them.
    let hidden: Vec<&ConsumerSnapshot> = facts.snapshots.iter().filter(|s| !s.visible).collect();
    if facts.snapshots.is_empty() {
        checks.push(check(
            "snapshots.visible",
            "Snapshots visible",
            Status::Skip,
            "no EBS snapshots known for this AMI",
            None,
        ));
    } else if hidden.is_empty() {
        checks.push(check(
            "snapshots.visible",
            "Snapshots visible",
            Status::Pass,
            format!("{} snapshot(s) visible", facts.snapshots.len()),
            None,
        ));
    } else {
        let ids = hidden.iter().map(|s| s.snapshot_id.as_str()).collect::<Vec<_>>().join(", ");
        match &facts.published_key_arn {
            Some(k) => checks.push(check(
                "snapshots.visible",
                "Snapshots visible",
                Status::Skip,
                format!("{ids} not shared for create-volume (launching does not need it); using the published key {k}"),
                None,
            )),
            None => checks.push(check(
                "snapshots.visible",
                "Snapshots visible",
                Status::Fail,
                format!("{ids} not visible and no key published: amikey cannot tell which key encrypts them"),
                Some(format!("amikey doctor --ami {region}:{ami} --key-arn KEY_ARN  # the key ARN from the producer's SSM mapping")),
            )),
        }
    }

    // Keys in play: from visible snapshots, else the published one.
    let mut keys: BTreeSet<String> = facts
        .snapshots
        .iter()
        .filter(|s| s.encrypted == Some(true))
        .filter_map(|s| s.kms_key_id.clone())
        .collect();
    let any_encrypted = facts.snapshots.iter().any(|s| s.encrypted == Some(true));
    if keys.is_empty()
        && let Some(k) = &facts.published_key_arn
    {
        keys.insert(k.clone());
    }
    let manager = |k: &str| -> Option<KeyManager> {
        if is_aws_managed_alias(k) {
            return Some(KeyManager::Aws);
        }
        facts.snapshots.iter().find(|s| s.kms_key_id.as_deref() == Some(k)).and_then(|s| s.key_manager).or(
            match facts.keys.get(k) {
                Some(KeyDescribe::Ok { key_manager, .. }) => Some(*key_manager),
                _ => None,
            },
        )
    };

    // 4. Encrypted with a customer managed key, not aws/ebs.
    if !any_encrypted && keys.is_empty() {
        let status = if facts.snapshots.is_empty() { Status::Skip } else { Status::Pass };
        checks.push(check(
            "snapshots.cmk",
            "Encrypted with a customer managed key",
            status,
            "snapshots are not encrypted: no key involved",
            None,
        ));
    } else {
        let aws_managed: Vec<&String> = keys.iter().filter(|k| manager(k) == Some(KeyManager::Aws)).collect();
        if aws_managed.is_empty() {
            checks.push(check(
                "snapshots.cmk",
                "Encrypted with a customer managed key",
                Status::Pass,
                format!("key(s): {}", keys.iter().cloned().collect::<Vec<_>>().join(", ")),
                None,
            ));
        } else {
            let list = aws_managed.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
            checks.push(check(
                "snapshots.cmk",
                "Encrypted with a customer managed key",
                Status::Fail,
                format!("encrypted with the AWS managed key ({list}), which no other account can use"),
                Some(format!(
                    "rebuild in the producer account with a customer managed key for {region} (amikey `region_kms_key_ids`, amazon-ebs `kms_key_id`)"
                )),
            ));
            causes.push((0, format!("the snapshots are encrypted with the producer's AWS managed key ({list}), which cannot be used from account {acct}")));
        }
    }

    // 5. Each key is reachable (DescribeKey).
    let mut reachable: BTreeSet<&String> = BTreeSet::new();
    for k in &keys {
        let id = format!("key.reachable:{k}");
        let title = "Key reachable (DescribeKey)";
        match facts.keys.get(k) {
            None => checks.push(check(id, title, Status::Skip, format!("{k} was not described"), None)),
            Some(KeyDescribe::Ok { state, .. }) if state == "Enabled" => {
                reachable.insert(k);
                checks.push(check(id, title, Status::Pass, format!("{k} is Enabled"), None));
            }
            Some(KeyDescribe::Ok { state, .. }) => {
                let fix = match state.as_str() {
                    "Disabled" => Some(format!("aws kms enable-key --key-id {k}  # in the producer account")),
                    "PendingDeletion" | "PendingReplicaDeletion" => Some(format!(
                        "aws kms cancel-key-deletion --key-id {k} && aws kms enable-key --key-id {k}  # in the producer account"
                    )),
                    _ => None,
                };
                checks.push(check(
                    id,
                    title,
                    Status::Fail,
                    format!("{k} is {state}: KMS refuses every cryptographic use"),
                    fix,
                ));
                causes.push((1, format!("key {k} is {state}, so EC2 cannot decrypt the AMI's snapshots")));
            }
            Some(KeyDescribe::NotFound) => {
                checks.push(check(
                    id,
                    title,
                    Status::Fail,
                    format!("{k} does not exist in {region} (deleted, or a multi-Region key without a replica in {region})"),
                    None,
                ));
                causes.push((1, format!("key {k} does not exist in {region}")));
            }
            Some(KeyDescribe::AccessDenied) => {
                checks.push(check(
                    id,
                    title,
                    Status::Fail,
                    explain_access_denied("DescribeKey", k, acct),
                    Some(generate_command(&[acct], Some(k))),
                ));
                causes.push((
                    1,
                    format!("the key policy of {k} does not let account {acct} use the key, so EC2 cannot decrypt the AMI's snapshots"),
                ));
            }
            Some(KeyDescribe::Error { message }) => {
                checks.push(check(
                    id,
                    title,
                    Status::Fail,
                    format!("DescribeKey on {k} failed: {message}"),
                    None,
                ));
            }
        }
    }

    // 6. Service-linked roles exist, and 7. each has a grant on each key.
    let mut roles: Vec<&ServiceRoleFacts> = facts.service_roles.iter().collect();
    roles.sort_by(|a, b| a.grantee.cmp(&b.grantee));
    for role in &roles {
        let label = role.grantee.label();
        let ops = match role.grantee.operations() {
            Ok(ops) => ops,
            Err(e) => {
                checks.push(check(
                    format!("slr.exists:{label}"),
                    format!("Service-linked role {label}"),
                    Status::Skip,
                    e.to_string(),
                    None,
                ));
                continue;
            }
        };
        let create = match &role.grantee {
            Grantee::Service { service, suffix } => {
                catalog_entry(service).map(|e| e.create_command(suffix.as_deref()))
            }
            Grantee::Role { .. } => None,
        };
        match role.exists {
            Some(true) => checks.push(check(
                format!("slr.exists:{label}"),
                format!("Service-linked role {label}"),
                Status::Pass,
                format!("{} exists (a grant names it)", role.role_arn),
                None,
            )),
            Some(false) => {
                checks.push(check(
                    format!("slr.exists:{label}"),
                    format!("Service-linked role {label}"),
                    Status::Fail,
                    format!("{} does not exist yet, so no grant can name it", role.role_arn),
                    create.clone(),
                ));
                causes.push((
                    2,
                    format!(
                        "the service-linked role {} does not exist yet, so it has no grant on the key",
                        role.role_arn
                    ),
                ));
            }
            None => checks.push(check(
                format!("slr.exists:{label}"),
                format!("Service-linked role {label}"),
                Status::Skip,
                format!(
                    "{} not verified (amikey does not call IAM); if `amikey grant` reports it missing, create it{}",
                    role.role_arn,
                    create.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
                ),
                None,
            )),
        }
        for k in &keys {
            if manager(k) == Some(KeyManager::Aws) {
                continue;
            }
            let id = format!("grant:{label}:{k}");
            let title = format!("Grant for {label} on the key");
            if role.exists == Some(false) {
                checks.push(check(id, title, Status::Skip, "create the service-linked role first", None));
                continue;
            }
            let region_of_key = arn_region(k).unwrap_or(region);
            if role.grants.iter().any(|g| satisfies(g, k, region_of_key, &role.role_arn, &ops)) {
                checks.push(check(
                    id,
                    title,
                    Status::Pass,
                    format!("{} has a grant on {k} with {}", role.role_arn, ops.join(" ")),
                    None,
                ));
            } else {
                let mut detail = format!("no grant on {k} gives {} {}", role.role_arn, ops.join(" "));
                if !reachable.contains(k) {
                    detail.push_str("; fix the key policy first, or the grant will be denied too");
                }
                checks.push(check(id, title, Status::Fail, detail, Some(grant_command(&role.grantee, k))));
                causes.push((
                    3,
                    format!(
                        "{} has no grant on {k}: KMS denies it when EC2 decrypts the snapshot for the launch, and the group reports \
                         `Client.InternalError: Client error on launch` (AWS troubleshooting, cross-account key)",
                        role.role_arn
                    ),
                ));
            }
        }
    }

    // 8. Launch template / ASG block-device overrides.
    match &facts.launch_target {
        None => checks.push(check(
            "overrides",
            "Block-device overrides keep the AMI's key",
            Status::Skip,
            "no --asg or --launch-template given",
            None,
        )),
        Some(target) => {
            let mut bad = false;
            for o in &facts.overrides {
                let id = format!("overrides:{}:{}", o.source, o.device_name);
                let title = format!("{} {} keeps the AMI's key", o.source, o.device_name);
                if o.encrypted == Some(false) && any_encrypted {
                    bad = true;
                    checks.push(check(
                        id,
                        title,
                        Status::Fail,
                        "sets Encrypted=false on a volume from an encrypted snapshot, which EC2 rejects",
                        Some(format!("remove Encrypted=false from {} {}", o.source, o.device_name)),
                    ));
                    continue;
                }
                let Some(other) = o.kms_key_id.as_ref().filter(|k| !keys.contains(*k)) else {
                    continue;
                };
                let covered = roles.iter().filter(|r| r.grantee.operations().is_ok()).all(|r| {
                    r.grantee.operations().is_ok_and(|ops| {
                        let reg = arn_region(other).unwrap_or(region);
                        r.grants.iter().any(|g| satisfies(g, other, reg, &r.role_arn, &ops))
                    })
                });
                if covered && !roles.is_empty() {
                    checks.push(check(
                        id,
                        title,
                        Status::Pass,
                        format!("re-encrypts with {other}, which the service-linked roles have grants on"),
                        None,
                    ));
                    continue;
                }
                bad = true;
                let fix = if other.starts_with("arn:") {
                    let grantee = roles
                        .first()
                        .map(|r| r.grantee.clone())
                        .unwrap_or(Grantee::Service { service: "autoscaling".into(), suffix: None });
                    Some(grant_command(&grantee, other))
                } else {
                    Some(format!(
                        "use the key ARN instead of {other:?} in {}, or remove its KmsKeyId to keep the AMI's key",
                        o.source
                    ))
                };
                checks.push(check(
                    id,
                    title,
                    Status::Fail,
                    format!(
                        "re-encrypts {} with {other}: the service-linked role needs that key too (a grant, or a key-policy statement if it is in this account), besides ReEncrypt on the AMI's key",
                        o.device_name
                    ),
                    fix,
                ));
                causes.push((
                    4,
                    format!(
                        "{} re-encrypts {} with {other}, which the service-linked role cannot use",
                        o.source, o.device_name
                    ),
                ));
            }
            if !bad {
                checks.push(check(
                    "overrides",
                    "Block-device overrides keep the AMI's key",
                    Status::Pass,
                    format!("{target}: no override changes the key"),
                    None,
                ));
            }
        }
    }

    causes.sort();
    DoctorReport {
        ami_id: ami.clone(),
        region: region.clone(),
        account: acct.clone(),
        checks,
        likely_cause: causes.into_iter().next().map(|(_, c)| c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::grants::grantee_arn;

    const ACCT: &str = "111122223333";
    // Seed 001's key, AMI and region.
    const KEY: &str = "arn:aws:kms:us-east-1:444455556666:key/12ee9c11-3476-492c-b5cc-ed4a4d636337";
    const AMI: &str = "ami-0ad79b02b5570cdcc";
    const NOW: i64 = 1_750_000_000; // 2025-06-15T15:06:40Z
    const OPS: &[&str] = &[
        "CreateGrant",
        "Decrypt",
        "DescribeKey",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "ReEncryptFrom",
        "ReEncryptTo",
    ];

    fn asg() -> Grantee {
        Grantee::Service { service: "autoscaling".into(), suffix: None }
    }

    fn asg_arn() -> String {
        grantee_arn(&asg(), ACCT).unwrap()
    }

    fn grant(key: &str, ops: &[&str]) -> ExistingGrant {
        ExistingGrant {
            key_arn: key.into(),
            region: arn_region(key).unwrap_or_default().into(),
            grant_id: "g1".into(),
            name: None,
            grantee_arn: asg_arn(),
            operations: ops.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn healthy() -> DoctorFacts {
        DoctorFacts {
            consumer_account: ACCT.into(),
            region: "us-east-1".into(),
            ami_id: AMI.into(),
            image: Some(ConsumerImage {
                state: "available".into(),
                owner_id: "444455556666".into(),
                name: Some("golden".into()),
                deprecation_time: None,
            }),
            snapshots: vec![ConsumerSnapshot {
                device_name: "/dev/xvda".into(),
                snapshot_id: "snap-1".into(),
                visible: true,
                encrypted: Some(true),
                kms_key_id: Some(KEY.into()),
                key_manager: None,
            }],
            published_key_arn: None,
            keys: BTreeMap::from([(
                KEY.to_owned(),
                KeyDescribe::Ok {
                    key_manager: KeyManager::Customer,
                    state: "Enabled".into(),
                    multi_region: false,
                },
            )]),
            service_roles: vec![ServiceRoleFacts {
                grantee: asg(),
                role_arn: asg_arn(),
                exists: Some(true),
                grants: vec![grant(KEY, OPS)],
            }],
            launch_target: None,
            overrides: vec![],
        }
    }

    fn status_of<'a>(r: &'a DoctorReport, id: &str) -> &'a Check {
        r.checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id} in {r:#?}"))
    }

    #[test]
    fn healthy_chain_passes() {
        let r = diagnose(&healthy(), NOW);
        assert_eq!(r.exit_code(), 0, "{}", r.render_text());
        assert!(r.likely_cause.is_none());
        let ids: Vec<&str> = r.checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "ami.visible",
                "ami.state",
                "ami.deprecation",
                "snapshots.visible",
                "snapshots.cmk",
                &format!("key.reachable:{KEY}"),
                "slr.exists:autoscaling",
                &format!("grant:autoscaling:{KEY}"),
                "overrides",
            ]
        );
    }

    /// Seed 001: the key policy is right, the AMI is shared, but the ASG role has no grant.
    #[test]
    fn seed_001_missing_grant_gives_grant_command_and_cause() {
        let mut f = healthy();
        f.service_roles[0].grants.clear();
        let r = diagnose(&f, NOW);
        assert_eq!(r.exit_code(), 1);
        let c = status_of(&r, &format!("grant:autoscaling:{KEY}"));
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some(format!("amikey grant --key-arn {KEY} --service autoscaling").as_str())
        );
        assert!(r.likely_cause.as_deref().unwrap().contains("Client.InternalError"));
        let text = r.render_text();
        assert!(
            text.contains("✘ Grant for autoscaling on the key") && text.contains("    fix: amikey grant"),
            "{text}"
        );
        assert!(text.contains("✔ AMI shared with this account"));
    }

    /// Seed 001's own hand-made grant lacks Encrypt, GenerateDataKey and DescribeKey: amikey
    /// holds it to AWS's documented list.
    #[test]
    fn insufficient_grant_fails() {
        let mut f = healthy();
        f.service_roles[0].grants = vec![grant(
            KEY,
            &["Decrypt", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo", "CreateGrant"],
        )];
        assert_eq!(status_of(&diagnose(&f, NOW), &format!("grant:autoscaling:{KEY}")).status, Status::Fail);
    }

    #[test]
    fn access_denied_key_points_at_policy_generate() {
        let mut f = healthy();
        f.keys.insert(KEY.into(), KeyDescribe::AccessDenied);
        f.service_roles[0].grants.clear();
        let r = diagnose(&f, NOW);
        let c = status_of(&r, &format!("key.reachable:{KEY}"));
        assert_eq!(
            c.fix.as_deref(),
            Some(format!("amikey policy generate --consumer-account {ACCT} --key {KEY} --merge").as_str())
        );
        // The key-policy cause ranks before the missing grant.
        assert!(r.likely_cause.as_deref().unwrap().contains("key policy"), "{:?}", r.likely_cause);
        assert!(
            status_of(&r, &format!("grant:autoscaling:{KEY}")).detail.contains("fix the key policy first")
        );
    }

    /// Doctor used to recognise only `…alias/aws/ebs`; any `alias/aws/…` is an AWS managed key.
    #[test]
    fn any_aws_alias_is_an_aws_managed_key() {
        for key in ["alias/aws/other", "arn:aws:kms:us-east-1:444455556666:alias/aws/lambda"] {
            let mut f = healthy();
            f.snapshots[0].kms_key_id = Some(key.into());
            let r = diagnose(&f, NOW);
            assert_eq!(status_of(&r, "snapshots.cmk").status, Status::Fail, "{key}");
            assert!(r.likely_cause.as_deref().unwrap().contains("AWS managed key"), "{key}");
        }
    }

    #[test]
    fn aws_managed_key_and_disabled_key() {
        let mut f = healthy();
        f.snapshots[0].kms_key_id = Some("arn:aws:kms:us-east-1:444455556666:alias/aws/ebs".into());
        let r = diagnose(&f, NOW);
        assert_eq!(status_of(&r, "snapshots.cmk").status, Status::Fail);
        assert!(r.likely_cause.as_deref().unwrap().contains("AWS managed key"));

        let mut f = healthy();
        f.keys.insert(
            KEY.into(),
            KeyDescribe::Ok {
                key_manager: KeyManager::Customer,
                state: "PendingDeletion".into(),
                multi_region: false,
            },
        );
        let c = diagnose(&f, NOW);
        assert!(
            status_of(&c, &format!("key.reachable:{KEY}"))
                .fix
                .as_deref()
                .unwrap()
                .starts_with("aws kms cancel-key-deletion")
        );
    }

    #[test]
    fn missing_service_linked_role_says_how_to_create_it() {
        let mut f = healthy();
        f.service_roles[0] = ServiceRoleFacts {
            grantee: Grantee::Service { service: "autoscaling".into(), suffix: Some("prod".into()) },
            role_arn: format!("{}_prod", asg_arn()),
            exists: Some(false),
            grants: vec![],
        };
        let r = diagnose(&f, NOW);
        let c = status_of(&r, "slr.exists:autoscaling_prod");
        assert_eq!(
            c.fix.as_deref(),
            Some(
                "aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com --custom-suffix prod"
            )
        );
        assert_eq!(status_of(&r, &format!("grant:autoscaling_prod:{KEY}")).status, Status::Skip);
    }

    /// amikey does not call IAM: without a grant naming the role its existence is unknown, the
    /// check is skipped (with the create command in its detail) and the grant is still checked.
    #[test]
    fn unknown_service_linked_role_is_skipped_and_its_grant_still_checked() {
        let mut f = healthy();
        f.service_roles[0].exists = None;
        f.service_roles[0].grants.clear();
        let r = diagnose(&f, NOW);
        let c = status_of(&r, "slr.exists:autoscaling");
        assert_eq!(c.status, Status::Skip);
        assert!(
            c.detail
                .contains("aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com"),
            "{}",
            c.detail
        );
        let g = status_of(&r, &format!("grant:autoscaling:{KEY}"));
        assert_eq!(g.status, Status::Fail);
        assert_eq!(
            g.fix.as_deref(),
            Some(format!("amikey grant --key-arn {KEY} --service autoscaling").as_str())
        );
    }

    #[test]
    fn hidden_snapshots_use_the_published_key_or_fail() {
        let mut f = healthy();
        f.snapshots[0].visible = false;
        f.snapshots[0].kms_key_id = None;
        f.published_key_arn = Some(KEY.into());
        let r = diagnose(&f, NOW);
        assert_eq!(status_of(&r, "snapshots.visible").status, Status::Skip);
        assert_eq!(r.exit_code(), 0, "{}", r.render_text());
        f.published_key_arn = None;
        let r = diagnose(&f, NOW);
        assert_eq!(status_of(&r, "snapshots.visible").status, Status::Fail);
    }

    #[test]
    fn ami_not_shared_state_and_deprecation() {
        let mut f = healthy();
        f.image = None;
        let r = diagnose(&f, NOW);
        let c = status_of(&r, "ami.visible");
        assert!(c.fix.as_deref().unwrap().contains("--launch-permission \"Add=[{UserId=111122223333}]\""));
        assert_eq!(status_of(&r, "ami.state").status, Status::Skip);

        let mut f = healthy();
        if let Some(img) = f.image.as_mut() {
            img.state = "pending".into();
            img.deprecation_time = Some("2025-01-01T00:00:00.000Z".into());
        }
        let r = diagnose(&f, NOW);
        assert_eq!(status_of(&r, "ami.state").status, Status::Fail);
        assert_eq!(status_of(&r, "ami.deprecation").status, Status::Fail);
        if let Some(img) = f.image.as_mut() {
            img.deprecation_time = Some("2030-01-01T00:00:00Z".into());
        }
        assert_eq!(status_of(&diagnose(&f, NOW), "ami.deprecation").status, Status::Pass);
    }

    #[test]
    fn launch_template_override_to_another_key() {
        let other = "arn:aws:kms:us-east-1:111122223333:key/local";
        let mut f = healthy();
        f.launch_target = Some("launch template lt-0abc".into());
        f.overrides = vec![BlockDeviceOverride {
            source: "launch template lt-0abc version 3".into(),
            device_name: "/dev/xvda".into(),
            encrypted: Some(true),
            kms_key_id: Some(other.into()),
        }];
        let r = diagnose(&f, NOW);
        let c = status_of(&r, "overrides:launch template lt-0abc version 3:/dev/xvda");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some(format!("amikey grant --key-arn {other} --service autoscaling").as_str())
        );
        // With a grant on that key too, it passes.
        f.service_roles[0].grants.push(grant(other, OPS));
        let r = diagnose(&f, NOW);
        assert_eq!(r.exit_code(), 0, "{}", r.render_text());
        // Encrypted=false on an encrypted snapshot.
        f.overrides[0] = BlockDeviceOverride {
            source: "ASG web".into(),
            device_name: "/dev/xvda".into(),
            encrypted: Some(false),
            kms_key_id: None,
        };
        assert_eq!(diagnose(&f, NOW).exit_code(), 1);
    }

    #[test]
    fn report_serializes_for_pipelines() {
        let v = serde_json::to_value(diagnose(&healthy(), NOW)).unwrap();
        assert_eq!(v["checks"][0]["status"], "pass");
        assert_eq!(v["checks"][0]["id"], "ami.visible");
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2025-06-15T15:06:40.000Z"), Some(NOW));
        assert_eq!(parse_rfc3339("2025-06-15T17:06:40+02:00"), Some(NOW));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800));
        // Never panics on odd input, including multi-byte characters at any offset.
        for odd in [
            "2025-06-15T15:06:40+0\u{e9}00",
            "2025-06-15T15:06:4\u{e9}Z",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            "2025-06-15T15:06:40.\u{e9}",
        ] {
            assert_eq!(parse_rfc3339(odd), None, "{odd}");
        }
        for bad in [
            "",
            "2025-06-15",
            "2025-13-01T00:00:00Z",
            "2025-06-15T15:06:40",
            "2025-06-15T15:06:40.Z",
            "x025-06-15T15:06:40Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
