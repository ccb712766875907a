//! Read-only fact gathering for one region: one DescribeImages, one DescribeSnapshots for all of
//! the AMI's snapshots, one DescribeKey per distinct key (cached), the launch and
//! create-volume permissions and the SSM parameters, independent reads in parallel: for
//! `publish` every read is issued in the first wave that has its inputs (two waves when the
//! snapshots are under the intended key).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{ImageAttributeName, PermissionGroup, SnapshotAttributeName};
use futures::future::join_all;

use super::clients::Aws;
use super::error::AwsError;
use crate::core::facts::{
    BlockDevice, ImageFacts, KeyFacts, KeyLookup, KeyManager, LaunchPermissions, ParamFacts, RegionFacts,
    SnapshotFacts,
};
use crate::core::intent::Intent;
use crate::core::plan::parameter_names;

/// DescribeImages for one AMI; None when it does not exist (or is not visible).
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
            })
            .collect(),
        name: i.name().map(str::to_string),
        description: i.description().map(str::to_string),
        creation_date: i.creation_date().map(str::to_string),
        deprecation_time: i.deprecation_time().map(str::to_string),
        deregistration_protection: i.deregistration_protection().map(str::to_string),
    }
}

/// DescribeSnapshots for several ids at once; ids that do not exist are left out.
pub async fn describe_snapshots(
    aws: &Aws,
    region: &str,
    ids: &[String],
) -> Result<BTreeMap<String, SnapshotFacts>, AwsError> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ec2 = aws.ec2(region);
    let convert = |s: &aws_sdk_ec2::types::Snapshot| {
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
    };
    match ec2.describe_snapshots().set_snapshot_ids(Some(ids.to_vec())).send().await {
        Ok(out) => Ok(out.snapshots().iter().filter_map(convert).collect()),
        Err(e) => {
            let err = AwsError::from_sdk("DescribeSnapshots", region, e);
            if !err.is_not_found() {
                return Err(err);
            }
            // One id is gone: ask one by one so the others are still checked.
            let mut found = BTreeMap::new();
            for id in ids {
                match ec2.describe_snapshots().snapshot_ids(id).send().await {
                    Ok(out) => found.extend(out.snapshots().iter().filter_map(convert)),
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
    }
}

/// DescribeKey of a key reference in a region (and ListAliases when `with_alias`).
pub async fn describe_key(
    aws: &Aws,
    region: &str,
    reference: &str,
    with_alias: bool,
) -> Result<KeyLookup, AwsError> {
    let kms = aws.kms(region);
    let out = match kms.describe_key().key_id(reference).send().await {
        Ok(o) => o,
        Err(e) => {
            let err = AwsError::from_sdk("DescribeKey", region, e);
            if err.is_not_found() {
                return Ok(KeyLookup::NotFound);
            }
            if err.is_access_denied() {
                return Ok(KeyLookup::AccessDenied(err.message));
            }
            return Err(err);
        }
    };
    let Some(m) = out.key_metadata() else {
        return Ok(KeyLookup::NotFound);
    };
    let mut alias = reference.strip_prefix("alias/").map(|_| reference.to_string());
    if alias.is_none() {
        alias = reference.rsplit_once(":alias/").map(|(_, n)| format!("alias/{n}"));
    }
    let manager = match m.key_manager().map(|k| k.as_str()) {
        Some("AWS") => KeyManager::Aws,
        _ => KeyManager::Customer,
    };
    if alias.is_none()
        && with_alias
        && let Ok(a) = kms.list_aliases().key_id(m.key_id()).send().await
    {
        alias = a.aliases().iter().filter_map(|a| a.alias_name()).min().map(str::to_string);
    }
    Ok(KeyLookup::Found(KeyFacts {
        arn: m.arn().unwrap_or(m.key_id()).to_string(),
        key_id: m.key_id().to_string(),
        manager,
        state: m.key_state().map(|s| s.as_str().to_string()).unwrap_or_else(|| "Unknown".into()),
        alias,
        multi_region: m.multi_region().unwrap_or(false),
    }))
}

/// DescribeImageAttribute launchPermission of one AMI.
pub async fn launch_permissions(aws: &Aws, region: &str, ami: &str) -> Result<LaunchPermissions, AwsError> {
    let out = aws
        .ec2(region)
        .describe_image_attribute()
        .image_id(ami)
        .attribute(ImageAttributeName::LaunchPermission)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeImageAttribute", region, e))?;
    let mut lp = LaunchPermissions::default();
    for p in out.launch_permissions() {
        if let Some(u) = p.user_id() {
            lp.users.insert(u.to_string());
        }
        if let Some(g) = p.group() {
            lp.groups.insert(g.as_str().to_string());
        }
        if let Some(o) = p.organization_arn() {
            lp.org_arns.insert(o.to_string());
        }
        if let Some(o) = p.organizational_unit_arn() {
            lp.ou_arns.insert(o.to_string());
        }
    }
    Ok(lp)
}

/// DescribeSnapshotAttribute createVolumePermission of one snapshot (`all` for the public group).
pub async fn snapshot_users(aws: &Aws, region: &str, snapshot: &str) -> Result<BTreeSet<String>, AwsError> {
    let out = aws
        .ec2(region)
        .describe_snapshot_attribute()
        .snapshot_id(snapshot)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeSnapshotAttribute", region, e))?;
    Ok(out
        .create_volume_permissions()
        .iter()
        .filter_map(|p| {
            p.user_id()
                .map(str::to_string)
                .or_else(|| (p.group() == Some(&PermissionGroup::All)).then(|| "all".to_string()))
        })
        .collect())
}

/// GetParameters for `names` (at most 10 per call, as the API allows).
pub async fn get_parameters(
    aws: &Aws,
    region: &str,
    names: &[String],
) -> Result<BTreeMap<String, ParamFacts>, AwsError> {
    let ssm = aws.ssm(region);
    let mut found = BTreeMap::new();
    for chunk in names.chunks(10) {
        let out = ssm
            .get_parameters()
            .set_names(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetParameters", region, e))?;
        for p in out.parameters() {
            if let (Some(n), Some(v)) = (p.name(), p.value()) {
                found.insert(
                    n.to_string(),
                    ParamFacts {
                        value: v.to_string(),
                        param_type: p
                            .r#type()
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_else(|| "String".into()),
                        data_type: p.data_type().unwrap_or("text").to_string(),
                    },
                );
            }
        }
    }
    Ok(found)
}

/// Stage 1 (enough for `check`): image, snapshots, keys.
pub async fn gather_region(aws: &Aws, intent: &Intent, region: &str) -> Result<RegionFacts, AwsError> {
    gather(aws, intent, region, None).await.map(|(f, _)| f)
}

/// Stage 1 and, in the same waves, the sharing state `publish` needs (launch and create-volume
/// permissions, the SSM parameters in the producer's and each publish account): the reads that
/// need only the AMI id and the parameter names start at once, the per-snapshot ones with
/// DescribeSnapshots. The second result is the sharing read's outcome, which only matters when
/// verification is clean (an AMI that is missing also fails DescribeImageAttribute).
pub async fn gather_region_publish(
    aws: &Aws,
    publishers: &[(String, Aws)],
    intent: &Intent,
    region: &str,
) -> Result<(RegionFacts, Result<(), AwsError>), AwsError> {
    let (facts, sharing) = gather(aws, intent, region, Some(publishers)).await?;
    Ok((facts, sharing.unwrap_or(Ok(()))))
}

async fn gather(
    aws: &Aws,
    intent: &Intent,
    region: &str,
    publishers: Option<&[(String, Aws)]>,
) -> Result<(RegionFacts, Option<Result<(), AwsError>>), AwsError> {
    let ami = intent.amis.0.get(region).cloned().unwrap_or_default();
    let intended_key = intent.keys.get(region).cloned().flatten();
    let names: Vec<String> = intent.ssm_path.as_deref().map(parameter_names).unwrap_or_default();
    // Sharing reads that need nothing but the AMI id and the parameter names.
    let early = async {
        let publishers = publishers?;
        let (lp, own, others) = tokio::join!(
            launch_permissions(aws, region, &ami),
            async {
                if names.is_empty() { Ok(BTreeMap::new()) } else { get_parameters(aws, region, &names).await }
            },
            join_all(publishers.iter().map(|(account, p)| {
                let names = &names;
                async move {
                    if names.is_empty() {
                        return Ok(BTreeMap::new());
                    }
                    get_parameters(p, region, names).await.map_err(|e| e.in_account(account))
                }
            })),
        );
        Some((lp, own, others))
    };
    let stage1 = async {
        let (image, intended) = tokio::join!(describe_image(aws, region, &ami), async {
            match &intended_key {
                Some(k) => describe_key(aws, region, k, false).await.map(Some),
                None => Ok(None),
            }
        });
        let image = image?;
        let mut keys = BTreeMap::new();
        if let (Some(k), Some(l)) = (&intended_key, intended?) {
            if let KeyLookup::Found(f) = &l {
                keys.insert(f.arn.clone(), l.clone());
            }
            keys.insert(k.clone(), l);
        }
        let snap_ids: Vec<String> = image
            .as_ref()
            .map(|i| {
                let mut v: Vec<String> =
                    i.block_devices.iter().filter_map(|b| b.snapshot_id.clone()).collect();
                v.sort();
                v.dedup();
                v
            })
            .unwrap_or_default();
        // The key policy needs the resolved key ARN: read it in the same wave as the snapshots.
        let policy_key = match keys.get(intended_key.as_deref().unwrap_or_default()) {
            Some(KeyLookup::Found(k)) if publishers.is_some() && wants_key_policy(intent) => {
                Some(k.arn.clone())
            }
            _ => None,
        };
        let (snapshots, users, key_policy) = tokio::join!(
            describe_snapshots(aws, region, &snap_ids),
            async {
                if publishers.is_none() {
                    return Vec::new();
                }
                join_all(snap_ids.iter().map(|s| snapshot_users(aws, region, s))).await
            },
            async {
                let k = policy_key?;
                Some(super::read::get_key_policy(aws, region, &k).await.map_err(|e| e.to_string()))
            }
        );
        let snapshots = snapshots?;
        // One DescribeKey per distinct snapshot key not already known (the intended key's ARN is).
        let unknown: BTreeSet<String> = snapshots
            .values()
            .filter_map(|s| s.kms_key_id.clone())
            .filter(|k| !keys.contains_key(k))
            .collect();
        let looked = join_all(unknown.iter().map(|k| describe_key(aws, region, k, true))).await;
        for (k, l) in unknown.into_iter().zip(looked) {
            keys.insert(k, l?);
        }
        Ok::<_, AwsError>((
            image,
            snapshots,
            keys,
            snap_ids.into_iter().zip(users).collect::<Vec<_>>(),
            key_policy,
        ))
    };
    let (stage1, early) = tokio::join!(stage1, early);
    let (image, snapshots, keys, users, key_policy) = stage1?;
    let mut facts = RegionFacts {
        region: region.to_string(),
        ami_id: ami,
        image,
        snapshots,
        keys,
        intended_key,
        launch_permissions: None,
        snapshot_users: BTreeMap::new(),
        parameters: BTreeMap::new(),
        key_policy,
    };
    let sharing = match (publishers, early) {
        (Some(publishers), Some((lp, own, others))) => {
            Some(fill_sharing(&mut facts, publishers, &names, lp, users, own, others))
        }
        _ => None,
    };
    Ok((facts, sharing))
}

type Params = BTreeMap<String, ParamFacts>;

/// Puts the sharing reads into `facts`; the first failed read is the error.
// AwsError is returned by value by every (async) gather function; boxing it here alone would
// only make this helper differ.
#[allow(clippy::result_large_err)]
fn fill_sharing(
    facts: &mut RegionFacts,
    publishers: &[(String, Aws)],
    names: &[String],
    lp: Result<LaunchPermissions, AwsError>,
    users: Vec<(String, Result<BTreeSet<String>, AwsError>)>,
    own: Result<Params, AwsError>,
    others: Vec<Result<Params, AwsError>>,
) -> Result<(), AwsError> {
    facts.launch_permissions = Some(lp?);
    for (s, u) in users {
        facts.snapshot_users.insert(s, u?);
    }
    let own = own?;
    for n in names {
        facts.parameters.insert((String::new(), n.clone()), own.get(n).cloned());
    }
    for ((account, _), found) in publishers.iter().zip(others) {
        let found = found?;
        for n in names {
            facts.parameters.insert((account.clone(), n.clone()), found.get(n).cloned());
        }
    }
    Ok(())
}

/// Preflight facts for one region: the intended key, EBS encryption by default and its key,
/// and, when `consumers` is not empty and the key was found, its key policy (GetKeyPolicy;
/// a refusal is a fact, not an error).
pub async fn gather_preflight(
    aws: &Aws,
    region: &str,
    intended_key: Option<&str>,
    consumers: &[String],
) -> Result<crate::core::preflight::PreflightFacts, AwsError> {
    use crate::core::preflight::KeyPolicyLookup;
    let ec2 = aws.ec2(region);
    let (intended, by_default, default_key) = tokio::join!(
        async {
            match intended_key {
                // A key ARN names its region: describe it there, so a key from another region
                // is reported as such (KEY_WRONG_REGION) rather than as missing.
                Some(k) => {
                    let home = crate::core::ids::arn_region(k).unwrap_or(region);
                    describe_key(aws, home, k, false).await.map(Some)
                }
                None => Ok(None),
            }
        },
        ec2.get_ebs_encryption_by_default().send(),
        ec2.get_ebs_default_kms_key_id().send(),
    );
    let by_default = by_default
        .map_err(|e| AwsError::from_sdk("GetEbsEncryptionByDefault", region, e))?
        .ebs_encryption_by_default();
    let default_ref =
        default_key.map_err(|e| AwsError::from_sdk("GetEbsDefaultKmsKeyId", region, e))?.kms_key_id;
    let ebs_default_key = match default_ref {
        Some(k) => Some(describe_key(aws, region, &k, false).await?),
        None => None,
    };
    let intended = intended?;
    let key_policy = match &intended {
        Some(KeyLookup::Found(k)) if !consumers.is_empty() => {
            let home = crate::core::ids::arn_region(&k.arn).unwrap_or(region);
            match aws.kms(home).get_key_policy().key_id(&k.arn).policy_name("default").send().await {
                Ok(out) => Some(KeyPolicyLookup::Found(out.policy.unwrap_or_default())),
                Err(e) => {
                    let e = AwsError::from_sdk("GetKeyPolicy", home, e);
                    if e.is_access_denied() {
                        Some(KeyPolicyLookup::Unreadable(e.to_string()))
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        _ => None,
    };
    Ok(crate::core::preflight::PreflightFacts {
        region: region.to_string(),
        intended_key: intended_key.map(str::to_string),
        intended,
        ebs_encryption_by_default: by_default,
        ebs_default_key,
        consumers: consumers.to_vec(),
        key_policy,
    })
}

/// Whether `publish` checks key policies for consumers: `check_key_policy` is not `off` and
/// there is an account to check (`ami_users` ∪ `publish_accounts`).
pub fn wants_key_policy(intent: &Intent) -> bool {
    intent.check_key_policy != crate::core::config::PolicyCheck::Off
        && !(intent.launch_users.is_empty() && intent.publish_accounts.is_empty())
}
