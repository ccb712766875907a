//! The composer of the consumer side: `amikey grant`, `amikey doctor` and `amikey policy`.
//! Gathers facts through [`crate::aws::read`], decides with [`crate::core::grants`],
//! [`crate::core::doctor`] and [`crate::core::policy`], applies grant writes one call each, and
//! returns serialisable reports; printing is the CLI's job.
//!
//! Order of work for `grant`: validate input (nothing called on bad input) → who am I (STS) →
//! which keys (SSM parameters in every region in parallel, the AMI's snapshots, or given ARNs;
//! multi-Region keys expanded to their replicas) → DescribeKey and ListGrants per key and grantee
//! → plan → creates, then retires (an interrupted run never leaves a grantee without a grant).
//! Problems KMS reports (AccessDenied, a service-linked role that does not exist, a disabled
//! key) are explained in the report with the command that fixes them; they are not errors.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use serde::Serialize;

use crate::aws::{Aws, AwsError, AwsOptions};
use crate::aws::{apply, read};
use crate::core::doctor::{self, DoctorFacts, DoctorReport, KeyDescribe};
use crate::core::facts::KeyManager;
use crate::core::grants::{self, ExistingGrant, GrantAction, GrantPlan, Grantee};
use crate::core::ids::{arn_account, arn_region, is_account_id, is_key_arn};
use crate::core::policy::{self, Consumer, PolicyFinding};

/// Why a consumer command could not produce a report (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// Bad input; nothing was called.
    #[error("{0}")]
    Input(String),
    /// An AWS call failed in a way no report can explain; nothing was written.
    #[error("{0}")]
    Aws(Box<AwsError>),
}

impl From<AwsError> for ConsumerError {
    fn from(e: AwsError) -> ConsumerError {
        ConsumerError::Aws(Box::new(e))
    }
}

/// The SSM parameter holding the published key ARN under `path` (a path or a shared
/// parameter's ARN), and the region an ARN pins it to.
pub fn key_parameter(path: &str) -> Result<(String, Option<String>), ConsumerError> {
    let path = path.trim_end_matches('/');
    if let Some(rest) = path.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let ok = parts.len() == 5
            && parts[1] == "ssm"
            && crate::core::artifact::valid_region(parts[2], true)
            && is_account_id(parts[3])
            && parts[4].starts_with("parameter/");
        if !ok {
            return Err(ConsumerError::Input(format!(
                "--ssm-path {path:?} is not a parameter ARN: expected arn:aws:ssm:REGION:ACCOUNT:parameter/PATH"
            )));
        }
        return Ok((format!("{path}/kms_key_arn"), Some(parts[2].to_string())));
    }
    if !path.starts_with('/') || path.len() < 2 || path.contains("//") {
        return Err(ConsumerError::Input(format!(
            "--ssm-path {path:?} must be an absolute parameter path such as /images/golden (the producer's ssm_path), or a shared parameter's ARN"
        )));
    }
    Ok((format!("{path}/kms_key_arn"), None))
}

/// Checks a `--key-arn` value: a key ARN (grants on another account's key need the ARN; an alias
/// cannot carry a grant).
pub fn check_key_arn(s: &str) -> Result<(), ConsumerError> {
    if is_key_arn(s) {
        Ok(())
    } else {
        Err(ConsumerError::Input(format!(
            "--key-arn {s:?} is not a key ARN: expected arn:aws:kms:REGION:ACCOUNT:key/KEY_ID (the value of the producer's <ssm_path>/kms_key_arn)"
        )))
    }
}

pub use crate::core::grants::{KeyInRegion, Problem};

/// What happened to one planned action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `--dry-run`: would be done.
    Planned,
    /// Done.
    Changed,
    /// Already in place.
    Unchanged,
    /// Refused by KMS (see the problems).
    Failed,
}

/// One action of the plan and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    /// The planned action.
    #[serde(flatten)]
    pub action: GrantAction,
    /// What happened.
    pub outcome: Outcome,
    /// The new grant's id, for creates.
    pub created_grant_id: Option<String>,
}

/// The result of `amikey grant`.
#[derive(Debug, Clone, Serialize)]
pub struct GrantReport {
    /// The consumer account.
    pub account: String,
    /// Plan only.
    pub dry_run: bool,
    /// Keys found, per region, sorted.
    pub keys: Vec<KeyInRegion>,
    /// Grantee ARNs, sorted.
    pub grantees: Vec<String>,
    /// Actions in plan order with outcomes.
    pub actions: Vec<ActionOutcome>,
    /// Redundant grants (reported only).
    pub duplicates: Vec<grants::DuplicateGrants>,
    /// amikey grants `--retire-stale` would retire.
    pub kept_stale: Vec<ExistingGrant>,
    /// Problems, sorted.
    pub problems: Vec<Problem>,
    /// Remarks that need no action (a grantee that needs no grant, a region without the
    /// parameter).
    pub notes: Vec<String>,
}

impl GrantReport {
    /// 0 nothing missing, 1 something missing that could not be fixed, 2 a write failed for
    /// another reason (throttling, network).
    pub fn exit_code(&self) -> u8 {
        if self.problems.iter().any(|p| p.code == "AWS_ERROR") {
            2
        } else {
            u8::from(!self.problems.is_empty())
        }
    }

    /// Text rendering: one line per action, then problems with their fixes, then a summary.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "amikey grant{} (account {})\n",
            if self.dry_run { " --dry-run" } else { "" },
            self.account
        );
        for k in &self.keys {
            let _ = writeln!(out, "  key {} {} ({})", k.region, k.key_arn, k.source);
        }
        for a in &self.actions {
            let line = match (&a.action, a.outcome) {
                (GrantAction::Create { name, key_arn, grantee_arn, operations, .. }, o) => {
                    let verb = match o {
                        Outcome::Planned => "would create",
                        Outcome::Changed => "created",
                        Outcome::Failed => "FAILED to create",
                        Outcome::Unchanged => "kept",
                    };
                    format!("+ {verb} {name} on {key_arn} for {grantee_arn}: {}", operations.join(" "))
                }
                (GrantAction::Unchanged { grant_id, key_arn, grantee_arn, .. }, _) => {
                    format!("= grant {grant_id} on {key_arn} for {grantee_arn} already in place")
                }
                (GrantAction::Retire { grant_id, key_arn, reason, .. }, o) => {
                    let verb = match o {
                        Outcome::Planned => "would retire",
                        Outcome::Changed => "retired",
                        Outcome::Failed => "FAILED to retire",
                        Outcome::Unchanged => "kept",
                    };
                    format!("- {verb} grant {grant_id} on {key_arn} ({reason:?})")
                }
            };
            let _ = writeln!(out, "{line}");
        }
        for d in &self.duplicates {
            let _ = writeln!(
                out,
                "! {} grants on {} for {}: keeping {}, also {}",
                d.others.len() + 1,
                d.key_arn,
                d.grantee_arn,
                d.kept,
                d.others.join(", ")
            );
        }
        for g in &self.kept_stale {
            let _ = writeln!(
                out,
                "! kept {} ({}) on {}: pass --retire-stale to retire it",
                g.grant_id,
                g.name.as_deref().unwrap_or("unnamed"),
                g.key_arn
            );
        }
        for p in &self.problems {
            let _ = writeln!(out, "✘ {} in {}: {}", p.code, p.region, p.message);
            if let Some(f) = &p.fix {
                let _ = writeln!(out, "    fix: {f}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let count = |o: Outcome| self.actions.iter().filter(|a| a.outcome == o).count();
        let _ = writeln!(
            out,
            "{} {}, {} already in place, {} failed, {} problem(s)",
            count(if self.dry_run { Outcome::Planned } else { Outcome::Changed }),
            if self.dry_run { "to change" } else { "changed" },
            count(Outcome::Unchanged),
            count(Outcome::Failed),
            self.problems.len()
        );
        out
    }
}

/// What `amikey grant` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct GrantRequest {
    /// `--ssm-path`.
    pub ssm_path: Option<String>,
    /// `--ami REGION:AMI` entries.
    pub amis: Vec<String>,
    /// `--key-arn` values.
    pub key_arns: Vec<String>,
    /// `--region` values (empty: every region, for `--ssm-path`).
    pub regions: Vec<String>,
    /// `--service` values (empty and no roles: `autoscaling`).
    pub services: Vec<String>,
    /// `--grantee-role` values.
    pub roles: Vec<String>,
    /// `--retire-stale`.
    pub retire_stale: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// Skip region-name validation.
    pub skip_region_validation: bool,
    /// Release: retire every amikey grant for these grantees on the published keys (current
    /// and earlier) and create none (the Lambda function's custom-resource Delete). Needs
    /// `retire_stale`.
    pub release: bool,
}

/// Validated grantees: (grantee, operations). Grantees that need no grant become notes.
pub fn grantees(services: &[String], roles: &[String]) -> Result<(Vec<Grantee>, Vec<String>), ConsumerError> {
    let mut out = BTreeSet::new();
    let mut notes = Vec::new();
    let services: Vec<String> = if services.is_empty() && roles.is_empty() {
        vec!["autoscaling".to_string()]
    } else {
        services.to_vec()
    };
    for s in &services {
        let g =
            Grantee::parse_service(s.trim()).map_err(|e| ConsumerError::Input(format!("--service: {e}")))?;
        match g.operations() {
            Ok(_) => {
                out.insert(g);
            }
            Err(grants::GrantError::NoGrantNeeded { service, note }) => {
                notes.push(format!("--service {service} needs no grant: {note}"));
            }
            Err(e) => return Err(ConsumerError::Input(format!("--service: {e}"))),
        }
    }
    for r in roles {
        out.insert(
            Grantee::role(r.trim()).map_err(|e| ConsumerError::Input(format!("--grantee-role: {e}")))?,
        );
    }
    Ok((out.into_iter().collect(), notes))
}

fn validate_regions(regions: &[String], skip: bool) -> Result<Vec<String>, ConsumerError> {
    let mut out = BTreeSet::new();
    for r in regions.iter().flat_map(|r| r.split(',')).map(str::trim).filter(|r| !r.is_empty()) {
        if !crate::core::artifact::valid_region(r, skip) {
            return Err(ConsumerError::Input(format!(
                "unknown region {r:?} (check the spelling, or pass --skip-region-validation)"
            )));
        }
        out.insert(r.to_string());
    }
    Ok(out.into_iter().collect())
}

/// Explains a failed KMS call on `key_arn` for `grantee` as a [`Problem`]; `AWS_ERROR` when it
/// is none of the known refusals (see [`grants::classify_failure`]).
pub fn classify(
    err: &AwsError,
    account: &str,
    region: &str,
    key_arn: &str,
    grantee: Option<(&Grantee, &str)>,
) -> Problem {
    let text = err.to_string();
    let failure = grants::KmsFailure {
        operation: err.operation,
        code: err.code.as_deref(),
        message: &err.message,
        text: &text,
    };
    grants::classify_failure(&failure, account, region, key_arn, grantee)
}

/// The keys of the published parameter in each region where it exists: region → key ARN.
pub async fn published_keys(
    aws: &Aws,
    ssm_path: &str,
    regions: &[String],
) -> Result<(String, BTreeMap<String, String>), ConsumerError> {
    let (name, pinned) = key_parameter(ssm_path)?;
    let regions: Vec<String> = match (&pinned, regions.is_empty()) {
        (Some(r), _) => vec![r.clone()],
        (None, false) => regions.to_vec(),
        (None, true) => read::describe_regions(aws).await?,
    };
    let found = join_all(regions.iter().map(|r| read::get_parameter(aws, r, &name))).await;
    let mut out = BTreeMap::new();
    for (r, v) in regions.iter().zip(found) {
        if let Some(v) = v? {
            out.insert(r.clone(), v.trim().to_string());
        }
    }
    if out.is_empty() {
        return Err(ConsumerError::Input(format!(
            "no parameter {name} in {} region(s) ({}): check --ssm-path against the producer's ssm_path, and that it was published in (or shared with) this account",
            regions.len(),
            regions.join(", ")
        )));
    }
    Ok((name, out))
}

fn region_of(arn: &str) -> &str {
    arn_region(arn).unwrap_or_default()
}

/// `amikey grant`'s input, validated before any call.
struct GrantInput {
    /// `--region` values, sorted and deduplicated.
    regions: Vec<String>,
    /// Grantees that need a grant, sorted.
    grantees: Vec<Grantee>,
    /// Notes about grantees that need none.
    notes: Vec<String>,
    /// `--ami` values.
    amis: crate::core::artifact::AmiSet,
}

/// Validates everything `amikey grant` was given, before any call.
fn validate_grant(req: &GrantRequest) -> Result<GrantInput, ConsumerError> {
    let regions = validate_regions(&req.regions, req.skip_region_validation)?;
    let (grantees, notes) = grantees(&req.services, &req.roles)?;
    if req.ssm_path.is_none() && req.amis.is_empty() && req.key_arns.is_empty() {
        return Err(ConsumerError::Input(
            "which keys? pass --ssm-path PATH (the producer's published mapping), --ami REGION:AMI, or --key-arn ARN"
                .into(),
        ));
    }
    if let Some(p) = &req.ssm_path {
        key_parameter(p)?;
    }
    for k in &req.key_arns {
        check_key_arn(k.trim())?;
    }
    let amis = if req.amis.is_empty() {
        crate::core::artifact::AmiSet::default()
    } else {
        crate::core::artifact::AmiSet::from_pairs(
            req.amis.iter().map(String::as_str),
            req.skip_region_validation,
        )
        .map_err(|e| ConsumerError::Input(format!("--ami: {e}")))?
    };
    if grantees.is_empty() {
        return Err(ConsumerError::Input(format!("no grantee needs a grant: {}", notes.join("; "))));
    }
    Ok(GrantInput { regions, grantees, notes, amis })
}

/// The keys `amikey grant` was pointed at, before DescribeKey.
struct FoundKeys {
    /// Every key, per region.
    keys: BTreeSet<KeyInRegion>,
    /// With `--ssm-path`: the published parameter's name and its value per region.
    published: Option<(String, BTreeMap<String, String>)>,
}

/// Gathers the keys: the published parameter in each region, the snapshots of each `--ami`,
/// then the `--key-arn` values.
async fn find_keys(
    aws: &Aws,
    req: &GrantRequest,
    input: &GrantInput,
    account: &str,
) -> Result<FoundKeys, ConsumerError> {
    let mut keys: BTreeSet<KeyInRegion> = BTreeSet::new();
    let mut published = None;
    if let Some(p) = &req.ssm_path {
        let (name, found) = published_keys(aws, p, &input.regions).await?;
        for (r, k) in &found {
            keys.insert(grants::published_key(&name, r, k).map_err(ConsumerError::Input)?);
        }
        published = Some((name, found));
    }
    for (region, ami) in &input.amis.0 {
        keys.extend(ami_keys(aws, region, ami, account).await?);
    }
    for k in &req.key_arns {
        let k = k.trim();
        keys.insert(KeyInRegion {
            region: region_of(k).to_string(),
            key_arn: k.to_string(),
            source: "key-arn".into(),
        });
    }
    Ok(FoundKeys { keys, published })
}

/// The keys of the encrypted snapshots of `ami` in `region`; an error when the AMI or its
/// snapshots are not visible to `account`.
async fn ami_keys(
    aws: &Aws,
    region: &str,
    ami: &str,
    account: &str,
) -> Result<Vec<KeyInRegion>, ConsumerError> {
    let Some(image) = read::describe_image(aws, region, ami).await? else {
        return Err(ConsumerError::Input(format!(
            "{ami} is not visible in {region} to account {account}: not shared with it, deregistered, or in another region (amikey doctor --ami {region}:{ami} walks the whole chain)"
        )));
    };
    let ids: Vec<String> = image.ebs_snapshots().into_iter().map(|(_, s, _)| s).collect();
    let snaps = read::describe_snapshots_each(aws, region, &ids).await?;
    let hidden: Vec<&String> = ids.iter().filter(|i| !snaps.contains_key(*i)).collect();
    if !hidden.is_empty() {
        return Err(ConsumerError::Input(format!(
            "the snapshots of {ami} ({}) are not visible to account {account} (not shared for create-volume, which launching does not need): pass the key with --key-arn or --ssm-path instead",
            hidden.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut out = Vec::new();
    for snap in snaps.values() {
        if let (true, Some(k)) = (snap.encrypted, &snap.kms_key_id) {
            out.push(KeyInRegion {
                region: region_of(k).to_string(),
                key_arn: k.clone(),
                source: format!("ami:{region}:{ami}"),
            });
        }
    }
    Ok(out)
}

/// DescribeKey on each key: the keys that take grants (multi-Region keys given by ARN or found
/// on an AMI expand to their replicas in `regions`), and problems for the others.
async fn describe_keys(
    aws: &Aws,
    account: &str,
    keys: &BTreeSet<KeyInRegion>,
    regions: &[String],
) -> (BTreeSet<KeyInRegion>, Vec<Problem>) {
    let described = join_all(keys.iter().map(|k| read::describe_key(aws, &k.region, &k.key_arn))).await;
    let mut usable = BTreeSet::new();
    let mut problems = Vec::new();
    for (k, d) in keys.iter().zip(described) {
        match d.map(|info| grants::usable_keys(k, info.manager, &info.replicas, regions)) {
            Err(e) => problems.push(classify(&e, account, &k.region, &k.key_arn, None)),
            Ok(Err(p)) => problems.push(*p),
            Ok(Ok(v)) => usable.extend(v),
        }
    }
    (usable, problems)
}

/// Keys published before (the parameter `name`'s history in each region it is published in)
/// that are not among the `usable` keys now.
async fn stale_keys(
    aws: &Aws,
    name: &str,
    published: &BTreeMap<String, String>,
    usable: &BTreeSet<KeyInRegion>,
) -> Result<BTreeSet<(String, String)>, ConsumerError> {
    let hist = join_all(published.keys().map(|r| read::parameter_history(aws, r, name))).await;
    let hist = hist.into_iter().collect::<Result<Vec<Vec<String>>, AwsError>>()?;
    let current: BTreeSet<&str> = usable.iter().map(|k| k.key_arn.as_str()).collect();
    Ok(grants::stale_keys(hist.iter().flatten().map(String::as_str), &current))
}

/// ListGrants for each lookup, in parallel.
async fn list_grants(
    aws: &Aws,
    account: &str,
    lookups: &[grants::Lookup],
    stale: &BTreeSet<(String, String)>,
    grantee_arns: &BTreeMap<String, Grantee>,
) -> grants::Listings {
    let listed = join_all(lookups.iter().map(|(r, k, g)| read::list_grants(aws, r, k, g))).await;
    let listed = lookups.iter().zip(listed).map(|((r, k, g), l)| match l {
        Ok(v) => grants::Listed::Grants(v),
        Err(e) => grants::Listed::Refused {
            gone_or_denied: e.is_not_found() || e.is_access_denied(),
            problem: classify(&e, account, r, k, grantee_arns.get(g).map(|x| (x, g.as_str()))),
        },
    });
    grants::collect_listings(lookups, listed, stale)
}

/// Every action of `plan`, `unchanged` or `planned`.
fn planned_outcomes(plan: &GrantPlan) -> Vec<ActionOutcome> {
    plan.actions
        .iter()
        .map(|a| ActionOutcome {
            action: a.clone(),
            outcome: match a {
                GrantAction::Unchanged { .. } => Outcome::Unchanged,
                _ => Outcome::Planned,
            },
            created_grant_id: None,
        })
        .collect()
}

/// Applies the planned actions: creates first, then retires, each wave in parallel. A refused
/// call becomes a problem.
async fn apply_grants(
    aws: &Aws,
    account: &str,
    outcomes: &mut [ActionOutcome],
    grantee_arns: &BTreeMap<String, Grantee>,
    problems: &mut Vec<Problem>,
) {
    for wave in [0, 1] {
        let todo: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                matches!((&o.action, wave), (GrantAction::Create { .. }, 0) | (GrantAction::Retire { .. }, 1))
            })
            .map(|(i, _)| i)
            .collect();
        let results =
            join_all(todo.iter().map(|i| apply_grant(aws, account, outcomes[*i].action.clone()))).await;
        for (i, r) in todo.into_iter().zip(results) {
            match r {
                Ok(id) => {
                    outcomes[i].outcome = Outcome::Changed;
                    outcomes[i].created_grant_id = id;
                }
                Err(e) => {
                    outcomes[i].outcome = Outcome::Failed;
                    let (region, key, grantee) = match &outcomes[i].action {
                        GrantAction::Create { region, key_arn, grantee_arn, .. }
                        | GrantAction::Retire { region, key_arn, grantee_arn, .. }
                        | GrantAction::Unchanged { region, key_arn, grantee_arn, .. } => {
                            (region.clone(), key_arn.clone(), grantee_arn.clone())
                        }
                    };
                    problems.push(classify(
                        &e,
                        account,
                        &region,
                        &key,
                        grantee_arns.get(&grantee).map(|g| (g, grantee.as_str())),
                    ));
                }
            }
        }
    }
}

/// One grant write: CreateGrant (returning the new grant's id) or RetireGrant.
async fn apply_grant(aws: &Aws, account: &str, a: GrantAction) -> Result<Option<String>, AwsError> {
    match &a {
        GrantAction::Create { key_arn, region, grantee_arn, operations, name } => {
            apply::create_grant(aws, region, key_arn, grantee_arn, operations, name, account).await.map(Some)
        }
        GrantAction::Retire { key_arn, region, grant_id, .. } => {
            apply::retire_grant(aws, region, key_arn, grant_id).await.map(|()| None)
        }
        GrantAction::Unchanged { .. } => Ok(None),
    }
}

/// Runs `amikey grant`.
pub async fn grant(opts: &AwsOptions, req: &GrantRequest) -> Result<GrantReport, ConsumerError> {
    let input = validate_grant(req)?;
    let mut notes = input.notes.clone();
    let fallback = input.regions.first().cloned().unwrap_or_else(|| "us-east-1".into());
    let aws = Aws::connect(opts, &fallback).await;
    let account = aws.account_id().await?;

    // Gather: the keys, which of them take grants, and what exists.
    let found = find_keys(&aws, req, &input, &account).await?;
    let (usable, mut problems) = describe_keys(&aws, &account, &found.keys, &input.regions).await;
    let (desired, grantee_arns) = grants::desired_grants(&input.grantees, &account, &usable)
        .map_err(|e| ConsumerError::Input(e.to_string()))?;
    // Looked up even without --retire-stale, so the report can say what it would retire.
    let stale = match &found.published {
        Some((name, published)) => stale_keys(&aws, name, published, &usable).await?,
        None => {
            if req.retire_stale {
                notes.push(
                    "--retire-stale needs --ssm-path: amikey learns which keys were published before from the parameter's history"
                        .into(),
                );
            }
            BTreeSet::new()
        }
    };
    let lookups = grants::grant_lookups(&usable, &stale, &grantee_arns);
    let listings = list_grants(&aws, &account, &lookups, &stale, &grantee_arns).await;
    problems.extend(listings.problems);

    // Decide: without a listing amikey cannot tell whether a grant exists, so it creates
    // nothing there. A release wants no grant at all: every amikey grant found is retired.
    let wanted = if req.release { &[][..] } else { &desired[..] };
    let plan = grants::plan_listable(wanted, &listings.existing, &listings.unlistable, req.retire_stale);

    // Apply: creates first, then retires.
    let mut outcomes = planned_outcomes(&plan);
    if !req.dry_run {
        apply_grants(&aws, &account, &mut outcomes, &grantee_arns, &mut problems).await;
    }
    problems.sort();
    problems.dedup();
    notes.sort();
    Ok(GrantReport {
        account,
        dry_run: req.dry_run,
        keys: usable.into_iter().collect(),
        grantees: grantee_arns.keys().cloned().collect(),
        actions: outcomes,
        duplicates: plan.duplicates,
        kept_stale: plan.kept_stale,
        problems,
        notes,
    })
}

/// What `amikey doctor` was asked to check.
#[derive(Debug, Clone, Default)]
pub struct DoctorRequest {
    /// `REGION:AMI`.
    pub ami: String,
    /// `--key-arn`: the published key, when the snapshots are not visible.
    pub key_arn: Option<String>,
    /// `--ssm-path`: read the published key in the AMI's region.
    pub ssm_path: Option<String>,
    /// `--service` values (default `autoscaling`).
    pub services: Vec<String>,
    /// `--grantee-role` values.
    pub roles: Vec<String>,
    /// `--launch-template ID|NAME`.
    pub launch_template: Option<String>,
    /// `--launch-template-version`.
    pub launch_template_version: Option<String>,
    /// `--asg NAME` (label only: the ASG's launch template must be given).
    pub asg: Option<String>,
    /// Skip region-name validation.
    pub skip_region_validation: bool,
}

/// The refusal for `--asg` without `--launch-template`.
pub fn asg_needs_launch_template(asg: &str) -> String {
    format!(
        "--asg {asg} alone cannot be checked: reading an Auto Scaling group needs the Auto Scaling API, which amikey \
         does not use (it calls only EC2, KMS, SSM and STS). Find the group's launch template and pass it:\n  \
         aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names {asg} --query \
         'AutoScalingGroups[0].[LaunchTemplate,MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification]'\n  \
         amikey doctor --ami REGION:AMI --asg {asg} --launch-template lt-… [--launch-template-version N]"
    )
}

/// Runs `amikey doctor`: gathers [`DoctorFacts`] read-only and diagnoses them at `now`.
pub async fn doctor(opts: &AwsOptions, req: &DoctorRequest, now: i64) -> Result<DoctorReport, ConsumerError> {
    let set = crate::core::artifact::AmiSet::from_pairs([req.ami.as_str()], req.skip_region_validation)
        .map_err(|e| ConsumerError::Input(format!("--ami: {e}")))?;
    let Some((region, ami)) = set.0.iter().next().map(|(r, a)| (r.clone(), a.clone())) else {
        return Err(ConsumerError::Input("--ami REGION:AMI is required".into()));
    };
    if set.0.len() != 1 {
        return Err(ConsumerError::Input("doctor checks one AMI: pass a single --ami REGION:AMI".into()));
    }
    if let Some(k) = &req.key_arn {
        check_key_arn(k)?;
    }
    if let Some(p) = &req.ssm_path {
        key_parameter(p)?;
    }
    if let (Some(asg), None) = (&req.asg, &req.launch_template) {
        return Err(ConsumerError::Input(asg_needs_launch_template(asg)));
    }
    let (grantees, _notes) = grantees(&req.services, &req.roles)?;
    let aws = Aws::connect(opts, &region).await;
    let account = aws.account_id().await?;

    let mut published = req.key_arn.clone();
    if published.is_none()
        && let Some(p) = &req.ssm_path
    {
        let (_, found) = published_keys(&aws, p, std::slice::from_ref(&region)).await?;
        published = found.get(&region).cloned();
    }
    let image = read::describe_image(&aws, &region, &ami).await?;
    let mappings = image.as_ref().map(|i| i.ebs_snapshots()).unwrap_or_default();
    let ids: Vec<String> = mappings.iter().map(|(_, s, _)| s.clone()).collect();
    let snaps = if image.is_some() {
        read::describe_snapshots_each(&aws, &region, &ids).await?
    } else {
        BTreeMap::new()
    };

    let mut overrides = Vec::new();
    let mut launch_target = None;
    if let Some(lt) = &req.launch_template {
        let (label, devices) =
            read::launch_template_devices(&aws, &region, lt, req.launch_template_version.as_deref()).await?;
        let label = match &req.asg {
            Some(a) => format!("{label} (ASG {a})"),
            None => label,
        };
        for (device, encrypted, kms) in devices {
            overrides.push(doctor::BlockDeviceOverride {
                source: label.clone(),
                device_name: device,
                encrypted,
                kms_key_id: kms,
            });
        }
        launch_target = Some(label);
    }

    // Keys in play: the snapshots', the published one, and ARNs named by overrides.
    let mut key_arns: BTreeSet<String> = snaps.values().filter_map(|s| s.kms_key_id.clone()).collect();
    key_arns.extend(published.clone());
    key_arns.extend(overrides.iter().filter_map(|o| o.kms_key_id.clone()).filter(|k| is_key_arn(k)));
    let described = join_all(key_arns.iter().map(|k| read::describe_key(&aws, region_of(k), k))).await;
    let mut keys = BTreeMap::new();
    for (k, d) in key_arns.iter().zip(described) {
        let v = match d {
            Ok(info) => KeyDescribe::Ok {
                key_manager: info.manager,
                state: info.state,
                multi_region: !info.replicas.is_empty(),
            },
            Err(e) if e.is_not_found() => KeyDescribe::NotFound,
            Err(e) if e.is_access_denied() => KeyDescribe::AccessDenied,
            Err(e) => KeyDescribe::Error { message: e.to_string() },
        };
        keys.insert(k.clone(), v);
    }
    let snapshots = mappings
        .iter()
        .map(|(device, sid, enc)| {
            let s = snaps.get(sid);
            let kms_key_id = s.and_then(|s| s.kms_key_id.clone());
            doctor::ConsumerSnapshot {
                device_name: device.clone(),
                snapshot_id: sid.clone(),
                visible: s.is_some(),
                encrypted: s.map(|s| s.encrypted).or(*enc),
                key_manager: kms_key_id.as_ref().and_then(|k| match keys.get(k) {
                    Some(KeyDescribe::Ok { key_manager, .. }) => Some(*key_manager),
                    _ => None,
                }),
                kms_key_id,
            }
        })
        .collect();

    // Grants of each grantee on each described customer managed key.
    let grant_keys: Vec<&String> = keys
        .iter()
        .filter(|(_, d)| matches!(d, KeyDescribe::Ok { key_manager: KeyManager::Customer, .. }))
        .map(|(k, _)| k)
        .collect();
    let mut service_roles = Vec::new();
    for g in &grantees {
        let role_arn = grants::grantee_arn(g, &account).map_err(|e| ConsumerError::Input(e.to_string()))?;
        let listed =
            join_all(grant_keys.iter().map(|k| read::list_grants(&aws, region_of(k), k, &role_arn))).await;
        let mut found = Vec::new();
        // A key whose grants cannot be listed shows up as "no grant" (with the key check
        // naming the policy problem).
        for v in listed.into_iter().flatten() {
            found.extend(v);
        }
        service_roles.push(doctor::ServiceRoleFacts {
            grantee: g.clone(),
            role_arn,
            // IAM is not called: a grant naming the role proves it exists; otherwise unknown.
            exists: if found.is_empty() { None } else { Some(true) },
            grants: found,
        });
    }
    let facts = DoctorFacts {
        consumer_account: account,
        region,
        ami_id: ami,
        image: image.as_ref().map(doctor::ConsumerImage::from_facts),
        snapshots,
        published_key_arn: published,
        keys,
        service_roles,
        launch_target,
        overrides,
    };
    Ok(doctor::diagnose(&facts, now))
}

/// The result of `amikey policy check`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyCheckReport {
    /// Key (replica) ARNs whose policies were read, sorted.
    pub keys: Vec<String>,
    /// Consumer accounts, sorted.
    pub consumers: Vec<String>,
    /// Findings, sorted by key, consumer, code.
    pub findings: Vec<PolicyFinding>,
}

impl PolicyCheckReport {
    /// Text: one block per finding, or a one-line all-clear.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if self.findings.is_empty() {
            let _ = writeln!(
                out,
                "✔ the key policies of {} let {} make every call the launch chain needs",
                self.keys.join(", "),
                self.consumers.join(", ")
            );
        }
        for f in &self.findings {
            let _ = writeln!(
                out,
                "✘ {} {} for {}: {}",
                f.code,
                f.key_arn,
                f.consumer.as_deref().unwrap_or("every consumer"),
                f.message
            );
        }
        out
    }
}

/// Resolves `key` (id, alias, ARN) in `region` and returns every replica's ARN (the key itself
/// for a single-Region key).
pub async fn key_and_replicas(aws: &Aws, region: &str, key: &str) -> Result<Vec<String>, ConsumerError> {
    let info = read::describe_key(aws, region, key).await?;
    if info.replicas.is_empty() { Ok(vec![info.arn]) } else { Ok(info.replicas.into_values().collect()) }
}

/// The region a key reference lives in: its ARN's, else `home`.
pub fn key_region(key: &str, home: &str) -> String {
    arn_region(key).filter(|r| !r.is_empty()).unwrap_or(home).to_string()
}

/// Checks the key policy of `key` (and of each multi-Region replica) for `consumers`.
pub async fn policy_check(
    aws: &Aws,
    key: &str,
    consumers: &[String],
) -> Result<PolicyCheckReport, ConsumerError> {
    let mut accounts: Vec<String> = consumers.iter().map(|a| a.trim().to_string()).collect();
    accounts.sort();
    accounts.dedup();
    if accounts.is_empty() {
        return Err(ConsumerError::Input("pass at least one --consumer-account ACCOUNT".into()));
    }
    if let Some(bad) = accounts.iter().find(|a| !is_account_id(a)) {
        return Err(ConsumerError::Input(format!("--consumer-account {bad:?} is not a 12-digit account id")));
    }
    let region = key_region(key, &aws.home_region);
    let replicas = key_and_replicas(aws, &region, key).await?;
    let policies = join_all(replicas.iter().map(|k| read::get_key_policy(aws, region_of(k), k))).await;
    let list: Vec<Consumer> = accounts.iter().map(|a| Consumer::account(a)).collect();
    let mut findings = Vec::new();
    for (k, p) in replicas.iter().zip(policies) {
        let text = p?;
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
        findings.extend(policy::check_consumers(&value, k, region_of(k), &list));
    }
    findings.sort_by(|a, b| (&a.key_arn, &a.consumer, a.code).cmp(&(&b.key_arn, &b.consumer, b.code)));
    Ok(PolicyCheckReport { keys: replicas, consumers: accounts, findings })
}

/// The account that owns `key_arn`, when it is an ARN.
pub fn key_owner(key_arn: &str) -> Option<&str> {
    arn_account(key_arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "arn:aws:kms:eu-west-1:999999999999:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn err(op: &'static str, code: &str) -> AwsError {
        AwsError {
            operation: op,
            region: "eu-west-1".into(),
            account: None,
            code: Some(code.into()),
            message: "refused".into(),
            hint: None,
        }
    }

    #[test]
    fn key_parameter_accepts_paths_and_shared_parameter_arns() {
        assert_eq!(key_parameter("/images/golden/").unwrap(), ("/images/golden/kms_key_arn".into(), None));
        assert_eq!(
            key_parameter("arn:aws:ssm:eu-west-1:999999999999:parameter/images/golden").unwrap(),
            (
                "arn:aws:ssm:eu-west-1:999999999999:parameter/images/golden/kms_key_arn".into(),
                Some("eu-west-1".into())
            )
        );
        for bad in ["images", "/", "arn:aws:s3:::bucket", "arn:aws:ssm:eu-west-1:12:parameter/x", "/a//b"] {
            assert!(matches!(key_parameter(bad), Err(ConsumerError::Input(_))), "{bad}");
        }
    }

    #[test]
    fn key_arns_must_be_arns_of_keys() {
        assert!(check_key_arn(KEY).is_ok());
        assert!(check_key_arn("arn:aws:kms:eu-west-1:999999999999:key/mrk-1234").is_ok());
        for bad in ["alias/images", "1234abcd", "arn:aws:kms:eu-west-1:999999999999:alias/images", ""] {
            let e = check_key_arn(bad).unwrap_err().to_string();
            assert!(e.contains("kms_key_arn"), "{e}");
        }
    }

    #[test]
    fn grantees_default_to_autoscaling_and_note_services_that_need_none() {
        let (g, notes) = grantees(&[], &[]).unwrap();
        assert_eq!(g, vec![Grantee::Service { service: "autoscaling".into(), suffix: None }]);
        assert!(notes.is_empty());
        let (g, notes) = grantees(&["ecs-autoscaling".into(), "spot".into(), "spot".into()], &[]).unwrap();
        assert_eq!(g, vec![Grantee::Service { service: "spot".into(), suffix: None }]);
        assert!(notes[0].contains("needs no grant"), "{notes:?}");
        assert!(grantees(&["lambda".into()], &[]).is_err());
        assert!(grantees(&[], &["arn:aws:iam::111111111111:user/bob".into()]).is_err());
    }

    #[test]
    fn kms_refusals_become_problems_with_fixes() {
        let asg = Grantee::Service { service: "autoscaling".into(), suffix: Some("prod".into()) };
        let arn = "arn:aws:iam::111111111111:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_prod";
        let p = classify(
            &err("CreateGrant", "AccessDeniedException"),
            "111111111111",
            "eu-west-1",
            KEY,
            Some((&asg, arn)),
        );
        assert_eq!(p.code, "ACCESS_DENIED");
        assert!(p.message.contains("kms:CreateGrant"), "{}", p.message);
        assert_eq!(
            p.fix.as_deref(),
            Some(
                format!("amikey policy generate --consumer-account 111111111111 --key {KEY} --merge")
                    .as_str()
            )
        );
        let p = classify(
            &err("CreateGrant", "InvalidArnException"),
            "111111111111",
            "eu-west-1",
            KEY,
            Some((&asg, arn)),
        );
        assert_eq!(p.code, "SERVICE_LINKED_ROLE_MISSING");
        assert_eq!(
            p.fix.as_deref(),
            Some(
                "aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com --custom-suffix prod"
            )
        );
        let p = classify(&err("CreateGrant", "DisabledException"), "111111111111", "eu-west-1", KEY, None);
        assert_eq!(p.code, "KEY_NOT_ENABLED");
        let p = classify(&err("CreateGrant", "ThrottlingException"), "111111111111", "eu-west-1", KEY, None);
        assert_eq!(p.code, "AWS_ERROR");
    }

    #[test]
    fn asg_refusal_says_how_to_find_the_launch_template() {
        let m = asg_needs_launch_template("web");
        assert!(
            m.contains("aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names web"),
            "{m}"
        );
        assert!(m.contains("--launch-template"), "{m}");
    }
}
