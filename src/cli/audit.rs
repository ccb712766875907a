//! `amikey audit`: scan every AMI the account owns (or those `--ami-filter` selects) in every
//! region (or `--regions`) and report images that are unencrypted, under an AWS managed key,
//! under a key that is disabled, pending deletion or gone, or shared with accounts whose key
//! access is missing. Read-only.

use std::process::ExitCode;

use clap::Args;

use super::{AwsArgs, CliError, Format, output};
use crate::aws::Aws;
use crate::aws::audit::gather_audit;
use crate::aws::read::describe_regions;
use crate::core::artifact::valid_region;
use crate::core::audit::AuditReport;
use crate::producer::Progress;

/// Flags of `amikey audit`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
amikey audit\n  \
amikey audit --regions us-east-1,eu-west-1 --ami-filter name=base-* --format json\n  \
amikey audit --ami-filter tag:team=platform --ami-filter tag:env=prod\n\n\
Finding codes: UNENCRYPTED, AWS_MANAGED_KEY, KEY_DISABLED, KEY_PENDING_DELETION, KEY_UNAVAILABLE, \
KEY_NOT_FOUND, KEY_ACCESS_DENIED, SNAPSHOT_NOT_FOUND, SHARED_KEY_INACCESSIBLE (the key policy does not \
let an account the AMI is shared with launch it), KEY_POLICY_UNREADABLE.\n\n\
Calls: DescribeRegions (without --regions); per region DescribeImages (Owners=self, paginated), \
DescribeSnapshots (200 ids per call), DescribeImageAttribute per AMI, DescribeKey per key, GetKeyPolicy \
per key of a shared AMI. At most --concurrency calls are in flight.\n\n\
Exit codes: 0 no finding, 1 findings, 2 error (bad input, or a region could not be scanned: the others \
are still reported).")]
pub struct AuditArgs {
    /// Regions to scan, comma-separated or repeated (default: every region enabled for the account).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    regions: Vec<String>,
    /// DescribeImages filter NAME=VALUE (repeatable; same NAME twice = either value), e.g.
    /// name=base-*, tag:team=platform.
    #[arg(long = "ami-filter", value_name = "NAME=VALUE")]
    ami_filters: Vec<String>,
    /// Maximum AWS calls in flight, across all regions.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    #[command(flatten)]
    aws: AwsArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// More detail on stderr (-v progress, -vv debug logs).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn parse_filters(items: &[String]) -> Result<Vec<(String, String)>, CliError> {
    items
        .iter()
        .map(|f| match f.split_once('=') {
            Some((n, v)) if !n.trim().is_empty() && !v.is_empty() => {
                Ok((n.trim().to_string(), v.to_string()))
            }
            _ => Err(CliError::Input(format!(
                "--ami-filter {f:?}: expected NAME=VALUE, e.g. name=base-* or tag:team=platform"
            ))),
        })
        .collect()
}

/// Runs `amikey audit`.
pub async fn run(args: AuditArgs) -> Result<ExitCode, CliError> {
    output::init_logging(args.verbose);
    let filters = parse_filters(&args.ami_filters)?;
    let mut regions: Vec<String> =
        args.regions.iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
    regions.sort();
    regions.dedup();
    let unknown: Vec<&String> =
        regions.iter().filter(|r| !valid_region(r, args.aws.skip_region_validation)).collect();
    if !unknown.is_empty() {
        return Err(CliError::Input(format!(
            "unknown region(s) {unknown:?} (check the spelling, or pass --skip-region-validation)"
        )));
    }
    let aws =
        Aws::connect(&args.aws.options(), regions.first().map(String::as_str).unwrap_or("us-east-1")).await;
    if regions.is_empty() {
        regions = describe_regions(&aws).await.map_err(|e| {
            CliError::Input(format!("cannot list the account's regions ({e}); pass --regions instead"))
        })?;
    }
    let progress = output::StderrProgress::new(args.verbose);
    progress.say(&format!("Scanning owned AMIs in {} region(s): {}", regions.len(), regions.join(", ")));
    let (facts, errors) = gather_audit(&aws, &regions, &filters, usize::from(args.concurrency)).await;
    let report = AuditReport::build(&facts, errors);
    match args.format {
        Format::Text => output::stdout(&report.render_text()),
        Format::Json => output::print_json(&serde_json::json!({
            "regions": report.regions,
            "findings": report.findings,
            "errors": report.errors,
            "summary": report.summary(),
        })),
    }
    Ok(ExitCode::from(report.exit_code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_need_a_name_and_a_value() {
        assert_eq!(
            parse_filters(&["name=base-*".into(), "tag:team=a=b".into()]).unwrap(),
            vec![("name".into(), "base-*".into()), ("tag:team".into(), "a=b".into())]
        );
        for bad in ["name", "=x", "name="] {
            let e = parse_filters(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains("expected NAME=VALUE"), "{bad}: {e}");
        }
    }
}
