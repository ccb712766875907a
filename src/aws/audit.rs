//! Read-only facts for `amikey audit`, per region: every image the account owns (DescribeImages
//! `Owners=self` plus the `--ami-filter` filters, paginated), their snapshots in batches
//! (DescribeSnapshots with a `snapshot-id` filter of up to [`SNAPSHOT_BATCH`] ids, so a missing
//! snapshot is simply absent), one DescribeKey per distinct key, one DescribeImageAttribute
//! `launchPermission` per image, and GetKeyPolicy once per key of a shared image. Every call
//! goes through one semaphore, so at most `concurrency` calls are in flight across all regions.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use aws_sdk_ec2::types::Filter;
use futures::future::join_all;
use tokio::sync::Semaphore;

use super::clients::Aws;
use super::error::AwsError;
use super::gather::{describe_key, launch_permissions};
use super::read::get_key_policy;
use crate::core::audit::{AuditError, AuditImage, AuditRegionFacts};
use crate::core::facts::SnapshotFacts;

/// Snapshot ids per DescribeSnapshots call (AWS allows 200 values per filter).
pub const SNAPSHOT_BATCH: usize = 200;

/// Shared limit on calls in flight.
#[derive(Clone)]
pub struct Limit(Arc<Semaphore>);

impl Limit {
    /// At most `n` (≥ 1) calls at once.
    pub fn new(n: usize) -> Limit {
        Limit(Arc::new(Semaphore::new(n.max(1))))
    }

    async fn run<F: Future>(&self, f: F) -> F::Output {
        // The semaphore is never closed, so acquire cannot fail; run unlimited if it ever did.
        let _permit = self.0.acquire().await.ok();
        f.await
    }
}

async fn owned_images(
    aws: &Aws,
    limit: &Limit,
    region: &str,
    filters: &[(String, String)],
) -> Result<Vec<AuditImage>, AwsError> {
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (n, v) in filters {
        by_name.entry(n.as_str()).or_default().push(v.clone());
    }
    let filters: Vec<Filter> =
        by_name.into_iter().map(|(n, vs)| Filter::builder().name(n).set_values(Some(vs)).build()).collect();
    let mut pages = aws
        .ec2(region)
        .describe_images()
        .owners("self")
        .set_filters((!filters.is_empty()).then_some(filters))
        .max_results(1000)
        .into_paginator()
        .send();
    let mut images = Vec::new();
    loop {
        let Some(page) = limit.run(pages.next()).await else { break };
        let page = page.map_err(|e| AwsError::from_sdk("DescribeImages", region, e))?;
        for i in page.images() {
            let Some(id) = i.image_id() else { continue };
            images.push(AuditImage {
                ami_id: id.to_string(),
                name: i.name().map(str::to_string),
                snapshots: i
                    .block_device_mappings()
                    .iter()
                    .filter_map(|b| {
                        let sid = b.ebs()?.snapshot_id()?;
                        Some((b.device_name().unwrap_or("?").to_string(), sid.to_string()))
                    })
                    .collect(),
                launch_accounts: BTreeSet::new(),
            });
        }
    }
    images.sort_by(|a, b| a.ami_id.cmp(&b.ami_id));
    Ok(images)
}

async fn snapshot_batch(
    aws: &Aws,
    limit: &Limit,
    region: &str,
    ids: &[String],
) -> Result<Vec<SnapshotFacts>, AwsError> {
    let filter = Filter::builder().name("snapshot-id").set_values(Some(ids.to_vec())).build();
    let mut pages = aws.ec2(region).describe_snapshots().filters(filter).into_paginator().send();
    let mut out = Vec::new();
    loop {
        let Some(page) = limit.run(pages.next()).await else { break };
        let page = page.map_err(|e| AwsError::from_sdk("DescribeSnapshots", region, e))?;
        out.extend(page.snapshots().iter().filter_map(|s| {
            Some(SnapshotFacts {
                snapshot_id: s.snapshot_id()?.to_string(),
                encrypted: s.encrypted().unwrap_or(false),
                kms_key_id: s.kms_key_id().map(str::to_string),
            })
        }));
    }
    Ok(out)
}

async fn key_policy(
    aws: &Aws,
    limit: &Limit,
    region: &str,
    arn: &str,
) -> Result<Result<serde_json::Value, String>, AwsError> {
    match limit.run(get_key_policy(aws, region, arn)).await {
        Ok(text) => Ok(serde_json::from_str(&text).map_err(|e| format!("the policy is not JSON: {e}"))),
        Err(err) if err.is_access_denied() || err.is_not_found() => Ok(Err(err.message)),
        Err(err) => Err(err),
    }
}

/// Gathers one region. Images that disappear while being scanned are left out.
pub async fn gather_audit_region(
    aws: &Aws,
    limit: &Limit,
    region: &str,
    filters: &[(String, String)],
) -> Result<AuditRegionFacts, AwsError> {
    let mut images = owned_images(aws, limit, region, filters).await?;

    // Snapshots in batches and launch permissions per image, all at once under the limit.
    let ids: Vec<String> = images
        .iter()
        .flat_map(|i| i.snapshots.iter().map(|(_, s)| s.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (batches, perms) = tokio::join!(
        join_all(ids.chunks(SNAPSHOT_BATCH).map(|c| snapshot_batch(aws, limit, region, c))),
        join_all(images.iter().map(|i| limit.run(launch_permissions(aws, region, &i.ami_id)))),
    );
    let mut snapshots = BTreeMap::new();
    for b in batches {
        for s in b? {
            snapshots.insert(s.snapshot_id.clone(), s);
        }
    }
    let mut gone = BTreeSet::new();
    for (img, p) in images.iter_mut().zip(perms) {
        match p {
            Ok(lp) => img.launch_accounts = lp.users,
            Err(e) if e.is_not_found() => {
                gone.insert(img.ami_id.clone());
            }
            Err(e) => return Err(e),
        }
    }
    images.retain(|i| !gone.contains(&i.ami_id));

    // One DescribeKey per distinct key.
    let key_ids: BTreeSet<String> = snapshots.values().filter_map(|s| s.kms_key_id.clone()).collect();
    let looked = join_all(key_ids.iter().map(|k| limit.run(describe_key(aws, region, k, false)))).await;
    let mut keys = BTreeMap::new();
    for (k, l) in key_ids.into_iter().zip(looked) {
        keys.insert(k, l?);
    }
    let mut facts =
        AuditRegionFacts { region: region.to_string(), images, snapshots, keys, policies: BTreeMap::new() };

    // Key policies, only where an image is shared.
    let needed = facts.policies_needed();
    let policies = join_all(needed.iter().map(|arn| key_policy(aws, limit, region, arn))).await;
    for (arn, p) in needed.into_iter().zip(policies) {
        facts.policies.insert(arn, p?);
    }
    Ok(facts)
}

/// Runs `amikey audit`'s reads: every region of `regions` in parallel, at most `concurrency`
/// calls in flight across all of them. A region that cannot be scanned is an [`AuditError`]
/// beside the others' facts.
pub async fn gather_audit(
    aws: &Aws,
    regions: &[String],
    filters: &[(String, String)],
    concurrency: usize,
) -> (Vec<AuditRegionFacts>, Vec<AuditError>) {
    let limit = Limit::new(concurrency);
    let results = join_all(regions.iter().map(|r| gather_audit_region(aws, &limit, r, filters))).await;
    let mut facts = Vec::new();
    let mut errors = Vec::new();
    for (region, r) in regions.iter().zip(results) {
        match r {
            Ok(f) => facts.push(f),
            Err(e) => errors.push(AuditError { region: region.clone(), error: e.to_string() }),
        }
    }
    (facts, errors)
}
