//! The composer of `copy`: every consumer account gets its own copy of each regional AMI, under
//! its own key, verified and published there. Used by `amikey copy` (push and pull) and by the
//! post-processor's `copy_to` blocks.
//!
//! Order of work: validate input (nothing called on bad input) → push: the producer's reads once
//! per region (AMI, snapshots, their keys and key policies, the sharing state) → per account ×
//! region, all at once, at most [`MAX_CONCURRENT_COPIES`] of them calling AWS at a time (waiting
//! holds no slot): the consumer's reads (destination key,
//! a previous copy by its tags; pull: the source as the consumer sees it) → the pure
//! [`decide`] (preconditions; a failure touches nothing in that account and region) →
//! `CopyImage` (deterministic `ClientToken`, `ResourceLimitExceeded` retried with backoff) →
//! wait for `available` (bounded backoff, `copy_timeout`) → the producer's own verifier and
//! publisher ([`crate::producer::run_with`]) run in the consumer account on the copy, with the
//! `source_image_id` parameter among the others. One item's failure never stops the others.
//!
//! Cancel: no new `CopyImage` starts and waits stop; copies already started keep going in AWS
//! and the next run adopts them (found by tag, or returned again by the same `ClientToken`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::aws::copy::{self as awscopy, ProducerRegion};
use crate::aws::{Aws, AwsError, AwsOptions, gather};
use crate::core::artifact::AmiSet;
use crate::core::config::{CopyTo, Settings};
use crate::core::copy::{
    self as core, CopyCode, CopyDecision, CopyFinding, CopyItem, CopyItemReport, CopyReport, CopyStatus,
    MAX_CONCURRENT_COPIES, WaitStep,
};
use crate::core::facts::{ImageFacts, Known};
use crate::producer::{Mode, ProducerError, Progress, Quiet, RunOptions};

/// Options of one copy run.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// Decide only; no CopyImage, no publish.
    pub dry_run: bool,
    /// How long to wait for each copy.
    pub timeout: Duration,
}

impl CopyOptions {
    /// From `copy_timeout` (default two hours).
    pub fn from_settings(s: &Settings, dry_run: bool) -> Result<CopyOptions, ProducerError> {
        let timeout = match &s.copy_timeout {
            Some(t) => core::parse_duration(t)
                .map_err(|e| ProducerError::Input(vec![format!("copy_timeout: {e}")]))?,
            None => core::DEFAULT_COPY_TIMEOUT,
        };
        Ok(CopyOptions { dry_run, timeout })
    }
}

/// Push: the producer copies `amis` into every `copy_to` account by assumed role.
pub async fn run_push(
    settings: &Settings,
    amis: &AmiSet,
    opts: CopyOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<CopyReport, ProducerError> {
    let items = core::plan_items(
        &settings.copy_to,
        amis,
        settings.ssm_path.as_deref(),
        settings.publish_role_name.as_deref(),
        false,
        settings.skip_region_validation,
    )
    .map_err(ProducerError::Input)?;
    let first = amis.regions().next().unwrap_or("us-east-1").to_string();
    let producer = Aws::connect(&AwsOptions::from_settings(settings), &first).await;
    let regions: Vec<String> = amis.regions().map(str::to_string).collect();
    progress.say(&format!(
        "Copying {} AMI(s) into {} account(s): {} copies",
        regions.len(),
        settings.copy_to.len(),
        items.len()
    ));
    let reads = async {
        tokio::join!(
            producer.account_id(),
            join_all(regions.iter().map(|r| awscopy::gather_producer(&producer, r, &amis.0[r])))
        )
    };
    let (account, gathered) = tokio::select! {
        g = reads => g,
        () = cancel.cancelled() => return Err(ProducerError::Cancelled),
    };
    let account = account.map_err(|e| ProducerError::Gather(vec![e]))?;
    let producer_facts: BTreeMap<String, Result<ProducerRegion, AwsError>> =
        regions.into_iter().zip(gathered).collect();
    let mut consumers = BTreeMap::new();
    for i in &items {
        if consumers.contains_key(&i.account) {
            continue;
        }
        let arn = format!("arn:aws:iam::{}:role/{}", i.account, i.role_name.clone().unwrap_or_default());
        consumers.insert(i.account.clone(), producer.assume(&arn, Some("amikey-copy"), None).await);
    }
    Ok(run_items(&consumers, items, Some(&producer_facts), Some(&account), opts, settings, progress, cancel)
        .await)
}

/// The AMI set the producer published at `path` in these regions, read in this account
/// (`<path>/image_id`; a parameter ARN works too).
pub async fn read_published(aws: &Aws, path: &str, regions: &[String]) -> Result<AmiSet, ProducerError> {
    let path = path.trim_end_matches('/');
    let name = format!("{path}/image_id");
    let reads =
        join_all(regions.iter().map(|r| gather::get_parameters(aws, r, std::slice::from_ref(&name)))).await;
    let mut pairs = Vec::new();
    let mut errors = Vec::new();
    for (r, got) in regions.iter().zip(reads) {
        match got {
            Ok(found) => match found.get(&name) {
                Some(p) => pairs.push(format!("{r}:{}", p.value)),
                None => errors.push(format!(
                    "{name} does not exist in {r} in this account: check --from-ssm-path and --regions (the producer publishes it with publish_accounts)"
                )),
            },
            Err(e) => return Err(ProducerError::Gather(vec![e])),
        }
    }
    if !errors.is_empty() {
        return Err(ProducerError::Input(errors));
    }
    AmiSet::from_pairs(pairs.iter().map(String::as_str), true)
        .map_err(|e| ProducerError::Input(vec![e.to_string()]))
}

/// Pull: run in the consumer account with its own credentials; read what the producer
/// published at `from_path` in `regions`, copy under `target`'s keys, verify, publish locally.
pub async fn run_pull(
    settings: &Settings,
    from_path: &str,
    regions: &[String],
    target: &CopyTo,
    opts: CopyOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<CopyReport, ProducerError> {
    let first = regions.first().cloned().unwrap_or_else(|| "us-east-1".into());
    let me = Aws::connect(&AwsOptions::from_settings(settings), &first).await;
    let account = me.account_id().await.map_err(|e| ProducerError::Gather(vec![e]))?;
    let amis = read_published(&me, from_path, regions).await?;
    let target = CopyTo { account: account.clone(), role_name: None, ..target.clone() };
    let items = core::plan_items(
        std::slice::from_ref(&target),
        &amis,
        settings.ssm_path.as_deref(),
        None,
        true,
        settings.skip_region_validation,
    )
    .map_err(ProducerError::Input)?;
    progress.say(&format!(
        "Copying {} AMI(s) published at {from_path} into this account ({account})",
        items.len()
    ));
    let consumers = BTreeMap::from([(account, me)]);
    Ok(run_items(&consumers, items, None, None, opts, settings, progress, cancel).await)
}

#[allow(clippy::too_many_arguments)]
async fn run_items(
    consumers: &BTreeMap<String, Aws>,
    items: Vec<CopyItem>,
    producer: Option<&BTreeMap<String, Result<ProducerRegion, AwsError>>>,
    source_account: Option<&str>,
    opts: CopyOptions,
    settings: &Settings,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> CopyReport {
    let shared = Shared { cancel, slots: Semaphore::new(MAX_CONCURRENT_COPIES) };
    let shared = &shared;
    let work = items.iter().map(|item| async move {
        let consumer = &consumers[&item.account];
        let pf = producer.map(|p| p.get(&item.region));
        let r = match pf {
            Some(Some(Err(e))) => failed(item, format!("the source AMI could not be read: {e}")),
            Some(None) => failed(item, "no producer facts for this region".into()),
            Some(Some(Ok(p))) => {
                process(consumer, item, Some(p), source_account, opts, settings, shared).await
            }
            None => process(consumer, item, None, source_account, opts, settings, shared).await,
        };
        progress.message(&item_line(&r));
        r
    });
    // Every item at once: the slots bound the items calling AWS, and a copy waiting for
    // `available` holds none, so every copy runs in AWS at the same time.
    let mut reports: Vec<CopyItemReport> = join_all(work).await;
    reports.sort_by(|a, b| (&a.account, &a.region).cmp(&(&b.account, &b.region)));
    let report = CopyReport { command: "copy".into(), dry_run: opts.dry_run, items: reports };
    progress.say(&report.summary());
    report
}

/// What the items of one run share: the cancel token, and [`MAX_CONCURRENT_COPIES`] slots, one
/// held by each item while it calls AWS (its reads and `CopyImage`; one poll; verify and publish),
/// never while it sleeps between polls.
struct Shared<'a> {
    cancel: &'a CancellationToken,
    slots: Semaphore,
}

impl Shared<'_> {
    /// A slot, or `None` when cancelled first.
    async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => None,
            p = self.slots.acquire() => p.ok(),
        }
    }
}

fn item_line(r: &CopyItemReport) -> String {
    let status =
        serde_json::to_value(r.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let mut line = format!(
        "{} {} {} -> {} {status}",
        r.account,
        r.region,
        r.source_ami,
        r.copy_ami.as_deref().unwrap_or("-")
    );
    if let Some(f) = r.findings.first() {
        line.push_str(&format!(" ({})", f.code));
    }
    line
}

fn base(item: &CopyItem, status: CopyStatus) -> CopyItemReport {
    CopyItemReport {
        account: item.account.clone(),
        region: item.region.clone(),
        source_ami: item.source_ami.clone(),
        copy_ami: None,
        kms_key_arn: None,
        snapshot_ids: Vec::new(),
        status,
        published: Vec::new(),
        findings: Vec::new(),
        warnings: Vec::new(),
        error: None,
    }
}

fn failed(item: &CopyItem, error: String) -> CopyItemReport {
    CopyItemReport { error: Some(error), ..base(item, CopyStatus::Failed) }
}

fn finding(item: &CopyItem, code: CopyCode, message: String) -> CopyFinding {
    CopyFinding {
        code,
        account: item.account.clone(),
        region: item.region.clone(),
        key: item.key.clone(),
        message: format!("{} {}: {message}", item.account, item.region),
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = cancel.cancelled() => false,
    }
}

/// CopyImage, retrying `ResourceLimitExceeded` (the concurrent-copy quota) with backoff.
async fn start_copy(
    consumer: &Aws,
    item: &CopyItem,
    req: &core::CopyRequest,
    cancel: &CancellationToken,
) -> Result<String, String> {
    let mut attempt = 0;
    loop {
        if cancel.is_cancelled() {
            return Err("not started: cancelled".into());
        }
        match awscopy::copy_image(consumer, &item.region, req).await {
            Ok(id) => return Ok(id),
            Err(e) if e.code.as_deref() == Some("ResourceLimitExceeded") => {
                attempt += 1;
                let Some(d) = core::resource_limit_backoff(attempt) else {
                    return Err(format!(
                        "{} (the concurrent-copy quota stayed exhausted; re-run later)",
                        e.in_account(&item.account)
                    ));
                };
                tracing::info!(
                    "{} {}: ResourceLimitExceeded, retrying CopyImage in {d:?}",
                    item.account,
                    item.region
                );
                if !sleep_or_cancel(d, cancel).await {
                    return Err("not started: cancelled".into());
                }
            }
            Err(e) => return Err(e.in_account(&item.account).to_string()),
        }
    }
}

/// Waits for `ami` to be available, starting from `seen` (the image as this run already read it)
/// when given. `Ok` with the image as it was when available; otherwise the item's final report.
async fn wait_available(
    consumer: &Aws,
    item: &CopyItem,
    ami: &str,
    seen: Option<ImageFacts>,
    timeout: Duration,
    shared: &Shared<'_>,
    mut report: CopyItemReport,
) -> Result<(CopyItemReport, Option<ImageFacts>), CopyItemReport> {
    let started = Instant::now();
    let mut attempt = 0;
    let mut seen = seen.filter(|i| i.ami_id == ami);
    loop {
        let image = match seen.take() {
            Some(i) => Some(i),
            None => {
                let Some(_slot) = shared.slot().await else {
                    report.status = CopyStatus::InProgress;
                    report.error = Some(format!(
                        "cancelled while waiting for {ami}: the copy keeps going in AWS; a re-run adopts it"
                    ));
                    return Err(report);
                };
                match crate::aws::read::describe_image(consumer, &item.region, ami).await {
                    Ok(i) => i,
                    Err(e) => {
                        report.status = CopyStatus::Failed;
                        report.error = Some(e.in_account(&item.account).to_string());
                        return Err(report);
                    }
                }
            }
        };
        // Not visible yet right after CopyImage: pending.
        let state = image.as_ref().map_or_else(|| "pending".to_string(), |i| i.state.clone());
        match core::wait_step(&state, attempt, started.elapsed(), timeout) {
            WaitStep::Available => return Ok((report, image)),
            WaitStep::Failed => {
                report.status = CopyStatus::Failed;
                report.findings.push(finding(
                    item,
                    CopyCode::CopyFailed,
                    format!("the copy {ami} of {} is {state}: deregister it (aws ec2 deregister-image --image-id {ami} --region {}) and re-run", item.source_ami, item.region),
                ));
                return Err(report);
            }
            WaitStep::TimedOut => {
                report.status = CopyStatus::InProgress;
                report.findings.push(finding(
                    item,
                    CopyCode::CopyTimedOut,
                    format!("the copy {ami} is still {state} after {} s (copy_timeout): it keeps going in AWS; re-run to adopt, verify and publish it", timeout.as_secs()),
                ));
                return Err(report);
            }
            WaitStep::Again(d) => {
                attempt += 1;
                if !sleep_or_cancel(d, shared.cancel).await {
                    report.status = CopyStatus::InProgress;
                    report.error = Some(format!(
                        "cancelled while {ami} was {state}: the copy keeps going in AWS; a re-run adopts it"
                    ));
                    return Err(report);
                }
            }
        }
    }
}

async fn process(
    consumer: &Aws,
    item: &CopyItem,
    producer: Option<&ProducerRegion>,
    source_account: Option<&str>,
    opts: CopyOptions,
    settings: &Settings,
    shared: &Shared<'_>,
) -> CopyItemReport {
    let cancel = shared.cancel;
    // A slot for the reads, the decision and CopyImage.
    let Some(slot) = shared.slot().await else {
        return failed(item, "not started: cancelled".into());
    };
    let facts = match awscopy::gather_consumer(
        consumer,
        &item.region,
        &item.source_ami,
        &item.key,
        producer,
        &item.account,
    )
    .await
    {
        Ok(f) => f,
        Err(e) => return failed(item, e.in_account(&item.account).to_string()),
    };
    let owner = source_account
        .map(str::to_string)
        .or_else(|| facts.source.as_ref().and_then(|s| s.owner.clone()))
        .unwrap_or_default();
    let decided = core::decide(item, &facts, &owner);
    let mut report = base(item, CopyStatus::Unchanged);
    report.warnings = decided.warnings;
    let (ami, copied) = match decided.decision {
        CopyDecision::Blocked => {
            report.status = CopyStatus::Blocked;
            report.findings = decided.findings;
            return report;
        }
        CopyDecision::Adopt(ami) if opts.dry_run => {
            report.copy_ami = Some(ami);
            return report;
        }
        CopyDecision::Copy(req) if opts.dry_run => {
            report.status = CopyStatus::Planned;
            report.kms_key_arn = Some(req.kms_key_arn);
            return report;
        }
        CopyDecision::Adopt(ami) => (ami, false),
        CopyDecision::Copy(req) => {
            report.kms_key_arn = Some(req.kms_key_arn.clone());
            match start_copy(consumer, item, &req, cancel).await {
                Ok(ami) => (ami, true),
                Err(e) => {
                    report.status = CopyStatus::Failed;
                    report.error = Some(e);
                    return report;
                }
            }
        }
    };
    report.copy_ami = Some(ami.clone());
    // An adopted copy was read by its tags moments ago: that read is the first poll.
    let seen = if copied { None } else { facts.existing.clone() };
    // Waiting holds no slot: each poll takes one.
    drop(slot);
    let (mut report, image) =
        match wait_available(consumer, item, &ami, seen, opts.timeout, shared, report).await {
            Ok(r) => r,
            Err(r) => return r,
        };
    let Some(_slot) = shared.slot().await else {
        report.status = CopyStatus::Failed;
        report.error = Some(format!("cancelled before verifying {ami}: a re-run verifies and publishes it"));
        return report;
    };
    // The verifier reads neither the image nor the destination key again.
    let mut known = Known::default();
    if let Some(i) = image {
        known.images.insert(item.region.clone(), i);
    }
    if let Some(k) = facts.dest_key {
        known.keys.insert(item.region.clone(), [(item.key.clone(), k)].into());
    }
    let mut report = verify_and_publish(consumer, item, &ami, &known, settings, cancel, report).await;
    if report.status == CopyStatus::Unchanged {
        report.status = if copied {
            CopyStatus::Copied
        } else if !report.published.is_empty() {
            CopyStatus::Adopted
        } else {
            CopyStatus::Unchanged
        };
    }
    report
}

/// The producer's verifier and publisher, run in the consumer account on the copy (which also
/// publishes the `source_image_id` parameter).
async fn verify_and_publish(
    consumer: &Aws,
    item: &CopyItem,
    ami: &str,
    known: &Known,
    settings: &Settings,
    cancel: &CancellationToken,
    mut report: CopyItemReport,
) -> CopyItemReport {
    let copy_settings = Settings {
        kms_key_id: Some(item.key.clone()),
        ssm_path: item.ssm_path.clone(),
        skip_region_validation: true,
        max_retries: settings.max_retries,
        check_key_policy: crate::core::config::PolicyCheck::Off,
        ..Settings::default()
    };
    let amis = AmiSet([(item.region.clone(), ami.to_string())].into());
    let intent = match crate::core::intent::build(&copy_settings, &amis) {
        Ok(i) => crate::core::intent::Intent { source_image_id: Some(item.source_ami.clone()), ..i },
        Err(e) => {
            report.status = CopyStatus::Failed;
            report.error = Some(e.join("; "));
            return report;
        }
    };
    let run = crate::producer::run_with(
        consumer,
        &intent,
        known,
        RunOptions { mode: Mode::Publish, dry_run: false },
        &Quiet,
        cancel,
    )
    .await;
    let verified = match run {
        Ok(r) => r,
        Err(e) => {
            report.status = CopyStatus::Failed;
            report.error = Some(format!("verifying the copy {ami} in account {}: {e}", item.account));
            return report;
        }
    };
    if let Some(r) = verified.regions.first() {
        report.kms_key_arn = r.intended_kms_key_arn.clone().or(report.kms_key_arn.take());
        report.snapshot_ids = r.snapshots.iter().map(|s| s.snapshot_id.clone()).collect();
    }
    let bad = verified.findings();
    if !bad.is_empty() {
        report.status = CopyStatus::Failed;
        for f in bad {
            report.findings.push(finding(
                item,
                CopyCode::CopyNotVerified,
                format!(
                    "the copy {ami} is not entirely under {}: {} {} (deregister it and re-run)",
                    item.key,
                    f.code.as_str(),
                    f.message
                ),
            ));
        }
        return report;
    }
    if let Some(e) = verified.errors.first() {
        report.status = CopyStatus::Failed;
        report.error = Some(e.error.clone());
        return report;
    }
    for a in &verified.actions {
        match a.status {
            crate::core::report::Status::Changed => report.published.push(a.target.clone()),
            crate::core::report::Status::Failed => {
                report.status = CopyStatus::Failed;
                report.error =
                    Some(a.error.clone().unwrap_or_else(|| format!("publishing {} failed", a.target)));
            }
            _ => {}
        }
    }
    report
}
