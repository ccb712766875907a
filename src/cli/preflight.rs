//! `amikey preflight`: before a build, per region it will touch, does the intended key exist
//! there, is it enabled, customer managed and in that region; is EBS encryption by default on and
//! with which key; can the consumers (`ami_users`) use the key as far as its policy says. The
//! regions and keys come from a Packer template (`--template`, evaluated with `-var`/`-var-file`
//! as `amikey lint` does), from `--config`, or from flags. Owns flag handling only: the
//! template's intent is [`crate::lint::intent`]'s, the checks are [`crate::producer`]'s.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{AwsArgs, CliError, Format, KeyArgs, OutArgs, load_config, output, overlay_common};
use crate::core::preflight::{PreflightFinding, Severity};
use crate::lint::intent::template_intent;
use crate::producer::{self, PreflightTarget};

/// Examples and exit codes under `amikey preflight --help`.
pub const AFTER_HELP: &str = "Where the regions and keys come from:
  --template FILE|DIR   every amazon AMI builder: region + ami_regions; the builder's kms_key_id
                        (build region) and region_kms_key_ids (copies), else the amikey
                        post-processor's; ami_users of both are the consumers checked
  --config FILE         region_kms_key_ids, kms_key_id, region, ami_users of an amikey block
  --regions R1,R2       restricts (or, without a template, names) the regions
  --kms-key-id / --region-kms-key-id override the keys in every mode.

Examples:
  amikey preflight --template build.pkr.hcl -var-file prod.pkrvars.hcl
  amikey preflight --regions us-east-1,eu-west-1 --kms-key-id alias/images \\
      --region-kms-key-id eu-west-1=arn:aws:kms:eu-west-1:111122223333:alias/images
  amikey preflight --config amikey.hcl --format json | jq '.regions[].findings'

Codes: NO_INTENDED_KEY, KEY_NOT_FOUND, KEY_ACCESS_DENIED, AWS_MANAGED_KEY, KEY_WRONG_REGION,
KEY_NOT_ENABLED (errors); EBS_DEFAULT_AWS_MANAGED, AMIKEY_KEY_DISAGREES, BUILDERS_DISAGREE,
KEY_POLICY_UNREADABLE and the consumer checks CONSUMER_CANNOT_* / EXPLICIT_DENY (warnings).
AWS calls: GetEbsEncryptionByDefault, GetEbsDefaultKmsKeyId, DescribeKey, GetKeyPolicy (read-only).

Exit codes: 0 no error-level finding (warnings allowed), 1 errors, 2 bad input or AWS error.";

/// `amikey preflight` flags.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// Regions the build will touch, comma-separated or repeated.
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    regions: Vec<String>,
    /// Packer template file or directory to take regions, keys and ami_users from (repeatable).
    #[arg(long = "template", value_name = "FILE|DIR")]
    templates: Vec<PathBuf>,
    /// Template variable NAME=VALUE, as `packer build -var` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Template variables file, as `packer build -var-file` (repeatable).
    #[arg(long = "var-file", value_name = "FILE")]
    var_files: Vec<PathBuf>,
    /// Consumer account whose use of the key is checked against its policy (repeatable; adds
    /// to the template's or config's ami_users).
    #[arg(long = "ami-user", value_name = "ACCOUNT")]
    ami_users: Vec<String>,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    out: OutArgs,
}

/// Runs `amikey preflight`.
pub async fn run(a: PreflightArgs) -> Result<ExitCode, CliError> {
    output::init_logging(a.out.verbose);
    let mut s = load_config(&a.out.config)?;
    overlay_common(&mut s, &a.keys, &a.aws)?;
    let only: BTreeSet<String> =
        a.regions.iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
    let mut consumers: BTreeSet<String> = s.ami_users.iter().cloned().collect();
    consumers.extend(a.ami_users.iter().cloned());
    let mut extra = Vec::new();
    let targets: Vec<PreflightTarget> = if a.templates.is_empty() {
        if !a.vars.is_empty() || !a.var_files.is_empty() {
            return Err(CliError::Input("-var and -var-file need --template FILE|DIR".into()));
        }
        let mut regions = only.clone();
        if regions.is_empty() {
            regions.extend(s.region_kms_key_ids.keys().cloned());
            regions.extend(s.region.clone());
        }
        producer::targets_from_settings(&s, &regions.into_iter().collect::<Vec<_>>())
    } else {
        let vars = super::lint::var_inputs(&a.vars, &a.var_files)?;
        let templates =
            crate::lint::load_templates(&a.templates, &vars).map_err(|e| CliError::Input(e.to_string()))?;
        let intent = template_intent(&templates).map_err(|errs| {
            CliError::Input(format!(
                "cannot take the build's regions and keys from the template:\n  * {}",
                errs.join("\n  * ")
            ))
        })?;
        consumers.extend(intent.ami_users.iter().cloned());
        extra.extend(intent.warnings.iter().map(|w| PreflightFinding {
            severity: Severity::Warning,
            code: w.code,
            region: w.region.clone(),
            message: w.message.clone(),
        }));
        let flag_keys = a.keys.kms_key_id.is_some() || !a.keys.region_kms_key_ids.is_empty();
        let mut targets: Vec<PreflightTarget> = intent
            .keys
            .iter()
            .filter(|(r, _)| only.is_empty() || only.contains(*r))
            .map(|(r, k)| PreflightTarget {
                region: r.clone(),
                key: if flag_keys {
                    s.region_kms_key_ids.get(r).or(s.kms_key_id.as_ref()).cloned()
                } else {
                    k.clone()
                },
            })
            .collect();
        for r in only.iter().filter(|r| !intent.keys.contains_key(*r)) {
            targets.push(PreflightTarget {
                region: r.clone(),
                key: s.region_kms_key_ids.get(r).or(s.kms_key_id.as_ref()).cloned(),
            });
        }
        targets
    };
    let consumers: Vec<String> = consumers.into_iter().collect();
    let report = producer::preflight_targets(&s, &targets, &consumers, extra).await?;
    match a.out.format {
        Format::Text => output::stdout(&report.render_text()),
        Format::Json => output::print_json(&report),
    }
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
