//! `amikey policy generate` and `amikey policy check`: the key-policy statements consumers need,
//! merged into a key's current policy on request, the IAM identity policy for roles that use the
//! key through EC2 (Karpenter), and the check of a key's (and each replica's) policy for
//! consumer accounts. Statement shapes live in [`crate::core::policy`].

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::grant::{ConsumerAws, cli_error};
use super::{CliError, Format, output};
use crate::aws::Aws;
use crate::consumer;
use crate::core::policy::{self, Consumers};

/// `amikey policy` flags.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print the key-policy statements consumer accounts need (JSON), optionally merged into a
    /// key's current policy, or the IAM identity policy for consumer roles.
    #[command(
        after_help = "Statements (stable Sids AmikeyConsumerCrypto, AmikeyConsumerGrants) follow AWS's \
cross-account example: crypto actions, and CreateGrant/ListGrants/RevokeGrant without \
kms:GrantIsForAWSResource, because the consumer grants its own service-linked roles.\n\n\
Examples:\n  \
amikey policy generate --consumer-account 111122223333 --consumer-account 444455556666\n  \
amikey policy generate --org-id o-abc123 --via-service-region eu-west-1 --via-service-region us-east-1\n  \
amikey policy generate --consumer-account 111122223333 --key alias/images --region eu-west-1 --merge > policy.json\n    \
&& aws kms put-key-policy --key-id alias/images --policy-name default --policy file://policy.json\n  \
amikey policy generate --identity-policy --ssm-path /images/golden     # in the consumer account\n\n\
Output is always JSON. Exit codes: 0 printed, 2 bad input or an AWS error."
    )]
    Generate(GenerateArgs),
    /// Check a key's policy (and each multi-Region replica's) for consumer accounts.
    #[command(
        after_help = "Evaluates the key policy for every KMS call the launch chain makes (the consumer's \
DescribeKey, ListGrants and CreateGrant for its service-linked role; EC2's DescribeKey, CreateGrant, \
Decrypt, GenerateDataKeyWithoutPlaintext, ReEncrypt* on the consumer's behalf). Finding codes: \
CONSUMER_CANNOT_CREATE_GRANT, CONSUMER_CANNOT_LIST_GRANTS, CONSUMER_CANNOT_DESCRIBE_KEY, \
CONSUMER_CANNOT_DECRYPT, CONSUMER_CANNOT_USE_KEY, GRANT_REQUIRES_AWS_RESOURCE, EXPLICIT_DENY, \
UNSUPPORTED_CONDITION, MALFORMED_POLICY. The consumer's own IAM policies are not visible here.\n\n\
Example:\n  \
amikey policy check --key arn:aws:kms:eu-west-1:444455556666:key/mrk-0123 --consumer-account 111122223333\n\n\
Exit codes: 0 no finding, 1 findings, 2 bad input or an AWS error."
    )]
    Check(CheckPolicyArgs),
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Consumer account (repeatable or comma-separated).
    #[arg(
        long = "consumer-account",
        value_name = "ACCOUNT",
        value_delimiter = ',',
        conflicts_with = "org_id"
    )]
    accounts: Vec<String>,
    /// Every account of this organization instead (aws:PrincipalOrgID).
    #[arg(long, value_name = "o-…")]
    org_id: Option<String>,
    /// Limit the crypto statement to EC2 in these regions (kms:ViaService; repeatable).
    #[arg(long = "via-service-region", value_name = "REGION", value_delimiter = ',')]
    via_service_regions: Vec<String>,
    /// The key whose current policy to merge into (id, alias or ARN; with --merge).
    #[arg(long, value_name = "KEY", requires = "merge")]
    key: Option<String>,
    /// Print the key's current policy (GetKeyPolicy, name default) with the statements merged in.
    #[arg(long, requires = "key")]
    merge: bool,
    /// Print the IAM identity policy for consumer roles using the keys through EC2 (Karpenter).
    #[arg(long, conflicts_with_all = ["accounts", "org_id", "merge"])]
    identity_policy: bool,
    /// With --identity-policy: a published key ARN (repeatable).
    #[arg(long = "key-arn", value_name = "ARN", requires = "identity_policy")]
    key_arns: Vec<String>,
    /// With --identity-policy: the producer's ssm_path, read in each --region (default every region).
    #[arg(long, value_name = "PATH", requires = "identity_policy")]
    ssm_path: Option<String>,
    /// Region of --key when it is not an ARN; with --ssm-path, the regions to read (repeatable).
    #[arg(long = "region", value_name = "REGION", value_delimiter = ',')]
    regions: Vec<String>,
    #[command(flatten)]
    aws: ConsumerAws,
}

#[derive(Debug, Args)]
struct CheckPolicyArgs {
    /// The key (id, alias or ARN; an alias or id needs --region).
    #[arg(long, value_name = "KEY")]
    key: String,
    /// Consumer account to check (repeatable or comma-separated).
    #[arg(long = "consumer-account", value_name = "ACCOUNT", value_delimiter = ',', required = true)]
    accounts: Vec<String>,
    /// Region of --key when it is not an ARN.
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    #[command(flatten)]
    aws: ConsumerAws,
}

fn home(key: Option<&str>, regions: &[String]) -> Option<String> {
    key.and_then(crate::core::ids::arn_region)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .or_else(|| regions.first().cloned())
}

async fn generate(a: GenerateArgs) -> Result<ExitCode, CliError> {
    if a.identity_policy {
        let mut keys: Vec<String> = a.key_arns.iter().map(|k| k.trim().to_string()).collect();
        for k in &keys {
            consumer::check_key_arn(k).map_err(cli_error)?;
        }
        if let Some(p) = &a.ssm_path {
            consumer::key_parameter(p).map_err(cli_error)?;
            let aws =
                Aws::connect(&a.aws.options(None), a.regions.first().map_or("us-east-1", String::as_str))
                    .await;
            let (_, found) = consumer::published_keys(&aws, p, &a.regions).await.map_err(cli_error)?;
            keys.extend(found.into_values());
        }
        if keys.is_empty() {
            return Err(CliError::Input(
                "--identity-policy needs the published keys: --key-arn ARN or --ssm-path PATH".into(),
            ));
        }
        let doc = policy::identity_policy(&keys).map_err(|e| CliError::Input(e.to_string()))?;
        output::print_json(&doc);
        return Ok(ExitCode::SUCCESS);
    }
    let consumers = match (&a.org_id, a.accounts.is_empty()) {
        (Some(o), _) => Consumers::OrgId(o.trim().to_string()),
        (None, false) => Consumers::Accounts(a.accounts.iter().map(|s| s.trim().to_string()).collect()),
        (None, true) => {
            return Err(CliError::Input(
                "who consumes the key? pass --consumer-account ACCOUNT (repeatable) or --org-id o-…, or --identity-policy"
                    .into(),
            ));
        }
    };
    let via = (!a.via_service_regions.is_empty()).then_some(a.via_service_regions.as_slice());
    let statements = policy::generate(&consumers, via).map_err(|e| CliError::Input(e.to_string()))?;
    let Some(key) = a.key.as_deref().filter(|_| a.merge) else {
        output::print_json(&statements);
        return Ok(ExitCode::SUCCESS);
    };
    let Some(region) = home(Some(key), &a.regions) else {
        return Err(CliError::Input(format!("--key {key:?} is not an ARN: pass --region for it")));
    };
    let aws = Aws::connect(&a.aws.options(Some(region.clone())), &region).await;
    // GetKeyPolicy takes only a key id or ARN: resolve an alias first.
    let arn = crate::aws::read::describe_key(&aws, &region, key).await.map_err(|e| cli_error(e.into()))?.arn;
    let text =
        crate::aws::read::get_key_policy(&aws, &region, &arn).await.map_err(|e| cli_error(e.into()))?;
    let current: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Input(format!("the current policy of {key} is not JSON ({e})")))?;
    let merged = policy::merge(&current, &statements).map_err(|e| CliError::Input(format!("{key}: {e}")))?;
    output::print_json(&merged);
    Ok(ExitCode::SUCCESS)
}

async fn check(a: CheckPolicyArgs) -> Result<ExitCode, CliError> {
    let regions: Vec<String> = a.region.iter().cloned().collect();
    let Some(region) = home(Some(&a.key), &regions) else {
        return Err(CliError::Input(format!("--key {:?} is not an ARN: pass --region for it", a.key)));
    };
    let aws = Aws::connect(&a.aws.options(Some(region.clone())), &region).await;
    let report = consumer::policy_check(&aws, &a.key, &a.accounts).await.map_err(cli_error)?;
    match a.aws.format {
        Format::Text => output::stdout(&report.render_text()),
        Format::Json => output::print_json(&report),
    }
    Ok(if report.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Runs `amikey policy …`.
pub async fn run(args: PolicyArgs) -> Result<ExitCode, CliError> {
    match args.command {
        PolicyCommand::Generate(a) => {
            output::init_logging(a.aws.verbose);
            generate(a).await
        }
        PolicyCommand::Check(a) => {
            output::init_logging(a.aws.verbose);
            check(a).await
        }
    }
}
