//! Copy into consumer accounts: every consumer owns a copy of each regional AMI, encrypted with
//! its own key. The pure part: which copies to make ([`plan_items`]), whether each may start
//! ([`decide`]: the preconditions, each failure a [`CopyFinding`] naming account, region, key and
//! the fix), the deterministic `ClientToken` and tags of each `CopyImage`, the wait and retry
//! schedule, and the report.
//!
//! Owns: the copy tags ([`TAG_SOURCE_IMAGE`], [`TAG_SOURCE_ACCOUNT`]), the KMS calls a copy makes
//! on the source key ([`COPY_KEY_ACTIONS`]), the concurrency bound ([`MAX_CONCURRENT_COPIES`]).
//! Must not know: AWS SDK types, I/O, the clock (callers pass attempt numbers, not times).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::artifact::{AmiSet, valid_region};
use super::config::CopyTo;
use super::facts::{ImageFacts, KeyLookup, KeyManager, SnapshotFacts};
use super::ids::{arn_account, is_aws_managed_alias, is_key_ref};
use super::intent::check_ssm_path;
use super::policy::{CRYPTO_SID, Caller, Decision, Policy, Request, evaluate, generate_command};

/// Tag on every copy (image and snapshots): the source AMI id. A re-run finds its copies by it.
pub const TAG_SOURCE_IMAGE: &str = "amikey:source-image-id";
/// Tag on every copy: the account that owns the source AMI.
pub const TAG_SOURCE_ACCOUNT: &str = "amikey:source-account";
/// The SSM parameter (under the copy's `ssm_path`) naming the source AMI.
pub const SOURCE_IMAGE_PARAMETER: &str = "source_image_id";

/// How many copy items call AWS at once (across accounts and regions): an item holds a slot for
/// its reads and `CopyImage`, for each poll, and for verify and publish, never while it waits
/// between polls, so every copy of a run is in progress in AWS at the same time. AWS limits the
/// AMI copies in progress per destination region and account; one AMI set puts at most one copy
/// in each account × region, so the quota is met only when other copies run there, and then
/// `ResourceLimitExceeded` is retried with backoff.
pub const MAX_CONCURRENT_COPIES: usize = 32;

/// Attempts of `CopyImage` on `ResourceLimitExceeded` (the copy quota) before giving up.
pub const RESOURCE_LIMIT_ATTEMPTS: u32 = 8;

/// Default `copy_timeout`.
pub const DEFAULT_COPY_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// KMS calls EC2 makes on the *source* key, in the consumer's name, when the consumer copies an
/// AMI encrypted with it (EBS UG "Copy an AMI": the copy decrypts the source snapshots and
/// re-encrypts under the destination key).
pub const COPY_KEY_ACTIONS: &[&str] = &[
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
];

/// One copy to make: the AMI of `region` into `account`, under `key` there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CopyItem {
    /// Consumer account.
    pub account: String,
    /// Region (the copy stays in the source AMI's region).
    pub region: String,
    /// Source AMI id.
    pub source_ami: String,
    /// The consumer's key reference for this region, as configured.
    pub key: String,
    /// Where to publish the copy in the consumer account.
    pub ssm_path: Option<String>,
    /// Role assumed in the consumer account (push); `None` when running as the consumer (pull).
    pub role_name: Option<String>,
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The copies `targets` ask for, one per account × region, sorted. `default_ssm_path` is used
/// for a block without its own; `default_role` (push: `publish_role_name`) for a block without
/// `role_name`; `pull` = no role needed. Every problem is returned at once; nothing is called on
/// bad input.
pub fn plan_items(
    targets: &[CopyTo],
    amis: &AmiSet,
    default_ssm_path: Option<&str>,
    default_role: Option<&str>,
    pull: bool,
    skip_region_validation: bool,
) -> Result<Vec<CopyItem>, Vec<String>> {
    let mut errors = Vec::new();
    let mut items = Vec::new();
    let mut seen = BTreeSet::new();
    if targets.is_empty() {
        errors.push("nothing to copy into: give at least one account (--account, or a copy_to block)".into());
    }
    for t in targets {
        let a = t.account.trim();
        let who = format!("copy_to account {a:?}");
        if !is_account(a) {
            errors.push(format!("{who}: not a 12-digit account id"));
            continue;
        }
        if !seen.insert(a.to_string()) {
            errors.push(format!("{who}: listed twice; give each account one copy_to block"));
            continue;
        }
        let role = t.role_name.as_deref().or(default_role).filter(|r| !r.is_empty());
        if !pull && role.is_none() {
            errors.push(format!(
                "{who}: no role to assume in it: set role_name (or publish_role_name, or --role-name)"
            ));
        }
        let ssm = match t.ssm_path.as_deref().or(default_ssm_path) {
            Some(p) => match check_ssm_path(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(format!("{who}: {e}"));
                    None
                }
            },
            None => None,
        };
        for r in t.regions.iter().chain(t.region_kms_key_ids.keys()) {
            if !valid_region(r, skip_region_validation) {
                errors.push(format!(
                    "{who}: unknown region {r:?} (check the spelling, or set skip_region_validation)"
                ));
            } else if !amis.0.contains_key(r) {
                errors.push(format!(
                    "{who}: region {r} has no AMI in the artifact (AMI regions: {})",
                    amis.regions().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        for (region, ami) in &amis.0 {
            if !t.regions.is_empty() && !t.regions.contains(region) {
                continue;
            }
            let Some(key) = t.region_kms_key_ids.get(region).or(t.kms_key_id.as_ref()) else {
                errors.push(format!(
                    "{who}: no key for {region}: set kms_key_id (every region) or region_kms_key_ids[\"{region}\"]"
                ));
                continue;
            };
            if !is_key_ref(key) {
                errors.push(format!(
                    "{who}: {key:?} is not a KMS key reference (key id, alias/NAME, key or alias ARN)"
                ));
                continue;
            }
            if is_aws_managed_alias(key) {
                errors.push(format!(
                    "{who}: {key} is an AWS managed key: a copy must be under the consumer's own customer managed key"
                ));
                continue;
            }
            items.push(CopyItem {
                account: a.to_string(),
                region: region.clone(),
                source_ami: ami.clone(),
                key: key.clone(),
                ssm_path: ssm.clone(),
                role_name: role.map(str::to_string),
            });
        }
    }
    errors.sort();
    errors.dedup();
    if errors.is_empty() {
        items.sort();
        Ok(items)
    } else {
        Err(errors)
    }
}

/// FNV-1a 64 of `data` from `seed`.
fn fnv(seed: u64, data: &[u8]) -> u64 {
    data.iter().fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The deterministic `ClientToken` of an item's `CopyImage` (at most 64 ASCII characters, as
/// EC2 requires): the same source, account, region and key give the same token, so a retried or
/// re-run call returns the copy already started instead of a second one.
pub fn client_token(item: &CopyItem) -> String {
    let data = format!("{}|{}|{}|{}", item.source_ami, item.region, item.account, item.key);
    let a = fnv(0xcbf2_9ce4_8422_2325, data.as_bytes());
    let b = fnv(a ^ 0x9e37_79b9_7f4a_7c15, data.as_bytes());
    format!("amikey-copy-{a:016x}{b:016x}")
}

/// The tags of a copy (image and snapshots), sorted.
pub fn copy_tags(item: &CopyItem, source_account: &str) -> Vec<(String, String)> {
    let (k, v) = super::plan::MANAGED_TAG;
    let mut t = vec![
        (TAG_SOURCE_ACCOUNT.to_string(), source_account.to_string()),
        (TAG_SOURCE_IMAGE.to_string(), item.source_ami.clone()),
        (k.to_string(), v.to_string()),
    ];
    t.sort();
    t
}

/// What was gathered for one item before any write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyFacts {
    /// The source AMI, as the reader sees it (`None`: missing or not visible).
    pub source: Option<ImageFacts>,
    /// The source snapshots that could be described.
    pub source_snapshots: BTreeMap<String, SnapshotFacts>,
    /// The source snapshots' keys, by the reference the snapshots name (push mode, producer side).
    pub source_keys: BTreeMap<String, KeyLookup>,
    /// Whether the account may launch the source AMI (`None`: not known).
    pub launch_shared: Option<bool>,
    /// Per source snapshot, whether the account has `createVolumePermission` on it.
    pub volume_shared: BTreeMap<String, bool>,
    /// Per source key ARN, its key policy (or why it could not be read). Absent: not read (pull).
    pub source_key_policies: BTreeMap<String, Result<String, String>>,
    /// The destination key in the consumer account and region (`None`: not looked up).
    pub dest_key: Option<KeyLookup>,
    /// The copy a previous run made (found by its tags), if any.
    pub existing: Option<ImageFacts>,
}

/// A precondition or result code. Stable: tooling may match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CopyCode {
    /// The source AMI does not exist or is not available.
    SourceNotFound,
    /// The account has no launch permission on the source AMI.
    NotSharedLaunch,
    /// The account has no `createVolumePermission` on a source snapshot.
    NotSharedSnapshot,
    /// A source snapshot is under an AWS managed key: no other account can ever copy it.
    SourceAwsManagedKey,
    /// The source key's policy does not let the account use it for a copy.
    SourceKeyPolicyDenies,
    /// The destination key does not exist (or is not visible) in the account and region.
    DestKeyNotFound,
    /// The destination key is AWS managed (`aws/ebs`).
    DestKeyAwsManaged,
    /// The destination key is not enabled.
    DestKeyNotEnabled,
    /// The destination key lives in another region.
    DestKeyWrongRegion,
    /// The destination key belongs to another account.
    DestKeyWrongAccount,
    /// The copy failed in AWS (state `failed`, or CopyImage refused).
    CopyFailed,
    /// The copy was not `available` within `copy_timeout`.
    CopyTimedOut,
    /// The copy is not entirely under the destination key.
    CopyNotVerified,
}

impl CopyCode {
    /// SCREAMING_SNAKE spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyCode::SourceNotFound => "SOURCE_NOT_FOUND",
            CopyCode::NotSharedLaunch => "NOT_SHARED_LAUNCH",
            CopyCode::NotSharedSnapshot => "NOT_SHARED_SNAPSHOT",
            CopyCode::SourceAwsManagedKey => "SOURCE_AWS_MANAGED_KEY",
            CopyCode::SourceKeyPolicyDenies => "SOURCE_KEY_POLICY_DENIES",
            CopyCode::DestKeyNotFound => "DEST_KEY_NOT_FOUND",
            CopyCode::DestKeyAwsManaged => "DEST_KEY_AWS_MANAGED",
            CopyCode::DestKeyNotEnabled => "DEST_KEY_NOT_ENABLED",
            CopyCode::DestKeyWrongRegion => "DEST_KEY_WRONG_REGION",
            CopyCode::DestKeyWrongAccount => "DEST_KEY_WRONG_ACCOUNT",
            CopyCode::CopyFailed => "COPY_FAILED",
            CopyCode::CopyTimedOut => "COPY_TIMED_OUT",
            CopyCode::CopyNotVerified => "COPY_NOT_VERIFIED",
        }
    }
}

impl std::fmt::Display for CopyCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with one copy: names the account, region, key and what to do next.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CopyFinding {
    /// Stable code.
    pub code: CopyCode,
    /// Consumer account.
    pub account: String,
    /// Region.
    pub region: String,
    /// The key concerned (destination key reference, or the source key ARN).
    pub key: String,
    /// What is wrong and the fix.
    pub message: String,
}

/// What to do with one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyDecision {
    /// A previous run's copy exists: wait for it, verify and publish it (no CopyImage).
    Adopt(String),
    /// Start the copy with this request.
    Copy(CopyRequest),
    /// A precondition failed: touch nothing in this account and region.
    Blocked,
}

/// The parameters of one `CopyImage` call, made in the consumer account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyRequest {
    /// Source AMI.
    pub source_ami: String,
    /// Source region (= destination region).
    pub source_region: String,
    /// Name, carried over from the source.
    pub name: String,
    /// Description, carried over from the source.
    pub description: Option<String>,
    /// `KmsKeyId`: the resolved destination key ARN.
    pub kms_key_arn: String,
    /// Deterministic `ClientToken`.
    pub client_token: String,
    /// Tags for the image and its snapshots.
    pub tags: Vec<(String, String)>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// What to do.
    pub decision: CopyDecision,
    /// Blocking problems (non-empty iff `Blocked`).
    pub findings: Vec<CopyFinding>,
    /// Problems that do not block (a key policy amikey cannot fully evaluate, ...).
    pub warnings: Vec<String>,
}

fn dest_key_findings(item: &CopyItem, facts: &CopyFacts, out: &mut Vec<CopyFinding>) -> Option<String> {
    let (a, r, k) = (&item.account, &item.region, &item.key);
    let mut push = |code, message: String| {
        out.push(CopyFinding { code, account: a.clone(), region: r.clone(), key: k.clone(), message })
    };
    match &facts.dest_key {
        Some(KeyLookup::Found(key)) => {
            let mut ok = true;
            if key.manager == KeyManager::Aws {
                ok = false;
                push(
                    CopyCode::DestKeyAwsManaged,
                    format!(
                        "{a} {r}: the destination key {k} is {}, an AWS managed key: the copy must be under the account's own customer managed key. Create one (aws kms create-key --region {r}, then aws kms create-alias) and name it in kms_key_id",
                        key.describe()
                    ),
                );
            }
            if key.region().is_some_and(|kr| kr != r) {
                ok = false;
                push(
                    CopyCode::DestKeyWrongRegion,
                    format!(
                        "{a} {r}: the destination key {k} resolves to {}, which lives in {}: a copy in {r} needs a key in {r} (set region_kms_key_ids[\"{r}\"])",
                        key.arn,
                        key.region().unwrap_or("?")
                    ),
                );
            }
            if arn_account(&key.arn).is_some_and(|ka| ka != a) {
                ok = false;
                push(
                    CopyCode::DestKeyWrongAccount,
                    format!(
                        "{a} {r}: the destination key {k} resolves to {}, a key of account {}: the copy must be under a key account {a} owns (use an alias or key id, resolved in {a})",
                        key.arn,
                        arn_account(&key.arn).unwrap_or("?")
                    ),
                );
            }
            if key.state != "Enabled" {
                ok = false;
                push(
                    CopyCode::DestKeyNotEnabled,
                    format!(
                        "{a} {r}: the destination key {} is {}: enable it in account {a} (aws kms enable-key --key-id {} --region {r}) or name another key",
                        key.describe(),
                        key.state,
                        key.key_id
                    ),
                );
            }
            ok.then(|| key.arn.clone())
        }
        Some(KeyLookup::AccessDenied(why)) => {
            push(
                CopyCode::DestKeyNotFound,
                format!(
                    "{a} {r}: the destination key {k} cannot be described in account {a} ({why}): allow kms:DescribeKey on it to the copying role"
                ),
            );
            None
        }
        Some(KeyLookup::NotFound) | None => {
            push(
                CopyCode::DestKeyNotFound,
                format!(
                    "{a} {r}: the destination key {k} does not exist in account {a} in {r}: create it there (an alias must resolve in each account and region), or name another key"
                ),
            );
            None
        }
    }
}

/// Evaluates `policy` (the source key's, as JSON) for a copy by `account` in `region`:
/// [`COPY_KEY_ACTIONS`] via `ec2.REGION.amazonaws.com`. Returns the denied actions with why
/// (empty: allowed), and the actions amikey cannot decide.
fn copy_policy_gaps(policy: &str, key_arn: &str, account: &str, region: &str) -> (Vec<String>, Vec<String>) {
    let value: serde_json::Value = serde_json::from_str(policy).unwrap_or(serde_json::Value::Null);
    let parsed = match Policy::from_value(&value) {
        Ok(p) => p,
        Err(e) => return (vec![format!("the key policy of {key_arn} cannot be read ({e})")], Vec::new()),
    };
    let caller = Caller::role(&format!("arn:aws:iam::{account}:role/amikey-copy"));
    let mut denied = Vec::new();
    let mut undecided = Vec::new();
    for action in COPY_KEY_ACTIONS {
        let mut req = Request::new(action, caller.clone(), key_arn)
            .with("kms:ViaService", &format!("ec2.{region}.amazonaws.com"));
        if *action == "kms:CreateGrant" {
            req = req.with("kms:GrantIsForAWSResource", "true");
            req.unknown.insert("kms:granteeprincipal".to_owned());
            req.unknown.insert("kms:grantoperations".to_owned());
        }
        let eval = evaluate(&parsed, &req);
        match eval.decision {
            Decision::Allow => {}
            Decision::ExplicitDeny => denied.push(format!(
                "{action} is denied by {}",
                eval.matched.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )),
            Decision::ImplicitDeny => denied.push(format!("{action}: no statement allows it")),
            Decision::Indeterminate => undecided.push(format!(
                "{action}: {}",
                eval.undetermined
                    .iter()
                    .map(|u| format!("{}: {}", u.statement, u.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        }
    }
    (denied, undecided)
}

/// The preconditions of one item, then what to do. An existing copy (found by tags) is adopted
/// whatever the preconditions say now: the copy exists, and verification judges it.
pub fn decide(item: &CopyItem, facts: &CopyFacts, source_account: &str) -> Decided {
    let mut findings = Vec::new();
    let mut warnings = Vec::new();
    if let Some(existing) = &facts.existing {
        return Decided { decision: CopyDecision::Adopt(existing.ami_id.clone()), findings, warnings };
    }
    let (a, r) = (&item.account, &item.region);
    let dest_arn = dest_key_findings(item, facts, &mut findings);
    let mut push = |code, key: &str, message: String| {
        findings.push(CopyFinding {
            code,
            account: a.clone(),
            region: r.clone(),
            key: key.to_string(),
            message,
        })
    };
    let src = &item.source_ami;
    let source = match &facts.source {
        Some(img) if img.state == "available" => Some(img),
        Some(img) => {
            push(
                CopyCode::SourceNotFound,
                &item.key,
                format!(
                    "{a} {r}: the source AMI {src} is {}, not available: copy it once it is available",
                    img.state
                ),
            );
            None
        }
        None => {
            push(
                CopyCode::SourceNotFound,
                &item.key,
                format!(
                    "{a} {r}: the source AMI {src} does not exist in {r} or is not visible to account {a}: check the artifact, or share it (ami_users)"
                ),
            );
            None
        }
    };
    if facts.launch_shared == Some(false) {
        push(
            CopyCode::NotSharedLaunch,
            &item.key,
            format!(
                "{a} {r}: account {a} has no launch permission on {src}: add it to ami_users (amikey publish --ami-user {a}), or aws ec2 modify-image-attribute --image-id {src} --launch-permission \"Add=[{{UserId={a}}}]\" --region {r}"
            ),
        );
    }
    let unshared: Vec<&String> = facts.volume_shared.iter().filter(|(_, s)| !**s).map(|(id, _)| id).collect();
    for s in unshared {
        push(
            CopyCode::NotSharedSnapshot,
            &item.key,
            format!(
                "{a} {r}: account {a} has no createVolumePermission on {s} of {src}, which a copy needs: add it to snapshot_users (amikey publish --snapshot-user {a}), or aws ec2 modify-snapshot-attribute --snapshot-id {s} --attribute createVolumePermission --operation-type add --user-ids {a} --region {r}"
            ),
        );
    }
    let mut source_key_arns: BTreeSet<String> = BTreeSet::new();
    if let Some(img) = source {
        for b in &img.block_devices {
            let Some(sid) = &b.snapshot_id else { continue };
            let Some(snap) = facts.source_snapshots.get(sid) else { continue };
            let Some(kref) = &snap.kms_key_id else { continue };
            match facts.source_keys.get(kref) {
                Some(KeyLookup::Found(k)) if k.manager == KeyManager::Aws => push(
                    CopyCode::SourceAwsManagedKey,
                    &k.arn,
                    format!(
                        "{a} {r}: {sid} of {src} is encrypted with {}, an AWS managed key, which no other account can use: rebuild the AMI under a customer managed key (kms_key_id / region_kms_key_ids in the builder)",
                        k.describe()
                    ),
                ),
                Some(KeyLookup::Found(k)) => {
                    source_key_arns.insert(k.arn.clone());
                }
                _ => {
                    source_key_arns.insert(kref.clone());
                }
            }
        }
    }
    for key_arn in &source_key_arns {
        match facts.source_key_policies.get(key_arn) {
            None => {}
            Some(Err(why)) => warnings.push(format!(
                "{a} {r}: cannot read the key policy of the source key {key_arn} ({why}); not checked whether account {a} may use it for the copy"
            )),
            Some(Ok(policy)) => {
                let (denied, undecided) = copy_policy_gaps(policy, key_arn, a, r);
                if !denied.is_empty() {
                    let fix = generate_command(&[a.as_str()], Some(key_arn));
                    push(
                        CopyCode::SourceKeyPolicyDenies,
                        key_arn,
                        format!(
                            "{a} {r}: the key policy of the source key {key_arn} does not let account {a} use it for a copy ({}); statement {CRYPTO_SID} is missing: `{fix}`",
                            denied.join("; ")
                        ),
                    );
                }
                for u in undecided {
                    warnings.push(format!(
                        "{a} {r}: cannot decide from the key policy of {key_arn} whether account {a} may copy ({u}); verify that statement by hand"
                    ));
                }
            }
        }
    }
    findings.sort();
    findings.dedup();
    let decision = match (findings.is_empty(), source, dest_arn) {
        (true, Some(img), Some(kms_key_arn)) => CopyDecision::Copy(CopyRequest {
            source_ami: src.clone(),
            source_region: r.clone(),
            name: img.name.clone().unwrap_or_else(|| format!("amikey-copy-{src}")),
            description: img.description.clone(),
            kms_key_arn,
            client_token: client_token(item),
            tags: copy_tags(item, source_account),
        }),
        _ => CopyDecision::Blocked,
    };
    Decided { decision, findings, warnings }
}

/// What polling a pending copy found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStep {
    /// Done: `available`.
    Available,
    /// `failed` (or another terminal state).
    Failed,
    /// Still pending: poll again after this delay.
    Again(Duration),
    /// Past the deadline.
    TimedOut,
}

/// The next step of a wait: `state` is the copy's current state, `attempt` the number of polls
/// so far, `elapsed` the time spent, `timeout` the budget. The delay doubles from 1 s up to 30 s.
pub fn wait_step(state: &str, attempt: u32, elapsed: Duration, timeout: Duration) -> WaitStep {
    match state {
        "available" => WaitStep::Available,
        "pending" | "transient" => {
            if elapsed >= timeout {
                return WaitStep::TimedOut;
            }
            let delay = Duration::from_secs(1u64 << attempt.min(5)).min(Duration::from_secs(30));
            WaitStep::Again(delay.min(timeout.saturating_sub(elapsed)).max(Duration::from_millis(100)))
        }
        _ => WaitStep::Failed,
    }
}

/// The backoff before retry `attempt` (1-based) of a `CopyImage` refused with
/// `ResourceLimitExceeded`: 2, 4, 8 … s, at most 60 s; `None` once [`RESOURCE_LIMIT_ATTEMPTS`]
/// are used up.
pub fn resource_limit_backoff(attempt: u32) -> Option<Duration> {
    (attempt < RESOURCE_LIMIT_ATTEMPTS).then(|| Duration::from_secs((2u64 << attempt.min(5)).min(60)))
}

/// Parses a Go-style duration (`45m`, `2h`, `1h30m`, `90s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: write it like 45m, 2h or 1h30m");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The result of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyStatus {
    /// Copied now (CopyImage called), verified, published.
    Copied,
    /// A previous run's copy, now verified and published.
    Adopted,
    /// A previous run's copy, verified; nothing changed.
    Unchanged,
    /// `--dry-run`: would copy.
    Planned,
    /// A precondition failed; nothing touched in that account and region.
    Blocked,
    /// Copy started but not available yet (timeout or cancel); it keeps going, a re-run adopts it.
    InProgress,
    /// The copy, its verification or its publication failed.
    Failed,
}

/// One account × region of a copy run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyItemReport {
    /// Consumer account.
    pub account: String,
    /// Region.
    pub region: String,
    /// Source AMI.
    pub source_ami: String,
    /// The copy, when one exists.
    pub copy_ami: Option<String>,
    /// The destination key ARN (resolved), when known.
    pub kms_key_arn: Option<String>,
    /// The copy's snapshots, when verified.
    pub snapshot_ids: Vec<String>,
    /// Outcome.
    pub status: CopyStatus,
    /// Parameters written in the consumer account.
    pub published: Vec<String>,
    /// Findings (blocking).
    pub findings: Vec<CopyFinding>,
    /// Notes that did not block.
    pub warnings: Vec<String>,
    /// An AWS error, when the item failed on one.
    pub error: Option<String>,
}

/// The report of a copy run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// `copy`.
    pub command: String,
    /// Planned only.
    pub dry_run: bool,
    /// Per account × region, sorted.
    pub items: Vec<CopyItemReport>,
}

impl CopyReport {
    /// Exit code: 0 every item done (or planned), 1 findings only, 2 an AWS error, timeout or
    /// cancel somewhere.
    pub fn exit_code(&self) -> u8 {
        if self.items.iter().any(|i| matches!(i.status, CopyStatus::InProgress) || i.error.is_some()) {
            2
        } else if self.items.iter().any(|i| !i.findings.is_empty()) {
            1
        } else {
            0
        }
    }

    /// True when every item is copied, adopted, unchanged or planned.
    pub fn is_clean(&self) -> bool {
        self.exit_code() == 0
    }

    /// Counts per status.
    pub fn counts(&self) -> BTreeMap<CopyStatus, usize> {
        let mut c = BTreeMap::new();
        for i in &self.items {
            *c.entry(i.status).or_insert(0) += 1;
        }
        c
    }

    /// One line: `6 copies: 4 copied, 2 unchanged`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .counts()
            .iter()
            .map(|(s, n)| {
                format!(
                    "{n} {}",
                    serde_json::to_value(s)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                        .replace('_', " ")
                )
            })
            .collect();
        format!(
            "{} cop{}: {}",
            self.items.len(),
            if self.items.len() == 1 { "y" } else { "ies" },
            parts.join(", ")
        )
    }

    /// Text rendering: one line per item, grouped by account, then findings and warnings.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut last = None;
        for i in &self.items {
            if last != Some(&i.account) {
                let _ = writeln!(out, "account {}", i.account);
                last = Some(&i.account);
            }
            let status = serde_json::to_value(i.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let copy = i.copy_ami.as_deref().unwrap_or("-");
            let key = i.kms_key_arn.as_deref().unwrap_or("-");
            let _ = writeln!(out, "  {:<14} {} -> {copy}  {status}  {key}", i.region, i.source_ami);
            for f in &i.findings {
                let _ = writeln!(out, "    {} {}", f.code, f.message);
            }
            if let Some(e) = &i.error {
                let _ = writeln!(out, "    ERROR {e}");
            }
            for w in &i.warnings {
                let _ = writeln!(out, "    warning: {w}");
            }
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::facts::{BlockDevice, KeyFacts};

    const KEY_EU: &str = "arn:aws:kms:eu-west-1:210987654321:key/11111111-2222-3333-4444-555555555555";
    const SRC_KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/aaaaaaaa-2222-3333-4444-555555555555";

    fn amis() -> AmiSet {
        AmiSet::from_pairs(["eu-west-1:ami-0123456789abcdef0", "us-east-1:ami-0fedcba9876543210"], false)
            .unwrap()
    }

    fn target(account: &str) -> CopyTo {
        CopyTo {
            account: account.into(),
            kms_key_id: Some("alias/mine".into()),
            role_name: Some("amikey-copy".into()),
            ..Default::default()
        }
    }

    fn item() -> CopyItem {
        CopyItem {
            account: "210987654321".into(),
            region: "eu-west-1".into(),
            source_ami: "ami-0123456789abcdef0".into(),
            key: "alias/mine".into(),
            ssm_path: Some("/images/golden".into()),
            role_name: Some("amikey-copy".into()),
        }
    }

    fn key(arn: &str, manager: KeyManager, state: &str) -> KeyLookup {
        KeyLookup::Found(KeyFacts {
            arn: arn.into(),
            key_id: arn.rsplit('/').next().unwrap().into(),
            manager,
            state: state.into(),
            alias: None,
            multi_region: false,
        })
    }

    fn good_facts() -> CopyFacts {
        CopyFacts {
            source: Some(ImageFacts {
                ami_id: "ami-0123456789abcdef0".into(),
                state: "available".into(),
                owner: Some("123456789012".into()),
                public: false,
                block_devices: vec![BlockDevice {
                    device_name: "/dev/xvda".into(),
                    snapshot_id: Some("snap-1".into()),
                    encrypted: Some(true),
                }],
                name: Some("golden-1".into()),
                description: Some("golden image".into()),
                creation_date: None,
                deprecation_time: None,
                deregistration_protection: None,
            }),
            source_snapshots: [(
                "snap-1".to_string(),
                SnapshotFacts {
                    snapshot_id: "snap-1".into(),
                    encrypted: true,
                    kms_key_id: Some(SRC_KEY.into()),
                },
            )]
            .into(),
            source_keys: [(SRC_KEY.to_string(), key(SRC_KEY, KeyManager::Customer, "Enabled"))].into(),
            launch_shared: Some(true),
            volume_shared: [("snap-1".to_string(), true)].into(),
            source_key_policies: BTreeMap::new(),
            dest_key: Some(key(KEY_EU, KeyManager::Customer, "Enabled")),
            existing: None,
        }
    }

    fn codes(d: &Decided) -> Vec<&'static str> {
        d.findings.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn plan_items_one_per_account_and_region_with_per_region_keys() {
        let mut t = target("210987654321");
        t.region_kms_key_ids.insert("us-east-1".into(), "alias/us".into());
        let items =
            plan_items(&[t, target("111122223333")], &amis(), Some("/images/golden"), None, false, false)
                .unwrap();
        let got: Vec<(&str, &str, &str)> =
            items.iter().map(|i| (i.account.as_str(), i.region.as_str(), i.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("111122223333", "eu-west-1", "alias/mine"),
                ("111122223333", "us-east-1", "alias/mine"),
                ("210987654321", "eu-west-1", "alias/mine"),
                ("210987654321", "us-east-1", "alias/us"),
            ]
        );
        assert!(items.iter().all(|i| i.ssm_path.as_deref() == Some("/images/golden")));
    }

    #[test]
    fn plan_items_rejects_bad_input_all_at_once() {
        let table: Vec<(CopyTo, &str)> = vec![
            (CopyTo { account: "12345".into(), ..target("x") }, "not a 12-digit account id"),
            (
                CopyTo { kms_key_id: Some("alias/aws/ebs".into()), ..target("210987654321") },
                "AWS managed key",
            ),
            (CopyTo { kms_key_id: None, ..target("210987654321") }, "no key for eu-west-1"),
            (CopyTo { kms_key_id: Some("nope".into()), ..target("210987654321") }, "not a KMS key reference"),
            (CopyTo { role_name: None, ..target("210987654321") }, "no role to assume"),
            (
                CopyTo { regions: vec!["ap-south-1".into()], ..target("210987654321") },
                "has no AMI in the artifact",
            ),
            (CopyTo { regions: vec!["mars-1".into()], ..target("210987654321") }, "unknown region"),
            (CopyTo { ssm_path: Some("aws/x".into()), ..target("210987654321") }, "ssm_path"),
        ];
        for (t, want) in table {
            let e = plan_items(&[t], &amis(), None, None, false, false).unwrap_err();
            assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:?}");
        }
        let e =
            plan_items(&[target("210987654321"), target("210987654321")], &amis(), None, None, false, false)
                .unwrap_err();
        assert!(e[0].contains("listed twice"));
        assert!(plan_items(&[], &amis(), None, None, false, false).is_err());
        // Pull mode needs no role; regions restrict.
        let t = CopyTo { role_name: None, regions: vec!["us-east-1".into()], ..target("210987654321") };
        let items = plan_items(&[t], &amis(), None, None, true, false).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].role_name, None);
    }

    #[test]
    fn client_token_is_deterministic_short_and_distinct() {
        let a = client_token(&item());
        assert_eq!(a, client_token(&item()));
        assert!(a.len() <= 64 && a.is_ascii());
        let other = CopyItem { account: "111122223333".into(), ..item() };
        assert_ne!(a, client_token(&other));
        let other_key = CopyItem { key: "alias/other".into(), ..item() };
        assert_ne!(a, client_token(&other_key));
    }

    #[test]
    fn clean_preconditions_give_a_copy_request() {
        let d = decide(&item(), &good_facts(), "123456789012");
        assert!(d.findings.is_empty(), "{:?}", d.findings);
        let CopyDecision::Copy(req) = d.decision else { panic!("{:?}", d.decision) };
        assert_eq!(req.kms_key_arn, KEY_EU);
        assert_eq!(req.name, "golden-1");
        assert_eq!(req.description.as_deref(), Some("golden image"));
        assert_eq!(req.client_token, client_token(&item()));
        assert!(req.tags.contains(&(TAG_SOURCE_IMAGE.into(), "ami-0123456789abcdef0".into())));
        assert!(req.tags.contains(&(TAG_SOURCE_ACCOUNT.into(), "123456789012".into())));
        assert!(req.tags.contains(&("managed-by".into(), "amikey".into())));
    }

    #[test]
    fn an_existing_copy_is_adopted_without_copying() {
        let mut f = good_facts();
        f.existing = Some(ImageFacts { ami_id: "ami-0aaaaaaaaaaaaaaaa".into(), ..f.source.clone().unwrap() });
        f.launch_shared = Some(false);
        let d = decide(&item(), &f, "123456789012");
        assert_eq!(d.decision, CopyDecision::Adopt("ami-0aaaaaaaaaaaaaaaa".into()));
    }

    #[test]
    fn each_precondition_failure_is_a_finding_naming_account_region_key_and_fix() {
        type Edit = fn(&mut CopyFacts);
        let table: Vec<(&str, Edit, &str)> = vec![
            ("SOURCE_NOT_FOUND", |f| f.source = None, "share it"),
            ("NOT_SHARED_LAUNCH", |f| f.launch_shared = Some(false), "--ami-user 210987654321"),
            (
                "NOT_SHARED_SNAPSHOT",
                |f| f.volume_shared.insert("snap-1".into(), false).map(drop).unwrap_or(()),
                "createVolumePermission",
            ),
            ("DEST_KEY_NOT_FOUND", |f| f.dest_key = Some(KeyLookup::NotFound), "create it there"),
            (
                "DEST_KEY_NOT_ENABLED",
                |f| f.dest_key = Some(key(KEY_EU, KeyManager::Customer, "Disabled")),
                "enable-key",
            ),
            (
                "DEST_KEY_AWS_MANAGED",
                |f| f.dest_key = Some(key(KEY_EU, KeyManager::Aws, "Enabled")),
                "customer managed",
            ),
            (
                "DEST_KEY_WRONG_REGION",
                |f| {
                    f.dest_key =
                        Some(key(&KEY_EU.replace("eu-west-1", "us-east-1"), KeyManager::Customer, "Enabled"))
                },
                "region_kms_key_ids",
            ),
            (
                "DEST_KEY_WRONG_ACCOUNT",
                |f| {
                    f.dest_key = Some(key(
                        &KEY_EU.replace("210987654321", "999999999999"),
                        KeyManager::Customer,
                        "Enabled",
                    ))
                },
                "owns",
            ),
            (
                "SOURCE_AWS_MANAGED_KEY",
                |f| {
                    f.source_keys.insert(SRC_KEY.into(), key(SRC_KEY, KeyManager::Aws, "Enabled"));
                },
                "rebuild",
            ),
            (
                "SOURCE_KEY_POLICY_DENIES",
                |f| {
                    let root_only = r#"{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}]}"#;
                    f.source_key_policies.insert(SRC_KEY.into(), Ok(root_only.into()));
                },
                "amikey policy generate --consumer-account 210987654321 --key arn:aws:kms:eu-west-1:123456789012",
            ),
        ];
        for (code, edit, fix) in table {
            let mut f = good_facts();
            edit(&mut f);
            let d = decide(&item(), &f, "123456789012");
            assert_eq!(d.decision, CopyDecision::Blocked, "{code}");
            assert_eq!(codes(&d), vec![code]);
            let m = &d.findings[0].message;
            assert!(m.starts_with("210987654321 eu-west-1: "), "{m}");
            assert!(m.contains(fix), "{code}: {m}");
            assert_eq!(d.findings[0].account, "210987654321");
        }
    }

    #[test]
    fn a_policy_with_the_generated_statements_allows_the_copy() {
        let consumers = crate::core::policy::Consumers::Accounts(vec!["210987654321".into()]);
        let mut stmts = crate::core::policy::generate(&consumers, None).unwrap();
        stmts.push(serde_json::json!({"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}));
        let policy = serde_json::json!({"Version":"2012-10-17","Statement": stmts}).to_string();
        let mut f = good_facts();
        f.source_key_policies.insert(SRC_KEY.into(), Ok(policy));
        let d = decide(&item(), &f, "123456789012");
        assert!(d.findings.is_empty(), "{:?}", d.findings);
        f.source_key_policies.insert(SRC_KEY.into(), Err("AccessDenied".into()));
        let d = decide(&item(), &f, "123456789012");
        assert!(matches!(d.decision, CopyDecision::Copy(_)));
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn wait_backs_off_bounded_and_times_out() {
        let t = Duration::from_secs(600);
        assert_eq!(wait_step("available", 0, Duration::ZERO, t), WaitStep::Available);
        assert_eq!(wait_step("failed", 3, Duration::ZERO, t), WaitStep::Failed);
        assert_eq!(wait_step("pending", 0, Duration::ZERO, t), WaitStep::Again(Duration::from_secs(1)));
        assert_eq!(wait_step("pending", 3, Duration::ZERO, t), WaitStep::Again(Duration::from_secs(8)));
        assert_eq!(wait_step("pending", 40, Duration::ZERO, t), WaitStep::Again(Duration::from_secs(30)));
        assert_eq!(
            wait_step("pending", 9, Duration::from_secs(595), t),
            WaitStep::Again(Duration::from_secs(5))
        );
        assert_eq!(wait_step("pending", 9, t, t), WaitStep::TimedOut);
        assert_eq!(resource_limit_backoff(1), Some(Duration::from_secs(4)));
        assert_eq!(resource_limit_backoff(7), Some(Duration::from_secs(60)));
        assert_eq!(resource_limit_backoff(RESOURCE_LIMIT_ATTEMPTS), None);
    }

    #[test]
    fn durations_parse_like_go() {
        for (s, secs) in [("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("90s", 90)] {
            assert_eq!(parse_duration(s), Ok(Duration::from_secs(secs)));
        }
        for s in ["", "5", "h", "1d", "0s", "-1m", "99999999999999999999h"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn report_exit_codes_and_summary() {
        let base = CopyItemReport {
            account: "210987654321".into(),
            region: "eu-west-1".into(),
            source_ami: "ami-1".into(),
            copy_ami: Some("ami-2".into()),
            kms_key_arn: Some(KEY_EU.into()),
            snapshot_ids: vec![],
            status: CopyStatus::Unchanged,
            published: vec![],
            findings: vec![],
            warnings: vec![],
            error: None,
        };
        let mut r = CopyReport { command: "copy".into(), dry_run: false, items: vec![base.clone()] };
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.summary(), "1 copy: 1 unchanged");
        let blocked = CopyItemReport {
            status: CopyStatus::Blocked,
            findings: decide(&item(), &CopyFacts::default(), "123456789012").findings,
            ..base.clone()
        };
        r.items.push(blocked);
        assert_eq!(r.exit_code(), 1);
        r.items.push(CopyItemReport { status: CopyStatus::InProgress, ..base });
        assert_eq!(r.exit_code(), 2);
        assert!(r.render_text().contains("DEST_KEY_NOT_FOUND"));
    }
}
