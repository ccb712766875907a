//! `check`: is every snapshot of every regional AMI encrypted with the intended customer managed
//! key of its region? A pure function of the [`Intent`] and the gathered [`RegionFacts`].

use super::facts::{KeyFacts, KeyLookup, KeyManager, RegionFacts};
use super::intent::Intent;
use super::report::{Code, Finding, RegionReport, SnapshotReport};

fn lookup<'a>(facts: &'a RegionFacts, reference: &str) -> Option<&'a KeyFacts> {
    match facts.keys.get(reference) {
        Some(KeyLookup::Found(k)) => Some(k),
        _ => None,
    }
}

fn template_fix(region: &str, intended: Option<&str>) -> String {
    let key = intended.map(str::to_string).unwrap_or_else(|| format!("<CMK ARN in {region}>"));
    format!(
        "Fix the template: in the amazon-ebs source set `region_kms_key_ids = {{ \"{region}\" = \"{key}\" }}` \
         (or `kms_key_id` if {region} is the build region), then rebuild"
    )
}

/// Verifies one region. Findings are sorted; snapshots keep block-device order.
pub fn verify_region(intent: &Intent, facts: &RegionFacts) -> RegionReport {
    let region = facts.region.as_str();
    let ami = facts.ami_id.as_str();
    let mut findings = Vec::new();
    let mut push = |code: Code, snapshot: Option<&str>, message: String| {
        findings.push(Finding {
            code,
            region: region.to_string(),
            ami_id: ami.to_string(),
            snapshot_id: snapshot.map(str::to_string),
            message,
        })
    };

    // The intended key of this region.
    let intended_ref = intent.keys.get(region).cloned().flatten();
    let intended: Option<&KeyFacts> = match &intended_ref {
        None => {
            push(
                Code::NoIntendedKey,
                None,
                format!(
                    "{region} {ami}: no intended KMS key for {region}: set kms_key_id (all regions) or \
                     region_kms_key_ids[\"{region}\"] so amikey can check the snapshots against it"
                ),
            );
            None
        }
        Some(r) => match facts.keys.get(r) {
            Some(KeyLookup::Found(k)) => {
                if k.manager == KeyManager::Aws {
                    push(
                        Code::AwsManagedKey,
                        None,
                        format!(
                            "{region} {ami}: the intended key {r} is {}, an AWS managed key: snapshots under it can never be shared. Configure a customer managed key",
                            k.describe()
                        ),
                    );
                }
                if k.region().is_some_and(|kr| kr != region) {
                    push(
                        Code::KeyWrongRegion,
                        None,
                        format!(
                            "{region} {ami}: the intended key {r} resolves to {}, which lives in {}; a key encrypts only in its own region: use a key (or multi-Region replica) in {region}",
                            k.arn,
                            k.region().unwrap_or("?")
                        ),
                    );
                }
                if k.state != "Enabled" {
                    push(
                        Code::KeyNotEnabled,
                        None,
                        format!(
                            "{region} {ami}: the intended key {} is {}: instances cannot be launched from its snapshots until it is enabled (aws kms enable-key --key-id {} --region {region})",
                            k.describe(),
                            k.state,
                            k.key_id
                        ),
                    );
                }
                Some(k)
            }
            Some(KeyLookup::AccessDenied(why)) => {
                push(
                    Code::KeyNotFound,
                    None,
                    format!(
                        "{region} {ami}: the intended key {r} cannot be described in {region} ({why}): grant kms:DescribeKey on it to this identity"
                    ),
                );
                None
            }
            Some(KeyLookup::NotFound) | None => {
                push(
                    Code::KeyNotFound,
                    None,
                    format!(
                        "{region} {ami}: the intended key {r} does not exist in {region}: check the key id or alias, and that it lives in (or is replicated to) {region}"
                    ),
                );
                None
            }
        },
    };
    let expected = match (intended, &intended_ref) {
        (Some(k), _) => k.describe(),
        (None, Some(r)) => format!("{r} (unresolved)"),
        (None, None) => "(none configured)".to_string(),
    };

    let mut snapshots = Vec::new();
    match &facts.image {
        None => push(
            Code::AmiNotFound,
            None,
            format!(
                "{region} {ami}: the AMI does not exist in {region} or is not visible to this account: check the artifact id and the region"
            ),
        ),
        Some(image) => {
            if image.state != "available" {
                push(
                    Code::AmiNotAvailable,
                    None,
                    format!(
                        "{region} {ami}: the AMI is {}, not available: wait for it (or rebuild if it failed) and re-run",
                        image.state
                    ),
                );
            }
            if image.public && !intent.allow_public {
                push(
                    Code::AmiPublic,
                    None,
                    format!(
                        "{region} {ami}: the AMI is public (launch permission group all): remove it (aws ec2 modify-image-attribute --image-id {ami} --launch-permission 'Remove=[{{Group=all}}]' --region {region}) or set allow_public"
                    ),
                );
            }
            let ebs: Vec<_> =
                image.block_devices.iter().filter_map(|b| b.snapshot_id.as_ref().map(|s| (b, s))).collect();
            if ebs.is_empty() && image.state == "available" {
                push(
                    Code::AmiNoSnapshots,
                    None,
                    format!("{region} {ami}: the AMI has no EBS snapshot to check"),
                );
            }
            for (bd, snap_id) in ebs {
                let dev = bd.device_name.as_str();
                let Some(snap) = facts.snapshots.get(snap_id) else {
                    push(
                        Code::SnapshotNotFound,
                        Some(snap_id),
                        format!(
                            "{region} {ami} {snap_id} ({dev}): the snapshot cannot be described: it was deleted or is not visible to this account"
                        ),
                    );
                    snapshots.push(SnapshotReport {
                        snapshot_id: snap_id.clone(),
                        device: dev.to_string(),
                        encrypted: false,
                        kms_key_arn: None,
                        kms_key_alias: None,
                    });
                    continue;
                };
                let found = snap.kms_key_id.as_deref().and_then(|r| lookup(facts, r));
                snapshots.push(SnapshotReport {
                    snapshot_id: snap_id.clone(),
                    device: dev.to_string(),
                    encrypted: snap.encrypted,
                    kms_key_arn: found.map(|k| k.arn.clone()).or_else(|| snap.kms_key_id.clone()),
                    kms_key_alias: found.and_then(|k| k.alias.clone()),
                });
                let at = format!("{region} {ami} {snap_id} ({dev})");
                if !snap.encrypted {
                    push(
                        Code::Unencrypted,
                        Some(snap_id),
                        format!(
                            "{at}: NOT encrypted; expected {expected}. {}",
                            template_fix(region, intended.map(|k| k.arn.as_str()))
                        ),
                    );
                    continue;
                }
                let found_desc = match (found, &snap.kms_key_id) {
                    (Some(k), _) => k.describe(),
                    (None, Some(r)) => format!("{r} (not describable)"),
                    (None, None) => "an unreported key".to_string(),
                };
                if let Some(k) = found {
                    if k.manager == KeyManager::Aws {
                        push(
                            Code::AwsManagedKey,
                            Some(snap_id),
                            format!(
                                "{at}: encrypted with the AWS managed key {found_desc}, expected {expected}. \
                             Snapshots under an AWS managed key can never be shared with other accounts. {}",
                                template_fix(region, intended.map(|k| k.arn.as_str()))
                            ),
                        );
                        continue;
                    }
                    if k.region().is_some_and(|kr| kr != region) {
                        push(
                            Code::KeyWrongRegion,
                            Some(snap_id),
                            format!(
                                "{at}: encrypted with {found_desc}, a key in {}, expected {expected}",
                                k.region().unwrap_or("?")
                            ),
                        );
                        continue;
                    }
                }
                let matches = match (found, intended) {
                    (Some(k), Some(i)) => k.arn == i.arn,
                    (None, Some(i)) => snap.kms_key_id.as_deref() == Some(i.arn.as_str()),
                    _ => false,
                };
                if intended.is_some() && !matches {
                    push(
                        Code::WrongKey,
                        Some(snap_id),
                        format!(
                            "{at}: encrypted with {found_desc}, expected {expected}. {}",
                            template_fix(region, intended.map(|k| k.arn.as_str()))
                        ),
                    );
                    continue;
                }
                // With no intended key there is nothing to compare, but a disabled key still
                // makes launches fail.
                if let Some(k) = found
                    && k.state != "Enabled"
                    && intended.is_none()
                {
                    push(
                        Code::KeyNotEnabled,
                        Some(snap_id),
                        format!(
                            "{at}: its key {found_desc} is {}: enable it (aws kms enable-key --key-id {} --region {region})",
                            k.state, k.key_id
                        ),
                    );
                }
            }
        }
    }
    findings.sort();
    findings.dedup();
    RegionReport {
        region: region.to_string(),
        ami_id: ami.to_string(),
        intended_kms_key_arn: intended.map(|k| k.arn.clone()),
        snapshots,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::core::artifact::AmiSet;
    use crate::core::config::Settings;
    use crate::core::facts::{BlockDevice, ImageFacts, SnapshotFacts};
    use crate::core::intent;

    const CMK: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const OTHER: &str = "arn:aws:kms:eu-west-1:111122223333:key/9999abcd-12ab-34cd-56ef-1234567890ab";
    const EBS: &str = "arn:aws:kms:eu-west-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab";
    const US: &str = "arn:aws:kms:us-east-1:111122223333:key/5555abcd-12ab-34cd-56ef-1234567890ab";

    fn key(arn: &str, manager: KeyManager, state: &str, alias: Option<&str>) -> KeyLookup {
        KeyLookup::Found(KeyFacts {
            arn: arn.into(),
            key_id: arn.rsplit('/').next().unwrap().into(),
            manager,
            state: state.into(),
            alias: alias.map(Into::into),
            multi_region: false,
        })
    }

    /// eu-west-1 AMI with snapshots (device, id, encrypted, key); intended key alias/img.
    fn facts(snaps: &[(&str, &str, bool, Option<&str>)]) -> (Intent, RegionFacts) {
        let amis = AmiSet::parse_artifact("eu-west-1:ami-12345678", false).unwrap();
        let intent =
            intent::build(&Settings { kms_key_id: Some("alias/img".into()), ..Default::default() }, &amis)
                .unwrap();
        let mut keys = BTreeMap::new();
        keys.insert("alias/img".to_string(), key(CMK, KeyManager::Customer, "Enabled", Some("alias/img")));
        keys.insert(CMK.to_string(), key(CMK, KeyManager::Customer, "Enabled", Some("alias/img")));
        keys.insert(OTHER.to_string(), key(OTHER, KeyManager::Customer, "Enabled", None));
        keys.insert(EBS.to_string(), key(EBS, KeyManager::Aws, "Enabled", Some("alias/aws/ebs")));
        keys.insert(US.to_string(), key(US, KeyManager::Customer, "Enabled", None));
        let f = RegionFacts {
            region: "eu-west-1".into(),
            ami_id: "ami-12345678".into(),
            image: Some(ImageFacts {
                ami_id: "ami-12345678".into(),
                state: "available".into(),
                owner: Some("111122223333".into()),
                public: false,
                block_devices: snaps
                    .iter()
                    .map(|(d, s, _, _)| BlockDevice {
                        device_name: d.to_string(),
                        snapshot_id: Some(s.to_string()),
                        encrypted: None,
                    })
                    .collect(),
                name: None,
                description: None,
                creation_date: None,
                deprecation_time: None,
                deregistration_protection: None,
            }),
            snapshots: snaps
                .iter()
                .map(|(_, s, e, k)| {
                    (
                        s.to_string(),
                        SnapshotFacts {
                            snapshot_id: s.to_string(),
                            encrypted: *e,
                            kms_key_id: k.map(Into::into),
                        },
                    )
                })
                .collect(),
            keys,
            intended_key: Some("alias/img".into()),
            launch_permissions: None,
            snapshot_users: BTreeMap::new(),
            parameters: BTreeMap::new(),
            key_policy: None,
        };
        (intent, f)
    }

    fn codes(r: &RegionReport) -> Vec<&'static str> {
        r.findings.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn intended_cmk_is_clean() {
        let (i, f) = facts(&[("/dev/xvda", "snap-1", true, Some(CMK))]);
        let r = verify_region(&i, &f);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(r.intended_kms_key_arn.as_deref(), Some(CMK));
        assert_eq!(r.snapshots[0].kms_key_alias.as_deref(), Some("alias/img"));
    }

    #[test]
    fn aws_managed_key_names_everything_and_the_fix() {
        let (i, f) = facts(&[("/dev/xvda", "snap-1", true, Some(EBS))]);
        let r = verify_region(&i, &f);
        assert_eq!(codes(&r), ["AWS_MANAGED_KEY"]);
        let m = &r.findings[0].message;
        for needle in [
            "eu-west-1",
            "ami-12345678",
            "snap-1",
            "/dev/xvda",
            EBS,
            "alias/aws/ebs",
            CMK,
            "never be shared",
            "region_kms_key_ids",
        ] {
            assert!(m.contains(needle), "{needle:?} missing from {m}");
        }
    }

    #[test]
    fn unencrypted_and_wrong_key_on_a_second_volume() {
        let (i, f) =
            facts(&[("/dev/xvda", "snap-1", true, Some(CMK)), ("/dev/sdb", "snap-2", true, Some(OTHER))]);
        let r = verify_region(&i, &f);
        assert_eq!(codes(&r), ["WRONG_KEY"]);
        assert_eq!(r.findings[0].snapshot_id.as_deref(), Some("snap-2"));
        assert!(r.findings[0].message.contains("/dev/sdb"));
        let (i, f) = facts(&[("/dev/xvda", "snap-1", false, None)]);
        assert_eq!(codes(&verify_region(&i, &f)), ["UNENCRYPTED"]);
    }

    #[test]
    fn key_in_another_region() {
        let (i, f) = facts(&[("/dev/xvda", "snap-1", true, Some(US))]);
        assert_eq!(codes(&verify_region(&i, &f)), ["KEY_WRONG_REGION"]);
    }

    #[test]
    fn disabled_intended_key() {
        let (i, mut f) = facts(&[("/dev/xvda", "snap-1", true, Some(CMK))]);
        f.keys.insert("alias/img".into(), key(CMK, KeyManager::Customer, "Disabled", Some("alias/img")));
        assert_eq!(codes(&verify_region(&i, &f)), ["KEY_NOT_ENABLED"]);
    }

    #[test]
    fn disabled_snapshot_key_without_intent_is_still_reported() {
        let (mut i, mut f) = facts(&[("/dev/xvda", "snap-1", true, Some(OTHER))]);
        i.keys.insert("eu-west-1".into(), None);
        f.keys.insert(OTHER.into(), key(OTHER, KeyManager::Customer, "Disabled", None));
        assert_eq!(codes(&verify_region(&i, &f)), ["KEY_NOT_ENABLED", "NO_INTENDED_KEY"]);
    }

    #[test]
    fn missing_ami_missing_key_and_no_intent() {
        let (i, mut f) = facts(&[]);
        f.image = None;
        f.keys.insert("alias/img".into(), KeyLookup::NotFound);
        assert_eq!(codes(&verify_region(&i, &f)), ["AMI_NOT_FOUND", "KEY_NOT_FOUND"]);
        let (mut i, f) = facts(&[("/dev/xvda", "snap-1", true, Some(CMK))]);
        i.keys.insert("eu-west-1".into(), None);
        assert_eq!(codes(&verify_region(&i, &f)), ["NO_INTENDED_KEY"]);
    }

    #[test]
    fn pending_public_and_vanished_snapshot() {
        let (i, mut f) = facts(&[("/dev/xvda", "snap-1", true, Some(CMK))]);
        f.snapshots.clear();
        let img = f.image.as_mut().unwrap();
        img.state = "pending".into();
        img.public = true;
        assert_eq!(codes(&verify_region(&i, &f)), ["AMI_NOT_AVAILABLE", "SNAPSHOT_NOT_FOUND", "AMI_PUBLIC"]);
    }
}
