//! `amikey rollback`: point `<PATH>/image_id`, `kms_key_arn` and `snapshot_ids` back at earlier
//! images in every region and publish account at once, after verifying them as `publish` does.

use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{AwsArgs, CliError, KeyArgs, OutArgs, load_config, output};
use crate::core::artifact::AmiSet;
use crate::lifecycle::{self, RollbackOutcome, RollbackTarget};

/// Help after the flags.
pub const AFTER_HELP: &str = "Targets: --to-version N takes, in each of --regions, the image that version N of \
PATH/image_id held (the same N everywhere: `aws ssm get-parameter-history --name PATH/image_id` lists them); \
--to-image REGION:AMI,… names them directly.\n\n\
The targets are verified first with the same check as publish (every snapshot under the intended customer \
managed key, snapshots present, sharing to --ami-user/--publish-account). The intended key is --kms-key-id / \
--region-kms-key-id / --config; without one, each region keeps the key PATH/kms_key_arn names now. On any \
finding or unreadable region nothing is changed (exit 1 or 2). Otherwise image_id, kms_key_arn and \
snapshot_ids are re-pointed in every region and publish account.\n\n\
SSM keeps 100 versions of a parameter and refuses a new one when the oldest carries a label \
(ParameterMaxVersionLimitExceeded): rollback checks this before writing and stops with the label to move; \
it never deletes history.\n\n\
Examples:\n  \
amikey rollback --ssm-path /images/base --regions us-east-1,eu-west-1 --to-version 6 --dry-run\n  \
amikey rollback --ssm-path /images/base --to-image us-east-1:ami-0123456789abcdef0,eu-west-1:ami-0fedcba9876543210\n\n\
Exit codes: 0 re-pointed (or planned), 1 a target fails verification (nothing changed), 2 bad input or an AWS error.";

/// `amikey rollback` flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_version", "to_image"])))]
pub struct RollbackArgs {
    /// The published path.
    #[arg(long, value_name = "PATH")]
    ssm_path: Option<String>,
    /// Go back to the image version N of PATH/image_id held, in each region.
    #[arg(long, value_name = "N")]
    to_version: Option<i64>,
    /// Go back to these images: REGION:AMI,REGION:AMI.
    #[arg(long, value_name = "REGION:AMI,…")]
    to_image: Option<String>,
    /// Regions (with --to-version), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "R1,R2")]
    regions: Vec<String>,
    #[command(flatten)]
    keys: KeyArgs,
    /// Account to grant launch permission (repeatable), as publish.
    #[arg(long = "ami-user", value_name = "ACCOUNT")]
    ami_users: Vec<String>,
    /// Consumer account whose parameters to re-point too (repeatable; needs --publish-role-name).
    #[arg(long = "publish-account", value_name = "ACCOUNT")]
    publish_accounts: Vec<String>,
    /// Role assumed in each publish account.
    #[arg(long, value_name = "NAME")]
    publish_role_name: Option<String>,
    /// Verify and print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    out: OutArgs,
}

/// Runs `amikey rollback`.
pub async fn run(a: RollbackArgs) -> Result<ExitCode, CliError> {
    output::init_logging(a.out.verbose);
    let mut s = load_config(&a.out.config)?;
    super::overlay_common(&mut s, &a.keys, &a.aws)?;
    super::replace_if_given(&mut s.ami_users, &a.ami_users);
    super::replace_if_given(&mut s.publish_accounts, &a.publish_accounts);
    if a.ssm_path.is_some() {
        s.ssm_path = a.ssm_path.clone();
    }
    if a.publish_role_name.is_some() {
        s.publish_role_name = a.publish_role_name.clone();
    }
    let target = match (&a.to_version, &a.to_image) {
        (Some(v), _) => RollbackTarget::Version(*v),
        (None, Some(list)) => RollbackTarget::Images(
            AmiSet::parse_artifact(list, s.skip_region_validation)
                .map_err(|e| CliError::Input(e.to_string()))?,
        ),
        (None, None) => return Err(CliError::Input("give --to-version N or --to-image REGION:AMI,…".into())),
    };
    let regions: Vec<String> =
        a.regions.iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
    let progress = output::StderrProgress::new(a.out.verbose);
    let cancel = CancellationToken::new();
    let ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.cancel();
        }
    });
    match lifecycle::rollback(&s, &target, &regions, a.dry_run, &progress, &cancel).await? {
        RollbackOutcome::Done(report) => {
            output::print_report(&report, a.out.format, a.out.verbose > 0);
            Ok(if report.has_errors() { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        RollbackOutcome::Refused(report) => {
            output::print_report(&report, a.out.format, a.out.verbose > 0);
            output::error(
                "rollback refused: a target failed verification (or a region could not be read); nothing was changed",
            );
            Ok(ExitCode::from(if report.findings().is_empty() { 2 } else { 1 }))
        }
    }
}
