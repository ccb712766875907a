//! The `amikey` command line: clap definitions, turning flags (and an optional HCL `--config`
//! file with the post-processor's keys) into [`Settings`], running the producer, printing through
//! [`output`], and mapping results to exit codes (0 clean, 1 findings, 2 error).

pub mod audit;
pub mod copy;
pub mod doctor;
pub mod grant;
pub mod lint;
pub mod output;
pub mod policy;
pub mod preflight;
pub mod retire;
pub mod rollback;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::core::artifact::AmiSet;
use crate::core::config::Settings;
use crate::producer::{self, Mode, RunOptions};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// For pipelines (schema in README).
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "amikey",
    version,
    about = "Verify, share and publish KMS-encrypted AMIs",
    long_about = "amikey checks that every snapshot of every regional AMI is encrypted with the customer managed \
KMS key you intended for that region (never the AWS managed aws/ebs key), shares the AMIs and snapshots, and \
publishes the AMI id and key ARN to SSM Parameter Store for consumers.\n\n\
It runs as a Packer post-processor (packer-plugin-amikey) or from this CLI, with the same keys.\n\n\
Exit codes: 0 clean, 1 findings, 2 error (bad input, AWS error).",
    after_help = "Examples:\n  \
amikey check --artifact \"us-east-1:ami-0123456789abcdef0,eu-west-1:ami-0fedcba9876543210\" --kms-key-id alias/images\n  \
amikey publish --config amikey.hcl --artifact \"$(jq -r '.builds[-1].artifact_id' packer-manifest.json)\" --dry-run\n  \
amikey lint build.pkr.hcl -var-file prod.pkrvars.hcl\n  \
amikey preflight --template build.pkr.hcl -var-file prod.pkrvars.hcl\n  \
amikey retire --ssm-path /images/base --regions us-east-1,eu-west-1 --keep 3\n  \
amikey rollback --ssm-path /images/base --regions us-east-1,eu-west-1 --to-version 6"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify every snapshot of every regional AMI against the intended key (read-only).
    #[command(
        after_help = "Exit codes: 0 every snapshot is under the intended customer managed key, 1 findings, 2 error."
    )]
    Check(CheckArgs),
    /// Check, then share the AMIs and snapshots and publish SSM parameters (only what differs).
    #[command(
        after_help = "On any finding nothing is changed and the exit code is 1. A re-run with the same inputs \
makes no write call. Permissions are only added unless --prune."
    )]
    Publish(PublishArgs),
    /// Before a build: intended keys exist, are enabled, customer managed and in their region;
    /// EBS encryption by default and its key; consumers' use of the key, per region.
    #[command(after_help = preflight::AFTER_HELP)]
    Preflight(preflight::PreflightArgs),
    /// Check Packer templates for KMS/sharing mistakes before a build (no AWS calls).
    #[command(after_help = lint::AFTER_HELP)]
    Lint(lint::LintArgs),
    /// Scan every owned AMI in every region for unencrypted, AWS-managed-key, broken-key and
    /// unlaunchable shared images (read-only).
    Audit(audit::AuditArgs),
    /// Consumer side: KMS grants for service-linked roles on the published keys (one per key × region × grantee).
    Grant(grant::GrantArgs),
    /// Consumer side: walk the launch chain of a shared encrypted AMI, ✔/✘ with the fix for each ✘.
    Doctor(doctor::DoctorArgs),
    /// Key policies for consumers: generate the statements, merge them, check a key's policy.
    Policy(policy::PolicyArgs),
    /// Copy the AMIs into consumer accounts, each under its own key; verify and publish there
    /// (producer push by assumed role, or consumer pull with --from-ssm-path).
    #[command(after_help = copy::AFTER_HELP)]
    Copy(copy::CopyArgs),
    /// Delete the old images of a published lineage that nothing uses (plan first; --yes to act).
    #[command(after_help = retire::AFTER_HELP)]
    Retire(retire::RetireArgs),
    /// Point the published parameters back at earlier images, verified, in every region at once.
    #[command(after_help = rollback::AFTER_HELP)]
    Rollback(rollback::RollbackArgs),
}

#[derive(Debug, Args)]
struct AmiArgs {
    /// The amazon builders' artifact id: "REGION:AMI,REGION:AMI" (any order, spaces tolerated).
    #[arg(long, value_name = "ID")]
    artifact: Option<String>,
    /// One AMI as REGION:AMI (repeatable).
    #[arg(long = "ami", value_name = "REGION:AMI")]
    amis: Vec<String>,
}

#[derive(Debug, Args)]
struct KeyArgs {
    /// Intended key for every region: key id, key ARN, alias/NAME, alias ARN or mrk- id.
    #[arg(long, value_name = "KEY")]
    kms_key_id: Option<String>,
    /// Intended key for one region, REGION=KEY (repeatable); overrides --kms-key-id there.
    #[arg(long = "region-kms-key-id", value_name = "REGION=KEY")]
    region_kms_key_ids: Vec<String>,
}

#[derive(Debug, Args)]
struct AwsArgs {
    /// Shared-config profile.
    #[arg(long)]
    profile: Option<String>,
    /// Home region (STS, and any region-less call).
    #[arg(long)]
    region: Option<String>,
    /// Endpoint for every AWS service, e.g. an emulator (AWS_ENDPOINT_URL works too).
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// Retries per AWS call after the first attempt, as packer-plugin-amazon counts them
    /// (standard retry mode with backoff; default 4).
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
    /// Accept region names amikey does not know.
    #[arg(long)]
    skip_region_validation: bool,
}

#[derive(Debug, Args)]
struct OutArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// More detail: -v progress on stderr, every warning in full and every unchanged item on
    /// stdout (text; JSON always has them); -vv also debug logs.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// HCL file with the post-processor block's keys (flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    amis: AmiArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    out: OutArgs,
}

#[derive(Debug, Args)]
struct PublishArgs {
    #[command(flatten)]
    amis: AmiArgs,
    #[command(flatten)]
    keys: KeyArgs,
    /// Account to grant launch permission (repeatable).
    #[arg(long = "ami-user", value_name = "ACCOUNT")]
    ami_users: Vec<String>,
    /// Organization ARN to grant launch permission (repeatable).
    #[arg(long = "ami-org-arn", value_name = "ARN")]
    ami_org_arns: Vec<String>,
    /// Organizational unit ARN to grant launch permission (repeatable).
    #[arg(long = "ami-ou-arn", value_name = "ARN")]
    ami_ou_arns: Vec<String>,
    /// Account to grant createVolumePermission on every snapshot (repeatable).
    #[arg(long = "snapshot-user", value_name = "ACCOUNT")]
    snapshot_users: Vec<String>,
    /// SSM path to publish <path>/image_id, <path>/kms_key_arn and <path>/snapshot_ids under.
    #[arg(long, value_name = "PATH")]
    ssm_path: Option<String>,
    /// Consumer account to publish the parameters in too (repeatable; needs --publish-role-name).
    #[arg(long = "publish-account", value_name = "ACCOUNT")]
    publish_accounts: Vec<String>,
    /// Role assumed in each publish account: arn:aws:iam::ACCOUNT:role/NAME.
    #[arg(long, value_name = "NAME")]
    publish_role_name: Option<String>,
    /// Print the plan; make no write call.
    #[arg(long)]
    dry_run: bool,
    /// Also remove launch and create-volume permissions that are not configured.
    #[arg(long)]
    prune: bool,
    /// Allow "all" in --ami-user / --snapshot-user (public AMIs).
    #[arg(long)]
    allow_public: bool,
    #[command(flatten)]
    lifecycle: LifecycleArgs,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    out: OutArgs,
}

#[derive(Debug, Args)]
struct LifecycleArgs {
    /// Deprecate every regional AMI at this RFC 3339 time, e.g. 2027-01-31T00:00:00Z (verified).
    #[arg(long, value_name = "TIME")]
    deprecate_at: Option<String>,
    /// Deprecate every regional AMI this long after its creation, e.g. 90d (verified).
    #[arg(long, value_name = "DURATION")]
    deprecate_after: Option<String>,
    /// Turn on deregistration protection on every regional AMI (verified).
    #[arg(long)]
    deregistration_protection: bool,
    /// With --deregistration-protection: stay protected 24 h after it is turned off.
    #[arg(long)]
    deregistration_protection_cooldown: bool,
}

fn overlay_lifecycle(s: &mut Settings, l: &LifecycleArgs) {
    if l.deprecate_at.is_some() {
        s.deprecate_at = l.deprecate_at.clone();
    }
    if l.deprecate_after.is_some() {
        s.deprecate_after = l.deprecate_after.clone();
    }
    s.deregistration_protection |= l.deregistration_protection;
    s.deregistration_protection_cooldown |= l.deregistration_protection_cooldown;
}

/// A CLI failure: printed once, exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or config file.
    #[error("{0}")]
    Input(String),
    /// The producer run (check, publish) failed.
    #[error(transparent)]
    Producer(#[from] producer::ProducerError),
}

fn load_config(path: &Option<PathBuf>) -> Result<Settings, CliError> {
    let Some(path) = path else { return Ok(Settings::default()) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Input(format!("cannot read --config {}: {e}", path.display())))?;
    crate::core::config::parse_hcl(&text)
        .map_err(|e| CliError::Input(format!("--config {}: {e}", path.display())))
}

fn parse_region_keys(pairs: &[String], into: &mut Settings) -> Result<(), CliError> {
    for p in pairs {
        let Some((r, k)) = p.split_once('=') else {
            return Err(CliError::Input(format!(
                "--region-kms-key-id {p:?}: expected REGION=KEY, e.g. eu-west-1=alias/images"
            )));
        };
        into.region_kms_key_ids.insert(r.trim().to_string(), k.trim().to_string());
    }
    Ok(())
}

fn overlay_common(s: &mut Settings, keys: &KeyArgs, aws: &AwsArgs) -> Result<(), CliError> {
    if keys.kms_key_id.is_some() {
        s.kms_key_id = keys.kms_key_id.clone();
    }
    parse_region_keys(&keys.region_kms_key_ids, s)?;
    overlay_aws(s, aws);
    Ok(())
}

impl AwsArgs {
    /// The SDK options these flags give, for commands without a `--config` file.
    fn options(&self) -> crate::aws::AwsOptions {
        let mut s = Settings::default();
        overlay_aws(&mut s, self);
        crate::aws::AwsOptions::from_settings(&s)
    }
}

fn overlay_aws(s: &mut Settings, aws: &AwsArgs) {
    if aws.profile.is_some() {
        s.profile = aws.profile.clone();
    }
    if aws.region.is_some() {
        s.region = aws.region.clone();
    }
    if aws.endpoint_url.is_some() {
        s.endpoint_url = aws.endpoint_url.clone();
    }
    if aws.max_retries.is_some() {
        s.max_retries = aws.max_retries;
    }
    s.skip_region_validation |= aws.skip_region_validation;
}

fn replace_if_given(target: &mut Vec<String>, given: &[String]) {
    if !given.is_empty() {
        *target = given.to_vec();
    }
}

fn ami_set(a: &AmiArgs, skip: bool) -> Result<AmiSet, CliError> {
    let mut entries: Vec<&str> = a.amis.iter().map(String::as_str).collect();
    if let Some(id) = &a.artifact {
        entries.push(id);
    }
    AmiSet::from_pairs(entries, skip).map_err(|e| CliError::Input(e.to_string()))
}

async fn run_producer(
    settings: Settings,
    amis: AmiSet,
    opts: RunOptions,
    out: &OutArgs,
) -> Result<ExitCode, CliError> {
    let progress = output::StderrProgress::new(out.verbose);
    let cancel = CancellationToken::new();
    let ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.cancel();
        }
    });
    let report = producer::run(&settings, &amis, opts, &progress, &cancel).await?;
    output::print_report(&report, out.format, out.verbose > 0);
    Ok(if report.has_errors() {
        ExitCode::from(2)
    } else if !report.findings().is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Check(a) => {
            output::init_logging(a.out.verbose);
            let mut s = load_config(&a.out.config)?;
            overlay_common(&mut s, &a.keys, &a.aws)?;
            let amis = ami_set(&a.amis, s.skip_region_validation)?;
            run_producer(s, amis, RunOptions { mode: Mode::Check, dry_run: false }, &a.out).await
        }
        Command::Preflight(a) => preflight::run(a).await,
        Command::Lint(a) => lint::run(a).await,
        Command::Audit(a) => audit::run(a).await,
        Command::Publish(a) => {
            output::init_logging(a.out.verbose);
            let mut s = load_config(&a.out.config)?;
            overlay_common(&mut s, &a.keys, &a.aws)?;
            replace_if_given(&mut s.ami_users, &a.ami_users);
            replace_if_given(&mut s.ami_org_arns, &a.ami_org_arns);
            replace_if_given(&mut s.ami_ou_arns, &a.ami_ou_arns);
            replace_if_given(&mut s.snapshot_users, &a.snapshot_users);
            replace_if_given(&mut s.publish_accounts, &a.publish_accounts);
            if a.ssm_path.is_some() {
                s.ssm_path = a.ssm_path.clone();
            }
            if a.publish_role_name.is_some() {
                s.publish_role_name = a.publish_role_name.clone();
            }
            s.prune |= a.prune;
            s.allow_public |= a.allow_public;
            overlay_lifecycle(&mut s, &a.lifecycle);
            let amis = ami_set(&a.amis, s.skip_region_validation)?;
            run_producer(s, amis, RunOptions { mode: Mode::Publish, dry_run: a.dry_run }, &a.out).await
        }
        Command::Grant(a) => grant::run(a).await,
        Command::Doctor(a) => doctor::run(a).await,
        Command::Policy(a) => policy::run(a).await,
        Command::Copy(a) => copy::run(a).await,
        Command::Retire(a) => retire::run(a).await,
        Command::Rollback(a) => rollback::run(a).await,
    }
}

/// Entry point of the `amikey` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(lint::normalize_args(std::env::args_os()));
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            output::error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    let code = match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            output::error(&e.to_string());
            ExitCode::from(2)
        }
    };
    output::exit_code(code)
}
