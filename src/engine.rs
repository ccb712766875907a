//! The composer of `check` and `publish`: gathers facts from AWS, runs the pure verify and plan
//! of [`crate::core`], applies the plan. Used by the CLI and by the Packer post-processor alike.
//!
//! Order of work: validate input (nothing called on bad input) → gather every region in
//! parallel → verify → stop here for `check`, or on any finding → gather sharing state →
//! plan → apply wave 0 (permissions, producer parameters) then wave 1 (publish accounts'
//! parameters, which need the AMI shared first). A cancel stops before the next write; calls
//! already in flight finish, so nothing is half-written.

use std::collections::BTreeMap;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::aws::{Aws, AwsError, AwsOptions, apply, gather};
use crate::core::artifact::AmiSet;
use crate::core::config::Settings;
use crate::core::facts::RegionFacts;
use crate::core::intent::{self, Intent};
use crate::core::plan::{self, Step};
use crate::core::report::{ActionReport, RegionReport, Report, Status};
use crate::core::verify;

/// What to do after verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read only.
    Check,
    /// Verify, then converge sharing and SSM parameters.
    Publish,
}

/// Options of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Check or publish.
    pub mode: Mode,
    /// Plan only; make no write call.
    pub dry_run: bool,
}

/// Where progress lines go: stderr for the CLI, Packer's `Ui` for the plugin.
pub trait Progress: Send + Sync {
    /// A headline (`Ui.Say`).
    fn say(&self, msg: &str);
    /// A detail line (`Ui.Message`).
    fn message(&self, msg: &str);
}

/// Progress that goes nowhere.
pub struct Quiet;

impl Progress for Quiet {
    fn say(&self, _: &str) {}
    fn message(&self, _: &str) {}
}

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Configuration or input is invalid; nothing was called.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Input(Vec<String>),
    /// AWS calls failed while gathering facts; nothing was written.
    #[error("could not read the current state, nothing was written:\n  - {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Gather(Vec<AwsError>),
    /// The run was cancelled before any write.
    #[error("cancelled before any change was made")]
    Cancelled,
}

impl EngineError {
    /// True for bad input (as opposed to AWS trouble).
    pub fn is_input(&self) -> bool {
        matches!(self, EngineError::Input(_))
    }
}

fn region_line(r: &RegionReport) -> String {
    let keys: Vec<String> = r
        .snapshots
        .iter()
        .map(|s| {
            let k = if !s.encrypted {
                "unencrypted".to_string()
            } else {
                s.kms_key_alias
                    .clone()
                    .or_else(|| s.kms_key_arn.clone())
                    .unwrap_or_else(|| "unknown key".into())
            };
            format!("{} {}", s.snapshot_id, k)
        })
        .collect();
    let verdict = if r.findings.is_empty() {
        "ok".to_string()
    } else {
        r.findings.iter().map(|f| f.code.as_str()).collect::<Vec<_>>().join(", ")
    };
    format!("{} {}: {} [{}]", r.region, r.ami_id, verdict, keys.join("; "))
}

/// Runs `check` or `publish` for `amis` with `settings`. Findings are in the report (not an
/// error); failed writes are in the report's actions; an error means no trustworthy report.
pub async fn run(
    settings: &Settings,
    amis: &AmiSet,
    opts: RunOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Report, EngineError> {
    let intent = intent::build(settings, amis).map_err(EngineError::Input)?;
    let first_region = amis.regions().next().unwrap_or("us-east-1").to_string();
    let aws = Aws::connect(&AwsOptions::from_settings(settings), &first_region).await;
    run_with(&aws, &intent, opts, progress, cancel).await
}

/// [`run`] with an existing connection and a validated intent.
pub async fn run_with(
    aws: &Aws,
    intent: &Intent,
    opts: RunOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Report, EngineError> {
    let command = match opts.mode {
        Mode::Check => "check",
        Mode::Publish => "publish",
    };
    let regions: Vec<String> = intent.amis.regions().map(str::to_string).collect();
    let listed: Vec<String> = intent.amis.0.iter().map(|(r, a)| format!("{r} {a}")).collect();
    progress.say(&format!("Checking {} AMI(s): {}", regions.len(), listed.join(", ")));

    let gathered = tokio::select! {
        g = join_all(regions.iter().map(|r| gather::gather_region(aws, intent, r))) => g,
        () = cancel.cancelled() => return Err(EngineError::Cancelled),
    };
    let mut facts: Vec<RegionFacts> = Vec::new();
    let mut errors = Vec::new();
    for g in gathered {
        match g {
            Ok(f) => facts.push(f),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(EngineError::Gather(errors));
    }
    let reports: Vec<RegionReport> = facts.iter().map(|f| verify::verify_region(intent, f)).collect();
    for r in &reports {
        progress.message(&region_line(r));
    }
    let mut report =
        Report { command: command.into(), dry_run: opts.dry_run, regions: reports, ..Default::default() };
    if opts.mode == Mode::Check {
        return Ok(report);
    }
    key_policy_check(aws, intent, &mut report).await?;
    if !report.findings().is_empty() {
        progress.say("Findings: nothing shared, nothing published");
        return Ok(report);
    }

    // Publish: the accounts to publish in, by assumed role.
    let role = intent.publish_role_name.clone().unwrap_or_default();
    let mut publishers = Vec::new();
    for account in &intent.publish_accounts {
        let arn = format!("arn:aws:iam::{account}:role/{role}");
        publishers.push((account.clone(), aws.assume(&arn, Some("amikey-publish"), None).await));
    }
    let sharing = tokio::select! {
        g = join_all(facts.iter_mut().zip(&report.regions).map(|(f, r)| gather::gather_sharing(aws, &publishers, intent, r, f))) => g,
        () = cancel.cancelled() => return Err(EngineError::Cancelled),
    };
    let errors: Vec<AwsError> = sharing.into_iter().filter_map(Result::err).collect();
    if !errors.is_empty() {
        return Err(EngineError::Gather(errors));
    }
    let account = aws.account_id().await.map_err(|e| EngineError::Gather(vec![e]))?;
    let steps: Vec<Step> =
        facts.iter().zip(&report.regions).flat_map(|(f, r)| plan::plan_region(intent, f, r)).collect();

    let mut actions: Vec<ActionReport> = Vec::new();
    let mut record = |s: &Step, status: Status, error: Option<String>| {
        for t in &s.targets {
            actions.push(ActionReport {
                region: s.region.clone(),
                account: s.account.clone().unwrap_or_else(|| account.clone()),
                kind: s.kind.to_string(),
                target: t.clone(),
                status,
                error: error.clone(),
            });
        }
    };
    let pending = steps.iter().filter(|s| s.write.is_some()).count();
    if opts.dry_run {
        for s in &steps {
            record(s, if s.write.is_some() { Status::Planned } else { Status::Unchanged }, None);
        }
    } else {
        if pending > 0 {
            progress.say(&format!("Applying {pending} change(s)"));
        }
        let by_account: BTreeMap<&str, &Aws> = publishers.iter().map(|(a, p)| (a.as_str(), p)).collect();
        let mut failed_regions: BTreeMap<String, String> = BTreeMap::new();
        for wave in [0u8, 1] {
            let todo: Vec<&Step> = steps.iter().filter(|s| s.wave == wave).collect();
            let results = join_all(todo.iter().map(|s| {
                let skip = failed_regions.get(&s.region).cloned();
                let who = s.account.as_deref().and_then(|a| by_account.get(a).copied()).unwrap_or(aws);
                async move {
                    let Some(w) = &s.write else {
                        return (Status::Unchanged, None);
                    };
                    if let Some(why) = skip {
                        return (Status::Skipped, Some(format!("not attempted: {why}")));
                    }
                    if cancel.is_cancelled() {
                        return (Status::Skipped, Some("not attempted: cancelled".to_string()));
                    }
                    match apply::apply(who, &s.region, w).await {
                        Ok(()) => (Status::Changed, None),
                        Err(e) => {
                            let e = match &s.account {
                                Some(a) => e.in_account(a),
                                None => e,
                            };
                            (Status::Failed, Some(e.to_string()))
                        }
                    }
                }
            }))
            .await;
            for (s, (status, err)) in todo.iter().zip(results) {
                if status == Status::Failed {
                    failed_regions
                        .entry(s.region.clone())
                        .or_insert_with(|| format!("an earlier change in {} failed", s.region));
                }
                record(s, status, err);
            }
        }
    }
    actions.sort();
    report.actions = actions;
    let c = report.counts();
    progress.say(&format!(
        "{} change(s) made, {} already in place",
        c.get(&Status::Changed).copied().unwrap_or(0),
        c.get(&Status::Unchanged).copied().unwrap_or(0)
    ));
    Ok(report)
}

/// `check_key_policy` (publish only): GetKeyPolicy of each clean region's intended key, evaluated
/// for `ami_users` ∪ `publish_accounts` by [`crate::core::policy::publish_check`]; `warn` adds
/// report warnings, `fail` adds `KEY_POLICY_DENIES_CONSUMER` findings (so nothing is written).
async fn key_policy_check(aws: &Aws, intent: &Intent, report: &mut Report) -> Result<(), EngineError> {
    use crate::core::config::PolicyCheck;
    if intent.check_key_policy == PolicyCheck::Off {
        return Ok(());
    }
    let fail = intent.check_key_policy == PolicyCheck::Fail;
    let accounts: Vec<String> = intent
        .launch_users
        .iter()
        .chain(&intent.publish_accounts)
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if accounts.is_empty() {
        return Ok(());
    }
    let targets: Vec<(usize, String, String)> = report
        .regions
        .iter()
        .enumerate()
        .filter(|(_, r)| r.findings.is_empty())
        .filter_map(|(i, r)| r.intended_kms_key_arn.clone().map(|k| (i, r.region.clone(), k)))
        .collect();
    let policies =
        join_all(targets.iter().map(|(_, region, k)| crate::aws::consumer::get_key_policy(aws, region, k)))
            .await;
    for ((i, region, key), p) in targets.into_iter().zip(policies) {
        match p {
            Ok(text) => {
                let ami = report.regions[i].ami_id.clone();
                let (w, f) = crate::core::policy::publish_check(&region, &ami, &key, &text, &accounts, fail);
                report.warnings.extend(w);
                report.regions[i].findings.extend(f);
            }
            Err(e) if !fail => report.warnings.push(format!(
                "{region}: cannot check the key policy of {key} for the consumer accounts ({e}); set check_key_policy = \"off\" to skip"
            )),
            Err(e) => return Err(EngineError::Gather(vec![e])),
        }
    }
    Ok(())
}

/// The result of `preflight`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PreflightReport {
    /// Per region, sorted.
    pub regions: Vec<crate::core::preflight::PreflightRegion>,
}

impl PreflightReport {
    /// True when no region has an error-level finding.
    pub fn is_clean(&self) -> bool {
        self.regions
            .iter()
            .all(|r| r.findings.iter().all(|f| f.severity != crate::core::preflight::Severity::Error))
    }

    /// region → resolved intended key ARN.
    pub fn key_mapping(&self) -> BTreeMap<String, String> {
        self.regions
            .iter()
            .filter_map(|r| r.intended_kms_key_arn.clone().map(|k| (r.region.clone(), k)))
            .collect()
    }

    /// Text rendering.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for r in &self.regions {
            let mark = if r.findings.iter().any(|f| f.severity == crate::core::preflight::Severity::Error) {
                "FAIL"
            } else {
                "ok  "
            };
            let _ = writeln!(out, "{mark} {}", r.region);
            let _ = writeln!(
                out,
                "     intended key: {}",
                r.intended_kms_key_arn.as_deref().unwrap_or("(unresolved)")
            );
            let ebs = match (
                r.ebs_encryption_by_default,
                &r.ebs_default_kms_key_arn,
                r.ebs_default_key_aws_managed,
            ) {
                (Some(true), Some(k), Some(true)) => format!("on, with the AWS managed key {k}"),
                (Some(true), Some(k), _) => format!("on, with {k}"),
                (Some(true), None, _) => "on".to_string(),
                (Some(false), ..) => "off".to_string(),
                (None, ..) => "unknown".to_string(),
            };
            let _ = writeln!(out, "     EBS encryption by default: {ebs}");
            for f in &r.findings {
                let sev = match f.severity {
                    crate::core::preflight::Severity::Error => "error",
                    crate::core::preflight::Severity::Warning => "warning",
                };
                let _ = writeln!(out, "     {sev} {}: {}", f.code, f.message);
            }
        }
        out
    }
}

/// Runs `preflight` for `regions` (sorted, deduplicated by the caller) with `settings`' keys.
pub async fn preflight(settings: &Settings, regions: &[String]) -> Result<PreflightReport, EngineError> {
    let mut errors = Vec::new();
    for r in regions {
        if !crate::core::artifact::valid_region(r, settings.skip_region_validation) {
            errors.push(format!("unknown region {r:?} (check the spelling, or set skip_region_validation)"));
        }
    }
    if regions.is_empty() {
        errors.push("no regions to check: pass --regions, or set region / region_kms_key_ids".into());
    }
    let keys: Vec<Option<String>> = regions
        .iter()
        .map(|r| settings.region_kms_key_ids.get(r).or(settings.kms_key_id.as_ref()).cloned())
        .collect();
    for k in keys.iter().flatten() {
        if !intent::is_key_ref(k) {
            errors.push(format!(
                "{k:?} is not a KMS key reference (key id, mrk- id, alias/NAME, key or alias ARN)"
            ));
        }
    }
    if !errors.is_empty() {
        return Err(EngineError::Input(errors));
    }
    let aws = Aws::connect(&AwsOptions::from_settings(settings), &regions[0]).await;
    let results =
        join_all(regions.iter().zip(&keys).map(|(r, k)| gather::gather_preflight(&aws, r, k.as_deref())))
            .await;
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for r in results {
        match r {
            Ok(f) => out.push(crate::core::preflight::preflight_region(&f)),
            Err(e) => errs.push(e),
        }
    }
    if !errs.is_empty() {
        return Err(EngineError::Gather(errs));
    }
    Ok(PreflightReport { regions: out })
}
