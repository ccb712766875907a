//! `amikey copy`: every consumer account owns a verified copy of each regional AMI under its own
//! key. Producer side (push, `--artifact` + `--account`): copies by assumed role into each
//! account. Consumer side (pull, `--from-ssm-path`): reads what the producer published into this
//! account and copies with its own credentials. Owns flag handling only: the work is
//! [`crate::copy`]'s, the decisions [`crate::core::copy`]'s.

use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{AmiArgs, AwsArgs, CliError, Format, OutArgs, ami_set, load_config, output};
use crate::copy::{self, CopyOptions};
use crate::core::config::CopyTo;

/// Examples and exit codes under `amikey copy --help`.
pub const AFTER_HELP: &str =
    "For each account and region, before any copy (each failure is a finding naming account, region,
key and the fix; nothing is touched in that account and region):
  - the AMI is shared with the account (launch permission) and its snapshots (createVolumePermission);
  - the source key's policy lets the account use it for a copy (the missing statement and the
    `amikey policy generate` line are printed);
  - the destination key exists in that account and region, is enabled and customer managed (never
    aws/ebs); an alias is resolved in each account and region.
Then CopyImage in the consumer account (Encrypted, its key, a deterministic ClientToken, tags
amikey:source-image-id, amikey:source-account, managed-by=amikey; name and description carried over),
wait for `available` (--copy-timeout), verify every snapshot is under the consumer's key, and publish
<ssm-path>/image_id, kms_key_arn, snapshot_ids and source_image_id in the consumer account.

A re-run finds its copies by tag and makes no CopyImage call; a copy still pending (timeout, Ctrl-C,
a killed run) keeps going in AWS and the next run adopts it.

Examples:
  # producer: push into two accounts, each with its own key alias in every region
  amikey copy --artifact \"us-east-1:ami-0123456789abcdef0,eu-west-1:ami-0fedcba9876543210\" \\
      --account 210987654321 --account 111122223333 --role-name amikey-copy \\
      --kms-key-id alias/golden --ssm-path /images/golden
  # consumer: pull what the producer published into this account, copy, publish locally
  amikey copy --from-ssm-path /images/golden --regions us-east-1,eu-west-1 \\
      --kms-key-id alias/mine --ssm-path /images/golden-local
  # the post-processor's copy_to blocks, from a --config file
  amikey copy --config amikey.hcl --artifact \"$(jq -r '.builds[-1].artifact_id' packer-manifest.json)\"

Exit codes: 0 every copy done (or planned), 1 findings, 2 bad input, an AWS error, a timeout or a cancel.";

/// `amikey copy` flags.
#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    amis: AmiArgs,
    /// Consumer account to copy into (repeatable; push). Replaces the config's copy_to blocks.
    #[arg(long = "account", value_name = "ACCOUNT")]
    accounts: Vec<String>,
    /// Role assumed in each --account: arn:aws:iam::ACCOUNT:role/NAME.
    #[arg(long, value_name = "NAME")]
    role_name: Option<String>,
    /// The consumer's key for every region: alias/NAME (resolved in each account and region),
    /// key id or key ARN. Never aws/ebs.
    #[arg(long, value_name = "KEY")]
    kms_key_id: Option<String>,
    /// The consumer's key for one region, REGION=KEY (repeatable); overrides --kms-key-id there.
    #[arg(long = "region-kms-key-id", value_name = "REGION=KEY")]
    region_kms_key_ids: Vec<String>,
    /// Publish each copy in its account under this path.
    #[arg(long, value_name = "PATH")]
    ssm_path: Option<String>,
    /// Consumer side: read <PATH>/image_id in each of --regions in this account (or a shared
    /// parameter's ARN prefix) and copy what it names.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["accounts", "artifact", "amis", "role_name"])]
    from_ssm_path: Option<String>,
    /// Only these regions (push: a subset of the AMI regions; pull: where to read and copy).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    regions: Vec<String>,
    /// How long to wait for each copy (45m, 2h, 1h30m).
    #[arg(long, value_name = "DURATION")]
    copy_timeout: Option<String>,
    /// Check the preconditions and print the plan; no CopyImage, no publish.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    out: OutArgs,
}

fn region_keys(pairs: &[String]) -> Result<std::collections::BTreeMap<String, String>, CliError> {
    let mut m = std::collections::BTreeMap::new();
    for p in pairs {
        let Some((r, k)) = p.split_once('=') else {
            return Err(CliError::Input(format!(
                "--region-kms-key-id {p:?}: expected REGION=KEY, e.g. eu-west-1=alias/mine"
            )));
        };
        m.insert(r.trim().to_string(), k.trim().to_string());
    }
    Ok(m)
}

/// Runs `amikey copy`.
pub async fn run(a: CopyArgs) -> Result<ExitCode, CliError> {
    output::init_logging(a.out.verbose);
    let mut s = load_config(&a.out.config)?;
    // The common AWS flags, as every command takes them (keys here are the consumer's).
    super::overlay_common(
        &mut s,
        &super::KeyArgs { kms_key_id: None, region_kms_key_ids: Vec::new() },
        &a.aws,
    )?;
    if a.ssm_path.is_some() {
        s.ssm_path = a.ssm_path.clone();
    }
    if a.copy_timeout.is_some() {
        s.copy_timeout = a.copy_timeout.clone();
    }
    let region_kms_key_ids = region_keys(&a.region_kms_key_ids)?;
    let flag_target = |account: String| CopyTo {
        account,
        kms_key_id: a.kms_key_id.clone(),
        region_kms_key_ids: region_kms_key_ids.clone(),
        regions: a.regions.clone(),
        role_name: a.role_name.clone(),
        ssm_path: None,
    };
    let opts = CopyOptions::from_settings(&s, a.dry_run)?;
    let progress = output::StderrProgress::new(a.out.verbose);
    let cancel = CancellationToken::new();
    let ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.cancel();
        }
    });
    let report = match &a.from_ssm_path {
        Some(from) => {
            let mut regions = a.regions.clone();
            if regions.is_empty() {
                regions.extend(region_kms_key_ids.keys().cloned());
            }
            if regions.is_empty() {
                regions.extend(s.region.clone());
            }
            regions.sort();
            regions.dedup();
            if regions.is_empty() {
                return Err(CliError::Input(
                    "--from-ssm-path needs --regions (where to read the published parameters and copy)"
                        .into(),
                ));
            }
            for r in &regions {
                if !crate::core::artifact::valid_region(r, s.skip_region_validation) {
                    return Err(CliError::Input(format!(
                        "unknown region {r:?} in --regions (check the spelling, or pass --skip-region-validation)"
                    )));
                }
            }
            if a.kms_key_id.is_none() && region_kms_key_ids.is_empty() {
                return Err(CliError::Input(
                    "--from-ssm-path needs this account's key: --kms-key-id alias/NAME (or --region-kms-key-id REGION=KEY)".into(),
                ));
            }
            copy::run_pull(&s, from, &regions, &flag_target(String::new()), opts, &progress, &cancel).await?
        }
        None => {
            if !a.accounts.is_empty() {
                s.copy_to = a.accounts.iter().map(|acct| flag_target(acct.clone())).collect();
            } else if a.kms_key_id.is_some() || !region_kms_key_ids.is_empty() || a.role_name.is_some() {
                // Flags refine the config's blocks.
                for t in &mut s.copy_to {
                    if a.kms_key_id.is_some() {
                        t.kms_key_id = a.kms_key_id.clone();
                    }
                    t.region_kms_key_ids.extend(region_kms_key_ids.clone());
                    if a.role_name.is_some() {
                        t.role_name = a.role_name.clone();
                    }
                }
            }
            if !a.regions.is_empty() {
                for t in &mut s.copy_to {
                    t.regions = a.regions.clone();
                }
            }
            let amis = ami_set(&a.amis, s.skip_region_validation)?;
            copy::run_push(&s, &amis, opts, &progress, &cancel).await?
        }
    };
    match a.out.format {
        Format::Json => output::print_json(&report),
        Format::Text => output::stdout(&report.render_text()),
    }
    Ok(ExitCode::from(report.exit_code()))
}
