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

/// A consumer account the intended key's policy would stop (`check_key_policy = "warn"`), for one
/// region's key and one problem code. [`Report::render_text`] groups these per account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct KeyPolicyWarning {
    /// The consumer account (`None` for a problem with the whole document).
    pub account: Option<String>,
    /// Region of the key.
    pub region: String,
    /// The key ARN whose policy was checked.
    pub key_arn: String,
    /// The policy check's code (`CONSUMER_CANNOT_CREATE_GRANT`, …).
    pub code: String,
    /// The KMS actions the policy does not allow the account, sorted.
    pub actions: Vec<String>,
    /// The command that prints the fixed policy (`amikey policy generate … --merge`).
    pub fix: String,
    /// The full warning text (also in [`Report::warnings`]).
    pub text: String,
}

/// Text rendering choices of [`Report::render_text_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Every warning in full (one per key, account and problem) and every unchanged item.
    pub verbose: bool,
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
    /// Warnings that do not fail the run, each in full (e.g. key-policy concerns under
    /// `check_key_policy = "warn"`).
    pub warnings: Vec<String>,
    /// The key-policy warnings with their parts (account, key, actions, fix), sorted; their
    /// full text is in `warnings` too.
    pub key_policy_warnings: Vec<KeyPolicyWarning>,
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

    /// Adds key-policy warnings: their parts, and their full text to `warnings`.
    pub fn add_key_policy_warnings(&mut self, ws: Vec<KeyPolicyWarning>) {
        self.warnings.extend(ws.iter().map(|w| w.text.clone()));
        self.key_policy_warnings.extend(ws);
        self.key_policy_warnings.sort();
        self.key_policy_warnings.dedup();
    }

    /// The text rendering with the default options: see [`Report::render_text_with`].
    pub fn render_text(&self) -> String {
        self.render_text_with(TextOptions::default())
    }

    /// The text rendering: one block per region (AMI, snapshots, keys, findings), then the
    /// actions (unchanged ones summarised in one line unless `verbose`), the warnings (key-policy
    /// ones grouped per consumer account unless `verbose`), then a summary line.
    pub fn render_text_with(&self, opts: TextOptions) -> String {
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
        let shown: Vec<&ActionReport> =
            self.actions.iter().filter(|a| opts.verbose || a.status != Status::Unchanged).collect();
        let unchanged = self.actions.len() - shown.len();
        if !self.actions.is_empty() {
            let _ = writeln!(out);
            for a in shown {
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
            if unchanged > 0 {
                let _ = writeln!(
                    out,
                    "unchanged    {} item(s) already in place ({}); -v lists them",
                    unchanged,
                    self.unchanged_kinds()
                );
            }
        }
        for w in self.warning_texts(opts) {
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

    /// "12 launch_permission, 12 ssm_parameter": the unchanged actions by kind.
    fn unchanged_kinds(&self) -> String {
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for a in self.actions.iter().filter(|a| a.status == Status::Unchanged) {
            *by_kind.entry(a.kind.as_str()).or_insert(0) += 1;
        }
        by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
    }

    /// The warnings as text, without the `warning: ` prefix: the plain ones, then the key-policy
    /// ones grouped per consumer account (each naming its keys' regions, the missing KMS actions
    /// once and the fix command per key; a block of several lines), or each in full with
    /// `verbose`. What the CLI prints and the post-processor sends to Packer's Ui.
    pub fn warning_texts(&self, opts: TextOptions) -> Vec<String> {
        if opts.verbose {
            return self.warnings.clone();
        }
        let grouped: Vec<&str> = self.key_policy_warnings.iter().map(|w| w.text.as_str()).collect();
        let mut out: Vec<String> =
            self.warnings.iter().filter(|w| !grouped.contains(&w.as_str())).cloned().collect();
        out.extend(group_key_policy_warnings(&self.key_policy_warnings));
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

/// Key-policy warnings grouped per consumer account: one text per account naming the regions of
/// the keys concerned, the KMS actions their policies do not allow (once), the problem codes, and
/// one fix command per key. Sorted by account.
pub fn group_key_policy_warnings(ws: &[KeyPolicyWarning]) -> Vec<String> {
    let mut by_account: BTreeMap<Option<&str>, Vec<&KeyPolicyWarning>> = BTreeMap::new();
    for w in ws {
        by_account.entry(w.account.as_deref()).or_default().push(w);
    }
    let mut out = Vec::new();
    for (account, ws) in by_account {
        let actions: std::collections::BTreeSet<&str> =
            ws.iter().flat_map(|w| w.actions.iter().map(String::as_str)).collect();
        let codes: std::collections::BTreeSet<&str> = ws.iter().map(|w| w.code.as_str()).collect();
        let keys: std::collections::BTreeSet<(&str, &str, &str)> =
            ws.iter().map(|w| (w.region.as_str(), w.key_arn.as_str(), w.fix.as_str())).collect();
        let regions: std::collections::BTreeSet<&str> = keys.iter().map(|(r, _, _)| *r).collect();
        let who = account.map(|a| format!("account {a}")).unwrap_or_else(|| "the consumer accounts".into());
        let n = keys.len();
        let mut text = format!(
            "the key polic{} of {n} key{} ({}) {} not allow {who} {} ({}); that account cannot launch from, \
             copy or grant on the shared AMIs as planned. Fix {}, then apply it with aws kms put-key-policy:",
            if n == 1 { "y" } else { "ies" },
            if n == 1 { "" } else { "s" },
            regions.into_iter().collect::<Vec<_>>().join(", "),
            if n == 1 { "does" } else { "do" },
            actions.into_iter().collect::<Vec<_>>().join(", "),
            codes.into_iter().collect::<Vec<_>>().join(", "),
            if n == 1 { "the policy" } else { "each key's policy" },
        );
        let fixes: std::collections::BTreeSet<(&str, &str)> = keys.iter().map(|(r, _, f)| (*r, *f)).collect();
        let distinct: std::collections::BTreeSet<&str> = fixes.iter().map(|(_, f)| *f).collect();
        if distinct.len() == 1 {
            let _ = write!(text, "\n    {}", distinct.into_iter().next().unwrap_or_default());
        } else {
            for (region, fix) in fixes {
                let _ = write!(text, "\n    {region:<14} {fix}");
            }
        }
        text.push_str("\n    (each problem in full: -v, or --format json)");
        out.push(text);
    }
    out
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

    fn kpw(account: &str, region: &str, code: &str, actions: &[&str]) -> KeyPolicyWarning {
        let key_arn = format!("arn:aws:kms:{region}:999999999999:key/k-{region}");
        let fix = format!("amikey policy generate --consumer-account {account} --key {key_arn} --merge");
        KeyPolicyWarning {
            account: Some(account.into()),
            region: region.into(),
            key_arn: key_arn.clone(),
            code: code.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
            text: format!(
                "{region} key policy of {key_arn} for account {account}: {code} … `{fix}` {}",
                "x".repeat(500)
            ),
            fix,
        }
    }

    /// The demo's wall: 3 regions × 5 problems for one consumer.
    fn wall() -> Report {
        let mut r = Report { command: "publish".into(), ..Report::default() };
        let mut ws = Vec::new();
        for region in ["us-east-1", "us-west-2", "eu-west-1"] {
            for (code, action) in [
                ("CONSUMER_CANNOT_CREATE_GRANT", "kms:CreateGrant"),
                ("CONSUMER_CANNOT_LIST_GRANTS", "kms:ListGrants"),
                ("CONSUMER_CANNOT_DESCRIBE_KEY", "kms:DescribeKey"),
                ("CONSUMER_CANNOT_DECRYPT", "kms:Decrypt"),
                ("CONSUMER_CANNOT_USE_KEY", "kms:GenerateDataKeyWithoutPlaintext"),
            ] {
                ws.push(kpw("111122223333", region, code, &[action]));
            }
        }
        r.add_key_policy_warnings(ws);
        r
    }

    #[test]
    fn key_policy_warnings_group_per_account_with_one_fix_per_key() {
        let r = wall();
        assert_eq!(r.warnings.len(), 15, "the JSON keeps every warning in full");
        let texts = r.warning_texts(TextOptions::default());
        assert_eq!(texts.len(), 1, "{texts:#?}");
        let t = &texts[0];
        assert!(t.contains("of 3 keys (eu-west-1, us-east-1, us-west-2)"), "{t}");
        assert!(t.contains("account 111122223333"), "{t}");
        for a in ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:ListGrants"] {
            assert_eq!(t.matches(a).count(), 1, "{a} named once: {t}");
        }
        for region in ["us-east-1", "us-west-2", "eu-west-1"] {
            let fix = format!("--key arn:aws:kms:{region}:999999999999:key/k-{region} --merge");
            assert_eq!(t.matches(&fix).count(), 1, "one command per key: {t}");
        }
        assert!(t.len() < 1200, "{} characters: {t}", t.len());
        let text = r.render_text();
        assert_eq!(text.matches("warning: ").count(), 1, "{text}");
        // Verbose: every warning in full.
        let verbose = r.render_text_with(TextOptions { verbose: true });
        assert_eq!(verbose.matches("warning: ").count(), 15);
    }

    #[test]
    fn accounts_are_separate_warnings_and_plain_warnings_stay() {
        let mut r = Report::default();
        r.warnings.push("eu-west-1: cannot check the key policy".into());
        r.add_key_policy_warnings(vec![
            kpw("444455556666", "eu-west-1", "CONSUMER_CANNOT_DECRYPT", &["kms:Decrypt"]),
            kpw("111122223333", "eu-west-1", "CONSUMER_CANNOT_DECRYPT", &["kms:Decrypt"]),
        ]);
        let texts = r.warning_texts(TextOptions::default());
        assert_eq!(texts.len(), 3, "{texts:#?}");
        assert_eq!(texts[0], "eu-west-1: cannot check the key policy");
        assert!(
            texts[1].contains("account 111122223333")
                && texts[1].contains("the key policy of 1 key (eu-west-1) does not")
        );
        assert!(texts[2].contains("account 444455556666"));
        assert!(group_key_policy_warnings(&[]).is_empty());
    }

    #[test]
    fn unchanged_items_are_summarised_unless_verbose() {
        let mut r = with(&[Status::Unchanged, Status::Unchanged, Status::Changed]);
        r.actions[1].kind = "launch_permission".into();
        let text = r.render_text();
        assert_eq!(text.matches("\nunchanged    ").count(), 1, "{text}");
        assert!(
            text.contains("2 item(s) already in place (1 launch_permission, 1 ssm_parameter); -v lists them"),
            "{text}"
        );
        assert!(text.contains("changed      us-east-1"), "{text}");
        let verbose = r.render_text_with(TextOptions { verbose: true });
        assert_eq!(verbose.matches("unchanged    us-east-1").count(), 2, "{verbose}");
        assert!(!verbose.contains("already in place"), "{verbose}");
        // Nothing unchanged: no summary line.
        assert!(!with(&[Status::Changed]).render_text().contains("already in place"));
    }
}
