//! Single AWS reads, one call (or one paginated listing) each: published parameters and their
//! history, regions, keys and their replicas, grants, key policies, the AMI as the consumer sees
//! it, launch-template block devices. Writes are [`super::apply`]'s.
//!
//! No decisions here: what to grant, what is stale and what is broken are decided in
//! [`crate::core::grants`], [`crate::core::doctor`] and [`crate::core::policy`].

use std::collections::BTreeMap;

use super::clients::Aws;
use super::error::AwsError;
use crate::core::facts::{BlockDevice, ImageFacts, KeyManager, SnapshotFacts};
use crate::core::grants::ExistingGrant;
use crate::core::ids::arn_region;

/// The regions enabled for this account (DescribeRegions in the home region), sorted.
pub async fn describe_regions(aws: &Aws) -> Result<Vec<String>, AwsError> {
    let region = aws.home_region.clone();
    let out = aws
        .ec2(&region)
        .describe_regions()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeRegions", &region, e))?;
    let mut v: Vec<String> =
        out.regions().iter().filter_map(|r| r.region_name()).map(str::to_string).collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// GetParameter `name` (a name or a shared parameter's full ARN) in `region`; `None` when the
/// parameter does not exist there.
pub async fn get_parameter(aws: &Aws, region: &str, name: &str) -> Result<Option<String>, AwsError> {
    match aws.ssm(region).get_parameter().name(name).send().await {
        Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_string)),
        Err(e) => {
            let err = AwsError::from_sdk("GetParameter", region, e);
            if err.is_not_found() { Ok(None) } else { Err(err) }
        }
    }
}

/// Every value `name` ever had in `region` (GetParameterHistory), oldest first; empty when the
/// parameter does not exist.
pub async fn parameter_history(aws: &Aws, region: &str, name: &str) -> Result<Vec<String>, AwsError> {
    let mut pages = aws.ssm(region).get_parameter_history().name(name).into_paginator().send();
    let mut values = Vec::new();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => values.extend(p.parameters().iter().filter_map(|h| h.value()).map(str::to_string)),
            Err(e) => {
                let err = AwsError::from_sdk("GetParameterHistory", region, e);
                if err.is_not_found() {
                    return Ok(Vec::new());
                }
                return Err(err);
            }
        }
    }
    Ok(values)
}

/// What DescribeKey tells about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key ARN.
    pub arn: String,
    /// The key id (`1234abcd-…` or `mrk-…`).
    pub key_id: String,
    /// `KeyManager`.
    pub manager: KeyManager,
    /// `KeyState`.
    pub state: String,
    /// `MultiRegion`.
    pub multi_region: bool,
    /// Multi-Region: every replica's (and the primary's) region → ARN.
    pub replicas: BTreeMap<String, String>,
}

/// DescribeKey of `key` (a key id, alias or ARN; another account's key needs an ARN) in
/// `region`. A missing answer is a `NotFoundException` error, like a missing key.
pub async fn describe_key(aws: &Aws, region: &str, key: &str) -> Result<KeyInfo, AwsError> {
    let out = aws
        .kms(region)
        .describe_key()
        .key_id(key)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeKey", region, e))?;
    let Some(m) = out.key_metadata() else {
        return Err(AwsError::local("DescribeKey", region, format!("KMS returned no metadata for {key}"))
            .with_code("NotFoundException"));
    };
    let arn = m.arn().unwrap_or(key).to_string();
    let mut replicas = BTreeMap::new();
    if m.multi_region().unwrap_or(false) {
        if let Some(c) = m.multi_region_configuration() {
            for k in c.primary_key().into_iter().chain(c.replica_keys()) {
                if let (Some(r), Some(a)) = (k.region(), k.arn()) {
                    replicas.insert(r.to_string(), a.to_string());
                }
            }
        }
        replicas.entry(arn_region(&arn).unwrap_or(region).to_string()).or_insert_with(|| arn.clone());
    }
    Ok(KeyInfo {
        key_id: m.key_id().to_string(),
        manager: if m.key_manager().is_some_and(|k| k.as_str() == "AWS") {
            KeyManager::Aws
        } else {
            KeyManager::Customer
        },
        state: m.key_state().map(|s| s.as_str().to_string()).unwrap_or_else(|| "Unknown".into()),
        multi_region: m.multi_region().unwrap_or(false),
        arn,
        replicas,
    })
}

/// The first alias name (`alias/…`, sorted) of `key_id` (ListAliases); None when it has none or
/// the listing is refused.
pub async fn first_alias(aws: &Aws, region: &str, key_id: &str) -> Option<String> {
    let out = aws.kms(region).list_aliases().key_id(key_id).send().await.ok()?;
    out.aliases().iter().filter_map(|a| a.alias_name()).min().map(str::to_string)
}

/// ListGrants on `key_arn` for `grantee_arn` (every page).
pub async fn list_grants(
    aws: &Aws,
    region: &str,
    key_arn: &str,
    grantee_arn: &str,
) -> Result<Vec<ExistingGrant>, AwsError> {
    let mut pages =
        aws.kms(region).list_grants().key_id(key_arn).grantee_principal(grantee_arn).into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("ListGrants", region, e))?;
        for g in page.grants() {
            // KMS reports the grantee of a deleted (or not yet propagated) role by its unique
            // id (AROA…); such a grant does not serve the role ARN and is left out.
            let Some(grantee) = g.grantee_principal().filter(|p| *p == grantee_arn) else { continue };
            out.push(ExistingGrant {
                key_arn: key_arn.to_string(),
                region: region.to_string(),
                grant_id: g.grant_id().unwrap_or_default().to_string(),
                name: g.name().filter(|n| !n.is_empty()).map(str::to_string),
                grantee_arn: grantee.to_string(),
                operations: g.operations().iter().map(|o| o.as_str().to_string()).collect(),
            });
        }
    }
    out.sort_by(|a, b| a.grant_id.cmp(&b.grant_id));
    Ok(out)
}

/// GetKeyPolicy (`default`, the only policy name KMS supports) of `key` in `region`.
pub async fn get_key_policy(aws: &Aws, region: &str, key: &str) -> Result<String, AwsError> {
    let out = aws
        .kms(region)
        .get_key_policy()
        .key_id(key)
        .policy_name("default")
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("GetKeyPolicy", region, e))?;
    Ok(out.policy().unwrap_or_default().to_string())
}

/// DescribeImages for one AMI as this identity; None when it does not exist or is not visible
/// (also for a malformed id: AWS answers `InvalidAMIID.Malformed` for ids it cannot parse).
pub async fn describe_image(aws: &Aws, region: &str, ami: &str) -> Result<Option<ImageFacts>, AwsError> {
    let out = match aws.ec2(region).describe_images().image_ids(ami).send().await {
        Ok(o) => o,
        Err(e) => {
            let err = AwsError::from_sdk("DescribeImages", region, e);
            if err.is_not_found() || err.code.as_deref() == Some("InvalidAMIID.Malformed") {
                return Ok(None);
            }
            return Err(err);
        }
    };
    Ok(out.images().iter().find(|i| i.image_id() == Some(ami)).map(image_facts))
}

/// One DescribeImages entry as [`ImageFacts`].
pub fn image_facts(i: &aws_sdk_ec2::types::Image) -> ImageFacts {
    ImageFacts {
        ami_id: i.image_id().unwrap_or_default().to_string(),
        state: i.state().map(|s| s.as_str().to_string()).unwrap_or_else(|| "unknown".into()),
        owner: i.owner_id().map(str::to_string),
        public: i.public().unwrap_or(false),
        block_devices: i
            .block_device_mappings()
            .iter()
            .map(|b| BlockDevice {
                device_name: b.device_name().unwrap_or("?").to_string(),
                snapshot_id: b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string),
                encrypted: b.ebs().and_then(|e| e.encrypted()),
            })
            .collect(),
        name: i.name().map(str::to_string),
        description: i.description().map(str::to_string),
        creation_date: i.creation_date().map(str::to_string),
        deprecation_time: i.deprecation_time().map(str::to_string),
        deregistration_protection: i.deregistration_protection().map(str::to_string),
    }
}

fn snapshot_facts(s: &aws_sdk_ec2::types::Snapshot) -> Option<(String, SnapshotFacts)> {
    s.snapshot_id().map(|id| {
        (
            id.to_string(),
            SnapshotFacts {
                snapshot_id: id.to_string(),
                encrypted: s.encrypted().unwrap_or(false),
                kms_key_id: s.kms_key_id().map(str::to_string),
            },
        )
    })
}

/// DescribeSnapshots for several ids in one call; when AWS answers NotFound (one id is gone, or
/// not visible to this account), [`describe_snapshots_each`] so the others are still seen. Ids
/// that do not exist are left out.
pub async fn describe_snapshots(
    aws: &Aws,
    region: &str,
    ids: &[String],
) -> Result<BTreeMap<String, SnapshotFacts>, AwsError> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    match aws.ec2(region).describe_snapshots().set_snapshot_ids(Some(ids.to_vec())).send().await {
        Ok(out) => Ok(out.snapshots().iter().filter_map(snapshot_facts).collect()),
        Err(e) => {
            let err = AwsError::from_sdk("DescribeSnapshots", region, e);
            if !err.is_not_found() {
                return Err(err);
            }
            describe_snapshots_each(aws, region, ids).await
        }
    }
}

/// DescribeSnapshots one id at a time, tolerating NotFound (a snapshot not shared for
/// create-volume is simply not visible cross-account, and one hidden id must not hide the
/// others). Ids that do not exist or are not visible are left out.
pub async fn describe_snapshots_each(
    aws: &Aws,
    region: &str,
    ids: &[String],
) -> Result<BTreeMap<String, SnapshotFacts>, AwsError> {
    let ec2 = aws.ec2(region);
    let mut found = BTreeMap::new();
    for id in ids {
        match ec2.describe_snapshots().snapshot_ids(id).send().await {
            Ok(out) => found.extend(out.snapshots().iter().filter_map(snapshot_facts)),
            Err(e) => {
                let err = AwsError::from_sdk("DescribeSnapshots", region, e);
                if !err.is_not_found() {
                    return Err(err);
                }
            }
        }
    }
    Ok(found)
}

/// The block-device mappings of one launch-template version (`$Default` when `version` is
/// None): (device, `Encrypted`, `KmsKeyId`) per EBS mapping. `template` is an `lt-…` id or a
/// name.
pub async fn launch_template_devices(
    aws: &Aws,
    region: &str,
    template: &str,
    version: Option<&str>,
) -> Result<(String, Vec<(String, Option<bool>, Option<String>)>), AwsError> {
    let mut req = aws.ec2(region).describe_launch_template_versions();
    req = if template.starts_with("lt-") {
        req.launch_template_id(template)
    } else {
        req.launch_template_name(template)
    };
    let out = req
        .versions(version.unwrap_or("$Default"))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeLaunchTemplateVersions", region, e))?;
    let Some(v) = out.launch_template_versions().first() else {
        return Err(AwsError::local(
            "DescribeLaunchTemplateVersions",
            region,
            format!("launch template {template} has no version {}", version.unwrap_or("$Default")),
        )
        .with_code("InvalidLaunchTemplateId.VersionNotFound")
        .with_hint("Check --launch-template-version"));
    };
    let label = format!(
        "launch template {} version {}",
        v.launch_template_id().unwrap_or(template),
        v.version_number().map(|n| n.to_string()).unwrap_or_else(|| "?".into())
    );
    let devices = v
        .launch_template_data()
        .map(|d| {
            d.block_device_mappings()
                .iter()
                .filter_map(|b| {
                    let ebs = b.ebs()?;
                    Some((
                        b.device_name().unwrap_or("?").to_string(),
                        ebs.encrypted(),
                        ebs.kms_key_id().map(str::to_string),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((label, devices))
}
