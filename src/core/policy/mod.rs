//! KMS key policies, as amikey reads, evaluates, checks and writes them.
//!
//! Owns: the tolerant parse of a key-policy document ([`Policy::from_value`]), an evaluator for
//! the part of the IAM policy language that key policies use ([`evaluate`]), the list of KMS
//! calls a consumer account makes on a producer key when it launches from a shared encrypted AMI
//! ([`launch_chain_actions`]), the consumer check built on both ([`check_consumers`]), and the
//! statements amikey proposes to producers ([`generate`], [`merge`], [`identity_policy`]).
//! Must not know: AWS SDK types, how a policy was fetched, I/O, the clock.
//!
//! The evaluator sees only the key policy. A cross-account caller also needs its own IAM
//! identity policy to allow the call, and grants are a separate path; neither is visible here,
//! so an `Allow` from [`evaluate`] means "the key policy does not stand in the way".

mod check;
mod eval;
mod generate;

use serde::Serialize;
use serde_json::Value;

pub use check::{
    AUTOSCALING_GRANT_OPERATIONS, ChainAction, ChainCaller, Consumer, FindingCode, PolicyFinding,
    check_consumers, check_policy, launch_chain_actions, publish_check,
};
pub use eval::{Caller, Decision, Evaluation, Request, Undetermined, evaluate};
pub use generate::{
    CRYPTO_SID, Consumers, GRANTS_SID, IDENTITY_GRANT_SID, IDENTITY_SID, generate, generate_command,
    identity_policy, merge,
};

/// Why a document is not a key policy amikey can read. Each variant says where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The document itself is not valid JSON.
    #[error(
        "the key policy is not valid JSON ({reason}); pass the document exactly as \
         `aws kms get-key-policy --policy-name default --query Policy --output text` prints it"
    )]
    NotJson {
        /// serde_json's message.
        reason: String,
    },
    /// The document is valid JSON but not an object.
    #[error("the key policy must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// There is no `Statement` member.
    #[error("the key policy has no `Statement`; a key policy needs at least one statement")]
    MissingStatement,
    /// `Statement` is neither an object nor an array of objects.
    #[error("`Statement` must be an object or an array of objects, found {found}")]
    BadStatement {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// One statement is malformed.
    #[error("statement {at}: {problem}")]
    InStatement {
        /// `Sid "…"` or `#index`.
        at: String,
        /// What is wrong, and what was expected.
        problem: String,
    },
    /// An input given to a generator was invalid.
    #[error("{what} {value:?} is invalid: {expected}")]
    BadInput {
        /// What kind of input (`consumer account`, `organization id`, …).
        what: &'static str,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
}

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Effect {
    /// `"Effect": "Allow"`.
    Allow,
    /// `"Effect": "Deny"`.
    Deny,
}

/// The principals named in a `Principal` or `NotPrincipal` element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Principals {
    /// `"*"` or `{"AWS": "*"}`: everyone.
    pub any: bool,
    /// `AWS` entries: account ids, `arn:…:root`, role/user/assumed-role ARNs.
    pub aws: Vec<String>,
    /// `Service` entries (`ec2.amazonaws.com`). Never match the IAM callers amikey evaluates.
    pub service: Vec<String>,
    /// `Federated` and `CanonicalUser` entries. Never match the IAM callers amikey evaluates.
    pub other: Vec<String>,
}

/// Who a statement applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PrincipalSpec {
    /// No principal element (identity-policy form): the statement applies to its holder.
    Holder,
    /// `Principal`: applies to these principals.
    Principal(Principals),
    /// `NotPrincipal`: applies to everyone except these.
    NotPrincipal(Principals),
}

/// Which actions a statement covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ActionSpec {
    /// `Action`: patterns with `*` and `?`, matched case-insensitively.
    Action(Vec<String>),
    /// `NotAction`: every action except these patterns.
    NotAction(Vec<String>),
}

/// Which resources a statement covers. In a key policy `"*"` means "this key".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ResourceSpec {
    /// No resource element: treated as `"*"`.
    Any,
    /// `Resource` patterns.
    Resource(Vec<String>),
    /// `NotResource` patterns.
    NotResource(Vec<String>),
}

/// One `operator: { key: values }` entry of a `Condition` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// The operator exactly as written (`ForAnyValue:StringLike`, `BoolIfExists`, …).
    pub operator: String,
    /// The condition key as written (`kms:ViaService`).
    pub key: String,
    /// The values; JSON booleans and numbers are kept as their text (`true`, `42`).
    pub values: Vec<String>,
}

/// One parsed statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    /// Position in the document, from 0.
    pub index: usize,
    /// `Sid`, when present.
    pub sid: Option<String>,
    /// `Effect`.
    pub effect: Effect,
    /// `Principal` / `NotPrincipal`.
    pub principal: PrincipalSpec,
    /// `Action` / `NotAction`.
    pub action: ActionSpec,
    /// `Resource` / `NotResource`.
    pub resource: ResourceSpec,
    /// Every condition entry, in document order.
    pub conditions: Vec<Condition>,
}

impl Statement {
    /// A stable reference to this statement for findings.
    pub fn reference(&self) -> StatementRef {
        StatementRef { index: self.index, sid: self.sid.clone() }
    }
}

/// Names a statement in findings: its `Sid` when it has one, else its position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct StatementRef {
    /// Position in the document, from 0.
    pub index: usize,
    /// `Sid`, when present.
    pub sid: Option<String>,
}

impl std::fmt::Display for StatementRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sid {
            Some(sid) if !sid.is_empty() => write!(f, "Sid {sid:?}"),
            _ => write!(f, "statement #{}", self.index + 1),
        }
    }
}

/// A parsed key policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// `Version`, when present.
    pub version: Option<String>,
    /// `Id`, when present.
    pub id: Option<String>,
    /// The statements, in document order.
    pub statements: Vec<Statement>,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Policy {
    /// Parses a policy from its JSON text (what `GetKeyPolicy` returns).
    pub fn from_json_str(text: &str) -> Result<Policy, PolicyError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| PolicyError::NotJson { reason: e.to_string() })?;
        Policy::from_value(&value)
    }

    /// Parses a policy tolerantly: `Statement` as object or array; `Action`, `Resource` and
    /// principal lists as string or array; `Principal` as `"*"` or an object of `AWS`,
    /// `Service`, `Federated`, `CanonicalUser`. Element names are matched exactly as AWS
    /// spells them. Anything else is an error naming the statement; never a panic.
    pub fn from_value(value: &Value) -> Result<Policy, PolicyError> {
        let obj = value.as_object().ok_or(PolicyError::NotAnObject { found: json_type(value) })?;
        let raw = obj.get("Statement").ok_or(PolicyError::MissingStatement)?;
        let raw_statements: Vec<&Value> = match raw {
            Value::Object(_) => vec![raw],
            Value::Array(items) => items.iter().collect(),
            other => {
                return Err(PolicyError::BadStatement { found: json_type(other) });
            }
        };
        let statements = raw_statements
            .into_iter()
            .enumerate()
            .map(|(index, s)| parse_statement(index, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            version: obj.get("Version").and_then(Value::as_str).map(str::to_owned),
            id: obj.get("Id").and_then(Value::as_str).map(str::to_owned),
            statements,
        })
    }
}

fn parse_statement(index: usize, value: &Value) -> Result<Statement, PolicyError> {
    let sid = value.get("Sid").and_then(Value::as_str).map(str::to_owned);
    let at = match &sid {
        Some(s) => format!("Sid {s:?}"),
        None => format!("#{}", index + 1),
    };
    let bad = |problem: String| PolicyError::InStatement { at: at.clone(), problem };
    let obj =
        value.as_object().ok_or_else(|| bad(format!("must be an object, found {}", json_type(value))))?;
    const KNOWN: &[&str] = &[
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    ];
    if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown element `{unknown}` (expected one of {}); check its spelling, e.g. \
             `Resource`, not `Resources`",
            KNOWN.join(", ")
        )));
    }
    if let Some(s) = obj.get("Sid")
        && !s.is_string()
    {
        return Err(bad(format!("`Sid` must be a string, found {}", json_type(s))));
    }
    let effect = match obj.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => {
            return Err(bad(format!("`Effect` must be \"Allow\" or \"Deny\", found {other:?}")));
        }
        None => return Err(bad("`Effect` is missing or not a string".to_owned())),
    };
    let principal = match (obj.get("Principal"), obj.get("NotPrincipal")) {
        (Some(_), Some(_)) => {
            return Err(bad("has both `Principal` and `NotPrincipal`".to_owned()));
        }
        (Some(p), None) => {
            PrincipalSpec::Principal(parse_principals(p).map_err(|e| bad(format!("`Principal` {e}")))?)
        }
        (None, Some(p)) => {
            PrincipalSpec::NotPrincipal(parse_principals(p).map_err(|e| bad(format!("`NotPrincipal` {e}")))?)
        }
        (None, None) => PrincipalSpec::Holder,
    };
    let action = match (obj.get("Action"), obj.get("NotAction")) {
        (Some(_), Some(_)) => return Err(bad("has both `Action` and `NotAction`".to_owned())),
        (Some(a), None) => ActionSpec::Action(string_list(a).map_err(|e| bad(format!("`Action` {e}")))?),
        (None, Some(a)) => {
            ActionSpec::NotAction(string_list(a).map_err(|e| bad(format!("`NotAction` {e}")))?)
        }
        (None, None) => return Err(bad("has neither `Action` nor `NotAction`".to_owned())),
    };
    let resource = match (obj.get("Resource"), obj.get("NotResource")) {
        (Some(_), Some(_)) => return Err(bad("has both `Resource` and `NotResource`".to_owned())),
        (Some(r), None) => {
            ResourceSpec::Resource(string_list(r).map_err(|e| bad(format!("`Resource` {e}")))?)
        }
        (None, Some(r)) => {
            ResourceSpec::NotResource(string_list(r).map_err(|e| bad(format!("`NotResource` {e}")))?)
        }
        (None, None) => ResourceSpec::Any,
    };
    let conditions = match obj.get("Condition") {
        None => Vec::new(),
        Some(c) => parse_conditions(c).map_err(|e| bad(format!("`Condition` {e}")))?,
    };
    Ok(Statement { index, sid, effect, principal, action, resource, conditions })
}

/// A string, or a non-empty array of strings.
fn string_list(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("must list strings, found {}", json_type(other))),
            })
            .collect(),
        Value::Array(_) => Err("must not be an empty array".to_owned()),
        other => Err(format!("must be a string or an array of strings, found {}", json_type(other))),
    }
}

fn parse_principals(v: &Value) -> Result<Principals, String> {
    let mut p = Principals::default();
    match v {
        Value::String(s) if s == "*" => p.any = true,
        Value::String(s) => return Err(format!("as a string must be \"*\", found {s:?}")),
        Value::Object(map) => {
            if map.is_empty() {
                return Err("must name at least one principal".to_owned());
            }
            for (kind, ids) in map {
                let ids = string_list(ids).map_err(|e| format!("`{kind}` {e}"))?;
                match kind.as_str() {
                    "AWS" => {
                        for id in ids {
                            if id == "*" {
                                p.any = true;
                            } else {
                                p.aws.push(id);
                            }
                        }
                    }
                    "Service" => p.service.extend(ids),
                    "Federated" | "CanonicalUser" => p.other.extend(ids),
                    other => {
                        return Err(format!(
                            "has unknown principal type `{other}` (expected AWS, Service, \
                             Federated or CanonicalUser)"
                        ));
                    }
                }
            }
        }
        other => {
            return Err(format!("must be \"*\" or an object, found {}", json_type(other)));
        }
    }
    Ok(p)
}

fn condition_value(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("values must be strings, booleans or numbers, found {}", json_type(other))),
    }
}

fn parse_conditions(v: &Value) -> Result<Vec<Condition>, String> {
    let ops = v.as_object().ok_or_else(|| format!("must be an object, found {}", json_type(v)))?;
    let mut out = Vec::new();
    for (operator, block) in ops {
        let keys = block.as_object().ok_or_else(|| {
            format!("`{operator}` must map condition keys to values, found {}", json_type(block))
        })?;
        for (key, values) in keys {
            let values = match values {
                Value::Array(items) => items.iter().map(condition_value).collect::<Result<Vec<_>, _>>(),
                single => condition_value(single).map(|s| vec![s]),
            }
            .map_err(|e| format!("`{operator}` `{key}`: {e}"))?;
            out.push(Condition { operator: operator.clone(), key: key.clone(), values });
        }
    }
    Ok(out)
}

/// Matches `text` against an IAM wildcard pattern: `*` is any run of characters (including
/// none), `?` exactly one; everything else literally. Iterative, so no pathological patterns.
pub(crate) fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let norm = |s: &str| -> Vec<char> {
        if ignore_case { s.to_lowercase().chars().collect() } else { s.chars().collect() }
    };
    let (p, t) = (norm(pattern), norm(text));
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_statement_object_and_string_forms() {
        let p = Policy::from_value(&json!({
            "Version": "2012-10-17",
            "Statement": {
                "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
                "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}
            }
        }))
        .unwrap();
        assert_eq!(p.statements.len(), 1);
        let s = &p.statements[0];
        assert_eq!(s.principal, PrincipalSpec::Principal(Principals { any: true, ..Default::default() }));
        assert_eq!(s.action, ActionSpec::Action(vec!["kms:Decrypt".into()]));
        assert_eq!(s.conditions[0].values, vec!["true".to_owned()]);
        assert_eq!(s.reference().to_string(), "statement #1");
    }

    #[test]
    fn parses_principal_object_with_all_kinds() {
        let p = Policy::from_value(&json!({"Statement": [{
            "Sid": "X", "Effect": "Deny",
            "NotPrincipal": {"AWS": ["111111111111", "*"], "Service": "ec2.amazonaws.com",
                              "Federated": "cognito-identity.amazonaws.com"},
            "NotAction": ["kms:*"], "NotResource": "arn:aws:kms:*"
        }]}))
        .unwrap();
        let s = &p.statements[0];
        let PrincipalSpec::NotPrincipal(pr) = &s.principal else { panic!("not NotPrincipal") };
        assert!(pr.any);
        assert_eq!(pr.aws, vec!["111111111111".to_owned()]);
        assert_eq!(pr.service, vec!["ec2.amazonaws.com".to_owned()]);
        assert_eq!(pr.other.len(), 1);
        assert_eq!(s.reference().to_string(), "Sid \"X\"");
    }

    #[test]
    fn rejects_malformed_documents_with_the_statement_named() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "must be a JSON object"),
            (json!({}), "no `Statement`"),
            (json!({"Statement": "x"}), "`Statement` must be"),
            (json!({"Statement": [1]}), "statement #1: must be an object"),
            (json!({"Statement": [{"Effect": "Permit", "Action": "a"}]}), "\"Permit\""),
            (json!({"Statement": [{"Effect": "Allow"}]}), "neither `Action`"),
            (
                json!({"Statement": [{"Sid": "S", "Effect": "Allow", "Action": []}]}),
                "Sid \"S\": `Action` must not be an empty array",
            ),
            (json!({"Statement": [{"Effect": "Allow", "Action": "a", "Principal": "me"}]}), "must be \"*\""),
            (
                json!({"Statement": [{"Effect": "Allow", "Action": "a", "Principal": {"Aws": "*"}}]}),
                "unknown principal type `Aws`",
            ),
            (
                json!({"Statement": [{"Effect": "Allow", "Action": "a", "Condition": {"StringEquals": "x"}}]}),
                "must map condition keys",
            ),
            (
                json!({"Statement": [{"Effect": "Allow", "Action": "a", "Condition": {"StringEquals": {"k": {"n": 1}}}}]}),
                "values must be strings",
            ),
            // Seed 004's Karpenter identity policy spells `Resources`; AWS rejects it too.
            (
                json!({"Statement": {"Effect": "Allow", "Action": "kms:Decrypt", "Resources": ["*"]}}),
                "unknown element `Resources`",
            ),
        ];
        for (doc, needle) in cases {
            let err = Policy::from_value(&doc).unwrap_err().to_string();
            assert!(err.contains(needle), "{doc} → {err} (wanted {needle:?})");
        }
        assert!(matches!(Policy::from_json_str("{"), Err(PolicyError::NotJson { .. })));
    }

    /// Fuzz-ish: every combination of odd shapes in every element parses or errors, never
    /// panics, and whatever parses can be evaluated.
    #[test]
    fn odd_shapes_never_panic() {
        let odd: Vec<Value> = vec![
            Value::Null,
            json!(true),
            json!(0),
            json!(-1.5),
            json!(""),
            json!("*"),
            json!("kms:*"),
            json!([]),
            json!([null]),
            json!(["*", 1]),
            json!({}),
            json!({"AWS": []}),
            json!({"AWS": [null]}),
            json!({"StringEquals": {"kms:ViaService": [true, 1, "x"]}}),
            json!({"Bool": {"": ""}}),
            json!({"": {"": []}}),
            json!("\u{0}?*\u{ffff}"),
        ];
        let elements =
            ["Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "Condition"];
        let mut parsed = 0;
        for el in elements {
            for v in &odd {
                let mut stmt = serde_json::Map::new();
                stmt.insert("Effect".into(), json!("Allow"));
                stmt.insert("Action".into(), json!("kms:Decrypt"));
                stmt.insert(el.into(), v.clone());
                for doc in [
                    json!({"Statement": stmt.clone()}),
                    json!({"Statement": [stmt.clone(), v.clone()]}),
                    v.clone(),
                ] {
                    if let Ok(policy) = Policy::from_value(&doc) {
                        parsed += 1;
                        let req = Request::new(
                            "kms:Decrypt",
                            Caller::account_root("111111111111"),
                            "arn:aws:kms:eu-west-1:999999999999:key/k",
                        );
                        let _ = evaluate(&policy, &req);
                    }
                }
            }
        }
        assert!(parsed > 0);
    }

    #[test]
    fn wildcards_follow_iam_semantics() {
        assert!(wildcard_match("kms:ReEncrypt*", "kms:reencryptfrom", true));
        assert!(wildcard_match("kms:*", "kms:CreateGrant", true));
        assert!(!wildcard_match("kms:ReEncrypt", "kms:ReEncryptFrom", true));
        assert!(wildcard_match("ec2.*.amazonaws.com", "ec2.eu-west-1.amazonaws.com", false));
        assert!(wildcard_match("a?c", "abc", false));
        assert!(!wildcard_match("a?c", "ac", false));
        assert!(wildcard_match("*", "", false));
        assert!(!wildcard_match("Abc", "abc", false));
        assert!(wildcard_match("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaab", false));
    }
}
