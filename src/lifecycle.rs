//! The composer of the AMI lifecycle: the read-back of deprecation and protection after
//! `publish`, `retire` (gather the lineage per region, decide with
//! [`crate::core::lifecycle::plan_retire`], unshare and deregister) and `rollback` (verify the
//! target images with the same producer run as `publish`, then re-point the parameters).
//!
//! Order of work for `retire`: every region in parallel: parameter history → images →
//! references → decision → sharing of the images to retire → final decision. Nothing is written
//! before the whole plan is known and printed; without `yes` (or with `dry_run`) nothing is
//! written at all. Within a region the images are retired one by one (unshare, then
//! DeregisterImage with DeleteAssociatedSnapshots); an error stops that region only.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::aws::{Aws, AwsError, AwsOptions, apply, gather, lifecycle as read};
use crate::core::artifact::{AmiSet, valid_region};
use crate::core::config::Settings;
use crate::core::facts::Known;
use crate::core::intent::{self, check_ssm_path};
use crate::core::lifecycle::{
    self as decide, KeepPolicy, ParamVersion, RetireFacts, RetireImage, RetireItem,
};
use crate::core::plan::{PARAMETER_SUFFIXES, Write};
use crate::core::report::{ActionReport, Report, Status};
use crate::producer::{self, Mode, ProducerError as EngineError, Progress, RunOptions};

/// After `publish` wrote deprecation or protection: DescribeImages again in those regions and
/// turn any action whose state does not read back as wanted into a failure.
pub async fn read_back(aws: &Aws, intent: &intent::Intent, actions: &mut [ActionReport]) {
    let kinds = ["deprecation", "deregistration_protection"];
    let regions: BTreeSet<String> = actions
        .iter()
        .filter(|a| a.status == Status::Changed && kinds.contains(&a.kind.as_str()))
        .map(|a| a.region.clone())
        .collect();
    let reads = join_all(regions.iter().map(|r| {
        let ami = intent.amis.0.get(r).cloned().unwrap_or_default();
        async move { (r.clone(), crate::aws::read::describe_image(aws, r, &ami).await) }
    }))
    .await;
    for (region, image) in reads {
        let problems = match image {
            Ok(Some(img)) => decide::image_readback(&intent.lifecycle, &img),
            Ok(None) => vec!["the AMI is no longer visible".to_string()],
            Err(e) => vec![format!("cannot read it back: {e}")],
        };
        for a in actions.iter_mut().filter(|a| a.region == region && kinds.contains(&a.kind.as_str())) {
            let mine: Vec<&String> = problems
                .iter()
                .filter(|p| {
                    !(p.contains("deprecation time") || p.contains("deregistration protection"))
                        || p.contains(if a.kind == "deprecation" {
                            "deprecation time"
                        } else {
                            "deregistration protection"
                        })
                })
                .collect();
            if let Some(p) = mine.first() {
                a.status = Status::Failed;
                a.error = Some(format!("written, but {p}"));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ retire

/// What `retire` works on.
#[derive(Debug, Clone)]
pub struct RetireInput {
    /// `<PATH>` whose `image_id` history is the lineage (or None with `ami_filter`).
    pub ssm_path: Option<String>,
    /// `--ami-filter name=value[,value]` (DescribeImages filters over the caller's own images).
    pub ami_filter: Vec<(String, Vec<String>)>,
    /// Regions.
    pub regions: Vec<String>,
    /// Keep policy.
    pub keep: KeepPolicy,
    /// `--account-role`: retire in the account behind this role (a consumer's own copies).
    pub account_role: Option<String>,
    /// Write nothing.
    pub dry_run: bool,
    /// Confirmed: without it nothing is written.
    pub yes: bool,
}

/// One image in the retire report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetireEntry {
    /// `ami-…`
    pub ami_id: String,
    /// `retire`, `keep` or `gone` (already deregistered).
    pub verdict: &'static str,
    /// Why it stays.
    pub reasons: Vec<decide::KeepReason>,
    /// Its snapshots.
    pub snapshots: Vec<String>,
    /// For `retire`: planned, changed (deregistered), skipped (not attempted) or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Per snapshot, DeleteAssociatedSnapshots' return code (`success`, `skipped` = another AMI
    /// still uses it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshot_results: Vec<(String, String)>,
    /// The writes (unshare, deregister), for the plan.
    pub writes: Vec<Write>,
    /// Error text, when failed or skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One region of the retire report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetireRegion {
    /// Region.
    pub region: String,
    /// Newest first.
    pub images: Vec<RetireEntry>,
    /// The region could not be read, or a write failed there (exit 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result of `retire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetireReport {
    /// `retire`.
    pub command: &'static str,
    /// The account whose images these are.
    pub account: String,
    /// True when nothing was (or would have been) written: `--dry-run`, or no `--yes`.
    pub dry_run: bool,
    /// Per region, sorted.
    pub regions: Vec<RetireRegion>,
}

impl RetireReport {
    /// True when a region could not be read or a write failed.
    pub fn has_errors(&self) -> bool {
        self.regions.iter().any(|r| r.error.is_some())
    }

    /// Text for people: per region the images to retire, then those kept grouped by reason.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let (mut retired, mut planned, mut kept) = (0, 0, 0);
        for r in &self.regions {
            let _ = writeln!(out, "{}", r.region);
            for e in &r.images {
                match e.verdict {
                    "retire" => {
                        let st = match e.status {
                            Some(Status::Changed) => {
                                retired += 1;
                                "retired"
                            }
                            Some(Status::Planned) => {
                                planned += 1;
                                "would retire"
                            }
                            Some(Status::Failed) => "FAILED",
                            _ => "not attempted",
                        };
                        let snaps = if e.snapshot_results.is_empty() {
                            e.snapshots.join(", ")
                        } else {
                            e.snapshot_results
                                .iter()
                                .map(|(s, c)| {
                                    if c == "success" {
                                        format!("{s} deleted")
                                    } else {
                                        format!("{s} kept ({c})")
                                    }
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        let _ = write!(out, "  {st:<13} {} [{snaps}]", e.ami_id);
                        if let Some(err) = &e.error {
                            let _ = write!(out, ": {err}");
                        }
                        let _ = writeln!(out);
                    }
                    "keep" => kept += 1,
                    _ => {}
                }
            }
            let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            for e in r.images.iter().filter(|e| e.verdict == "keep") {
                let why: Vec<String> = e.reasons.iter().map(decide::KeepReason::text).collect();
                groups.entry(why.join("; ")).or_default().push(&e.ami_id);
            }
            for (why, amis) in groups {
                let _ = writeln!(out, "  {:<13} {} ({why})", "keep", amis.join(", "));
            }
            let gone = r.images.iter().filter(|e| e.verdict == "gone").count();
            if gone > 0 {
                let _ = writeln!(out, "  {gone} earlier image(s) of the lineage already deregistered");
            }
            if let Some(e) = &r.error {
                let _ = writeln!(out, "  ERROR {e}");
            }
        }
        let _ = writeln!(out);
        let mut line = format!("retire: {} region(s), {kept} kept", self.regions.len());
        if self.dry_run {
            let _ = write!(
                line,
                ", {planned} to retire (plan only: nothing deleted; re-run with --yes to retire)"
            );
        } else {
            let _ = write!(line, ", {retired} retired");
        }
        let failed = self.regions.iter().filter(|r| r.error.is_some()).count();
        if failed > 0 {
            let _ = write!(line, "; {failed} region(s) with errors");
        }
        let _ = writeln!(out, "{line}");
        out
    }
}

/// Checks `--ami-filter` entries (`name=value[,value…]`).
pub fn parse_filters(raw: &[String]) -> Result<Vec<(String, Vec<String>)>, String> {
    raw.iter()
        .map(|f| {
            let (n, v) = f.split_once('=').ok_or_else(|| {
                format!("--ami-filter {f:?}: expected NAME=VALUE[,VALUE…], e.g. name=base-*")
            })?;
            let values: Vec<String> =
                v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            if n.trim().is_empty() || values.is_empty() {
                return Err(format!("--ami-filter {f:?}: both a name and a value are needed"));
            }
            Ok((n.trim().to_string(), values))
        })
        .collect()
}

fn check_regions(regions: &[String], skip: bool, errors: &mut Vec<String>) {
    if regions.is_empty() {
        errors.push("no regions: pass --regions r1,r2 (the regions the images were published in)".into());
    }
    for r in regions {
        if !valid_region(r, skip) {
            errors
                .push(format!("unknown region {r:?} (check the spelling, or pass --skip-region-validation)"));
        }
    }
}

/// Validates retire's input; nothing is called on bad input.
pub fn check_retire(input: &RetireInput, skip_region_validation: bool) -> Result<(), EngineError> {
    let mut errors = Vec::new();
    match (&input.ssm_path, input.ami_filter.is_empty()) {
        (None, true) => {
            errors.push("give the lineage: --ssm-path PATH (its image_id history) or --ami-filter".into())
        }
        (Some(_), false) => errors.push("--ssm-path and --ami-filter are alternatives: give one".into()),
        (Some(p), true) => {
            if let Err(e) = check_ssm_path(p) {
                errors.push(e);
            }
        }
        (None, false) => {}
    }
    if input.keep.keep == 0 && input.keep.keep_days.is_none() && input.ami_filter.is_empty() {
        // With a lineage the current image is always kept; --keep 0 is allowed but say so.
    }
    check_regions(&input.regions, skip_region_validation, &mut errors);
    if let Some(r) = &input.account_role
        && !(r.starts_with("arn:aws") && r.contains(":iam::") && r.contains(":role/"))
    {
        errors.push(format!("--account-role {r:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"));
    }
    if errors.is_empty() { Ok(()) } else { Err(EngineError::Input(errors)) }
}

async fn retire_facts(
    aws: &Aws,
    input: &RetireInput,
    account: &str,
    region: &str,
) -> Result<RetireFacts, AwsError> {
    let mut facts =
        RetireFacts { region: region.to_string(), account: account.to_string(), ..Default::default() };
    let own_param = input.ssm_path.as_deref().map(|p| format!("{}/image_id", p.trim_end_matches('/')));
    let images = if let Some(name) = &own_param {
        facts.history = read::parameter_history(aws, region, name).await?;
        let ids: BTreeSet<String> = facts.history.iter().map(|p| p.value.clone()).collect();
        read::describe_images(aws, region, &ids.into_iter().collect::<Vec<_>>(), &[]).await?
    } else {
        let found = read::describe_images(aws, region, &[], &input.ami_filter).await?;
        facts.filtered = Some(found.keys().cloned().collect());
        found
    };
    let ids: Vec<String> = images.keys().cloned().collect();
    let mut refs = read::image_references(aws, region, &ids).await?;
    if let Some(name) = &own_param {
        let suffix = format!(":parameter{name}");
        for v in refs.values_mut() {
            v.retain(|arn| !arn.ends_with(&suffix));
        }
    }
    facts.references = refs;
    for (id, img) in images {
        facts.images.insert(
            id.clone(),
            RetireImage {
                ami_id: id,
                owner: img.owner.clone(),
                created: img.creation_date.as_deref().and_then(|t| decide::parse_rfc3339(t).ok()),
                protection: img.deregistration_protection.clone(),
                snapshots: img.block_devices.iter().filter_map(|b| b.snapshot_id.clone()).collect(),
                ..Default::default()
            },
        );
    }
    Ok(facts)
}

/// The sharing of the images about to be retired (so they can be unshared first).
async fn retire_sharing(
    aws: &Aws,
    region: &str,
    facts: &mut RetireFacts,
    to_retire: &[String],
) -> Result<(), AwsError> {
    for id in to_retire {
        let Some(img) = facts.images.get(id).cloned() else { continue };
        let (lp, users) = tokio::join!(
            gather::launch_permissions(aws, region, id),
            join_all(img.snapshots.iter().map(|s| gather::snapshot_users(aws, region, s)))
        );
        let Some(entry) = facts.images.get_mut(id) else { continue };
        entry.launch_permissions = lp?;
        for (s, u) in img.snapshots.iter().zip(users) {
            // A snapshot already deleted (a killed run) has nothing left to unshare.
            match u {
                Ok(u) => {
                    entry.snapshot_users.insert(s.clone(), u);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn entry(item: &RetireItem, status: Option<Status>) -> RetireEntry {
    RetireEntry {
        ami_id: item.ami_id.clone(),
        verdict: if item.gone {
            "gone"
        } else if item.keep.is_empty() {
            "retire"
        } else {
            "keep"
        },
        reasons: item.keep.clone(),
        snapshots: item.snapshots.clone(),
        status: if item.keep.is_empty() && !item.gone { status } else { None },
        snapshot_results: Vec::new(),
        writes: item.writes.clone(),
        error: None,
    }
}

/// Plans `retire` in every region and, when confirmed, carries it out. `plan_ready` is called
/// with the plan before any write (the CLI prints it there).
pub async fn retire(
    settings: &Settings,
    input: &RetireInput,
    now: i64,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    plan_ready: &(dyn Fn(&RetireReport) + Sync),
) -> Result<RetireReport, EngineError> {
    check_retire(input, settings.skip_region_validation)?;
    let base = Aws::connect(&AwsOptions::from_settings(settings), &input.regions[0]).await;
    let aws = match &input.account_role {
        Some(role) => base.assume(role, Some("amikey-retire"), None).await,
        None => base,
    };
    let account = aws.account_id().await.map_err(|e| EngineError::Gather(vec![e]))?;
    progress.say(&format!("Reading the lineage in {} region(s) of account {account}", input.regions.len()));
    let gathered = join_all(input.regions.iter().map(|region| {
        let aws = &aws;
        let account = &account;
        async move {
            let mut facts = retire_facts(aws, input, account, region).await?;
            let first = decide::plan_retire(&facts, input.keep, now);
            let to_retire: Vec<String> =
                first.iter().filter(|i| !i.gone && i.keep.is_empty()).map(|i| i.ami_id.clone()).collect();
            retire_sharing(aws, region, &mut facts, &to_retire).await?;
            Ok::<_, AwsError>(decide::plan_retire(&facts, input.keep, now))
        }
    }))
    .await;
    let dry = input.dry_run || !input.yes;
    let mut report = RetireReport { command: "retire", account, dry_run: dry, regions: Vec::new() };
    let mut plans: Vec<(String, Vec<RetireItem>)> = Vec::new();
    for (region, g) in input.regions.iter().zip(gathered) {
        match g {
            Ok(items) => {
                report.regions.push(RetireRegion {
                    region: region.clone(),
                    images: items.iter().map(|i| entry(i, Some(Status::Planned))).collect(),
                    error: None,
                });
                plans.push((region.clone(), items));
            }
            Err(e) => report.regions.push(RetireRegion {
                region: region.clone(),
                images: Vec::new(),
                error: Some(format!("could not read the lineage, nothing changed there: {e}")),
            }),
        }
    }
    report.regions.sort_by(|a, b| a.region.cmp(&b.region));
    plan_ready(&report);
    if dry {
        return Ok(report);
    }
    let results = join_all(plans.iter().map(|(region, items)| {
        let aws = &aws;
        async move {
            let mut out: Vec<RetireEntry> = Vec::new();
            let mut stop: Option<String> = None;
            for item in items {
                let mut e = entry(item, Some(Status::Changed));
                if e.verdict == "retire" {
                    if let Some(why) = &stop {
                        e.status = Some(Status::Skipped);
                        e.error = Some(format!("not attempted: {why}"));
                    } else if cancel.is_cancelled() {
                        e.status = Some(Status::Skipped);
                        e.error = Some("not attempted: cancelled".into());
                    } else {
                        progress.message(&format!("{region}: retiring {}", item.ami_id));
                        for w in &item.writes {
                            let r = match w {
                                Write::DeregisterImage { ami_id, delete_snapshots } => {
                                    apply::deregister_image(aws, region, ami_id, *delete_snapshots).await.map(
                                        |codes| {
                                            e.snapshot_results = codes;
                                        },
                                    )
                                }
                                other => apply::apply(aws, region, other).await,
                            };
                            if let Err(err) = r {
                                e.status = Some(Status::Failed);
                                e.error = Some(err.to_string());
                                stop = Some(format!("retiring {} failed", item.ami_id));
                                break;
                            }
                        }
                    }
                }
                out.push(e);
            }
            (region.clone(), out, stop)
        }
    }))
    .await;
    for (region, entries, stop) in results {
        if let Some(r) = report.regions.iter_mut().find(|r| r.region == region) {
            r.images = entries;
            if let Some(s) = stop {
                r.error = Some(s);
            }
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------- rollback

/// What `rollback` points the parameters at.
#[derive(Debug, Clone)]
pub enum RollbackTarget {
    /// The image at this version of `<PATH>/image_id`, in each region.
    Version(i64),
    /// These images.
    Images(AmiSet),
}

/// Why `rollback` changed nothing, or what it did.
#[derive(Debug)]
pub enum RollbackOutcome {
    /// The producer's publish report (dry run or real).
    Done(Report),
    /// Verification found problems: nothing was changed (the dry-run report says why).
    Refused(Report),
}

fn parameter_refusals(
    report: &Report,
    histories: &BTreeMap<(String, String, String), Vec<ParamVersion>>,
    account: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for a in report.actions.iter().filter(|a| a.kind == "ssm_parameter" && a.status == Status::Planned) {
        let name = a.target.split(" = ").next().unwrap_or_default().to_string();
        let acct = if a.account == account { String::new() } else { a.account.clone() };
        if let Some(h) = histories.get(&(acct, a.region.clone(), name.clone())) {
            let where_ = format!("{} (account {})", a.region, a.account);
            out.extend(decide::version_limit_blocks(&name, &where_, h));
        }
    }
    out
}

/// Runs `rollback`: reads the parameter histories, picks the targets, verifies them with a
/// `publish` dry run (keys, snapshots, sharing), refuses on any finding, unreadable region or a
/// parameter at SSM's version limit with a labelled oldest version, then publishes.
pub async fn rollback(
    settings: &Settings,
    target: &RollbackTarget,
    regions: &[String],
    dry_run: bool,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<RollbackOutcome, EngineError> {
    let mut errors = Vec::new();
    let path = match settings.ssm_path.as_deref().map(check_ssm_path) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            errors.push(e);
            String::new()
        }
        None => {
            errors.push(
                "rollback needs --ssm-path PATH (where publish wrote image_id, kms_key_arn, snapshot_ids)"
                    .into(),
            );
            String::new()
        }
    };
    let regions: Vec<String> = match target {
        RollbackTarget::Images(set) => set.regions().map(str::to_string).collect(),
        RollbackTarget::Version(v) => {
            if *v < 1 {
                errors.push(format!("--to-version {v}: parameter versions start at 1"));
            }
            check_regions(regions, settings.skip_region_validation, &mut errors);
            regions.to_vec()
        }
    };
    if !settings.publish_accounts.is_empty() && settings.publish_role_name.is_none() {
        errors.push("--publish-account needs --publish-role-name".into());
    }
    if !errors.is_empty() {
        return Err(EngineError::Input(errors));
    }
    let first = regions.first().cloned().unwrap_or_else(|| "us-east-1".into());
    let aws = Aws::connect(&AwsOptions::from_settings(settings), &first).await;
    let account = aws.account_id().await.map_err(|e| EngineError::Gather(vec![e]))?;
    let mut who: Vec<(String, Aws)> = vec![(String::new(), aws.clone())];
    for a in &settings.publish_accounts {
        let role =
            format!("arn:aws:iam::{a}:role/{}", settings.publish_role_name.clone().unwrap_or_default());
        who.push((a.clone(), aws.assume(&role, Some("amikey-publish"), None).await));
    }
    // Every parameter's history, in every region and account.
    let mut jobs = Vec::new();
    for (acct, client) in &who {
        for r in &regions {
            for s in PARAMETER_SUFFIXES {
                jobs.push((acct.clone(), r.clone(), format!("{path}/{s}"), client));
            }
        }
    }
    let read = join_all(jobs.iter().map(|(acct, r, name, client)| async move {
        read::parameter_history(client, r, name)
            .await
            .map_err(|e| if acct.is_empty() { e } else { e.in_account(acct) })
    }))
    .await;
    let mut histories: BTreeMap<(String, String, String), Vec<ParamVersion>> = BTreeMap::new();
    let mut failed = Vec::new();
    for ((acct, r, name, _), h) in jobs.iter().zip(read) {
        match h {
            Ok(h) => {
                histories.insert((acct.clone(), r.clone(), name.clone()), h);
            }
            Err(e) => failed.push(e),
        }
    }
    if !failed.is_empty() {
        return Err(EngineError::Gather(failed));
    }
    let amis = match target {
        RollbackTarget::Images(set) => set.clone(),
        RollbackTarget::Version(v) => {
            let image_ids: BTreeMap<String, Vec<ParamVersion>> = regions
                .iter()
                .map(|r| {
                    (
                        r.clone(),
                        histories
                            .get(&(String::new(), r.clone(), format!("{path}/image_id")))
                            .cloned()
                            .unwrap_or_default(),
                    )
                })
                .collect();
            let t = decide::rollback_targets(&image_ids, *v).map_err(EngineError::Input)?;
            let pairs: Vec<String> = t.iter().map(|(r, a)| format!("{r}:{a}")).collect();
            AmiSet::from_pairs(pairs.iter().map(String::as_str), true)
                .map_err(|e| EngineError::Input(vec![e.to_string()]))?
        }
    };
    // Without a configured key, each region keeps the key its parameters name now.
    let mut settings = settings.clone();
    settings.ssm_path = Some(path.clone());
    if settings.kms_key_id.is_none() {
        for r in amis.regions() {
            if settings.region_kms_key_ids.contains_key(r) {
                continue;
            }
            let h = histories.get(&(String::new(), r.to_string(), format!("{path}/kms_key_arn")));
            if let Some(cur) = h.and_then(|h| h.iter().max_by_key(|p| p.version)) {
                settings.region_kms_key_ids.insert(r.to_string(), cur.value.clone());
            }
        }
    }
    let intent = intent::build(&settings, &amis).map_err(EngineError::Input)?;
    let listed: Vec<String> = amis.0.iter().map(|(r, a)| format!("{r} {a}")).collect();
    progress.say(&format!("Rolling back {path} to {}", listed.join(", ")));
    let plan = producer::run_with(
        &aws,
        &intent,
        &Known::default(),
        RunOptions { mode: Mode::Publish, dry_run: true },
        progress,
        cancel,
    )
    .await?;
    if !plan.findings().is_empty() || plan.has_errors() {
        return Ok(RollbackOutcome::Refused(relabel(plan)));
    }
    let refusals = parameter_refusals(&plan, &histories, &account);
    if !refusals.is_empty() {
        return Err(EngineError::Input(refusals));
    }
    if dry_run {
        return Ok(RollbackOutcome::Done(relabel(plan)));
    }
    let mut report = producer::run_with(
        &aws,
        &intent,
        &Known::default(),
        RunOptions { mode: Mode::Publish, dry_run: false },
        progress,
        cancel,
    )
    .await?;
    for a in &mut report.actions {
        if let Some(e) = &a.error
            && e.contains("ParameterMaxVersionLimitExceeded")
        {
            a.error = Some(format!(
                "{e} — SSM keeps 100 versions and the oldest carries a label: move or remove that label \
                 (aws ssm label-parameter-version / unlabel-parameter-version) and re-run; amikey never deletes history"
            ));
        }
    }
    Ok(RollbackOutcome::Done(relabel(report)))
}

fn relabel(mut r: Report) -> Report {
    r.command = "rollback".into();
    r
}
