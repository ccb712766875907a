//! `amikey doctor`: in the consumer account, walk the launch chain of one shared encrypted AMI
//! and print a ✔/✘ checklist with the command that fixes each ✘. Flags → a [`DoctorRequest`];
//! the work is [`crate::consumer::doctor`]; read-only.

use std::process::ExitCode;

use clap::Args;

use super::grant::{ConsumerAws, cli_error};
use super::{CliError, Format, output};
use crate::consumer::{self, DoctorRequest};

/// `amikey doctor` flags.
#[derive(Debug, Args)]
#[command(after_help = "Checks, in launch order: the AMI is shared with this account and available, not \
deprecated; its snapshots are visible; they are encrypted with a customer managed key (not aws/ebs); \
each key is reachable (DescribeKey); each service-linked role has a grant on each key; the launch \
template's block-device mappings do not re-encrypt with a key the role cannot use. The last line names \
the likely cause of `Client.InternalError: Client error on launch`.\n\n\
--asg NAME needs the Auto Scaling API, which amikey does not call: pass the group's launch template with \
--launch-template too (amikey prints how to find it). amikey does not read IAM either: a service-linked \
role is shown as verified once a grant names it.\n\n\
Examples:\n  \
amikey doctor --ami eu-west-1:ami-0123456789abcdef0 --ssm-path /images/golden\n  \
amikey doctor --ami eu-west-1:ami-0123456789abcdef0 --launch-template lt-0abc --service spot --format json\n\n\
Exit codes: 0 every check passes (or does not apply), 1 a check fails, 2 bad input or an AWS error.")]
pub struct DoctorArgs {
    /// The AMI to diagnose, REGION:AMI.
    #[arg(long, value_name = "REGION:AMI")]
    ami: String,
    /// The key published for the AMI (when its snapshots are not visible to this account).
    #[arg(long, value_name = "ARN")]
    key_arn: Option<String>,
    /// The producer's ssm_path: reads PATH/kms_key_arn in the AMI's region.
    #[arg(long, value_name = "PATH")]
    ssm_path: Option<String>,
    /// Service-linked role that launches from the AMI (repeatable; default autoscaling).
    #[arg(long = "service", value_name = "SERVICE")]
    services: Vec<String>,
    /// Another role that launches from the AMI, by ARN (repeatable).
    #[arg(long = "grantee-role", value_name = "ARN")]
    roles: Vec<String>,
    /// The Auto Scaling group (a label: give its launch template with --launch-template).
    #[arg(long, value_name = "NAME")]
    asg: Option<String>,
    /// Launch template id (lt-…) or name whose block-device mappings to check.
    #[arg(long, value_name = "ID|NAME")]
    launch_template: Option<String>,
    /// Launch template version (number, $Latest or $Default; default $Default).
    #[arg(long, value_name = "V", requires = "launch_template")]
    launch_template_version: Option<String>,
    #[command(flatten)]
    aws: ConsumerAws,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs `amikey doctor`.
pub async fn run(args: DoctorArgs) -> Result<ExitCode, CliError> {
    output::init_logging(args.aws.verbose);
    let req = DoctorRequest {
        ami: args.ami,
        key_arn: args.key_arn,
        ssm_path: args.ssm_path,
        services: args.services,
        roles: args.roles,
        launch_template: args.launch_template,
        launch_template_version: args.launch_template_version,
        asg: args.asg,
        skip_region_validation: args.aws.skip_region_validation,
    };
    let report = consumer::doctor(&args.aws.options(None), &req, now_unix()).await.map_err(cli_error)?;
    match args.aws.format {
        Format::Text => output::stdout(&report.render_text()),
        Format::Json => output::print_json(&report),
    }
    Ok(ExitCode::from(report.exit_code()))
}
