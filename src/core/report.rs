//! What amikey found and did: findings with stable codes, per-region results, actions with their
//! outcome. Rendered as text for people and as JSON (the schema documented in README) for
//! pipelines. Must not know: AWS, I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Stable finding codes. The JSON spelling (SCREAMING_SNAKE) is part of the CLI contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    /// The AMI does not exist in that region (or is not visible to this account).
    AmiNotFound,
    /// The AMI exists but its state is not `available`.
    AmiNotAvailable,
    /// The AMI has no EBS snapshot at all.
    AmiNoSnapshots,
    /// A snapshot the AMI refers to cannot be described.
    SnapshotNotFound,
    /// A snapshot is not encrypted.
    Unencrypted,
    /// A snapshot is encrypted with an AWS managed key (`aws/ebs`): it can never be shared.
    AwsManagedKey,
    /// A snapshot is encrypted with a customer managed key other than the intended one.
    WrongKey,
    /// The key found (or intended) is not `Enabled`.
    KeyNotEnabled,
    /// The key lives in another region than the snapshot.
    KeyWrongRegion,
    /// No intended key is configured for the region.
    NoIntendedKey,
    /// The intended key does not exist in that region (DescribeKey: NotFound).
    KeyNotFound,
    /// The AMI is public and `allow_public` is not set.
    AmiPublic,
    /// The intended key's policy does not let a consumer account (`ami_users`,
    /// `publish_accounts`) make a call the launch chain needs (`check_key_policy = "fail"`).
    KeyPolicyDeniesConsumer,
}

impl Code {
    /// The JSON / text spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::AmiNotFound => "AMI_NOT_FOUND",
            Code::AmiNotAvailable => "AMI_NOT_AVAILABLE",
            Code::AmiNoSnapshots => "AMI_NO_SNAPSHOTS",
            Code::SnapshotNotFound => "SNAPSHOT_NOT_FOUND",
            Code::Unencrypted => "UNENCRYPTED",
            Code::AwsManagedKey => "AWS_MANAGED_KEY",
            Code::WrongKey => "WRONG_KEY",
            Code::KeyNotEnabled => "KEY_NOT_ENABLED",
            Code::KeyWrongRegion => "KEY_WRONG_REGION",
            Code::NoIntendedKey => "NO_INTENDED_KEY",
            Code::KeyNotFound => "KEY_NOT_FOUND",
            Code::AmiPublic => "AMI_PUBLIC",
            Code::KeyPolicyDeniesConsumer => "KEY_POLICY_DENIES_CONSUMER",
        }
    }
}

/// One problem with one AMI or snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// Stable code.
    pub code: Code,
    /// Region of the AMI.
    pub region: String,
    /// The AMI.
    pub ami_id: String,
    /// The snapshot, when the finding is about one.
    pub snapshot_id: Option<String>,
    /// Human message: names region, AMI, snapshot, device, key found and key expected, and says
    /// what to do.
    pub message: String,
}

/// One EBS snapshot of an AMI, as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotReport {
    /// `snap-…`
    pub snapshot_id: String,
    /// Device name of the block-device mapping (`/dev/xvda`).
    pub device: String,
    /// Whether the snapshot is encrypted.
    pub encrypted: bool,
    /// The key ARN that encrypts it, resolved through DescribeKey where possible.
    pub kms_key_arn: Option<String>,
    /// An alias of that key, when it has one.
    pub kms_key_alias: Option<String>,
}

/// Everything about one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionReport {
    /// Region name.
    pub region: String,
    /// The AMI checked.
    pub ami_id: String,
    /// The intended key, resolved to its ARN in this region (None when none is configured).
    pub intended_kms_key_arn: Option<String>,
    /// The EBS snapshots, in block-device order.
    pub snapshots: Vec<SnapshotReport>,
    /// Findings for this region, sorted.
    pub findings: Vec<Finding>,
}

/// Outcome of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Desired state already held: no write made.
    Unchanged,
    /// A write was made.
    Changed,
    /// Would be written (`--dry-run`).
    Planned,
    /// Not attempted: an earlier failure or a cancel stopped the run before it.
    Skipped,
    /// The write failed.
    Failed,
}

/// One item of desired state and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ActionReport {
    /// Region.
    pub region: String,
    /// Account the item lives in (the producer's own, or a publish account).
    pub account: String,
    /// What kind of item: `launch_permission`, `create_volume_permission`, `ssm_parameter`.
    pub kind: String,
    /// The item: `ami-… user 111122223333`, `/path/image_id = ami-…`.
    pub target: String,
    /// What happened.
    pub status: Status,
    /// Error text when `status` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A region whose state could not be read (every retry failed): it was neither verified nor
/// changed, while the other regions were.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RegionError {
    /// Region.
    pub region: String,
    /// The AMI there.
    pub ami_id: String,
    /// The failed call and what to do next.
    pub error: String,
}

/// The whole result of `check` or `publish`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `check` or `publish`.
    pub command: String,
    /// Whether writes were only planned.
    pub dry_run: bool,
    /// Per region, sorted by region.
    pub regions: Vec<RegionReport>,
    /// Actions, sorted by region, account, kind, target.
    pub actions: Vec<ActionReport>,
    /// Warnings that do not fail the run (e.g. key-policy concerns under `check_key_policy = "warn"`).
    pub warnings: Vec<String>,
    /// Regions that could not be read, sorted; nothing was changed there (exit code 2).
    pub errors: Vec<RegionError>,
}

impl Report {
    /// All findings of all regions, sorted.
    pub fn findings(&self) -> Vec<&Finding> {
        let mut all: Vec<&Finding> = self.regions.iter().flat_map(|r| r.findings.iter()).collect();
        all.sort();
        all
    }

    /// True when there is no finding and every planned change was made: no failed action, no
    /// skipped one (skipped = not attempted, after a failure in the region or a cancel) and no
    /// unreadable region.
    pub fn is_clean(&self) -> bool {
        self.findings().is_empty()
            && self.errors.is_empty()
            && !self.actions.iter().any(|a| matches!(a.status, Status::Failed | Status::Skipped))
    }

    /// True when a write failed or was not attempted, or a region could not be read (exit code 2).
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
            || self.actions.iter().any(|a| matches!(a.status, Status::Failed | Status::Skipped))
    }

    /// region → intended key ARN, for regions where it is known.
    pub fn key_mapping(&self) -> BTreeMap<String, String> {
        self.regions
            .iter()
            .filter_map(|r| r.intended_kms_key_arn.clone().map(|k| (r.region.clone(), k)))
            .collect()
    }

    /// Counts of actions by status.
    pub fn counts(&self) -> BTreeMap<Status, usize> {
        let mut m = BTreeMap::new();
        for a in &self.actions {
            *m.entry(a.status).or_insert(0) += 1;
        }
        m
    }

    /// The text rendering: one block per region (AMI, snapshots, keys, findings), then the
    /// actions, then a summary line.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for r in &self.regions {
            let mark = if r.findings.is_empty() { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "{mark} {} {}", r.region, r.ami_id);
            let _ = writeln!(
                out,
                "     intended key: {}",
                r.intended_kms_key_arn.as_deref().unwrap_or("(none configured)")
            );
            for s in &r.snapshots {
                let key = match (&s.kms_key_arn, &s.kms_key_alias, s.encrypted) {
                    (_, _, false) => "NOT ENCRYPTED".to_string(),
                    (Some(k), Some(a), true) => format!("{k} ({a})"),
                    (Some(k), None, true) => k.clone(),
                    (None, _, true) => "encrypted, key unknown".to_string(),
                };
                let _ = writeln!(out, "     {} {:<12} {key}", s.snapshot_id, s.device);
            }
            for f in &r.findings {
                let _ = writeln!(out, "     {}: {}", f.code.as_str(), f.message);
            }
        }
        if !self.actions.is_empty() {
            let _ = writeln!(out);
            for a in &self.actions {
                let status = match a.status {
                    Status::Unchanged => "unchanged",
                    Status::Changed => "changed",
                    Status::Planned => "would change",
                    Status::Skipped => "skipped",
                    Status::Failed => "FAILED",
                };
                let _ = write!(out, "{status:<12} {} {} {:<24} {}", a.region, a.account, a.kind, a.target);
                if let Some(e) = &a.error {
                    let _ = write!(out, ": {e}");
                }
                let _ = writeln!(out);
            }
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        for e in &self.errors {
            let _ = writeln!(
                out,
                "ERROR {} {}: nothing verified or changed there: {}",
                e.region, e.ami_id, e.error
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    /// One line: what was checked, what was found, what was changed.
    pub fn summary(&self) -> String {
        let findings = self.findings().len();
        let snaps: usize = self.regions.iter().map(|r| r.snapshots.len()).sum();
        let mut s = format!(
            "{}: {} region(s), {} snapshot(s) checked, {} finding(s)",
            self.command,
            self.regions.len(),
            snaps,
            findings
        );
        if !self.actions.is_empty() {
            let c = self.counts();
            let n = |st| c.get(&st).copied().unwrap_or(0);
            let _ = write!(s, "; {} changed, {} unchanged", n(Status::Changed), n(Status::Unchanged));
            for (st, word) in
                [(Status::Planned, "planned"), (Status::Failed, "failed"), (Status::Skipped, "skipped")]
            {
                if n(st) > 0 {
                    let _ = write!(s, ", {} {word}", n(st));
                }
            }
        }
        if !self.errors.is_empty() {
            let regions: Vec<&str> = self.errors.iter().map(|e| e.region.as_str()).collect();
            let _ = write!(s, "; could not read {} (nothing changed there)", regions.join(", "));
        }
        if self.dry_run {
            s.push_str(" (dry run: nothing written)");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(statuses: &[Status]) -> Report {
        Report {
            actions: statuses
                .iter()
                .map(|s| ActionReport {
                    region: "us-east-1".into(),
                    account: "123456789012".into(),
                    kind: "ssm_parameter".into(),
                    target: "/amis/image_id".into(),
                    status: *s,
                    error: None,
                })
                .collect(),
            ..Report::default()
        }
    }

    #[test]
    fn clean_means_every_change_made() {
        let cases: &[(&[Status], bool)] = &[
            (&[], true),
            (&[Status::Changed, Status::Unchanged], true),
            (&[Status::Planned], true),
            (&[Status::Changed, Status::Failed], false),
            // Not attempted (a cancel, or an earlier failure in the region): not done.
            (&[Status::Changed, Status::Skipped], false),
        ];
        for (statuses, clean) in cases {
            assert_eq!(with(statuses).is_clean(), *clean, "{statuses:?}");
        }
    }
}
