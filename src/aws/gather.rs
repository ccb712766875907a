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
use super::read::{self, describe_image, describe_snapshots};
use crate::core::facts::{KeyFacts, KeyLookup, Known, LaunchPermissions, ParamFacts, RegionFacts};
use crate::core::intent::Intent;
use crate::core::plan::parameter_names;

/// DescribeKey of a key reference in a region (and ListAliases when `with_alias`), as a
/// [`KeyLookup`]: NotFound and AccessDenied are answers, not errors.
pub async fn describe_key(
    aws: &Aws,
    region: &str,
    reference: &str,
    with_alias: bool,
) -> Result<KeyLookup, AwsError> {
    let info = match read::describe_key(aws, region, reference).await {
        Ok(i) => i,
        Err(err) if err.is_not_found() => return Ok(KeyLookup::NotFound),
        Err(err) if err.is_access_denied() => return Ok(KeyLookup::AccessDenied(err.message)),
        Err(err) => return Err(err),
    };
    let mut alias = reference.strip_prefix("alias/").map(|_| reference.to_string());
    if alias.is_none() {
        alias = reference.rsplit_once(":alias/").map(|(_, n)| format!("alias/{n}"));
    }
    if alias.is_none() && with_alias {
        alias = read::first_alias(aws, region, &info.key_id).await;
    }
    Ok(KeyLookup::Found(KeyFacts {
        arn: info.arn,
        key_id: info.key_id,
        manager: info.manager,
        state: info.state,
        alias,
        multi_region: info.multi_region,
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
pub async fn gather_region(
    aws: &Aws,
    intent: &Intent,
    known: &Known,
    region: &str,
) -> Result<RegionFacts, AwsError> {
    gather(aws, intent, known, region, None).await.map(|(f, _)| f)
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
    known: &Known,
    region: &str,
) -> Result<(RegionFacts, Result<(), AwsError>), AwsError> {
    let (facts, sharing) = gather(aws, intent, known, region, Some(publishers)).await?;
    Ok((facts, sharing.unwrap_or(Ok(()))))
}

async fn gather(
    aws: &Aws,
    intent: &Intent,
    known: &Known,
    region: &str,
    publishers: Option<&[(String, Aws)]>,
) -> Result<(RegionFacts, Option<Result<(), AwsError>>), AwsError> {
    let ami = intent.amis.0.get(region).cloned().unwrap_or_default();
    let intended_key = intent.keys.get(region).cloned().flatten();
    let names: Vec<String> =
        intent.ssm_path.as_deref().map(|p| parameter_names(intent, p)).unwrap_or_default();
    // Sharing reads that need nothing but the AMI id and the parameter names.
    let early = async {
        let publishers = publishers?;
        let (lp, own, others) = tokio::join!(
            async {
                if intent.reads_launch_permissions() {
                    launch_permissions(aws, region, &ami).await
                } else {
                    Ok(LaunchPermissions::default())
                }
            },
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
        // What the caller already read in this run is not read again.
        let (image, intended) = tokio::join!(
            async {
                match known.image(region, &ami) {
                    Some(i) => Ok(Some(i.clone())),
                    None => describe_image(aws, region, &ami).await,
                }
            },
            async {
                match &intended_key {
                    Some(k) => match known.key(region, k) {
                        Some(l) => Ok(Some(l.clone())),
                        None => describe_key(aws, region, k, false).await.map(Some),
                    },
                    None => Ok(None),
                }
            }
        );
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
                if publishers.is_none() || !intent.reads_snapshot_users() {
                    return Vec::new();
                }
                join_all(snap_ids.iter().map(|s| snapshot_users(aws, region, s))).await
            },
            async {
                let k = policy_key?;
                Some(read::get_key_policy(aws, region, &k).await.map_err(|e| e.to_string()))
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
            match read::get_key_policy(aws, home, &k.arn).await {
                Ok(policy) => Some(KeyPolicyLookup::Found(policy)),
                Err(e) => {
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
