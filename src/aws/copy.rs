//! The AWS side of `copy`: the reads that fill [`CopyFacts`] (reusing [`super::gather`]'s
//! readers), finding a previous run's copy by its tags, and the one write, `CopyImage`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use futures::future::join_all;

use super::clients::Aws;
use super::error::AwsError;
use super::gather::{describe_key, launch_permissions, snapshot_users};
use super::read::{describe_image, describe_snapshots, image_facts};
use crate::core::copy::{CopyFacts, CopyRequest, TAG_SOURCE_IMAGE};
use crate::core::facts::{ImageFacts, KeyLookup, LaunchPermissions, SnapshotFacts};

/// What the producer reads once per region for every consumer account (push mode).
#[derive(Debug, Clone, Default)]
pub struct ProducerRegion {
    /// The source AMI.
    pub source: Option<ImageFacts>,
    /// Its snapshots.
    pub snapshots: BTreeMap<String, SnapshotFacts>,
    /// Their keys, by the reference the snapshots name.
    pub keys: BTreeMap<String, KeyLookup>,
    /// Launch permissions of the AMI.
    pub launch: LaunchPermissions,
    /// createVolumePermission users per snapshot.
    pub volume_users: BTreeMap<String, BTreeSet<String>>,
    /// Key policies of the customer managed source keys, by ARN.
    pub policies: BTreeMap<String, Result<String, String>>,
}

fn snapshot_ids(img: &Option<ImageFacts>) -> Vec<String> {
    let mut v: Vec<String> = img
        .as_ref()
        .map(|i| i.block_devices.iter().filter_map(|b| b.snapshot_id.clone()).collect())
        .unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

/// The producer's reads in one region: the AMI, its snapshots, their keys and key policies,
/// and the sharing state.
pub async fn gather_producer(aws: &Aws, region: &str, ami: &str) -> Result<ProducerRegion, AwsError> {
    let (source, launch) =
        tokio::join!(describe_image(aws, region, ami), launch_permissions(aws, region, ami));
    let source = source?;
    let ids = snapshot_ids(&source);
    let (snapshots, users) = tokio::join!(
        describe_snapshots(aws, region, &ids),
        join_all(ids.iter().map(|s| snapshot_users(aws, region, s)))
    );
    let snapshots = snapshots?;
    let mut volume_users = BTreeMap::new();
    for (id, u) in ids.iter().zip(users) {
        volume_users.insert(id.clone(), u?);
    }
    let refs: BTreeSet<String> = snapshots.values().filter_map(|s| s.kms_key_id.clone()).collect();
    let looked = join_all(refs.iter().map(|k| describe_key(aws, region, k, false))).await;
    let mut keys = BTreeMap::new();
    for (k, l) in refs.into_iter().zip(looked) {
        keys.insert(k, l?);
    }
    let cmks: Vec<String> = keys
        .values()
        .filter_map(|l| match l {
            KeyLookup::Found(k) if k.manager == crate::core::facts::KeyManager::Customer => {
                Some(k.arn.clone())
            }
            _ => None,
        })
        .collect();
    let pols = join_all(cmks.iter().map(|k| super::read::get_key_policy(aws, region, k))).await;
    let policies = cmks.into_iter().zip(pols).map(|(k, p)| (k, p.map_err(|e| e.to_string()))).collect();
    // A missing AMI also fails DescribeImageAttribute: that is a finding, not an error.
    let launch = match (launch, &source) {
        (Ok(l), _) => l,
        (Err(_), None) => LaunchPermissions::default(),
        (Err(e), Some(_)) => return Err(e),
    };
    Ok(ProducerRegion { source, snapshots, keys, launch, volume_users, policies })
}

/// A previous run's copy of `source_ami` owned by the consumer in `region` (found by the
/// [`TAG_SOURCE_IMAGE`] tag), the lowest id if there are several.
pub async fn find_copy(
    consumer: &Aws,
    region: &str,
    source_ami: &str,
) -> Result<Option<ImageFacts>, AwsError> {
    let out = consumer
        .ec2(region)
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name(format!("tag:{TAG_SOURCE_IMAGE}")).values(source_ami).build())
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeImages", region, e))?;
    let mut found: Vec<ImageFacts> = out
        .images()
        .iter()
        .map(image_facts)
        .filter(|i| !matches!(i.state.as_str(), "deregistered" | "failed" | "error"))
        .collect();
    found.sort_by(|a, b| a.ami_id.cmp(&b.ami_id));
    Ok(found.into_iter().next())
}

/// The consumer's reads for one item: the destination key, a previous copy, and (pull mode,
/// `producer` = None) the source as the consumer sees it: visible = shared.
pub async fn gather_consumer(
    consumer: &Aws,
    region: &str,
    source_ami: &str,
    dest_key: &str,
    producer: Option<&ProducerRegion>,
    account: &str,
) -> Result<CopyFacts, AwsError> {
    let (key, existing) = tokio::join!(
        describe_key(consumer, region, dest_key, false),
        find_copy(consumer, region, source_ami)
    );
    let mut facts = CopyFacts { dest_key: Some(key?), existing: existing?, ..Default::default() };
    match producer {
        Some(p) => {
            facts.source = p.source.clone();
            facts.source_snapshots = p.snapshots.clone();
            facts.source_keys = p.keys.clone();
            facts.source_key_policies = p.policies.clone();
            if p.source.is_some() {
                facts.launch_shared = Some(
                    p.launch.users.contains(account)
                        || p.launch.groups.contains("all")
                        || p.source.as_ref().is_some_and(|s| s.public),
                );
            }
            for (s, users) in &p.volume_users {
                facts.volume_shared.insert(s.clone(), users.contains(account) || users.contains("all"));
            }
        }
        None => {
            // Pull: what the consumer can see is what is shared with it.
            let source = describe_image(consumer, region, source_ami).await?;
            let ids = snapshot_ids(&source);
            let snaps = describe_snapshots(consumer, region, &ids).await?;
            for id in &ids {
                facts.volume_shared.insert(id.clone(), snaps.contains_key(id));
            }
            let refs: BTreeSet<String> = snaps.values().filter_map(|s| s.kms_key_id.clone()).collect();
            for k in refs {
                // A producer key the consumer may not describe is not a finding by itself.
                if let Ok(l @ KeyLookup::Found(_)) = describe_key(consumer, region, &k, false).await {
                    facts.source_keys.insert(k, l);
                }
            }
            facts.launch_shared = Some(source.is_some());
            facts.source = source;
            facts.source_snapshots = snaps;
        }
    }
    Ok(facts)
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// `CopyImage` in the consumer account (the one write of a copy): encrypted with the request's
/// key, its `ClientToken`, tags on the image and the snapshots. Returns the new image id.
pub async fn copy_image(consumer: &Aws, region: &str, req: &CopyRequest) -> Result<String, AwsError> {
    let tags: Vec<Tag> = req.tags.iter().map(|(k, v)| tag(k, v)).collect();
    let spec =
        |t: ResourceType| TagSpecification::builder().resource_type(t).set_tags(Some(tags.clone())).build();
    let out = consumer
        .ec2(region)
        .copy_image()
        .source_image_id(&req.source_ami)
        .source_region(&req.source_region)
        .name(&req.name)
        .set_description(req.description.clone())
        .encrypted(true)
        .kms_key_id(&req.kms_key_arn)
        .client_token(&req.client_token)
        .tag_specifications(spec(ResourceType::Image))
        .tag_specifications(spec(ResourceType::Snapshot))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("CopyImage", region, e))?;
    out.image_id().map(str::to_string).ok_or_else(|| {
        AwsError::local("CopyImage", region, "CopyImage returned no image id")
            .with_hint("re-run: the ClientToken makes the retry return the same copy")
    })
}
