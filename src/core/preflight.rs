//! `preflight`: before a build, for every region it will touch: does the intended key exist
//! there, is it enabled, customer managed and in that region; is EBS encryption by default on,
//! and with which key (an AWS managed default silently encrypts un-keyed copies with `aws/ebs`);
//! and, when the AMIs will be shared and the key policy is readable, can each consumer account
//! use the key ([`check_consumers`], warnings: IAM policies and grants can still allow it).

use serde::Serialize;

use super::facts::{KeyLookup, KeyManager};
use super::policy::{Consumer, check_consumers};

/// How bad a preflight finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The build would produce AMIs that fail `check`, or fail itself.
    Error,
    /// Worth knowing; not fatal.
    Warning,
}

/// One preflight problem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PreflightFinding {
    /// Error or warning.
    pub severity: Severity,
    /// Stable code.
    pub code: &'static str,
    /// Region.
    pub region: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// What was gathered for one region.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreflightFacts {
    /// Region.
    pub region: String,
    /// The intended key reference, if configured.
    pub intended_key: Option<String>,
    /// DescribeKey of it.
    pub intended: Option<KeyLookup>,
    /// GetEbsEncryptionByDefault.
    pub ebs_encryption_by_default: Option<bool>,
    /// DescribeKey of GetEbsDefaultKmsKeyId's answer.
    pub ebs_default_key: Option<KeyLookup>,
    /// Accounts the AMIs will be shared with (`ami_users`), sorted.
    pub consumers: Vec<String>,
    /// GetKeyPolicy of the intended key, gathered when there are consumers.
    pub key_policy: Option<KeyPolicyLookup>,
}

/// What GetKeyPolicy answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPolicyLookup {
    /// The policy document (JSON text).
    Found(String),
    /// GetKeyPolicy was refused or failed; why.
    Unreadable(String),
}

/// The result for one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreflightRegion {
    /// Region.
    pub region: String,
    /// Intended key, resolved.
    pub intended_kms_key_arn: Option<String>,
    /// Whether new EBS volumes are encrypted by default.
    pub ebs_encryption_by_default: Option<bool>,
    /// The default EBS key, resolved.
    pub ebs_default_kms_key_arn: Option<String>,
    /// Whether that default key is AWS managed (`aws/ebs`).
    pub ebs_default_key_aws_managed: Option<bool>,
    /// Problems, sorted.
    pub findings: Vec<PreflightFinding>,
}

/// Evaluates one region.
pub fn preflight_region(f: &PreflightFacts) -> PreflightRegion {
    let r = f.region.as_str();
    let mut findings = Vec::new();
    let mut push = |severity, code, message: String| {
        findings.push(PreflightFinding { severity, code, region: r.to_string(), message })
    };
    let mut intended_arn = None;
    match (&f.intended_key, &f.intended) {
        (None, _) => push(
            Severity::Error,
            "NO_INTENDED_KEY",
            format!(
                "{r}: no intended key: set kms_key_id or region_kms_key_ids[\"{r}\"], or the AMI copied to {r} gets the region's default key"
            ),
        ),
        (Some(k), Some(KeyLookup::Found(key))) => {
            intended_arn = Some(key.arn.clone());
            if key.manager == KeyManager::Aws {
                push(
                    Severity::Error,
                    "AWS_MANAGED_KEY",
                    format!(
                        "{r}: {k} is the AWS managed key {}: snapshots under it can never be shared; use a customer managed key",
                        key.arn
                    ),
                );
            }
            if key.region().is_some_and(|kr| kr != r) {
                push(
                    Severity::Error,
                    "KEY_WRONG_REGION",
                    format!(
                        "{r}: {k} resolves to {}, a key in another region; a copy to {r} needs a key (or multi-Region replica) in {r}",
                        key.arn
                    ),
                );
            }
            if key.state != "Enabled" {
                push(
                    Severity::Error,
                    "KEY_NOT_ENABLED",
                    format!(
                        "{r}: {k} ({}) is {}: the copy to {r} would fail with InvalidKMSKey.InvalidState; enable it first",
                        key.arn, key.state
                    ),
                );
            }
        }
        (Some(k), Some(KeyLookup::AccessDenied(why))) => push(
            Severity::Error,
            "KEY_ACCESS_DENIED",
            format!(
                "{r}: this identity cannot describe {k} ({why}): the build's CopyImage needs kms:DescribeKey, kms:CreateGrant, kms:GenerateDataKey* and kms:ReEncrypt* on it"
            ),
        ),
        (Some(k), _) => push(
            Severity::Error,
            "KEY_NOT_FOUND",
            format!("{r}: {k} does not exist in {r}: check the id or alias, or replicate the key to {r}"),
        ),
    }
    let (mut default_arn, mut default_aws) = (None, None);
    if let Some(KeyLookup::Found(k)) = &f.ebs_default_key {
        default_arn = Some(k.arn.clone());
        default_aws = Some(k.manager == KeyManager::Aws);
    }
    if f.ebs_encryption_by_default == Some(true) && default_aws == Some(true) {
        push(
            Severity::Warning,
            "EBS_DEFAULT_AWS_MANAGED",
            format!(
                "{r}: EBS encryption by default is on with the AWS managed key {}: anything copied to {r} without an explicit key (a missing region_kms_key_ids entry) is encrypted with aws/ebs and can never be shared",
                default_arn.as_deref().unwrap_or("aws/ebs")
            ),
        );
    }
    if let (Some(arn), Some(policy)) = (&intended_arn, &f.key_policy)
        && !f.consumers.is_empty()
    {
        match policy {
            KeyPolicyLookup::Found(text) => {
                let doc = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
                let consumers: Vec<Consumer> = f.consumers.iter().map(|a| Consumer::account(a)).collect();
                let mut seen = std::collections::BTreeSet::new();
                for pf in check_consumers(&doc, arn, "", &consumers) {
                    if seen.insert((pf.code, pf.consumer.clone())) {
                        push(Severity::Warning, pf.code.as_str(), format!("{r}: {}", pf.message));
                    }
                }
            }
            KeyPolicyLookup::Unreadable(why) => push(
                Severity::Warning,
                "KEY_POLICY_UNREADABLE",
                format!(
                    "{r}: cannot read the key policy of {arn} ({why}), so whether {} can use the key is unchecked; allow kms:GetKeyPolicy to this identity, or run `amikey doctor` from a consumer account",
                    f.consumers.join(", ")
                ),
            ),
        }
    }
    findings.sort();
    PreflightRegion {
        region: r.to_string(),
        intended_kms_key_arn: intended_arn,
        ebs_encryption_by_default: f.ebs_encryption_by_default,
        ebs_default_kms_key_arn: default_arn,
        ebs_default_key_aws_managed: default_aws,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::facts::KeyFacts;

    fn key(arn: &str, manager: KeyManager, state: &str) -> KeyLookup {
        KeyLookup::Found(KeyFacts {
            arn: arn.into(),
            key_id: "k".into(),
            manager,
            state: state.into(),
            alias: None,
            multi_region: false,
        })
    }

    fn codes(p: &PreflightRegion) -> Vec<&str> {
        p.findings.iter().map(|f| f.code).collect()
    }

    #[test]
    fn good_key_and_customer_default_is_clean() {
        let p = preflight_region(&PreflightFacts {
            region: "eu-west-1".into(),
            intended_key: Some("alias/x".into()),
            intended: Some(key("arn:aws:kms:eu-west-1:1:key/a", KeyManager::Customer, "Enabled")),
            ebs_encryption_by_default: Some(true),
            ebs_default_key: Some(key("arn:aws:kms:eu-west-1:1:key/a", KeyManager::Customer, "Enabled")),
            ..Default::default()
        });
        assert!(p.findings.is_empty(), "{:?}", p.findings);
    }

    #[test]
    fn wrong_region_disabled_and_aws_default() {
        let p = preflight_region(&PreflightFacts {
            region: "eu-west-1".into(),
            intended_key: Some("arn:aws:kms:us-east-1:1:key/a".into()),
            intended: Some(key("arn:aws:kms:us-east-1:1:key/a", KeyManager::Customer, "Disabled")),
            ebs_encryption_by_default: Some(true),
            ebs_default_key: Some(key("arn:aws:kms:eu-west-1:1:key/e", KeyManager::Aws, "Enabled")),
            ..Default::default()
        });
        assert_eq!(codes(&p), ["KEY_NOT_ENABLED", "KEY_WRONG_REGION", "EBS_DEFAULT_AWS_MANAGED"]);
    }

    #[test]
    fn missing_and_unconfigured_keys() {
        let base = PreflightFacts { region: "us-east-1".into(), ..Default::default() };
        assert_eq!(codes(&preflight_region(&base)), ["NO_INTENDED_KEY"]);
        let p = preflight_region(&PreflightFacts {
            intended_key: Some("alias/typo".into()),
            intended: Some(KeyLookup::NotFound),
            ..base
        });
        assert_eq!(codes(&p), ["KEY_NOT_FOUND"]);
    }

    fn with_policy(policy: KeyPolicyLookup) -> PreflightRegion {
        preflight_region(&PreflightFacts {
            region: "eu-west-1".into(),
            intended_key: Some("alias/x".into()),
            intended: Some(key("arn:aws:kms:eu-west-1:111122223333:key/a", KeyManager::Customer, "Enabled")),
            consumers: vec!["444455556666".into()],
            key_policy: Some(policy),
            ..Default::default()
        })
    }

    #[test]
    fn consumers_missing_from_the_key_policy_are_warnings() {
        let root_only = r#"{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow",
            "Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
        let p = with_policy(KeyPolicyLookup::Found(root_only.into()));
        assert!(!p.findings.is_empty());
        assert!(p.findings.iter().all(|f| f.severity == Severity::Warning), "{:?}", p.findings);
        assert!(codes(&p).contains(&"CONSUMER_CANNOT_CREATE_GRANT"), "{:?}", codes(&p));
        let open = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Principal":{"AWS":["arn:aws:iam::111122223333:root","arn:aws:iam::444455556666:root"]},
            "Action":"kms:*","Resource":"*"}]}"#;
        assert!(with_policy(KeyPolicyLookup::Found(open.into())).findings.is_empty());
    }

    #[test]
    fn an_unreadable_policy_is_one_warning_and_no_consumers_no_check() {
        let p = with_policy(KeyPolicyLookup::Unreadable("AccessDeniedException".into()));
        assert_eq!(codes(&p), ["KEY_POLICY_UNREADABLE"]);
        let p = preflight_region(&PreflightFacts {
            consumers: vec![],
            ..PreflightFacts {
                region: "eu-west-1".into(),
                intended_key: Some("alias/x".into()),
                intended: Some(key("arn:aws:kms:eu-west-1:1:key/a", KeyManager::Customer, "Enabled")),
                key_policy: Some(KeyPolicyLookup::Found("{}".into())),
                ..Default::default()
            }
        });
        assert!(p.findings.is_empty());
    }
}
