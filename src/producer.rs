//! The producer side, counterpart of [`crate::consumer`]: composes `check`, `publish` and
//! `preflight`. Gathers facts from AWS, runs the pure verify and plan of [`crate::core`], applies
//! the plan. Used by the CLI and by the Packer post-processor alike.
//!
//! Order of work: validate input (nothing called on bad input) → gather every region in
//! parallel (for `publish`, the sharing state and the account id in the same waves) → verify →
//! stop here for `check`, or on any finding → plan → apply wave 0 (permissions, producer
//! parameters) then wave 1 (publish accounts' parameters, which need the AMI shared first). A
//! cancel stops before the next write; calls already in flight finish, so nothing is
//! half-written.
//!
//! A region whose state cannot be read (every retry failed) is neither verified nor changed;
//! the other regions are, and the report's `errors` names it with its `skipped` items (exit 2).

use std::collections::BTreeMap;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::aws::{Aws, AwsError, AwsOptions, apply, gather};
use crate::core::artifact::AmiSet;
use crate::core::config::Settings;
use crate::core::facts::{Known, RegionFacts};
use crate::core::intent::{self, Intent};
use crate::core::plan::{self, Step};
use crate::core::report::{ActionReport, RegionError, RegionReport, Report, Status};
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
pub enum ProducerError {
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

impl ProducerError {
    /// True for bad input (as opposed to AWS trouble).
    pub fn is_input(&self) -> bool {
        matches!(self, ProducerError::Input(_))
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

fn region_errors(intent: &Intent, failed: &[(String, AwsError)]) -> Vec<RegionError> {
    let mut v: Vec<RegionError> = failed
        .iter()
        .map(|(region, e)| RegionError {
            region: region.clone(),
            ami_id: intent.amis.0.get(region).cloned().unwrap_or_default(),
            error: e.to_string(),
        })
        .collect();
    v.sort();
    v
}

/// Runs `check` or `publish` for `amis` with `settings`. Findings are in the report (not an
/// error); failed writes are in the report's actions; an error means no trustworthy report.
pub async fn run(
    settings: &Settings,
    amis: &AmiSet,
    opts: RunOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Report, ProducerError> {
    let intent = intent::build(settings, amis).map_err(ProducerError::Input)?;
    let first_region = amis.regions().next().unwrap_or("us-east-1").to_string();
    let aws = Aws::connect(&AwsOptions::from_settings(settings), &first_region).await;
    run_with(&aws, &intent, &Known::default(), opts, progress, cancel).await
}

/// [`run`] with an existing connection and a validated intent; `known` holds what the caller
/// already read in this run (nothing, but for a copy's verification).
pub async fn run_with(
    aws: &Aws,
    intent: &Intent,
    known: &Known,
    opts: RunOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Report, ProducerError> {
    let command = match opts.mode {
        Mode::Check => "check",
        Mode::Publish => "publish",
    };
    let regions: Vec<String> = intent.amis.regions().map(str::to_string).collect();
    let listed: Vec<String> = intent.amis.0.iter().map(|(r, a)| format!("{r} {a}")).collect();
    progress.say(&format!("Checking {} AMI(s): {}", regions.len(), listed.join(", ")));

    let publishers = publishers(aws, intent, opts.mode).await;
    let Gathered { facts, sharing, mut failed, account } =
        gather_all(aws, intent, known, &regions, opts.mode, &publishers, cancel).await?;
    let mut report = Report {
        command: command.into(),
        dry_run: opts.dry_run,
        regions: verify_all(intent, &facts, progress),
        ..Default::default()
    };
    if opts.mode == Mode::Check {
        report.errors = region_errors(intent, &failed);
        return Ok(report);
    }
    key_policy_check(intent, &facts, &mut report)?;
    if !report.findings().is_empty() {
        progress.say("Findings: nothing shared, nothing published");
        report.errors = region_errors(intent, &failed);
        return Ok(report);
    }
    let account = match account {
        Some(Ok(a)) => a,
        Some(Err(e)) => return Err(ProducerError::Gather(vec![e])),
        None => String::new(),
    };
    let steps = plan_readable(intent, &facts, &report.regions, sharing, &mut failed);
    let mut actions = if opts.dry_run {
        steps.iter().flat_map(|s| plan::dry_run_actions(s, &account)).collect()
    } else {
        apply_steps(aws, &publishers, &steps, &account, progress, cancel).await
    };
    if !opts.dry_run {
        crate::lifecycle::read_back(aws, intent, &mut actions).await;
    }
    for (region, e) in &failed {
        let ami = intent.amis.0.get(region).cloned().unwrap_or_default();
        actions.extend(plan::unread_region_actions(intent, region, &ami, &account, &e.message));
    }
    report.errors = region_errors(intent, &failed);
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

/// Publish: the accounts to publish in, by assumed role (credentials are fetched on first use).
/// Empty for check.
async fn publishers(aws: &Aws, intent: &Intent, mode: Mode) -> Vec<(String, Aws)> {
    let mut publishers = Vec::new();
    if mode == Mode::Publish {
        let role = intent.publish_role_name.clone().unwrap_or_default();
        for account in &intent.publish_accounts {
            let arn = format!("arn:aws:iam::{account}:role/{role}");
            publishers.push((account.clone(), aws.assume(&arn, Some("amikey-publish"), None).await));
        }
    }
    publishers
}

/// What the gather phase read.
struct Gathered {
    /// Facts of each region that could be read, in region order.
    facts: Vec<RegionFacts>,
    /// Per entry of `facts`, whether its sharing state could be read (always `Ok` for check).
    sharing: Vec<Result<(), AwsError>>,
    /// Regions whose state could not be read, with why.
    failed: Vec<(String, AwsError)>,
    /// The account id (publish only).
    account: Option<Result<String, AwsError>>,
}

/// Gathers every region in parallel; for publish the sharing state is read in the same waves,
/// and the account id alongside, so the writes can start as soon as verification is clean.
/// An error when cancelled, or when no region could be read.
async fn gather_all(
    aws: &Aws,
    intent: &Intent,
    known: &Known,
    regions: &[String],
    mode: Mode,
    publishers: &[(String, Aws)],
    cancel: &CancellationToken,
) -> Result<Gathered, ProducerError> {
    let gather_all = async {
        match mode {
            Mode::Check => {
                let mut out = Vec::new();
                for g in join_all(regions.iter().map(|r| gather::gather_region(aws, intent, known, r))).await
                {
                    out.push(match g {
                        Ok(f) => Ok((f, Ok(()))),
                        Err(e) => Err(e),
                    });
                }
                (out, None)
            }
            Mode::Publish => {
                let (g, account) = tokio::join!(
                    join_all(
                        regions
                            .iter()
                            .map(|r| gather::gather_region_publish(aws, publishers, intent, known, r))
                    ),
                    aws.account_id()
                );
                (g, Some(account))
            }
        }
    };
    let (gathered, account) = tokio::select! {
        g = gather_all => g,
        () = cancel.cancelled() => return Err(ProducerError::Cancelled),
    };
    let mut out = Gathered { facts: Vec::new(), sharing: Vec::new(), failed: Vec::new(), account };
    for (region, g) in regions.iter().zip(gathered) {
        match g {
            Ok((f, s)) => {
                out.facts.push(f);
                out.sharing.push(s);
            }
            Err(e) => out.failed.push((region.clone(), e)),
        }
    }
    if out.facts.is_empty() && !out.failed.is_empty() {
        return Err(ProducerError::Gather(out.failed.into_iter().map(|(_, e)| e).collect()));
    }
    Ok(out)
}

/// Verifies each gathered region, with one progress line per region.
fn verify_all(intent: &Intent, facts: &[RegionFacts], progress: &dyn Progress) -> Vec<RegionReport> {
    let reports: Vec<RegionReport> = facts.iter().map(|f| verify::verify_region(intent, f)).collect();
    for r in &reports {
        progress.message(&region_line(r));
    }
    reports
}

/// The steps for the regions whose sharing state could be read; the others join `failed`
/// (sorted by region), to be reported as not attempted.
fn plan_readable(
    intent: &Intent,
    facts: &[RegionFacts],
    reports: &[RegionReport],
    sharing: Vec<Result<(), AwsError>>,
    failed: &mut Vec<(String, AwsError)>,
) -> Vec<Step> {
    let mut readable = Vec::new();
    for ((f, r), s) in facts.iter().zip(reports).zip(sharing) {
        match s {
            Ok(()) => readable.push((f, r)),
            Err(e) => failed.push((f.region.clone(), e)),
        }
    }
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    readable.into_iter().flat_map(|(f, r)| plan::plan_region(intent, f, r)).collect()
}

/// Applies `steps`: wave 0, then wave 1, each in parallel, the publish accounts' steps through
/// their assumed roles. After a failure in a region, its later steps are not attempted; after
/// a cancel, no further step is.
async fn apply_steps(
    aws: &Aws,
    publishers: &[(String, Aws)],
    steps: &[Step],
    account: &str,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Vec<ActionReport> {
    let pending = steps.iter().filter(|s| s.write.is_some()).count();
    if pending > 0 {
        progress.say(&format!("Applying {pending} change(s)"));
    }
    let by_account: BTreeMap<&str, &Aws> = publishers.iter().map(|(a, p)| (a.as_str(), p)).collect();
    let mut failed_regions: BTreeMap<String, String> = BTreeMap::new();
    let mut actions = Vec::new();
    for wave in [0u8, 1] {
        let todo: Vec<&Step> = steps.iter().filter(|s| s.wave == wave).collect();
        let results = join_all(todo.iter().map(|s| {
            let earlier = failed_regions.get(&s.region).cloned();
            let who = s.account.as_deref().and_then(|a| by_account.get(a).copied()).unwrap_or(aws);
            async move {
                let w = match plan::attempt(s, earlier.as_deref(), cancel.is_cancelled()) {
                    Ok(w) => w,
                    Err(not_attempted) => return not_attempted,
                };
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
            actions.extend(plan::step_actions(s, account, status, err));
        }
    }
    actions
}

/// `check_key_policy` (publish only): each clean region's intended key policy (read in the
/// gather waves), evaluated for `ami_users` ∪ `publish_accounts` by
/// [`crate::core::policy::publish_check`]; `warn` adds report warnings, `fail` adds
/// `KEY_POLICY_DENIES_CONSUMER` findings (so nothing is written).
fn key_policy_check(
    intent: &Intent,
    facts: &[RegionFacts],
    report: &mut Report,
) -> Result<(), ProducerError> {
    use crate::core::config::PolicyCheck;
    if !gather::wants_key_policy(intent) {
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
    let mut key_policy_warnings = Vec::new();
    for (f, r) in facts.iter().zip(report.regions.iter_mut()) {
        if !r.findings.is_empty() {
            continue;
        }
        let (Some(key), Some(policy)) = (r.intended_kms_key_arn.clone(), &f.key_policy) else { continue };
        match policy {
            Ok(text) => {
                let (w, found) = crate::core::policy::publish_check(&r.region, &r.ami_id, &key, text, &accounts, fail);
                key_policy_warnings.extend(w);
                r.findings.extend(found);
            }
            Err(e) if !fail => report.warnings.push(format!(
                "{}: cannot check the key policy of {key} for the consumer accounts ({e}); set check_key_policy = \"off\" to skip",
                r.region
            )),
            Err(e) => {
                return Err(ProducerError::Gather(vec![AwsError::local("GetKeyPolicy", &r.region, e.clone())
                    .with_hint("check_key_policy = \"fail\" needs kms:GetKeyPolicy on the key; or set it to \"warn\"")]));
            }
        }
    }
    report.add_key_policy_warnings(key_policy_warnings);
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

/// One region preflight checks, with the key reference intended there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PreflightTarget {
    /// Region.
    pub region: String,
    /// Intended key reference (`None`: none configured, an error finding).
    pub key: Option<String>,
}

/// The targets `settings` implies for `regions`: `region_kms_key_ids[r]`, else `kms_key_id`.
pub fn targets_from_settings(settings: &Settings, regions: &[String]) -> Vec<PreflightTarget> {
    regions
        .iter()
        .map(|r| PreflightTarget {
            region: r.clone(),
            key: settings.region_kms_key_ids.get(r).or(settings.kms_key_id.as_ref()).cloned(),
        })
        .collect()
}

/// Runs `preflight` for `regions` (sorted, deduplicated by the caller) with `settings`' keys
/// and `settings.ami_users` as consumers.
pub async fn preflight(settings: &Settings, regions: &[String]) -> Result<PreflightReport, ProducerError> {
    preflight_targets(settings, &targets_from_settings(settings, regions), &settings.ami_users, Vec::new())
        .await
}

/// Runs `preflight` for `targets` (AWS options from `settings`): per region the intended key,
/// EBS encryption by default, and (with `consumers`) the key policy for them. `extra` findings
/// (from the template) are added to their regions.
pub async fn preflight_targets(
    settings: &Settings,
    targets: &[PreflightTarget],
    consumers: &[String],
    extra: Vec<crate::core::preflight::PreflightFinding>,
) -> Result<PreflightReport, ProducerError> {
    let mut targets = targets.to_vec();
    targets.sort();
    targets.dedup_by(|a, b| a.region == b.region);
    let mut errors = Vec::new();
    for t in &targets {
        if !crate::core::artifact::valid_region(&t.region, settings.skip_region_validation) {
            errors.push(format!(
                "unknown region {:?} (check the spelling, or set skip_region_validation)",
                t.region
            ));
        }
    }
    if targets.is_empty() {
        errors.push("no regions to check: pass --regions, or set region / region_kms_key_ids".into());
    }
    for k in targets.iter().filter_map(|t| t.key.as_ref()) {
        if !crate::core::ids::is_key_ref(k) {
            errors.push(format!(
                "{k:?} is not a KMS key reference (key id, mrk- id, alias/NAME, key or alias ARN)"
            ));
        }
    }
    let mut consumers: Vec<String> = consumers.iter().filter(|a| *a != "all").cloned().collect();
    consumers.sort();
    consumers.dedup();
    for a in &consumers {
        if !crate::core::ids::is_account_id(a) {
            errors.push(format!("ami_users entry {a:?} is not a 12-digit account id"));
        }
    }
    errors.sort();
    errors.dedup();
    if !errors.is_empty() {
        return Err(ProducerError::Input(errors));
    }
    let aws = Aws::connect(&AwsOptions::from_settings(settings), &targets[0].region).await;
    let results = join_all(
        targets.iter().map(|t| gather::gather_preflight(&aws, &t.region, t.key.as_deref(), &consumers)),
    )
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
        return Err(ProducerError::Gather(errs));
    }
    for f in extra {
        if let Some(r) = out.iter_mut().find(|r| r.region == f.region) {
            r.findings.push(f);
            r.findings.sort();
        }
    }
    Ok(PreflightReport { regions: out })
}
