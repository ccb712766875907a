//! The consumer check: can each consumer account make every KMS call the launch chain needs on
//! one producer key, as far as that key's policy decides?
//!
//! Owns: the launch chain ([`launch_chain_actions`]) with the request context of each call,
//! and the findings ([`PolicyFinding`]) with their codes and next-step messages. Must not know:
//! how the policy was fetched, grants that already exist, the consumer's IAM policies.
//!
//! Multi-Region keys: each replica has its own key policy, so callers run the check once per
//! replica ARN.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{Caller, Decision, Policy, Request, StatementRef, evaluate, generate_command};
use crate::core::ids::arn_region;

/// Who makes a launch-chain call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainCaller {
    /// A principal of the consumer account calling KMS directly (`amikey grant`, `aws kms
    /// create-grant`): no `kms:ViaService`.
    ConsumerAdmin,
    /// EC2 calling KMS on behalf of a consumer principal that launches instances (RunInstances,
    /// Karpenter's CreateFleet): `kms:ViaService` = `ec2.REGION.amazonaws.com`.
    ConsumerViaEc2,
}

/// One KMS call a consumer makes on a producer key when launching from a shared encrypted AMI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainAction {
    /// The KMS action (`kms:CreateGrant`).
    pub action: &'static str,
    /// Who calls, and so whether `kms:ViaService` is present.
    pub caller: ChainCaller,
    /// `kms:GrantIsForAWSResource` for `CreateGrant`; `None` for other actions.
    pub grant_is_for_aws_resource: Option<bool>,
    /// Why the chain needs it.
    pub why: &'static str,
}

/// The launch chain. Sources: AWS EC2 Auto Scaling UG "Required AWS KMS key policy for use with
/// encrypted volumes" (Example 2, cross-account: the consumer creates the grant for its
/// service-linked role, so `kms:GrantIsForAWSResource` is false), the EBS UG "How Amazon EBS
/// uses AWS KMS" (EC2 calls DescribeKey, CreateGrant for the volume with
/// `GrantIsForAWSResource` true, Decrypt, GenerateDataKeyWithoutPlaintext, ReEncrypt*), and
/// Karpenter's troubleshooting guide (`kms:ViaService` = `ec2.REGION.amazonaws.com`).
pub fn launch_chain_actions() -> Vec<ChainAction> {
    use ChainCaller::*;
    let a = |action, caller, grant: Option<bool>, why| ChainAction {
        action,
        caller,
        grant_is_for_aws_resource: grant,
        why,
    };
    vec![
        a("kms:DescribeKey", ConsumerAdmin, None, "amikey grant and doctor resolve and check the key"),
        a(
            "kms:ListGrants",
            ConsumerAdmin,
            None,
            "amikey grant lists grants first so re-runs never duplicate",
        ),
        a(
            "kms:CreateGrant",
            ConsumerAdmin,
            Some(false),
            "the consumer grants its Auto Scaling / Spot service-linked role (AWS Example 2)",
        ),
        a("kms:DescribeKey", ConsumerViaEc2, None, "EC2 checks the key when it creates the volume"),
        a("kms:CreateGrant", ConsumerViaEc2, Some(true), "EC2 grants itself use of the key for the volume"),
        a("kms:Decrypt", ConsumerViaEc2, None, "EC2 decrypts the snapshot's data key"),
        a("kms:GenerateDataKeyWithoutPlaintext", ConsumerViaEc2, None, "EC2 creates the volume's data key"),
        a(
            "kms:ReEncryptFrom",
            ConsumerViaEc2,
            None,
            "EC2 re-encrypts when the launch template or ASG names another key",
        ),
        a(
            "kms:ReEncryptTo",
            ConsumerViaEc2,
            None,
            "EC2 re-encrypts when the launch template or ASG names another key",
        ),
    ]
}

/// The operations AWS documents for the Auto Scaling service-linked role's grant (the catalog's
/// own list); used as `kms:GrantOperations` of the consumer's CreateGrant.
pub const AUTOSCALING_GRANT_OPERATIONS: &[&str] = crate::core::grants::LAUNCH_OPERATIONS;

/// A consumer account to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consumer {
    /// 12-digit account id.
    pub account: String,
    /// Its organization id, when known (needed for `aws:PrincipalOrgID` conditions).
    pub org_id: Option<String>,
    /// The principal that runs `amikey grant` / launches, when known. Default: an unnamed IAM
    /// role of the account, which matches account-root and `*` principals but no named ARN.
    pub principal_arn: Option<String>,
    /// That principal's `aws:userid`, when known.
    pub userid: Option<String>,
}

impl Consumer {
    /// A consumer known only by its account id.
    pub fn account(account: &str) -> Consumer {
        Consumer { account: account.to_owned(), org_id: None, principal_arn: None, userid: None }
    }

    fn caller(&self) -> Caller {
        let arn = self
            .principal_arn
            .clone()
            .unwrap_or_else(|| format!("arn:aws:iam::{}:role/unnamed-consumer-role", self.account));
        let mut c = Caller::role(&arn);
        c.account = self.account.clone();
        if let Some(o) = &self.org_id {
            c = c.with_org(o);
        }
        if let Some(u) = &self.userid {
            c = c.with_userid(u);
        }
        c
    }
}

/// A finding code. Stable: tooling may match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingCode {
    /// The document is not a key policy amikey can read.
    MalformedPolicy,
    /// A Deny statement blocks a launch-chain call.
    ExplicitDeny,
    /// A statement that could decide the call cannot be evaluated.
    UnsupportedCondition,
    /// `CreateGrant` is allowed only with `kms:GrantIsForAWSResource` true: the cross-account
    /// grant for a service-linked role is denied.
    GrantRequiresAwsResource,
    /// No statement allows the consumer's own `CreateGrant`.
    ConsumerCannotCreateGrant,
    /// No statement allows `ListGrants`.
    ConsumerCannotListGrants,
    /// No statement allows `DescribeKey`.
    ConsumerCannotDescribeKey,
    /// No statement allows `Decrypt` via EC2.
    ConsumerCannotDecrypt,
    /// No statement allows another crypto call EC2 makes for the consumer.
    ConsumerCannotUseKey,
}

impl FindingCode {
    /// The SCREAMING_SNAKE spelling, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingCode::MalformedPolicy => "MALFORMED_POLICY",
            FindingCode::ExplicitDeny => "EXPLICIT_DENY",
            FindingCode::UnsupportedCondition => "UNSUPPORTED_CONDITION",
            FindingCode::GrantRequiresAwsResource => "GRANT_REQUIRES_AWS_RESOURCE",
            FindingCode::ConsumerCannotCreateGrant => "CONSUMER_CANNOT_CREATE_GRANT",
            FindingCode::ConsumerCannotListGrants => "CONSUMER_CANNOT_LIST_GRANTS",
            FindingCode::ConsumerCannotDescribeKey => "CONSUMER_CANNOT_DESCRIBE_KEY",
            FindingCode::ConsumerCannotDecrypt => "CONSUMER_CANNOT_DECRYPT",
            FindingCode::ConsumerCannotUseKey => "CONSUMER_CANNOT_USE_KEY",
        }
    }
}

impl std::fmt::Display for FindingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with one key policy for one consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyFinding {
    /// Stable code.
    pub code: FindingCode,
    /// The key (replica) ARN whose policy was checked.
    pub key_arn: String,
    /// The consumer account; `None` for document-level findings.
    pub consumer: Option<String>,
    /// The KMS actions affected, sorted.
    pub actions: Vec<String>,
    /// The statements involved (the Deny, the conditional Allow, the undetermined one).
    pub statements: Vec<StatementRef>,
    /// What is wrong and what to do next.
    pub message: String,
}

/// Checks a key-policy document (as JSON) for `consumers`. A document that does not parse
/// gives one `MALFORMED_POLICY` finding. `region` is the key's region, used for
/// `kms:ViaService`; when empty it is taken from the key ARN.
pub fn check_consumers(
    policy: &Value,
    key_arn: &str,
    region: &str,
    consumers: &[Consumer],
) -> Vec<PolicyFinding> {
    match Policy::from_value(policy) {
        Ok(p) => check_policy(&p, key_arn, region, consumers),
        Err(e) => vec![PolicyFinding {
            code: FindingCode::MalformedPolicy,
            key_arn: key_arn.to_owned(),
            consumer: None,
            actions: Vec::new(),
            statements: Vec::new(),
            message: format!(
                "the key policy of {key_arn} cannot be read: {e}. Fix the document (KMS itself \
                 would reject it), then run `amikey policy check` again"
            ),
        }],
    }
}

fn request(
    chain: &ChainAction,
    consumer: &Consumer,
    key_arn: &str,
    region: &str,
    grant_flag: Option<bool>,
) -> Request {
    let mut r = Request::new(chain.action, consumer.caller(), key_arn);
    if chain.caller == ChainCaller::ConsumerViaEc2 {
        r = r.with("kms:ViaService", &format!("ec2.{region}.amazonaws.com"));
    }
    if let Some(flag) = grant_flag {
        r = r.with("kms:GrantIsForAWSResource", if flag { "true" } else { "false" });
        if chain.caller == ChainCaller::ConsumerAdmin {
            let slr = format!(
                "arn:aws:iam::{}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
                consumer.account
            );
            r = r
                .with("kms:GranteePrincipal", &slr)
                .with_values("kms:GrantOperations", AUTOSCALING_GRANT_OPERATIONS);
        } else {
            // EC2's own grant names an EC2-internal grantee we cannot know.
            r.unknown.insert("kms:granteeprincipal".to_owned());
            r.unknown.insert("kms:grantoperations".to_owned());
        }
    }
    r
}

#[derive(Default)]
struct Group {
    actions: Vec<String>,
    statements: Vec<StatementRef>,
    contexts: Vec<String>,
    reasons: Vec<String>,
}

fn context_text(chain: &ChainAction, region: &str) -> String {
    match chain.caller {
        ChainCaller::ConsumerAdmin => format!("{} called directly", chain.action),
        ChainCaller::ConsumerViaEc2 => format!("{} via ec2.{region}.amazonaws.com", chain.action),
    }
}

/// Checks a parsed key policy for `consumers`; see [`check_consumers`]. Findings are grouped
/// per consumer and code, sorted by consumer then code.
pub fn check_policy(
    policy: &Policy,
    key_arn: &str,
    region: &str,
    consumers: &[Consumer],
) -> Vec<PolicyFinding> {
    let region = if region.is_empty() { arn_region(key_arn).unwrap_or("REGION") } else { region };
    let mut sorted: Vec<&Consumer> = consumers.iter().collect();
    sorted.sort_by(|a, b| a.account.cmp(&b.account));
    sorted.dedup_by(|a, b| a.account == b.account);
    let mut out = Vec::new();
    for consumer in sorted {
        let mut groups: BTreeMap<FindingCode, Group> = BTreeMap::new();
        for chain in launch_chain_actions() {
            let eval = evaluate(
                policy,
                &request(&chain, consumer, key_arn, region, chain.grant_is_for_aws_resource),
            );
            let (code, statements, reasons) = match eval.decision {
                Decision::Allow => continue,
                Decision::ExplicitDeny => (FindingCode::ExplicitDeny, eval.matched, Vec::new()),
                Decision::Indeterminate => (
                    FindingCode::UnsupportedCondition,
                    eval.undetermined.iter().map(|u| u.statement.clone()).collect(),
                    eval.undetermined.iter().map(|u| format!("{}: {}", u.statement, u.reason)).collect(),
                ),
                Decision::ImplicitDeny => {
                    let trap = chain.grant_is_for_aws_resource == Some(false) && {
                        let retry = evaluate(policy, &request(&chain, consumer, key_arn, region, Some(true)));
                        retry.decision == Decision::Allow
                    };
                    if trap {
                        let retry = evaluate(policy, &request(&chain, consumer, key_arn, region, Some(true)));
                        (FindingCode::GrantRequiresAwsResource, retry.matched, Vec::new())
                    } else {
                        let code = match (chain.action, chain.caller) {
                            ("kms:CreateGrant", ChainCaller::ConsumerAdmin) => {
                                FindingCode::ConsumerCannotCreateGrant
                            }
                            ("kms:ListGrants", _) => FindingCode::ConsumerCannotListGrants,
                            ("kms:DescribeKey", _) => FindingCode::ConsumerCannotDescribeKey,
                            ("kms:Decrypt", _) => FindingCode::ConsumerCannotDecrypt,
                            _ => FindingCode::ConsumerCannotUseKey,
                        };
                        (code, Vec::new(), Vec::new())
                    }
                }
            };
            let g = groups.entry(code).or_default();
            g.actions.push(chain.action.to_owned());
            g.statements.extend(statements);
            g.contexts.push(context_text(&chain, region));
            g.reasons.extend(reasons);
        }
        for (code, mut g) in groups {
            g.actions.sort();
            g.actions.dedup();
            g.statements.sort();
            g.statements.dedup();
            g.reasons.sort();
            g.reasons.dedup();
            let message = message(code, &consumer.account, key_arn, &g);
            out.push(PolicyFinding {
                code,
                key_arn: key_arn.to_owned(),
                consumer: Some(consumer.account.clone()),
                actions: g.actions,
                statements: g.statements,
                message,
            });
        }
    }
    out
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn message(code: FindingCode, account: &str, key_arn: &str, g: &Group) -> String {
    let fix = generate_command(&[account], Some(key_arn));
    let contexts = join(&g.contexts);
    let statements = join(&g.statements);
    match code {
        FindingCode::MalformedPolicy => String::new(),
        FindingCode::ExplicitDeny => format!(
            "{statements} explicitly denies account {account} ({contexts}) on {key_arn}; an \
             explicit Deny overrides every Allow. Narrow that statement so it exempts the \
             consumer (for CreateGrant, the usual pattern is a Deny with a \
             `kms:GranteePrincipal` exception for the service-linked roles), then add the \
             consumer statements: `{fix}`"
        ),
        FindingCode::UnsupportedCondition => format!(
            "amikey cannot decide whether account {account} may call {contexts} on {key_arn}: \
             {}. Verify that statement by hand; if the consumer is not covered, add the \
             consumer statements: `{fix}`",
            join(&g.reasons)
        ),
        FindingCode::GrantRequiresAwsResource => format!(
            "account {account} may call kms:CreateGrant on {key_arn} only with \
             `kms:GrantIsForAWSResource` true ({statements}). That key is true only when an AWS \
             service creates the grant itself; the grant a consumer creates for its Auto Scaling \
             or Spot service-linked role has it false, so `amikey grant` (and AWS's documented \
             `aws kms create-grant`) is denied and ASG launches fail with Client.InternalError. \
             Add a statement allowing kms:CreateGrant, kms:ListGrants and kms:RevokeGrant to \
             arn:aws:iam::{account}:root without that condition (Sid AmikeyConsumerGrants): \
             `{fix}`"
        ),
        FindingCode::ConsumerCannotCreateGrant | FindingCode::ConsumerCannotListGrants => format!(
            "no statement of the key policy of {key_arn} allows account {account} {contexts}; \
             the consumer cannot grant its service-linked roles, so ASG and Spot launches from \
             the AMI fail with Client.InternalError. Add a statement allowing kms:CreateGrant, \
             kms:ListGrants and kms:RevokeGrant to arn:aws:iam::{account}:root without a \
             `kms:GrantIsForAWSResource` condition (Sid AmikeyConsumerGrants): `{fix}`"
        ),
        FindingCode::ConsumerCannotDescribeKey
        | FindingCode::ConsumerCannotDecrypt
        | FindingCode::ConsumerCannotUseKey => format!(
            "no statement of the key policy of {key_arn} allows account {account} {contexts}; \
             {}. Add a statement allowing kms:Encrypt, kms:Decrypt, kms:ReEncrypt*, \
             kms:GenerateDataKey* and kms:DescribeKey to arn:aws:iam::{account}:root (Sid \
             AmikeyConsumerCrypto; note `kms:ReEncrypt` without `*` matches no action): `{fix}`",
            if g.contexts.iter().all(|c| c.ends_with("called directly")) {
                "amikey grant and amikey doctor cannot resolve or check the key"
            } else {
                "instances the consumer launches itself (RunInstances, Karpenter) from the AMI fail"
            }
        ),
    }
}

/// The publish-time key-policy check of one region: the intended key's `policy` (as JSON text,
/// what GetKeyPolicy returns) evaluated for `accounts` (`ami_users` ∪ `publish_accounts`).
/// `fail` = false gives warnings (each with its text naming region, key, consumer, code and the
/// fix, and its parts for grouping);
/// `fail` = true gives [`crate::core::report::Finding`]s with `KEY_POLICY_DENIES_CONSUMER`, so
/// `publish` changes nothing.
pub fn publish_check(
    region: &str,
    ami_id: &str,
    key_arn: &str,
    policy: &str,
    accounts: &[String],
    fail: bool,
) -> (Vec<crate::core::report::KeyPolicyWarning>, Vec<crate::core::report::Finding>) {
    let consumers: Vec<Consumer> = accounts
        .iter()
        .filter(|a| crate::core::ids::is_account_id(a))
        .map(|a| Consumer::account(a))
        .collect();
    if consumers.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let value: Value = serde_json::from_str(policy).unwrap_or(Value::String(policy.to_owned()));
    let mut warnings = Vec::new();
    let mut findings = Vec::new();
    for f in check_consumers(&value, key_arn, region, &consumers) {
        let text = format!(
            "{region} key policy of {key_arn}{}: {} {}",
            f.consumer.as_deref().map(|c| format!(" for account {c}")).unwrap_or_default(),
            f.code,
            f.message
        );
        if fail {
            findings.push(crate::core::report::Finding {
                code: crate::core::report::Code::KeyPolicyDeniesConsumer,
                region: region.to_owned(),
                ami_id: ami_id.to_owned(),
                snapshot_id: None,
                message: format!("{text} (check_key_policy = \"fail\": nothing shared, nothing published)"),
            });
        } else {
            warnings.push(crate::core::report::KeyPolicyWarning {
                fix: f
                    .consumer
                    .as_deref()
                    .map(|c| generate_command(&[c], Some(&f.key_arn)))
                    .unwrap_or_default(),
                account: f.consumer,
                region: region.to_owned(),
                key_arn: f.key_arn,
                code: f.code.to_string(),
                actions: f.actions,
                text,
            });
        }
    }
    (warnings, findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::{Consumers, generate, merge};
    use serde_json::json;

    const KEY: &str = "arn:aws:kms:eu-west-1:999999999999:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn codes(f: &[PolicyFinding]) -> Vec<(Option<&str>, &'static str)> {
        f.iter().map(|f| (f.consumer.as_deref(), f.code.as_str())).collect()
    }

    fn root_only() -> Value {
        json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "kms:*", "Resource": "*"}
        ]})
    }

    #[test]
    fn producer_only_policy_reports_every_gap_with_the_generate_line() {
        let f = check_consumers(&root_only(), KEY, "eu-west-1", &[Consumer::account("111111111111")]);
        assert_eq!(
            codes(&f),
            vec![
                (Some("111111111111"), "CONSUMER_CANNOT_CREATE_GRANT"),
                (Some("111111111111"), "CONSUMER_CANNOT_LIST_GRANTS"),
                (Some("111111111111"), "CONSUMER_CANNOT_DESCRIBE_KEY"),
                (Some("111111111111"), "CONSUMER_CANNOT_DECRYPT"),
                (Some("111111111111"), "CONSUMER_CANNOT_USE_KEY"),
            ]
        );
        let fix = format!("amikey policy generate --consumer-account 111111111111 --key {KEY} --merge");
        assert!(f.iter().all(|f| f.message.contains(&fix)), "{f:#?}");
        assert_eq!(
            f[4].actions,
            [
                "kms:CreateGrant",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo"
            ]
        );
        assert!(f[3].message.contains("kms:Decrypt via ec2.eu-west-1.amazonaws.com"));
    }

    /// After merging what `generate` proposes, the same check is clean: the generator and the
    /// checker agree.
    #[test]
    fn generated_fix_makes_the_check_clean() {
        let consumers = [Consumer::account("222222222222"), Consumer::account("111111111111")];
        let st =
            generate(&Consumers::Accounts(vec!["111111111111".into(), "222222222222".into()]), None).unwrap();
        let fixed = merge(&root_only(), &st).unwrap();
        assert_eq!(check_consumers(&fixed, KEY, "", &consumers), vec![]);
        let org =
            generate(&Consumers::OrgId("o-exampleorgid".into()), Some(&["eu-west-1".to_owned()])).unwrap();
        let fixed = merge(&root_only(), &org).unwrap();
        let member = Consumer { org_id: Some("o-exampleorgid".into()), ..Consumer::account("111111111111") };
        assert_eq!(check_consumers(&fixed, KEY, "eu-west-1", &[member]), vec![]);
    }

    /// Seed 000 (binx.io) has everything the launch chain needs for both named accounts, and
    /// nothing for a third.
    #[test]
    fn seed_000_is_clean_for_named_accounts_only() {
        let p = json!({"Statement": [
            {"Sid": "Allow use of the key", "Effect": "Allow",
             "Principal": {"AWS": ["arn:aws:iam::111111111111:root", "arn:aws:iam::222222222222:root"]},
             "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"], "Resource": "*"},
            {"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
             "Principal": {"AWS": ["arn:aws:iam::111111111111:root", "arn:aws:iam::222222222222:root"]},
             "Action": ["kms:ListGrants", "kms:CreateGrant", "kms:RevokeGrant"], "Resource": "*"}
        ]});
        let f = check_consumers(
            &p,
            KEY,
            "eu-west-1",
            &[
                Consumer::account("333333333333"),
                Consumer::account("111111111111"),
                Consumer::account("222222222222"),
            ],
        );
        assert!(f.iter().all(|f| f.consumer.as_deref() == Some("333333333333")), "{f:#?}");
        assert_eq!(f.len(), 5);
    }

    /// Seed 004: the org-wide policy misspells `kms:ReEncrypt` (no `*`) and omits ListGrants.
    #[test]
    fn seed_004_reports_reencrypt_typo_and_missing_list_grants() {
        let p = json!({"Statement": [
            {"Sid": "ShareAMIToAccounts", "Effect": "Allow", "Principal": {"AWS": "*"},
             "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt", "kms:GenerateDataKey*",
                        "kms:CreateGrant", "kms:RetireGrant", "kms:RevokeGrant", "kms:DescribeKey"],
             "Resource": "*", "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-exampleorgid"}}}
        ]});
        let member = Consumer { org_id: Some("o-exampleorgid".into()), ..Consumer::account("111111111111") };
        let f = check_consumers(&p, KEY, "eu-west-1", &[member]);
        assert_eq!(
            codes(&f),
            vec![
                (Some("111111111111"), "CONSUMER_CANNOT_LIST_GRANTS"),
                (Some("111111111111"), "CONSUMER_CANNOT_USE_KEY")
            ]
        );
        assert_eq!(f[1].actions, ["kms:ReEncryptFrom", "kms:ReEncryptTo"]);
        assert!(f[1].message.contains("`kms:ReEncrypt` without `*` matches no action"));
        // Without the org id, amikey does not guess.
        let f = check_consumers(&p, KEY, "eu-west-1", &[Consumer::account("111111111111")]);
        assert!(
            f.iter()
                .any(|f| f.code == FindingCode::UnsupportedCondition
                    && f.message.contains("aws:PrincipalOrgID")),
            "{f:#?}"
        );
    }

    /// AWS Auto Scaling Example 1 copied for a cross-account consumer: the trap.
    #[test]
    fn grant_is_for_aws_resource_trap_is_named() {
        let p = json!({"Statement": [
            {"Sid": "Allow use of the key", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
             "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey", "kms:ListGrants"], "Resource": "*"},
            {"Sid": "Allow attachment of persistent resources", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
             "Action": "kms:CreateGrant", "Resource": "*", "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}}
        ]});
        let f = check_consumers(&p, KEY, "eu-west-1", &[Consumer::account("111111111111")]);
        assert_eq!(codes(&f), vec![(Some("111111111111"), "GRANT_REQUIRES_AWS_RESOURCE")]);
        assert_eq!(f[0].statements[0].sid.as_deref(), Some("Allow attachment of persistent resources"));
        assert!(f[0].message.contains("without that condition"));
    }

    #[test]
    fn explicit_deny_and_unsupported_condition_are_reported() {
        let p = json!({"Statement": [
            {"Sid": "Consumers", "Effect": "Allow", "Principal": {"AWS": "111111111111"}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "NoGrantsOutside", "Effect": "Deny", "Principal": "*", "Action": "kms:CreateGrant", "Resource": "*",
             "Condition": {"StringNotEquals": {"kms:CallerAccount": "999999999999"}}},
            {"Sid": "Network", "Effect": "Deny", "Principal": "*", "Action": "kms:ListGrants", "Resource": "*",
             "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}
        ]});
        let f = check_consumers(&p, KEY, "eu-west-1", &[Consumer::account("111111111111")]);
        assert_eq!(
            codes(&f),
            vec![(Some("111111111111"), "EXPLICIT_DENY"), (Some("111111111111"), "UNSUPPORTED_CONDITION")]
        );
        assert_eq!(f[0].actions, ["kms:CreateGrant"]);
        assert_eq!(f[0].statements[0].sid.as_deref(), Some("NoGrantsOutside"));
        assert!(f[1].message.contains("NotIpAddress"));
    }

    #[test]
    fn malformed_policy_is_a_finding_not_a_panic() {
        let f = check_consumers(
            &json!({"Statement": [{"Effect": "Allow"}]}),
            KEY,
            "eu-west-1",
            &[Consumer::account("111111111111")],
        );
        assert_eq!(codes(&f), vec![(None, "MALFORMED_POLICY")]);
        assert!(f[0].message.contains("neither `Action`"));
    }

    #[test]
    fn finding_codes_serialize_screaming_snake() {
        assert_eq!(
            serde_json::to_value(FindingCode::GrantRequiresAwsResource).unwrap(),
            json!("GRANT_REQUIRES_AWS_RESOURCE")
        );
        assert_eq!(FindingCode::ConsumerCannotDecrypt.to_string(), "CONSUMER_CANNOT_DECRYPT");
    }

    #[test]
    fn publish_check_warns_or_fails_and_ignores_non_accounts() {
        let key = "arn:aws:kms:eu-west-1:123456789012:key/k";
        let owner_only = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}]}"#;
        let accounts = vec!["111122223333".to_string(), "all".to_string()];
        let (w, f) = publish_check("eu-west-1", "ami-12345678", key, owner_only, &accounts, false);
        assert!(f.is_empty());
        assert!(
            !w.is_empty()
                && w.iter().all(|l| l.text.starts_with("eu-west-1 key policy of")
                    && l.text.contains("111122223333")
                    && l.account.as_deref() == Some("111122223333")
                    && l.region == "eu-west-1"
                    && !l.actions.is_empty()),
            "{w:?}"
        );
        assert!(
            w.iter().all(|l| l.fix
                == format!("amikey policy generate --consumer-account 111122223333 --key {key} --merge")
                && l.text.contains(&l.fix)),
            "{w:?}"
        );
        let (w, f) = publish_check("eu-west-1", "ami-12345678", key, owner_only, &accounts, true);
        assert!(w.is_empty());
        assert!(
            f.iter().all(|x| x.code == crate::core::report::Code::KeyPolicyDeniesConsumer
                && x.ami_id == "ami-12345678")
        );
        assert!(!f.is_empty());
        assert_eq!(
            publish_check("eu-west-1", "ami-1", key, owner_only, &["all".into()], true),
            (vec![], vec![])
        );
    }
}
