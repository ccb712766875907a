//! `amikey grant`: in the consumer account, give service-linked roles (and other roles) a KMS
//! grant on each published key, exactly one per key × region × grantee. Flags → a
//! [`GrantRequest`]; the work is [`crate::consumer::grant`]. Also holds the AWS flags the consumer
//! commands share ([`ConsumerAws`]).

use std::process::ExitCode;

use clap::Args;

use super::{CliError, Format, output};
use crate::aws::AwsOptions;
use crate::consumer::{self, ConsumerError, GrantRequest};
use crate::core::grants::{Grantee, catalog_entry};

/// AWS flags of the consumer commands.
#[derive(Debug, Args)]
pub struct ConsumerAws {
    /// Shared-config profile (the consumer account's).
    #[arg(long)]
    pub profile: Option<String>,
    /// Endpoint for every AWS service, e.g. an emulator (AWS_ENDPOINT_URL works too).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Retries per AWS call after the first attempt, as packer-plugin-amazon counts them
    /// (standard retry mode with backoff; default 4).
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Accept region names amikey does not know.
    #[arg(long)]
    pub skip_region_validation: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// More detail on stderr (-vv debug logs).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl ConsumerAws {
    /// The SDK options (region from the environment or profile; callers pass a fallback).
    pub fn options(&self, home_region: Option<String>) -> AwsOptions {
        AwsOptions {
            profile: self.profile.clone(),
            region: home_region,
            endpoint_url: self.endpoint_url.clone(),
            max_attempts: crate::core::config::max_attempts(self.max_retries),
            ..Default::default()
        }
    }
}

/// Maps a consumer-side error to the CLI's.
pub fn cli_error(e: ConsumerError) -> CliError {
    CliError::Input(e.to_string())
}

/// `amikey grant` flags.
#[derive(Debug, Args)]
#[command(after_help = "Which keys (at least one):\n  \
--ssm-path PATH     reads PATH/kms_key_arn in each --region, or in every region where it exists\n                      \
(a parameter shared with this account may be named by its full ARN)\n  \
--ami REGION:AMI    the keys of the AMI's snapshots (when they are visible to this account)\n  \
--key-arn ARN       a key ARN; a multi-Region key gets one grant per replica (limit with --region)\n\n\
Grantees (default: --service autoscaling): --service autoscaling | AWSServiceRoleForAutoScaling_SUFFIX | spot |\n\
spot-fleet | ec2-fleet | ecs-autoscaling (needs none), and --grantee-role ARN for Karpenter or EKS roles.\n\
The catalog of service-linked roles and their operations is in README \"Consumer side\".\n\n\
Grants are named deterministically (amikey-<service>-<hash>) and listed before any is created, so re-runs\n\
and retries never duplicate. --retire-stale retires amikey's own grants on keys the parameter held before\n\
(its history) but no longer does.\n\n\
Examples:\n  \
amikey grant --ssm-path /images/golden --dry-run\n  \
amikey grant --ssm-path /images/golden --region eu-west-1 --region us-east-1 --service autoscaling --service spot\n  \
amikey grant --key-arn arn:aws:kms:eu-west-1:444455556666:key/mrk-0123 --grantee-role arn:aws:iam::111122223333:role/KarpenterNodeRole\n  \
amikey grant --ami eu-west-1:ami-0123456789abcdef0 --format json\n\n\
Exit codes: 0 every grant in place, 1 something missing that amikey could not fix (KMS AccessDenied: the\n\
key policy lacks a permission, and the `amikey policy generate` line that adds it is printed; a\n\
service-linked role that does not exist yet; an aws/ebs or disabled key), 2 bad input or another AWS error.")]
pub struct GrantArgs {
    /// The producer's ssm_path (or a shared parameter's ARN); the key is PATH/kms_key_arn.
    #[arg(long, value_name = "PATH")]
    ssm_path: Option<String>,
    /// An AMI whose snapshots' keys to grant on, REGION:AMI (repeatable).
    #[arg(long = "ami", value_name = "REGION:AMI")]
    amis: Vec<String>,
    /// A key ARN to grant on (repeatable).
    #[arg(long = "key-arn", value_name = "ARN")]
    key_arns: Vec<String>,
    /// Region to work in (repeatable or comma-separated). Default with --ssm-path: every region.
    #[arg(long = "region", value_name = "REGION", value_delimiter = ',')]
    regions: Vec<String>,
    /// Service-linked role to grant (repeatable); see the catalog.
    #[arg(long = "service", value_name = "SERVICE")]
    services: Vec<String>,
    /// Any IAM role to grant, by ARN (repeatable).
    #[arg(long = "grantee-role", value_name = "ARN")]
    roles: Vec<String>,
    /// Retire amikey's own grants on keys no longer published (needs --ssm-path).
    #[arg(long)]
    retire_stale: bool,
    /// Print the plan; make no write call.
    #[arg(long)]
    dry_run: bool,
    /// Refused with an explanation: creating a role needs IAM, which amikey does not call.
    #[arg(long)]
    create_service_linked_role: bool,
    #[command(flatten)]
    aws: ConsumerAws,
}

/// The refusal for `--create-service-linked-role`, with the commands to run instead.
pub fn create_role_refusal(services: &[String]) -> String {
    let mut cmds: Vec<String> = services
        .iter()
        .filter_map(|s| match Grantee::parse_service(s.trim()) {
            Ok(Grantee::Service { service, suffix }) => {
                catalog_entry(&service).map(|e| e.create_command(suffix.as_deref()))
            }
            _ => None,
        })
        .collect();
    if services.is_empty() {
        cmds.push("aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com".into());
    }
    cmds.sort();
    cmds.dedup();
    format!(
        "--create-service-linked-role is not done by amikey: creating a role needs the IAM API \
         (iam:CreateServiceLinkedRole), and amikey calls only EC2, KMS, SSM and STS so that its \
         permissions stay small and auditable. Run, as an identity allowed to create it:\n  {}\n\
         then run amikey grant again without --create-service-linked-role.",
        cmds.join("\n  ")
    )
}

/// Runs `amikey grant`.
pub async fn run(args: GrantArgs) -> Result<ExitCode, CliError> {
    output::init_logging(args.aws.verbose);
    if args.create_service_linked_role {
        return Err(CliError::Input(create_role_refusal(&args.services)));
    }
    let req = GrantRequest {
        ssm_path: args.ssm_path,
        amis: args.amis,
        key_arns: args.key_arns,
        regions: args.regions,
        services: args.services,
        roles: args.roles,
        retire_stale: args.retire_stale,
        dry_run: args.dry_run,
        skip_region_validation: args.aws.skip_region_validation,
        release: false,
    };
    let report = consumer::grant(&args.aws.options(None), &req).await.map_err(cli_error)?;
    match args.aws.format {
        Format::Text => output::stdout(&report.render_text()),
        Format::Json => output::print_json(&report),
    }
    Ok(ExitCode::from(report.exit_code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_prints_the_iam_commands() {
        let m = create_role_refusal(&["AWSServiceRoleForAutoScaling_prod".into(), "spot".into()]);
        assert!(m.contains(
            "aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com --custom-suffix prod"
        ));
        assert!(m.contains("aws iam create-service-linked-role --aws-service-name spot.amazonaws.com"));
        assert!(create_role_refusal(&[]).contains("autoscaling.amazonaws.com"));
    }
}
