//! The statements amikey proposes: for producer key policies ([`generate`], [`merge`]) and for
//! consumer IAM roles that use the key through EC2 rather than through grants
//! ([`identity_policy`]).
//!
//! Owns: the stable Sids and the exact statement shapes. Must not know: how a policy is fetched
//! or applied.
//!
//! Shape follows AWS's "Required AWS KMS key policy for use with encrypted volumes", Example 2
//! (cross-account): the consumer account gets the crypto actions, and `kms:CreateGrant` /
//! `kms:ListGrants` / `kms:RevokeGrant` **without** `kms:GrantIsForAWSResource`, because the
//! consumer itself creates the grant for its service-linked role (the flag is only true when an
//! AWS service creates a grant on its own behalf).

use serde_json::{Map, Value, json};

use super::{Policy, PolicyError};
use crate::core::ids::{is_account_id, is_key_arn};

/// Sid of the crypto statement (`Encrypt`, `Decrypt`, `ReEncrypt*`, `GenerateDataKey*`,
/// `DescribeKey`).
pub const CRYPTO_SID: &str = "AmikeyConsumerCrypto";
/// Sid of the grants statement (`CreateGrant`, `ListGrants`, `RevokeGrant`, `DescribeKey`).
pub const GRANTS_SID: &str = "AmikeyConsumerGrants";
/// Sid of the identity-policy statement for consumer roles (Karpenter controller and nodes).
pub const IDENTITY_SID: &str = "AmikeyKmsViaEc2";
/// Sid of the identity-policy statement that lets EC2 create its volume grants.
pub const IDENTITY_GRANT_SID: &str = "AmikeyKmsGrantsViaEc2";

const CRYPTO_ACTIONS: &[&str] =
    &["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"];
// DescribeKey is repeated here, unscoped by `kms:ViaService`, so `amikey grant` and `amikey
// doctor` can call it directly even when the crypto statement is scoped to EC2.
const GRANT_ACTIONS: &[&str] = &["kms:CreateGrant", "kms:DescribeKey", "kms:ListGrants", "kms:RevokeGrant"];

/// Who consumes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumers {
    /// These 12-digit account ids (each as `arn:aws:iam::ACCT:root`).
    Accounts(Vec<String>),
    /// Every account of this organization (`Principal: "*"` + `aws:PrincipalOrgID`).
    OrgId(String),
}

fn is_org_id(s: &str) -> bool {
    s.len() > 2 && s.starts_with("o-") && s[2..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.contains('-')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn principal_and_conditions(consumers: &Consumers) -> Result<(Value, Map<String, Value>), PolicyError> {
    match consumers {
        Consumers::Accounts(accounts) => {
            if accounts.is_empty() {
                return Err(PolicyError::BadInput {
                    what: "consumer account list",
                    value: String::new(),
                    expected: "at least one 12-digit account id",
                });
            }
            let mut roots = Vec::new();
            for a in accounts {
                if !is_account_id(a) {
                    return Err(PolicyError::BadInput {
                        what: "consumer account",
                        value: a.clone(),
                        expected: "a 12-digit account id",
                    });
                }
                roots.push(format!("arn:aws:iam::{a}:root"));
            }
            roots.sort();
            roots.dedup();
            Ok((json!({ "AWS": roots }), Map::new()))
        }
        Consumers::OrgId(org) => {
            if !is_org_id(org) {
                return Err(PolicyError::BadInput {
                    what: "organization id",
                    value: org.clone(),
                    expected: "`o-` followed by lower-case letters and digits",
                });
            }
            let mut eq = Map::new();
            eq.insert("aws:PrincipalOrgID".into(), json!(org));
            Ok((json!({ "AWS": "*" }), eq))
        }
    }
}

fn statement(sid: &str, principal: &Value, actions: &[&str], string_equals: Map<String, Value>) -> Value {
    let mut s = Map::new();
    s.insert("Sid".into(), json!(sid));
    s.insert("Effect".into(), json!("Allow"));
    s.insert("Principal".into(), principal.clone());
    s.insert("Action".into(), json!(actions));
    s.insert("Resource".into(), json!("*"));
    if !string_equals.is_empty() {
        s.insert("Condition".into(), json!({ "StringEquals": string_equals }));
    }
    Value::Object(s)
}

/// The two statements a producer key policy needs for `consumers`: [`CRYPTO_SID`] and
/// [`GRANTS_SID`]. With `via_service_regions`, the crypto statement is limited to calls EC2
/// makes in those regions (`kms:ViaService` = `ec2.REGION.amazonaws.com`); the grants
/// statement never is, because the consumer calls `CreateGrant` itself. Output is sorted and
/// deterministic.
pub fn generate(
    consumers: &Consumers,
    via_service_regions: Option<&[String]>,
) -> Result<Vec<Value>, PolicyError> {
    let (principal, base) = principal_and_conditions(consumers)?;
    let mut crypto_cond = base.clone();
    if let Some(regions) = via_service_regions {
        let mut services = Vec::new();
        for r in regions {
            if !is_region(r) {
                return Err(PolicyError::BadInput {
                    what: "region",
                    value: r.clone(),
                    expected: "a region name such as `eu-west-1`",
                });
            }
            services.push(format!("ec2.{r}.amazonaws.com"));
        }
        services.sort();
        services.dedup();
        if !services.is_empty() {
            crypto_cond.insert("kms:ViaService".into(), json!(services));
        }
    }
    Ok(vec![
        statement(CRYPTO_SID, &principal, CRYPTO_ACTIONS, crypto_cond),
        statement(GRANTS_SID, &principal, GRANT_ACTIONS, base),
    ])
}

/// The `amikey policy generate` command line that produces the missing statements for
/// `accounts` (sorted), merged into `key_arn`'s current policy when a key is given.
pub fn generate_command(accounts: &[&str], key_arn: Option<&str>) -> String {
    let mut accounts: Vec<&str> = accounts.to_vec();
    accounts.sort_unstable();
    accounts.dedup();
    let mut cmd = String::from("amikey policy generate");
    for a in accounts {
        cmd.push_str(" --consumer-account ");
        cmd.push_str(a);
    }
    if let Some(k) = key_arn {
        cmd.push_str(" --key ");
        cmd.push_str(k);
        cmd.push_str(" --merge");
    }
    cmd
}

/// `policy` with `statements` merged in: a statement whose `Sid` already occurs replaces the
/// first occurrence in place (later ones with that Sid are dropped); others are appended in
/// the given order. Every other statement and member is preserved in order. Idempotent:
/// `merge(merge(p, s), s) == merge(p, s)`. A single-object `Statement` becomes an array.
pub fn merge(policy: &Value, statements: &[Value]) -> Result<Value, PolicyError> {
    Policy::from_value(policy)?;
    let mut out = policy.clone();
    let Some(obj) = out.as_object_mut() else {
        return Err(PolicyError::NotAnObject { found: "a non-object" });
    };
    let mut list: Vec<Value> = match obj.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(single @ Value::Object(_)) => vec![single.clone()],
        _ => return Err(PolicyError::MissingStatement),
    };
    for new in statements {
        let sid = new.get("Sid").and_then(Value::as_str);
        let positions: Vec<usize> = match sid {
            Some(sid) => list
                .iter()
                .enumerate()
                .filter(|(_, s)| s.get("Sid").and_then(Value::as_str) == Some(sid))
                .map(|(i, _)| i)
                .collect(),
            None => Vec::new(),
        };
        match positions.split_first() {
            Some((first, rest)) => {
                list[*first] = new.clone();
                for i in rest.iter().rev() {
                    list.remove(*i);
                }
            }
            None => list.push(new.clone()),
        }
    }
    obj.insert("Statement".into(), Value::Array(list));
    Ok(out)
}

/// The IAM identity policy for consumer roles that reach the keys through EC2 rather than
/// through grants (Karpenter controller and node roles, roles that call `RunInstances`):
/// crypto actions and EC2's own `CreateGrant` on the published `key_arns`, only via
/// `ec2.*.amazonaws.com`. A multi-Region key (`key/mrk-…`) is written once with region `*`,
/// covering every replica. Resources are sorted and de-duplicated.
pub fn identity_policy(key_arns: &[String]) -> Result<Value, PolicyError> {
    if key_arns.is_empty() {
        return Err(PolicyError::BadInput {
            what: "key ARN list",
            value: String::new(),
            expected: "at least one key ARN",
        });
    }
    let mut resources = Vec::new();
    for k in key_arns {
        if !is_key_arn(k) {
            return Err(PolicyError::BadInput {
                what: "key ARN",
                value: k.clone(),
                expected: "arn:PARTITION:kms:REGION:ACCOUNT:key/KEY_ID (aliases cannot be used)",
            });
        }
        let parts: Vec<&str> = k.splitn(6, ':').collect();
        if parts[5].starts_with("key/mrk-") {
            resources.push(format!("{}:{}:kms:*:{}:{}", parts[0], parts[1], parts[4], parts[5]));
        } else {
            resources.push(k.clone());
        }
    }
    resources.sort();
    resources.dedup();
    Ok(json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": IDENTITY_SID,
                "Effect": "Allow",
                "Action": CRYPTO_ACTIONS,
                "Resource": resources,
                "Condition": { "StringLike": { "kms:ViaService": "ec2.*.amazonaws.com" } }
            },
            {
                "Sid": IDENTITY_GRANT_SID,
                "Effect": "Allow",
                "Action": ["kms:CreateGrant"],
                "Resource": resources,
                "Condition": {
                    "StringLike": { "kms:ViaService": "ec2.*.amazonaws.com" },
                    "Bool": { "kms:GrantIsForAWSResource": "true" }
                }
            }
        ]
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::{Caller, Decision, Request, evaluate};

    const KEY: &str = "arn:aws:kms:eu-west-1:999999999999:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn generates_account_statements_sorted_with_stable_sids() {
        let st = generate(
            &Consumers::Accounts(vec!["222222222222".into(), "111111111111".into(), "222222222222".into()]),
            None,
        )
        .unwrap();
        assert_eq!(
            Value::Array(st),
            json!([
                {"Sid": "AmikeyConsumerCrypto", "Effect": "Allow",
                 "Principal": {"AWS": ["arn:aws:iam::111111111111:root", "arn:aws:iam::222222222222:root"]},
                 "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"],
                 "Resource": "*"},
                {"Sid": "AmikeyConsumerGrants", "Effect": "Allow",
                 "Principal": {"AWS": ["arn:aws:iam::111111111111:root", "arn:aws:iam::222222222222:root"]},
                 "Action": ["kms:CreateGrant", "kms:DescribeKey", "kms:ListGrants", "kms:RevokeGrant"],
                 "Resource": "*"}
            ])
        );
    }

    #[test]
    fn generates_org_statements_with_via_service_only_on_crypto() {
        let regions = vec!["us-east-1".to_owned(), "eu-west-1".to_owned()];
        let st = generate(&Consumers::OrgId("o-abc123".into()), Some(&regions)).unwrap();
        assert_eq!(st[0]["Principal"], json!({"AWS": "*"}));
        assert_eq!(
            st[0]["Condition"],
            json!({"StringEquals": {"aws:PrincipalOrgID": "o-abc123",
                   "kms:ViaService": ["ec2.eu-west-1.amazonaws.com", "ec2.us-east-1.amazonaws.com"]}})
        );
        assert_eq!(st[1]["Condition"], json!({"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}));
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(generate(&Consumers::Accounts(vec![]), None).is_err());
        assert!(generate(&Consumers::Accounts(vec!["12345".into()]), None).is_err());
        assert!(generate(&Consumers::OrgId("org-1".into()), None).is_err());
        let bad_region = vec!["EU WEST".to_owned()];
        assert!(generate(&Consumers::OrgId("o-abc".into()), Some(&bad_region)).is_err());
        assert!(identity_policy(&[]).is_err());
        assert!(identity_policy(&["alias/foo".to_owned()]).is_err());
    }

    /// What we generate must satisfy our own checker: the consumer can create its SLR grant
    /// (GrantIsForAWSResource false) and EC2 can decrypt on its behalf.
    #[test]
    fn generated_statements_pass_the_evaluator() {
        let regions = vec!["eu-west-1".to_owned()];
        let st = generate(&Consumers::Accounts(vec!["111111111111".into()]), Some(&regions)).unwrap();
        let policy = Policy::from_value(&json!({"Statement": st})).unwrap();
        let caller = Caller::role("arn:aws:iam::111111111111:role/admin");
        let grant =
            Request::new("kms:CreateGrant", caller.clone(), KEY).with("kms:GrantIsForAWSResource", "false");
        assert_eq!(evaluate(&policy, &grant).decision, Decision::Allow);
        let decrypt = Request::new("kms:Decrypt", caller.clone(), KEY)
            .with("kms:ViaService", "ec2.eu-west-1.amazonaws.com");
        assert_eq!(evaluate(&policy, &decrypt).decision, Decision::Allow);
        // Scoped to eu-west-1: a direct Decrypt, or one via EC2 elsewhere, is not allowed.
        let direct = Request::new("kms:Decrypt", caller.clone(), KEY);
        assert_eq!(evaluate(&policy, &direct).decision, Decision::ImplicitDeny);
        let other =
            Request::new("kms:Decrypt", caller, KEY).with("kms:ViaService", "ec2.us-east-1.amazonaws.com");
        assert_eq!(evaluate(&policy, &other).decision, Decision::ImplicitDeny);
    }

    #[test]
    fn merge_replaces_by_sid_preserves_others_and_is_idempotent() {
        let current = json!({
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                 "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "kms:*", "Resource": "*"},
                {"Sid": "AmikeyConsumerGrants", "Effect": "Allow",
                 "Principal": {"AWS": "arn:aws:iam::333333333333:root"}, "Action": "kms:CreateGrant", "Resource": "*"},
                {"Sid": "Other", "Effect": "Allow", "Principal": "*", "Action": "kms:DescribeKey", "Resource": "*"}
            ]
        });
        let st = generate(&Consumers::Accounts(vec!["111111111111".into()]), None).unwrap();
        let once = merge(&current, &st).unwrap();
        let sids: Vec<&str> =
            once["Statement"].as_array().unwrap().iter().map(|s| s["Sid"].as_str().unwrap()).collect();
        assert_eq!(
            sids,
            ["Enable IAM User Permissions", "AmikeyConsumerGrants", "Other", "AmikeyConsumerCrypto"]
        );
        assert_eq!(once["Statement"][1], st[1]);
        assert_eq!(once["Id"], json!("key-default-1"));
        let twice = merge(&once, &st).unwrap();
        assert_eq!(once, twice);
        // A single-object Statement becomes an array.
        let single = json!({"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*"}});
        assert_eq!(merge(&single, &st).unwrap()["Statement"].as_array().unwrap().len(), 3);
        assert!(merge(&json!({"Statement": 3}), &st).is_err());
    }

    #[test]
    fn identity_policy_collapses_mrk_replicas_and_sorts() {
        let p = identity_policy(&[
            "arn:aws:kms:us-east-1:999999999999:key/mrk-1234".to_owned(),
            KEY.to_owned(),
            "arn:aws:kms:eu-west-1:999999999999:key/mrk-1234".to_owned(),
        ])
        .unwrap();
        assert_eq!(p["Statement"][0]["Resource"], json!(["arn:aws:kms:*:999999999999:key/mrk-1234", KEY]));
        assert_eq!(
            p["Statement"][0]["Condition"]["StringLike"]["kms:ViaService"],
            json!("ec2.*.amazonaws.com")
        );
        // It parses as a policy; for a Karpenter role, a Decrypt via EC2 is allowed by it.
        let parsed = Policy::from_value(&p).unwrap();
        let req =
            Request::new("kms:Decrypt", Caller::role("arn:aws:iam::111111111111:role/KarpenterNode"), KEY)
                .with("kms:ViaService", "ec2.eu-west-1.amazonaws.com");
        assert_eq!(evaluate(&parsed, &req).decision, Decision::Allow);
    }

    #[test]
    fn generate_command_is_sorted_and_complete() {
        assert_eq!(
            generate_command(&["222222222222", "111111111111"], Some(KEY)),
            format!(
                "amikey policy generate --consumer-account 111111111111 --consumer-account 222222222222 --key {KEY} --merge"
            )
        );
        assert_eq!(
            generate_command(&["111111111111"], None),
            "amikey policy generate --consumer-account 111111111111"
        );
    }
}
