//! `amikey retire`: delete the images of a lineage that nothing needs any more. Flags → a
//! [`RetireInput`]; the work is [`crate::lifecycle::retire`]; the plan is printed before any
//! write, and nothing is deleted without `--yes`.

use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{AwsArgs, CliError, Format, OutArgs, load_config, output};
use crate::core::lifecycle::KeepPolicy;
use crate::lifecycle::{self, RetireInput, RetireReport};

/// Help after the flags.
pub const AFTER_HELP: &str = "The lineage is the history of PATH/image_id in each region (GetParameterHistory: \
every image publish pointed it at), or with --ami-filter this account's images that match. Never retired, \
each reported with its reason:\n  \
current     the image PATH/image_id points at now\n  \
labelled    a parameter version holding it carries a label (aws ssm label-parameter-version)\n  \
referenced  instances, launch templates or SSM parameters of this account use it (DescribeImageReferences)\n  \
--keep N    the N most recent images of the lineage (the current one counts); default 3\n  \
--keep-days the images created less than D days ago\n  \
protected   deregistration protection is on (reported, never forced)\n  \
owned by    another account's image (a shared one): only its owner can retire it\n\n\
Retiring an image = remove its launch and createVolumePermission shares, then DeregisterImage with \
DeleteAssociatedSnapshots (a snapshot another AMI still uses is kept). The plan is printed first; \
nothing is deleted without --yes, nor with --dry-run. A run stopped half-way is finished by running it \
again; a re-run deletes nothing more. In a consumer account, run it there (--account-role) on its own \
copies, with the ssm_path its copies are published under.\n\n\
Examples:\n  \
amikey retire --ssm-path /images/base --regions us-east-1,eu-west-1 --keep 3            # the plan\n  \
amikey retire --ssm-path /images/base --regions us-east-1,eu-west-1 --keep 3 --yes      # do it\n  \
amikey retire --ami-filter 'name=base-*' --regions eu-west-1 --keep-days 90 --format json\n\n\
Exit codes: 0 done (or planned), 2 bad input or an AWS error (the other regions are still done).";

/// `amikey retire` flags.
#[derive(Debug, Args)]
pub struct RetireArgs {
    /// The published path: the lineage is the history of PATH/image_id.
    #[arg(long, value_name = "PATH")]
    ssm_path: Option<String>,
    /// Instead of --ssm-path: this account's images matching a DescribeImages filter, NAME=VALUE[,VALUE]
    /// (repeatable), e.g. name=base-* or tag:team=platform.
    #[arg(long = "ami-filter", value_name = "NAME=VALUE")]
    ami_filter: Vec<String>,
    /// Regions to retire in, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "R1,R2")]
    regions: Vec<String>,
    /// Keep the N most recent images of the lineage.
    #[arg(long, value_name = "N", default_value_t = 3)]
    keep: usize,
    /// Also keep images created less than D days ago.
    #[arg(long, value_name = "D")]
    keep_days: Option<u32>,
    /// Retire in the account behind this role (arn:aws:iam::ACCOUNT:role/NAME), e.g. a consumer's copies.
    #[arg(long, value_name = "ARN")]
    account_role: Option<String>,
    /// Print the plan only (the default without --yes).
    #[arg(long)]
    dry_run: bool,
    /// Carry the plan out: unshare, deregister, delete the snapshots.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    out: OutArgs,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn print(report: &RetireReport, format: Format) {
    match format {
        Format::Text => output::stdout(&report.render_text()),
        Format::Json => output::print_json(report),
    }
}

/// Runs `amikey retire`.
pub async fn run(a: RetireArgs) -> Result<ExitCode, CliError> {
    output::init_logging(a.out.verbose);
    let mut s = load_config(&a.out.config)?;
    super::overlay_aws(&mut s, &a.aws);
    let input = RetireInput {
        ssm_path: a
            .ssm_path
            .clone()
            .or_else(|| if a.ami_filter.is_empty() { s.ssm_path.clone() } else { None }),
        ami_filter: lifecycle::parse_filters(&a.ami_filter).map_err(CliError::Input)?,
        regions: a.regions.iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect(),
        keep: KeepPolicy { keep: a.keep, keep_days: a.keep_days },
        account_role: a.account_role.clone(),
        dry_run: a.dry_run,
        yes: a.yes,
    };
    let progress = output::StderrProgress::new(a.out.verbose);
    let cancel = CancellationToken::new();
    let ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.cancel();
        }
    });
    let confirmed = a.yes && !a.dry_run;
    let format = a.out.format;
    // The plan goes to stdout before any write (text); JSON prints the final report once.
    let show_plan = move |plan: &RetireReport| {
        if confirmed && format == Format::Text {
            output::stdout(&format!("Plan:\n{}\nRetiring…\n", plan.render_text()));
        }
    };
    let report = lifecycle::retire(&s, &input, now_unix(), &progress, &cancel, &show_plan).await?;
    print(&report, format);
    Ok(if report.has_errors() { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
