//! `amikey audit`: classify every AMI an account owns by how its snapshots are encrypted. Facts
//! in (images, snapshots, keys, key policies, launch permissions per region), findings out; no
//! intended key is involved, only what makes an image unsafe or unusable: unencrypted, under an
//! AWS managed key, under a key that is disabled, pending deletion or gone, or shared with
//! accounts the key policy does not let launch it. Must not know: AWS, I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::facts::{KeyLookup, KeyManager, SnapshotFacts};
use super::policy::{Consumer, FindingCode, check_consumers, generate_command};

/// Stable audit finding codes (the JSON spelling is part of the CLI contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditCode {
    /// A snapshot is not encrypted.
    Unencrypted,
    /// A snapshot is under an AWS managed key (`aws/ebs`): the image can never be shared.
    AwsManagedKey,
    /// The snapshot's key is disabled: nobody can launch the image.
    KeyDisabled,
    /// The snapshot's key is scheduled for deletion: the image stops working when it is deleted.
    KeyPendingDeletion,
    /// The snapshot's key is in another non-usable state (`PendingImport`, `Unavailable`, ...).
    KeyUnavailable,
    /// The snapshot's key does not exist (DescribeKey: NotFound).
    KeyNotFound,
    /// The snapshot's key cannot be described by this account (AccessDenied).
    KeyAccessDenied,
    /// A snapshot the image refers to is gone.
    SnapshotNotFound,
    /// The image is shared with accounts whose key access (per the key policy) is missing.
    SharedKeyInaccessible,
    /// The image is shared, but its key policy could not be read, so access is unknown.
    KeyPolicyUnreadable,
}

impl AuditCode {
    /// The JSON / text spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditCode::Unencrypted => "UNENCRYPTED",
            AuditCode::AwsManagedKey => "AWS_MANAGED_KEY",
            AuditCode::KeyDisabled => "KEY_DISABLED",
            AuditCode::KeyPendingDeletion => "KEY_PENDING_DELETION",
            AuditCode::KeyUnavailable => "KEY_UNAVAILABLE",
            AuditCode::KeyNotFound => "KEY_NOT_FOUND",
            AuditCode::KeyAccessDenied => "KEY_ACCESS_DENIED",
            AuditCode::SnapshotNotFound => "SNAPSHOT_NOT_FOUND",
            AuditCode::SharedKeyInaccessible => "SHARED_KEY_INACCESSIBLE",
            AuditCode::KeyPolicyUnreadable => "KEY_POLICY_UNREADABLE",
        }
    }
}

/// One owned AMI, as DescribeImages and DescribeImageAttribute report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditImage {
    /// `ami-…`
    pub ami_id: String,
    /// The image name.
    pub name: Option<String>,
    /// `(device, snapshot id)` of its EBS mappings, in mapping order.
    pub snapshots: Vec<(String, String)>,
    /// Accounts in its launch permission.
    pub launch_accounts: BTreeSet<String>,
}

/// Everything gathered in one region.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditRegionFacts {
    /// Region.
    pub region: String,
    /// Owned images (after `--ami-filter`).
    pub images: Vec<AuditImage>,
    /// Their snapshots by id (those DescribeSnapshots returned).
    pub snapshots: BTreeMap<String, SnapshotFacts>,
    /// DescribeKey results by the key id the snapshots report.
    pub keys: BTreeMap<String, KeyLookup>,
    /// Key policies by key ARN (only for keys of shared images): the document, or why it could
    /// not be read.
    pub policies: BTreeMap<String, Result<Value, String>>,
}

impl AuditRegionFacts {
    /// Keys whose policy the classification needs: enabled customer managed keys of images
    /// shared with at least one account. Sorted ARNs.
    pub fn policies_needed(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for img in self.images.iter().filter(|i| !i.launch_accounts.is_empty()) {
            for (_, sid) in &img.snapshots {
                if let Some(KeyLookup::Found(k)) =
                    self.snapshots.get(sid).and_then(|s| s.kms_key_id.as_ref()).and_then(|k| self.keys.get(k))
                    && k.manager == KeyManager::Customer
                    && k.state == "Enabled"
                {
                    out.insert(k.arn.clone());
                }
            }
        }
        out.into_iter().collect()
    }
}

/// One problem with one image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AuditFinding {
    /// Region.
    pub region: String,
    /// The image.
    pub ami_id: String,
    /// Stable code.
    pub code: AuditCode,
    /// The snapshot concerned, when it is about one.
    pub snapshot_id: Option<String>,
    /// The key concerned, when known.
    pub kms_key_arn: Option<String>,
    /// Accounts concerned (shared-with accounts lacking access), sorted.
    pub accounts: Vec<String>,
    /// What is wrong and what to do next.
    pub message: String,
}

/// Counts for one region.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AuditRegion {
    /// Region.
    pub region: String,
    /// Images scanned.
    pub images: usize,
    /// Snapshots scanned.
    pub snapshots: usize,
    /// Images with at least one finding.
    pub images_with_findings: usize,
}

/// A region that could not be scanned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AuditError {
    /// Region.
    pub region: String,
    /// The failed call and what to do next.
    pub error: String,
}

/// The whole audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Per region, sorted.
    pub regions: Vec<AuditRegion>,
    /// Findings, sorted by region, AMI, code, snapshot.
    pub findings: Vec<AuditFinding>,
    /// Regions that could not be scanned, sorted.
    pub errors: Vec<AuditError>,
}

fn image_label(img: &AuditImage) -> String {
    match &img.name {
        Some(n) => format!("{} ({n})", img.ami_id),
        None => img.ami_id.clone(),
    }
}

/// Classifies one region's images.
pub fn audit_region(f: &AuditRegionFacts) -> (AuditRegion, Vec<AuditFinding>) {
    let mut findings = Vec::new();
    let mut flagged = 0;
    for img in &f.images {
        let before = findings.len();
        let label = image_label(img);
        let region = f.region.as_str();
        let finding =
            |code, snapshot: Option<&str>, key: Option<&str>, accounts: Vec<String>, message: String| {
                AuditFinding {
                    region: region.to_string(),
                    ami_id: img.ami_id.clone(),
                    code,
                    snapshot_id: snapshot.map(str::to_string),
                    kms_key_arn: key.map(str::to_string),
                    accounts,
                    message,
                }
            };
        // Keys of this image that are usable customer keys, for the sharing check.
        let mut usable_keys: BTreeSet<String> = BTreeSet::new();
        for (device, sid) in &img.snapshots {
            let Some(s) = f.snapshots.get(sid) else {
                findings.push(finding(
                    AuditCode::SnapshotNotFound,
                    Some(sid),
                    None,
                    Vec::new(),
                    format!(
                        "{region} {label}: snapshot {sid} ({device}) does not exist; the image cannot be launched. \
                         Deregister it"
                    ),
                ));
                continue;
            };
            if !s.encrypted {
                findings.push(finding(
                    AuditCode::Unencrypted,
                    Some(sid),
                    None,
                    Vec::new(),
                    format!(
                        "{region} {label}: snapshot {sid} ({device}) is not encrypted. Copy the image with \
                         `aws ec2 copy-image --encrypted --kms-key-id <your CMK>` and deregister this one"
                    ),
                ));
                continue;
            }
            let key_ref = s.kms_key_id.clone().unwrap_or_default();
            match f.keys.get(&key_ref) {
                Some(KeyLookup::Found(k)) => {
                    let state = k.state.as_str();
                    if k.manager == KeyManager::Aws {
                        findings.push(finding(
                            AuditCode::AwsManagedKey,
                            Some(sid),
                            Some(&k.arn),
                            Vec::new(),
                            format!(
                                "{region} {label}: snapshot {sid} ({device}) is under the AWS managed key {}; \
                                 it can never be shared with another account. Copy the image with a customer \
                                 managed key (`aws ec2 copy-image --encrypted --kms-key-id <CMK>`)",
                                k.describe()
                            ),
                        ));
                    } else if state == "Disabled" {
                        findings.push(finding(
                            AuditCode::KeyDisabled,
                            Some(sid),
                            Some(&k.arn),
                            Vec::new(),
                            format!(
                                "{region} {label}: snapshot {sid} ({device}) is under {}, which is disabled: \
                                 nobody can launch the image. `aws kms enable-key --key-id {}` if it is still needed",
                                k.describe(),
                                k.arn
                            ),
                        ));
                    } else if state == "PendingDeletion" || state == "PendingReplicaDeletion" {
                        findings.push(finding(
                            AuditCode::KeyPendingDeletion,
                            Some(sid),
                            Some(&k.arn),
                            Vec::new(),
                            format!(
                                "{region} {label}: snapshot {sid} ({device}) is under {}, which is pending \
                                 deletion: the image stops working for good when the key is deleted. \
                                 `aws kms cancel-key-deletion --key-id {}`, or deregister the image",
                                k.describe(),
                                k.arn
                            ),
                        ));
                    } else if state != "Enabled" {
                        findings.push(finding(
                            AuditCode::KeyUnavailable,
                            Some(sid),
                            Some(&k.arn),
                            Vec::new(),
                            format!(
                                "{region} {label}: snapshot {sid} ({device}) is under {}, whose state is {state}: \
                                 the image cannot be launched until the key is Enabled",
                                k.describe()
                            ),
                        ));
                    } else {
                        usable_keys.insert(k.arn.clone());
                    }
                }
                Some(KeyLookup::AccessDenied(m)) => findings.push(finding(
                    AuditCode::KeyAccessDenied,
                    Some(sid),
                    Some(&key_ref),
                    Vec::new(),
                    format!(
                        "{region} {label}: snapshot {sid} ({device}) is under {key_ref}, which this account may \
                         not describe ({m}); allow kms:DescribeKey in that key's policy to audit it"
                    ),
                )),
                Some(KeyLookup::NotFound) | None => findings.push(finding(
                    AuditCode::KeyNotFound,
                    Some(sid),
                    Some(&key_ref),
                    Vec::new(),
                    format!(
                        "{region} {label}: snapshot {sid} ({device}) is under {key_ref}, which does not exist \
                         (deleted?): the image cannot be launched. Deregister it"
                    ),
                )),
            }
        }
        if !img.launch_accounts.is_empty() {
            let consumers: Vec<Consumer> = img.launch_accounts.iter().map(|a| Consumer::account(a)).collect();
            for arn in &usable_keys {
                match f.policies.get(arn) {
                    Some(Ok(policy)) => {
                        let found = check_consumers(policy, arn, region, &consumers);
                        let mut by_account: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
                        for pf in &found {
                            let who = pf.consumer.clone().unwrap_or_else(|| "every account".into());
                            by_account.entry(who).or_default().insert(pf.code.as_str());
                        }
                        if by_account.is_empty() {
                            continue;
                        }
                        let accounts: Vec<String> =
                            by_account.keys().filter(|a| a.as_str() != "every account").cloned().collect();
                        let detail: Vec<String> = by_account
                            .iter()
                            .map(|(a, codes)| {
                                format!("{a}: {}", codes.iter().copied().collect::<Vec<_>>().join(", "))
                            })
                            .collect();
                        let undecided = found.iter().all(|p| p.code == FindingCode::UnsupportedCondition);
                        findings.push(finding(
                            AuditCode::SharedKeyInaccessible,
                            None,
                            Some(arn),
                            accounts.clone(),
                            format!(
                                "{region} {label} is shared with {}, but the policy of {arn} {} ({}). Add the \
                                 consumer statements: `{}`",
                                img.launch_accounts.iter().cloned().collect::<Vec<_>>().join(", "),
                                if undecided {
                                    "has conditions amikey cannot decide for them"
                                } else {
                                    "does not let them launch it"
                                },
                                detail.join("; "),
                                generate_command(&accounts.iter().map(String::as_str).collect::<Vec<_>>(), Some(arn))
                            ),
                        ));
                    }
                    Some(Err(e)) => findings.push(finding(
                        AuditCode::KeyPolicyUnreadable,
                        None,
                        Some(arn),
                        img.launch_accounts.iter().cloned().collect(),
                        format!(
                            "{region} {label} is shared, but the policy of {arn} cannot be read ({e}); allow \
                             kms:GetKeyPolicy to check the consumers' access"
                        ),
                    )),
                    None => {}
                }
            }
        }
        if findings.len() > before {
            flagged += 1;
        }
    }
    let summary = AuditRegion {
        region: f.region.clone(),
        images: f.images.len(),
        snapshots: f.images.iter().map(|i| i.snapshots.len()).sum(),
        images_with_findings: flagged,
    };
    (summary, findings)
}

impl AuditReport {
    /// Builds the report from per-region facts and per-region failures; everything sorted.
    pub fn build(facts: &[AuditRegionFacts], errors: Vec<AuditError>) -> AuditReport {
        let mut regions = Vec::new();
        let mut findings = Vec::new();
        for f in facts {
            let (r, mut fs) = audit_region(f);
            regions.push(r);
            findings.append(&mut fs);
        }
        regions.sort();
        findings.sort();
        let mut errors = errors;
        errors.sort();
        AuditReport { regions, findings, errors }
    }

    /// The exit code: 2 when a region could not be scanned (the others are still reported), 1
    /// for findings, 0 otherwise.
    pub fn exit_code(&self) -> u8 {
        if !self.errors.is_empty() { 2 } else { u8::from(!self.findings.is_empty()) }
    }

    /// One line: regions, images, findings by code, errors.
    pub fn summary(&self) -> String {
        let images: usize = self.regions.iter().map(|r| r.images).sum();
        let flagged: usize = self.regions.iter().map(|r| r.images_with_findings).sum();
        let mut by_code: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &self.findings {
            *by_code.entry(f.code.as_str()).or_insert(0) += 1;
        }
        let mut s = format!(
            "audit: {} region(s), {images} image(s), {flagged} with findings, {} finding(s)",
            self.regions.len(),
            self.findings.len()
        );
        if !by_code.is_empty() {
            let parts: Vec<String> = by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let _ = write!(s, " ({})", parts.join(", "));
        }
        if !self.errors.is_empty() {
            let rs: Vec<&str> = self.errors.iter().map(|e| e.region.as_str()).collect();
            let _ = write!(s, "; could not scan {}", rs.join(", "));
        }
        s
    }

    /// Text: one line per finding, the regions that failed, the summary.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let _ = writeln!(out, "{:<24} {}", f.code.as_str(), f.message);
        }
        for e in &self.errors {
            let _ = writeln!(out, "ERROR {}: not scanned: {}", e.region, e.error);
        }
        if !self.findings.is_empty() || !self.errors.is_empty() {
            let _ = writeln!(out);
        }
        for r in &self.regions {
            let _ = writeln!(
                out,
                "{} {} image(s), {} snapshot(s), {} with findings",
                r.region, r.images, r.snapshots, r.images_with_findings
            );
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::facts::KeyFacts;

    const ME: &str = "123456789012";
    const OTHER: &str = "111122223333";

    fn key(id: &str, manager: KeyManager, state: &str) -> KeyLookup {
        KeyLookup::Found(KeyFacts {
            arn: format!("arn:aws:kms:eu-west-1:{ME}:key/{id}"),
            key_id: id.into(),
            manager,
            state: state.into(),
            alias: None,
            multi_region: false,
        })
    }

    fn snap(id: &str, key: Option<&str>) -> (String, SnapshotFacts) {
        (
            id.into(),
            SnapshotFacts {
                snapshot_id: id.into(),
                encrypted: key.is_some(),
                kms_key_id: key.map(|k| format!("arn:aws:kms:eu-west-1:{ME}:key/{k}")),
            },
        )
    }

    fn image(ami: &str, snaps: &[&str], shared: &[&str]) -> AuditImage {
        AuditImage {
            ami_id: ami.into(),
            name: Some(format!("name-{ami}")),
            snapshots: snaps
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("/dev/sd{i}"), s.to_string()))
                .collect(),
            launch_accounts: shared.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn facts() -> AuditRegionFacts {
        let keys = [
            ("good", KeyManager::Customer, "Enabled"),
            ("ebs", KeyManager::Aws, "Enabled"),
            ("off", KeyManager::Customer, "Disabled"),
            ("gone", KeyManager::Customer, "PendingDeletion"),
            ("import", KeyManager::Customer, "PendingImport"),
        ];
        let mut f = AuditRegionFacts { region: "eu-west-1".into(), ..Default::default() };
        for (id, m, s) in keys {
            f.keys.insert(format!("arn:aws:kms:eu-west-1:{ME}:key/{id}"), key(id, m, s));
        }
        f.keys.insert(format!("arn:aws:kms:eu-west-1:{ME}:key/deleted"), KeyLookup::NotFound);
        f.snapshots = [
            snap("snap-good", Some("good")),
            snap("snap-plain", None),
            snap("snap-ebs", Some("ebs")),
            snap("snap-off", Some("off")),
            snap("snap-gone", Some("gone")),
            snap("snap-import", Some("import")),
            snap("snap-deleted", Some("deleted")),
        ]
        .into_iter()
        .collect();
        f
    }

    fn codes(f: &AuditRegionFacts) -> Vec<(String, &'static str)> {
        audit_region(f).1.iter().map(|x| (x.ami_id.clone(), x.code.as_str())).collect()
    }

    #[test]
    fn each_snapshot_state_has_its_code() {
        let table = [
            ("snap-good", None),
            ("snap-plain", Some("UNENCRYPTED")),
            ("snap-ebs", Some("AWS_MANAGED_KEY")),
            ("snap-off", Some("KEY_DISABLED")),
            ("snap-gone", Some("KEY_PENDING_DELETION")),
            ("snap-import", Some("KEY_UNAVAILABLE")),
            ("snap-deleted", Some("KEY_NOT_FOUND")),
            ("snap-missing", Some("SNAPSHOT_NOT_FOUND")),
        ];
        for (s, want) in table {
            let mut f = facts();
            f.images = vec![image("ami-1", &[s], &[])];
            let got: Vec<&str> = codes(&f).into_iter().map(|(_, c)| c).collect();
            assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{s}");
        }
    }

    #[test]
    fn every_bad_snapshot_of_an_image_is_reported_and_counted_once() {
        let mut f = facts();
        f.images = vec![
            image("ami-1", &["snap-good", "snap-plain", "snap-ebs"], &[]),
            image("ami-2", &["snap-good"], &[]),
        ];
        let (r, fs) = audit_region(&f);
        assert_eq!(fs.len(), 2);
        assert_eq!((r.images, r.snapshots, r.images_with_findings), (2, 4, 1));
        assert!(fs[0].message.contains("eu-west-1 ami-1 (name-ami-1)"), "{}", fs[0].message);
    }

    #[test]
    fn shared_image_needs_consumer_access_in_the_key_policy() {
        let arn = format!("arn:aws:kms:eu-west-1:{ME}:key/good");
        let own_only = serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ME}:root")}, "Action": "kms:*", "Resource": "*"}]});
        let with_consumer = serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ME}:root")}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OTHER}:root")}, "Action": "kms:*", "Resource": "*"}]});

        let mut f = facts();
        f.images = vec![image("ami-1", &["snap-good"], &[OTHER]), image("ami-2", &["snap-good"], &[])];
        assert_eq!(f.policies_needed(), vec![arn.clone()]);

        f.policies.insert(arn.clone(), Ok(own_only));
        let fs = audit_region(&f).1;
        assert_eq!(fs.len(), 1, "{fs:?}");
        assert_eq!(fs[0].code, AuditCode::SharedKeyInaccessible);
        assert_eq!(fs[0].accounts, vec![OTHER.to_string()]);
        assert!(
            fs[0].message.contains("amikey policy generate --consumer-account 111122223333 --key"),
            "{}",
            fs[0].message
        );

        f.policies.insert(arn.clone(), Ok(with_consumer));
        assert!(audit_region(&f).1.is_empty());

        f.policies.insert(arn, Err("AccessDeniedException".into()));
        assert_eq!(codes(&f), vec![("ami-1".to_string(), "KEY_POLICY_UNREADABLE")]);
    }

    #[test]
    fn aws_managed_key_shared_is_only_aws_managed_key() {
        let mut f = facts();
        f.images = vec![image("ami-1", &["snap-ebs"], &[OTHER])];
        assert!(f.policies_needed().is_empty());
        assert_eq!(codes(&f), vec![("ami-1".to_string(), "AWS_MANAGED_KEY")]);
    }

    #[test]
    fn report_is_sorted_and_summarised() {
        let mut a = facts();
        a.region = "us-east-1".into();
        a.images = vec![image("ami-b", &["snap-plain"], &[]), image("ami-a", &["snap-ebs"], &[])];
        let mut b = facts();
        b.images = vec![image("ami-c", &["snap-good"], &[])];
        let r =
            AuditReport::build(&[a, b], vec![AuditError { region: "ap-south-1".into(), error: "x".into() }]);
        assert_eq!(
            r.regions.iter().map(|r| r.region.as_str()).collect::<Vec<_>>(),
            ["eu-west-1", "us-east-1"]
        );
        assert_eq!(r.findings.iter().map(|f| f.ami_id.as_str()).collect::<Vec<_>>(), ["ami-a", "ami-b"]);
        assert_eq!(
            r.summary(),
            "audit: 2 region(s), 3 image(s), 2 with findings, 2 finding(s) (AWS_MANAGED_KEY 1, UNENCRYPTED 1); \
             could not scan ap-south-1"
        );
        assert!(r.render_text().contains("ERROR ap-south-1: not scanned: x"));
    }

    #[test]
    fn exit_code_is_2_for_an_unscanned_region_then_1_for_findings() {
        let err = || vec![AuditError { region: "ap-south-1".into(), error: "x".into() }];
        let bad = || {
            let mut f = facts();
            f.images = vec![image("ami-a", &["snap-plain"], &[])];
            f
        };
        let good = || {
            let mut f = facts();
            f.images = vec![image("ami-c", &["snap-good"], &[])];
            f
        };
        for (facts, errors, want) in [
            (vec![good()], vec![], 0),
            (vec![], vec![], 0),
            (vec![bad()], vec![], 1),
            (vec![good()], err(), 2),
            (vec![bad()], err(), 2),
        ] {
            assert_eq!(AuditReport::build(&facts, errors).exit_code(), want);
        }
    }
}
