//! Table tests of the evaluator over real-world key policies. Each expected verdict carries the
//! AWS rule that produces it. The policies are written out inline in each case.

use serde_json::{Value, json};

use super::*;

const PRODUCER: &str = "999999999999";
const KEY: &str = "arn:aws:kms:eu-west-1:999999999999:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn policy(v: Value) -> Policy {
    Policy::from_value(&v).unwrap()
}

fn role(arn: &str) -> Caller {
    Caller::role(arn).with_userid("AROAEXAMPLEROLEID:session")
}

fn via_ec2(r: Request, region: &str) -> Request {
    r.with("kms:ViaService", &format!("ec2.{region}.amazonaws.com"))
}

struct Case {
    name: &'static str,
    request: Request,
    expect: Decision,
}

fn run(p: &Policy, cases: Vec<Case>) {
    for c in cases {
        let e = evaluate(p, &c.request);
        assert_eq!(e.decision, c.expect, "{}: {e:?}", c.name);
    }
}

/// Seed 000 (binx.io, "How to start an autoscaling group using a cross-account encrypted AMI"),
/// the CloudFormation key policy as JSON; `${AWS::AccountId}` = 999999999999.
fn seed_000() -> Policy {
    policy(json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "Allow use of the key", "Effect": "Allow",
             "Principal": {"AWS": ["arn:aws:iam::111111111111:root", "arn:aws:iam::222222222222:root"]},
             "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
             "Resource": "*"},
            {"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
             "Principal": {"AWS": ["arn:aws:iam::111111111111:root", "arn:aws:iam::222222222222:root"]},
             "Action": ["kms:ListGrants", "kms:CreateGrant", "kms:RevokeGrant"],
             "Resource": "*"}
        ]
    }))
}

#[test]
fn seed_000_per_account_root_policy() {
    let p = seed_000();
    let consumer = role("arn:aws:iam::111111111111:role/admin");
    run(
        &p,
        vec![
            // Naming `arn:aws:iam::111111111111:root` delegates to the whole account (KMS DG "Allowing
            // users in other accounts to use a KMS key"): any role there matches, subject to its own
            // IAM policy, which the key policy cannot see.
            Case {
                name: "consumer CreateGrant for its SLR",
                request: Request::new("kms:CreateGrant", consumer.clone(), KEY)
                    .with("kms:GrantIsForAWSResource", "false"),
                expect: Decision::Allow,
            },
            Case {
                name: "consumer ListGrants",
                request: Request::new("kms:ListGrants", consumer.clone(), KEY),
                expect: Decision::Allow,
            },
            Case {
                name: "Decrypt via EC2",
                request: via_ec2(Request::new("kms:Decrypt", consumer.clone(), KEY), "eu-west-1"),
                expect: Decision::Allow,
            },
            // `kms:ReEncrypt*` is a wildcard: matches ReEncryptFrom (IAM UG "Action": wildcards).
            Case {
                name: "ReEncryptFrom via wildcard",
                request: Request::new("kms:ReEncryptFrom", consumer.clone(), KEY),
                expect: Decision::Allow,
            },
            // Action names are case-insensitive (IAM UG "IAM JSON policy elements: Action").
            Case {
                name: "action case-insensitive",
                request: Request::new("KMS:decrypt", consumer.clone(), KEY),
                expect: Decision::Allow,
            },
            // Nothing allows administrative actions to the consumer: implicit deny by default.
            Case {
                name: "consumer PutKeyPolicy",
                request: Request::new("kms:PutKeyPolicy", consumer, KEY),
                expect: Decision::ImplicitDeny,
            },
            // An account not named at all is implicitly denied.
            Case {
                name: "unnamed account",
                request: Request::new("kms:Decrypt", role("arn:aws:iam::333333333333:role/x"), KEY),
                expect: Decision::ImplicitDeny,
            },
            // The producer's own root statement with `kms:*` covers everything in its account.
            Case {
                name: "producer admin",
                request: Request::new("kms:PutKeyPolicy", Caller::account_root(PRODUCER), KEY),
                expect: Decision::Allow,
            },
        ],
    );
    let e = evaluate(&p, &Request::new("kms:CreateGrant", role("arn:aws:iam::222222222222:role/a"), KEY));
    assert_eq!(
        e.matched,
        vec![StatementRef { index: 2, sid: Some("Allow attachment of persistent resources".into()) }]
    );
}

/// Seed 001 (Tony Tannous, "Troubleshoot KMS Permissions for Encrypted EBS-Backed AMIs Launched
/// in Secondary Account ASG"): the two statements added for secondary account 111122223333.
#[test]
fn seed_001_secondary_account_statements() {
    let p = policy(json!({"Statement": [
        {"Sid": "Allow use of the key", "Effect": "Allow",
         "Principal": {"AWS": ["arn:aws:iam::111122223333:root"]},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
         "Resource": "*"},
        {"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
         "Principal": {"AWS": ["arn:aws:iam::111122223333:root"]},
         "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
         "Resource": "*"}
    ]}));
    let key = "arn:aws:kms:us-east-1:444455556666:key/12ee9c11-3476-492c-b5cc-ed4a4d636337";
    let admin = role("arn:aws:iam::111122223333:role/sandbox_admin");
    run(
        &p,
        vec![
            // The seed's `aws kms create-grant` from the secondary account succeeds: the account root
            // is named and no GrantIsForAWSResource condition applies.
            Case {
                name: "create-grant from secondary",
                request: Request::new("kms:CreateGrant", admin.clone(), key)
                    .with("kms:GrantIsForAWSResource", "false"),
                expect: Decision::Allow,
            },
            Case {
                name: "GenerateDataKeyWithoutPlaintext",
                request: via_ec2(
                    Request::new("kms:GenerateDataKeyWithoutPlaintext", admin.clone(), key),
                    "us-east-1",
                ),
                expect: Decision::Allow,
            },
            // A key policy can also name a role ARN directly; here it does not, and the SLR itself is
            // in the same named account, so the key policy alone would let it through. What failed in
            // the seed was the SLR's *IAM* side: an AWS-managed SLR policy cannot be extended, hence
            // the grant. The evaluator says only "the key policy does not stand in the way".
            Case {
                name: "SLR, key-policy side",
                request: Request::new(
                    "kms:Decrypt",
                    role(
                        "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
                    ),
                    key,
                ),
                expect: Decision::Allow,
            },
        ],
    );
}

/// Seed 003 ("KMS Encryption of Autoscaled Instance Volumes"): the root statement scoped with
/// `kms:ViaService` and `aws:userid`; `${AWS::Region}` = us-east-1, `${AWS::AccountId}` =
/// 123456789012, `InstanceRoleArn` = arn:aws:iam::123456789012:role/InstanceRole. The seed's
/// elided actions (`...`) are left out.
#[test]
fn seed_003_via_service_and_userid() {
    let p = policy(json!({"Version": "2012-10-17", "Id": "kms-key", "Statement": [
        {"Sid": "Allow use of the key by the instance", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::123456789012:role/InstanceRole"},
         "Action": ["kms:CreateGrant"], "Resource": "*"},
        {"Sid": "Allow use of the key by the root user for autoscaling purposes", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
         "Action": ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*"],
         "Resource": "*",
         "Condition": {"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com", "aws:userid": "123456789012"}}}
    ]}));
    let key = "arn:aws:kms:us-east-1:123456789012:key/k";
    let root = Caller::account_root("123456789012");
    run(
        &p,
        vec![
            // For the root user `aws:userid` is the account id (IAM UG "aws:userid" table), and the
            // call comes through EC2 in us-east-1: both StringEquals keys match (AND across keys).
            Case {
                name: "root via ec2",
                request: via_ec2(Request::new("kms:Decrypt", root.clone(), key), "us-east-1"),
                expect: Decision::Allow,
            },
            // For a role session `aws:userid` is `ROLEID:SESSION`, never the account id, so the
            // condition is false — exactly the seed's footnote 2: the condition limits the account
            // principal to the root user.
            Case {
                name: "role via ec2",
                request: via_ec2(
                    Request::new("kms:Decrypt", role("arn:aws:iam::123456789012:role/ops"), key),
                    "us-east-1",
                ),
                expect: Decision::ImplicitDeny,
            },
            // A direct call has no `kms:ViaService`; a positive operator on a missing key is false.
            Case {
                name: "root direct",
                request: Request::new("kms:Decrypt", root.clone(), key),
                expect: Decision::ImplicitDeny,
            },
            // A different region's EC2 endpoint does not equal the listed value.
            Case {
                name: "root via other region",
                request: via_ec2(Request::new("kms:Decrypt", root.clone(), key), "eu-west-1"),
                expect: Decision::ImplicitDeny,
            },
            // Condition key names are case-insensitive (IAM UG "Condition element").
            Case {
                name: "key name case",
                request: Request::new("kms:Decrypt", root, key)
                    .with("KMS:VIASERVICE", "ec2.us-east-1.amazonaws.com"),
                expect: Decision::Allow,
            },
            // A role whose `aws:userid` is not known: the condition cannot be decided, so no guess.
            Case {
                name: "role with unknown userid",
                request: via_ec2(
                    Request::new("kms:Decrypt", Caller::role("arn:aws:iam::123456789012:role/ops"), key),
                    "us-east-1",
                ),
                expect: Decision::Indeterminate,
            },
            // The instance role is named by ARN and needs no condition.
            Case {
                name: "instance role CreateGrant",
                request: Request::new(
                    "kms:CreateGrant",
                    Caller::role("arn:aws:iam::123456789012:role/InstanceRole"),
                    key,
                ),
                expect: Decision::Allow,
            },
            // ... and only for CreateGrant.
            Case {
                name: "instance role Decrypt",
                request: Request::new(
                    "kms:Decrypt",
                    role("arn:aws:iam::123456789012:role/InstanceRole"),
                    key,
                ),
                expect: Decision::ImplicitDeny,
            },
        ],
    );
}

/// Seed 004 ("aws amis, shared, encrypted"): org-wide `Principal: {"AWS": "*"}` with
/// `aws:PrincipalOrgID`; `o-$org_id` = o-exampleorgid.
fn seed_004() -> Policy {
    policy(json!({"Statement": [
        {"Sid": "ShareAMIToAccounts", "Effect": "Allow", "Principal": {"AWS": "*"},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt", "kms:GenerateDataKey*",
                    "kms:CreateGrant", "kms:RetireGrant", "kms:RevokeGrant", "kms:DescribeKey"],
         "Resource": "*",
         "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-exampleorgid"}}}
    ]}))
}

#[test]
fn seed_004_org_wide_principal_star() {
    let p = seed_004();
    let member = role("arn:aws:iam::111111111111:role/admin").with_org("o-exampleorgid");
    run(
        &p,
        vec![
            // `*` matches every principal; the org condition then holds for members.
            Case {
                name: "member Decrypt via ec2",
                request: via_ec2(Request::new("kms:Decrypt", member.clone(), KEY), "eu-west-1"),
                expect: Decision::Allow,
            },
            // No GrantIsForAWSResource condition: the consumer's SLR grant is allowed.
            Case {
                name: "member CreateGrant for SLR",
                request: Request::new("kms:CreateGrant", member.clone(), KEY)
                    .with("kms:GrantIsForAWSResource", "false"),
                expect: Decision::Allow,
            },
            // `kms:ReEncrypt` (no `*`) is not an action; exact names match only themselves, so
            // ReEncryptFrom/ReEncryptTo are implicitly denied: launches that re-encrypt fail.
            Case {
                name: "ReEncryptFrom not covered",
                request: via_ec2(Request::new("kms:ReEncryptFrom", member.clone(), KEY), "eu-west-1"),
                expect: Decision::ImplicitDeny,
            },
            // ListGrants is not listed.
            Case {
                name: "ListGrants not listed",
                request: Request::new("kms:ListGrants", member, KEY),
                expect: Decision::ImplicitDeny,
            },
            // Another organization: StringEquals fails.
            Case {
                name: "outsider",
                request: Request::new(
                    "kms:Decrypt",
                    role("arn:aws:iam::333333333333:role/x").with_org("o-otherorg"),
                    KEY,
                ),
                expect: Decision::ImplicitDeny,
            },
            // Org id not given: cannot be decided.
            Case {
                name: "org unknown",
                request: Request::new("kms:Decrypt", role("arn:aws:iam::333333333333:role/x"), KEY),
                expect: Decision::Indeterminate,
            },
        ],
    );
}

/// AWS Auto Scaling UG, Example 1 (same account) reused cross-account — the trap of §8: the
/// `kms:GrantIsForAWSResource` condition is true only when an AWS service creates the grant.
#[test]
fn grant_is_for_aws_resource_trap() {
    let p = policy(json!({"Statement": [
        {"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
         "Action": "kms:CreateGrant", "Resource": "*",
         "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}}
    ]}));
    let admin = role("arn:aws:iam::111111111111:role/admin");
    run(
        &p,
        vec![
            // The consumer calls CreateGrant itself: the key is false, Bool fails.
            Case {
                name: "consumer grant for SLR",
                request: Request::new("kms:CreateGrant", admin.clone(), KEY)
                    .with("kms:GrantIsForAWSResource", "false"),
                expect: Decision::ImplicitDeny,
            },
            // EC2 creating its volume grant on the consumer's behalf: the key is true.
            Case {
                name: "EC2's own grant",
                request: via_ec2(Request::new("kms:CreateGrant", admin.clone(), KEY), "eu-west-1")
                    .with("kms:GrantIsForAWSResource", "true"),
                expect: Decision::Allow,
            },
            // Bool compares case-insensitively ("True").
            Case {
                name: "Bool case",
                request: Request::new("kms:CreateGrant", admin.clone(), KEY)
                    .with("kms:GrantIsForAWSResource", "True"),
                expect: Decision::Allow,
            },
            // A modeled key that the request does not carry is absent: Bool on an absent key is false.
            Case {
                name: "absent flag",
                request: Request::new("kms:CreateGrant", admin, KEY),
                expect: Decision::ImplicitDeny,
            },
        ],
    );
}

/// The modernisation-platform pattern (ANCHORS §2.5, MoJ PR #2343): allow CreateGrant
/// org-wide, but deny it unless the grant is for an AWS resource or for the Auto Scaling SLR.
#[test]
fn explicit_deny_with_grantee_exception() {
    let p = policy(json!({"Statement": [
        {"Sid": "AllowGrants", "Effect": "Allow", "Principal": {"AWS": "*"},
         "Action": ["kms:CreateGrant", "kms:Decrypt"], "Resource": "*",
         "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-exampleorgid"}}},
        {"Sid": "DenyGrantsExceptAutoScaling", "Effect": "Deny", "Principal": {"AWS": "*"},
         "Action": "kms:CreateGrant", "Resource": "*",
         "Condition": {
            "Bool": {"kms:GrantIsForAWSResource": "false"},
            "StringNotLike": {"kms:GranteePrincipal": "arn:aws:iam::*:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling*"}}},
        {"Sid": "DenyDirectDecrypt", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringNotLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}}
    ]}));
    let admin = role("arn:aws:iam::111111111111:role/admin").with_org("o-exampleorgid");
    let grant = |grantee: &str| {
        Request::new("kms:CreateGrant", admin.clone(), KEY)
            .with("kms:GrantIsForAWSResource", "false")
            .with("kms:GranteePrincipal", grantee)
    };
    run(
        &p,
        vec![
            // Grantee matches the StringNotLike pattern → that condition is false → the Deny does
            // not apply (AND across operators); the org Allow applies.
            Case {
                name: "grant to ASG SLR",
                request: grant(
                    "arn:aws:iam::111111111111:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
                ),
                expect: Decision::Allow,
            },
            // A custom-suffix ASG SLR matches the trailing `*` too.
            Case {
                name: "grant to custom-suffix SLR",
                request: grant(
                    "arn:aws:iam::111111111111:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_prod",
                ),
                expect: Decision::Allow,
            },
            // Any other grantee: both Deny conditions hold; explicit Deny beats the Allow.
            Case {
                name: "grant to a plain role",
                request: grant("arn:aws:iam::111111111111:role/whatever"),
                expect: Decision::ExplicitDeny,
            },
            // Negated operator on a key missing from the request is true (IAM UG "Condition
            // operators": "…the condition is true"): a direct Decrypt is denied…
            Case {
                name: "direct Decrypt",
                request: Request::new("kms:Decrypt", admin.clone(), KEY),
                expect: Decision::ExplicitDeny,
            },
            // …and one through EC2 is not.
            Case {
                name: "Decrypt via EC2",
                request: via_ec2(Request::new("kms:Decrypt", admin.clone(), KEY), "eu-west-1"),
                expect: Decision::Allow,
            },
        ],
    );
    let e = evaluate(&p, &grant("arn:aws:iam::111111111111:role/whatever"));
    assert_eq!(e.matched, vec![StatementRef { index: 1, sid: Some("DenyGrantsExceptAutoScaling".into()) }]);
}

/// NotAction and NotPrincipal.
#[test]
fn not_action_and_not_principal() {
    let p = policy(json!({"Statement": [
        {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": "999999999999"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "Consumers", "Effect": "Allow", "Principal": {"AWS": ["111111111111", "222222222222"]}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "OutsidersOnlyUse", "Effect": "Deny", "Principal": "*",
         "NotAction": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*",
         "Condition": {"StringNotEquals": {"kms:CallerAccount": "999999999999"}}},
        {"Sid": "Only111Decrypts", "Effect": "Deny", "NotPrincipal": {"AWS": ["arn:aws:iam::111111111111:root", "999999999999"]},
         "Action": "kms:Decrypt", "Resource": "*"}
    ]}));
    run(
        &p,
        vec![
            // NotAction: the Deny covers every action *except* those listed, so Decrypt escapes it.
            // A bare 12-digit id in Principal means that account's root.
            Case {
                name: "111 Decrypt",
                request: Request::new("kms:Decrypt", role("arn:aws:iam::111111111111:role/a"), KEY),
                expect: Decision::Allow,
            },
            // CreateGrant is not listed → covered by the Deny; caller account ≠ producer → Deny.
            Case {
                name: "111 CreateGrant",
                request: Request::new("kms:CreateGrant", role("arn:aws:iam::111111111111:role/a"), KEY),
                expect: Decision::ExplicitDeny,
            },
            // The producer's own account fails StringNotEquals → Deny does not apply.
            Case {
                name: "producer CreateGrant",
                request: Request::new("kms:CreateGrant", role("arn:aws:iam::999999999999:role/a"), KEY),
                expect: Decision::Allow,
            },
            // NotPrincipal: the Deny applies to everyone not listed — 222 is denied Decrypt.
            Case {
                name: "222 Decrypt",
                request: Request::new("kms:Decrypt", role("arn:aws:iam::222222222222:role/a"), KEY),
                expect: Decision::ExplicitDeny,
            },
            Case {
                name: "222 DescribeKey",
                request: Request::new("kms:DescribeKey", role("arn:aws:iam::222222222222:role/a"), KEY),
                expect: Decision::Allow,
            },
        ],
    );
}

/// Operators beyond StringEquals, and what is not guessed.
#[test]
fn operator_semantics() {
    let admin = role("arn:aws:iam::111111111111:role/KarpenterController");
    let cases: Vec<(Value, Request, Decision, &str)> = vec![
        // …IfExists: a missing key makes the condition true.
        (
            json!({"StringEqualsIfExists": {"kms:ViaService": "ec2.eu-west-1.amazonaws.com"}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::Allow,
            "IfExists absent",
        ),
        (
            json!({"StringEqualsIfExists": {"kms:ViaService": "ec2.eu-west-1.amazonaws.com"}}),
            via_ec2(Request::new("kms:Decrypt", admin.clone(), KEY), "us-east-1"),
            Decision::ImplicitDeny,
            "IfExists present, wrong",
        ),
        // ArnLike: per-part wildcard matching of aws:PrincipalArn.
        (
            json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/Karpenter*"}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::Allow,
            "ArnLike",
        ),
        (
            json!({"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::111111111111:role/Other"}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::ImplicitDeny,
            "ArnEquals other",
        ),
        // StringLike with `?`.
        (
            json!({"StringLike": {"kms:ViaService": "ec2.eu-west-?.amazonaws.com"}}),
            via_ec2(Request::new("kms:Decrypt", admin.clone(), KEY), "eu-west-1"),
            Decision::Allow,
            "StringLike ?",
        ),
        // StringEquals is case-sensitive; the IgnoreCase variant is not.
        (
            json!({"StringEquals": {"kms:ViaService": "EC2.eu-west-1.amazonaws.com"}}),
            via_ec2(Request::new("kms:Decrypt", admin.clone(), KEY), "eu-west-1"),
            Decision::ImplicitDeny,
            "StringEquals case",
        ),
        (
            json!({"StringEqualsIgnoreCase": {"kms:ViaService": "EC2.eu-west-1.amazonaws.com"}}),
            via_ec2(Request::new("kms:Decrypt", admin.clone(), KEY), "eu-west-1"),
            Decision::Allow,
            "IgnoreCase",
        ),
        // Multiple values for one key are ORed.
        (
            json!({"StringEquals": {"kms:CallerAccount": ["222222222222", "111111111111"]}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::Allow,
            "OR of values",
        ),
        // ForAnyValue: one requested operation in the list suffices.
        (
            json!({"ForAnyValue:StringEquals": {"kms:GrantOperations": ["Decrypt"]}}),
            Request::new("kms:CreateGrant", admin.clone(), KEY)
                .with_values("kms:GrantOperations", &["Decrypt", "Encrypt"]),
            Decision::Allow,
            "ForAnyValue",
        ),
        // ForAllValues: every requested operation must be in the list.
        (
            json!({"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]}}),
            Request::new("kms:CreateGrant", admin.clone(), KEY)
                .with_values("kms:GrantOperations", &["Decrypt", "Encrypt"]),
            Decision::ImplicitDeny,
            "ForAllValues",
        ),
        // ForAllValues over a missing key is true; ForAnyValue false.
        (
            json!({"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::Allow,
            "ForAllValues absent",
        ),
        (
            json!({"ForAnyValue:StringEquals": {"kms:GrantOperations": ["Decrypt"]}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::ImplicitDeny,
            "ForAnyValue absent",
        ),
        // Null: true means "key absent".
        (
            json!({"Null": {"kms:ViaService": "true"}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::Allow,
            "Null absent",
        ),
        (
            json!({"Null": {"kms:ViaService": "true"}}),
            via_ec2(Request::new("kms:Decrypt", admin.clone(), KEY), "eu-west-1"),
            Decision::ImplicitDeny,
            "Null present",
        ),
        // Not supported → undetermined, never a guess.
        (
            json!({"NumericLessThan": {"kms:GrantOperations": "3"}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::Indeterminate,
            "Numeric",
        ),
        (
            json!({"StringEquals": {"aws:PrincipalTag/team": "ops"}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::Indeterminate,
            "unmodeled key",
        ),
        (
            json!({"StringEquals": {"kms:CallerAccount": "${aws:PrincipalAccount}"}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::Indeterminate,
            "policy variable",
        ),
        (
            json!({"StringEquals": {"kms:EncryptionContext:aws:ebs:id": "vol-1"}}),
            via_ec2(Request::new("kms:Decrypt", admin.clone(), KEY), "eu-west-1"),
            Decision::Indeterminate,
            "encryption context",
        ),
        // One false condition decides even next to an undetermined one (AND).
        (
            json!({"NumericLessThan": {"x": "3"}, "StringEquals": {"kms:CallerAccount": "222222222222"}}),
            Request::new("kms:Decrypt", admin.clone(), KEY),
            Decision::ImplicitDeny,
            "false beats unknown",
        ),
    ];
    for (cond, req, expect, name) in cases {
        let p = policy(
            json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
                                             "Action": "kms:*", "Resource": "*", "Condition": cond}]}),
        );
        let e = evaluate(&p, &req);
        assert_eq!(e.decision, expect, "{name}: {e:?}");
    }
}

/// An undetermined Allow does not matter once another statement allows; an undetermined Deny
/// does, and a certain Deny wins over an undetermined one.
#[test]
fn undetermined_only_matters_when_it_could_change_the_outcome() {
    let caller = role("arn:aws:iam::111111111111:role/a");
    let p = policy(json!({"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "111111111111"}, "Action": "kms:Decrypt", "Resource": "*"},
        {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}}
    ]}));
    let e = evaluate(&p, &Request::new("kms:Decrypt", caller.clone(), KEY));
    assert_eq!(e.decision, Decision::Allow);
    assert_eq!(e.undetermined.len(), 1);
    assert!(e.undetermined[0].reason.contains("DateLessThan"));

    let p = policy(json!({"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "111111111111"}, "Action": "kms:Decrypt", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}
    ]}));
    assert_eq!(
        evaluate(&p, &Request::new("kms:Decrypt", caller.clone(), KEY)).decision,
        Decision::Indeterminate
    );

    let p = policy(json!({"Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}
    ]}));
    assert_eq!(evaluate(&p, &Request::new("kms:Decrypt", caller, KEY)).decision, Decision::ExplicitDeny);
}

/// Principal forms: Service and Federated never match an IAM caller; a named role matches only
/// itself (and its session ARN); Resource patterns are matched against the key ARN.
#[test]
fn principal_and_resource_forms() {
    let p = policy(json!({"Statement": [
        {"Sid": "svc", "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "role", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:role/Named"}, "Action": "kms:Decrypt",
         "Resource": "arn:aws:kms:eu-west-1:999999999999:key/*"},
        {"Sid": "sess", "Effect": "Allow", "Principal": {"AWS": "arn:aws:sts::222222222222:assumed-role/R/s1"}, "Action": "kms:Decrypt", "Resource": "*"}
    ]}));
    let named = role("arn:aws:iam::111111111111:role/Named");
    run(
        &p,
        vec![
            Case {
                name: "named role",
                request: Request::new("kms:Decrypt", named.clone(), KEY),
                expect: Decision::Allow,
            },
            Case {
                name: "named role, other region key",
                request: Request::new("kms:Decrypt", named, "arn:aws:kms:us-east-1:999999999999:key/x"),
                expect: Decision::ImplicitDeny,
            },
            Case {
                name: "other role same account",
                request: Request::new("kms:Decrypt", role("arn:aws:iam::111111111111:role/Other"), KEY),
                expect: Decision::ImplicitDeny,
            },
            Case {
                name: "account root is not a named role",
                request: Request::new("kms:Decrypt", Caller::account_root("111111111111"), KEY),
                expect: Decision::ImplicitDeny,
            },
            Case {
                name: "session arn",
                request: Request::new(
                    "kms:Decrypt",
                    Caller {
                        session_arn: Some("arn:aws:sts::222222222222:assumed-role/R/s1".into()),
                        ..role("arn:aws:iam::222222222222:role/R")
                    },
                    KEY,
                ),
                expect: Decision::Allow,
            },
        ],
    );
}
