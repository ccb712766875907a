//! The evaluator: one request against one key policy, following AWS's documented logic.
//!
//! Owns: request context ([`Request`], [`Caller`]), statement matching (principal, action,
//! resource, conditions) and the decision. Must not know: where the policy came from, the
//! launch chain, or how results are reported.
//!
//! Semantics implemented (IAM User Guide, "Policy evaluation logic" and "IAM JSON policy
//! elements: Condition operators"):
//! - an explicit `Deny` that applies wins; otherwise any applying `Allow` allows; otherwise the
//!   request is implicitly denied;
//! - within a statement every condition must hold (AND); the values listed for one key are
//!   alternatives (OR); for negated operators (`StringNotEquals`, …) the request value must match
//!   none of them;
//! - a key missing from the request makes a positive operator false and a negated operator
//!   true; `…IfExists` makes a missing key true; `ForAllValues:` is true for a missing key,
//!   `ForAnyValue:` false;
//! - `ArnEquals` and `ArnLike` behave identically: each of the six colon-separated parts is
//!   matched on its own, with `*` and `?`.
//!
//! What cannot be evaluated is never guessed: an unsupported operator (`Numeric…`, `Date…`,
//! `IpAddress`, …), a policy variable (`${…}`), or a condition key amikey does not model makes
//! the statement *undetermined*, and if an undetermined statement could change the outcome the
//! decision is [`Decision::Indeterminate`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{
    ActionSpec, Effect, Policy, PrincipalSpec, Principals, ResourceSpec, Statement, StatementRef,
    wildcard_match,
};
use crate::core::ids::{arn_account, is_account_id};

/// The IAM identity making a request, as far as the key policy can see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// The caller's account.
    pub account: String,
    /// The caller's IAM ARN: `arn:aws:iam::ACCT:root`, `…:role/PATH/NAME`, `…:user/NAME`.
    pub arn: String,
    /// For an assumed-role session, `arn:aws:sts::ACCT:assumed-role/NAME/SESSION`.
    pub session_arn: Option<String>,
    /// `aws:userid` (`ACCT` for the root user, `AROA…:SESSION` for a role), when known.
    pub userid: Option<String>,
    /// `aws:PrincipalOrgID`, when known.
    pub org_id: Option<String>,
    /// `aws:PrincipalType`: `Account`, `User` or `AssumedRole`.
    pub principal_type: String,
}

impl Caller {
    /// The account's root user (`aws:userid` is the account id).
    pub fn account_root(account: &str) -> Caller {
        Caller {
            account: account.to_owned(),
            arn: format!("arn:aws:iam::{account}:root"),
            session_arn: None,
            userid: Some(account.to_owned()),
            org_id: None,
            principal_type: "Account".to_owned(),
        }
    }

    /// A session of an IAM role, given the role's ARN. The account is taken from the ARN;
    /// `aws:userid` is unknown until [`Caller::with_userid`] sets it.
    pub fn role(role_arn: &str) -> Caller {
        Caller {
            account: arn_account(role_arn).unwrap_or_default().to_owned(),
            arn: role_arn.to_owned(),
            session_arn: None,
            userid: None,
            org_id: None,
            principal_type: "AssumedRole".to_owned(),
        }
    }

    /// Sets the organization id (`aws:PrincipalOrgID`).
    pub fn with_org(mut self, org_id: &str) -> Caller {
        self.org_id = Some(org_id.to_owned());
        self
    }

    /// Sets `aws:userid`.
    pub fn with_userid(mut self, userid: &str) -> Caller {
        self.userid = Some(userid.to_owned());
        self
    }
}

/// Condition keys whose absence from a [`Request`] is meaningful: amikey sets them whenever
/// they apply, so "absent" really means the request does not carry them. Conditions on any
/// other key are undetermined unless the request sets that key. Lower case.
const MODELED_KEYS: &[&str] = &[
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:principaltype",
    "aws:userid",
    "kms:calleraccount",
    "kms:grantisforawsresource",
    "kms:granteeprincipal",
    "kms:grantoperations",
    "kms:retiringprincipal",
    "kms:viaservice",
];

/// One KMS call, with its request context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    /// `kms:Decrypt`, `kms:CreateGrant`, ….
    pub action: String,
    /// Who calls.
    pub caller: Caller,
    /// The key ARN.
    pub resource: String,
    /// Condition keys (lower-cased) and their values.
    pub context: BTreeMap<String, Vec<String>>,
    /// Modeled keys whose value this request does not know (lower-cased), e.g. the org id
    /// of a consumer when none was given.
    pub unknown: BTreeSet<String>,
}

impl Request {
    /// A request with the global keys derived from the caller: `aws:PrincipalAccount`,
    /// `kms:CallerAccount`, `aws:PrincipalArn`, `aws:PrincipalType`, and `aws:userid` and
    /// `aws:PrincipalOrgID` when the caller knows them (otherwise they are *unknown*, not
    /// absent).
    pub fn new(action: &str, caller: Caller, resource: &str) -> Request {
        let mut r = Request {
            action: action.to_owned(),
            resource: resource.to_owned(),
            context: BTreeMap::new(),
            unknown: BTreeSet::new(),
            caller: caller.clone(),
        };
        r = r
            .with("aws:PrincipalAccount", &caller.account)
            .with("kms:CallerAccount", &caller.account)
            .with("aws:PrincipalArn", &caller.arn)
            .with("aws:PrincipalType", &caller.principal_type);
        match &caller.userid {
            Some(u) => r = r.with("aws:userid", u),
            None => {
                r.unknown.insert("aws:userid".to_owned());
            }
        }
        match &caller.org_id {
            Some(o) => r = r.with("aws:PrincipalOrgID", o),
            None => {
                r.unknown.insert("aws:principalorgid".to_owned());
            }
        }
        r
    }

    /// Sets a single-valued condition key.
    pub fn with(self, key: &str, value: &str) -> Request {
        self.with_values(key, &[value])
    }

    /// Sets a (possibly multi-valued) condition key.
    pub fn with_values(mut self, key: &str, values: &[&str]) -> Request {
        let key = key.to_lowercase();
        self.unknown.remove(&key);
        self.context.insert(key, values.iter().map(|v| (*v).to_owned()).collect());
        self
    }
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// At least one `Allow` applies and no `Deny` does.
    Allow,
    /// A `Deny` applies.
    ExplicitDeny,
    /// Nothing applies.
    ImplicitDeny,
    /// A statement amikey cannot evaluate could change the outcome; see
    /// [`Evaluation::undetermined`].
    Indeterminate,
}

/// A statement whose conditions could not be evaluated, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Undetermined {
    /// The statement.
    pub statement: StatementRef,
    /// Its effect.
    pub effect: Effect,
    /// Why (operator, key or policy variable).
    pub reason: String,
}

/// The decision and the statements that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// For `Allow`, the allowing statements; for `ExplicitDeny`, the denying ones; else empty.
    pub matched: Vec<StatementRef>,
    /// Statements whose principal, action and resource apply but whose conditions could not
    /// be evaluated.
    pub undetermined: Vec<Undetermined>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown(String),
}

/// Evaluates `request` against `policy`.
pub fn evaluate(policy: &Policy, request: &Request) -> Evaluation {
    let mut allows = Vec::new();
    let mut denies = Vec::new();
    let mut undetermined = Vec::new();
    for st in &policy.statements {
        match statement_applies(st, request) {
            Tri::False => {}
            Tri::True => match st.effect {
                Effect::Allow => allows.push(st.reference()),
                Effect::Deny => denies.push(st.reference()),
            },
            Tri::Unknown(reason) => {
                undetermined.push(Undetermined { statement: st.reference(), effect: st.effect, reason })
            }
        }
    }
    let unknown_deny = undetermined.iter().any(|u| u.effect == Effect::Deny);
    let unknown_allow = undetermined.iter().any(|u| u.effect == Effect::Allow);
    let (decision, matched) = if !denies.is_empty() {
        (Decision::ExplicitDeny, denies)
    } else if unknown_deny {
        (Decision::Indeterminate, Vec::new())
    } else if !allows.is_empty() {
        (Decision::Allow, allows)
    } else if unknown_allow {
        (Decision::Indeterminate, Vec::new())
    } else {
        (Decision::ImplicitDeny, Vec::new())
    };
    Evaluation { decision, matched, undetermined }
}

fn statement_applies(st: &Statement, req: &Request) -> Tri {
    let principal = match &st.principal {
        PrincipalSpec::Holder => true,
        PrincipalSpec::Principal(p) => principal_matches(p, &req.caller),
        PrincipalSpec::NotPrincipal(p) => !principal_matches(p, &req.caller),
    };
    let action = match &st.action {
        ActionSpec::Action(a) => a.iter().any(|p| wildcard_match(p, &req.action, true)),
        ActionSpec::NotAction(a) => !a.iter().any(|p| wildcard_match(p, &req.action, true)),
    };
    let resource = match &st.resource {
        ResourceSpec::Any => true,
        ResourceSpec::Resource(r) => r.iter().any(|p| wildcard_match(p, &req.resource, false)),
        ResourceSpec::NotResource(r) => !r.iter().any(|p| wildcard_match(p, &req.resource, false)),
    };
    if !(principal && action && resource) {
        return Tri::False;
    }
    let mut unknown: Option<String> = None;
    for c in &st.conditions {
        match condition_holds(&c.operator, &c.key, &c.values, req) {
            Tri::True => {}
            Tri::False => return Tri::False,
            Tri::Unknown(reason) => {
                unknown.get_or_insert(reason);
            }
        }
    }
    match unknown {
        Some(reason) => Tri::Unknown(reason),
        None => Tri::True,
    }
}

/// In a key policy, naming an account (`ACCT` or `arn:aws:iam::ACCT:root`) delegates to that
/// account: every principal in it matches (its own IAM policies must then allow the call). A
/// role or user ARN matches only that principal and its sessions. `Service`, `Federated` and
/// `CanonicalUser` principals never match the IAM callers amikey evaluates.
fn principal_matches(p: &Principals, caller: &Caller) -> bool {
    p.any
        || p.aws.iter().any(|id| {
            if is_account_id(id) {
                return *id == caller.account;
            }
            if id.starts_with("arn:") && id.ends_with(":root") && id.contains(":iam::") {
                return arn_account(id) == Some(caller.account.as_str());
            }
            *id == caller.arn || caller.session_arn.as_deref() == Some(id.as_str())
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Arn,
    Bool,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetOp {
    AnyValue,
    AllValues,
}

struct Op {
    set: Option<SetOp>,
    base: Base,
    negated: bool,
    if_exists: bool,
}

fn parse_operator(raw: &str) -> Option<Op> {
    let (set, rest) = if let Some(r) = raw.strip_prefix("ForAnyValue:") {
        (Some(SetOp::AnyValue), r)
    } else if let Some(r) = raw.strip_prefix("ForAllValues:") {
        (Some(SetOp::AllValues), r)
    } else {
        (None, raw)
    };
    let (rest, if_exists) = match rest.strip_suffix("IfExists") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (base, negated) = match rest {
        "StringEquals" => (Base::StringEquals, false),
        "StringNotEquals" => (Base::StringEquals, true),
        "StringEqualsIgnoreCase" => (Base::StringEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (Base::StringEqualsIgnoreCase, true),
        "StringLike" => (Base::StringLike, false),
        "StringNotLike" => (Base::StringLike, true),
        "ArnEquals" | "ArnLike" => (Base::Arn, false),
        "ArnNotEquals" | "ArnNotLike" => (Base::Arn, true),
        "Bool" => (Base::Bool, false),
        "Null" if !if_exists && set.is_none() => (Base::Null, false),
        _ => return None,
    };
    Some(Op { set, base, negated, if_exists })
}

enum Lookup<'a> {
    Known(&'a [String]),
    Absent,
    Unknown(String),
}

fn lookup<'a>(req: &'a Request, key: &str) -> Lookup<'a> {
    let k = key.to_lowercase();
    if let Some(v) = req.context.get(&k) {
        return Lookup::Known(v);
    }
    if req.unknown.contains(&k) {
        return Lookup::Unknown(format!("the value of `{key}` for this caller is not known"));
    }
    if MODELED_KEYS.contains(&k.as_str()) {
        Lookup::Absent
    } else {
        Lookup::Unknown(format!("condition key `{key}` is not modeled by amikey"))
    }
}

fn arn_like(pattern: &str, arn: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| wildcard_match(p, a, false))
}

fn value_matches(base: Base, policy_value: &str, request_value: &str) -> bool {
    match base {
        Base::StringEquals => policy_value == request_value,
        Base::StringEqualsIgnoreCase => policy_value.to_lowercase() == request_value.to_lowercase(),
        Base::StringLike => wildcard_match(policy_value, request_value, false),
        Base::Arn => arn_like(policy_value, request_value),
        Base::Bool => policy_value.eq_ignore_ascii_case(request_value),
        Base::Null => false,
    }
}

fn condition_holds(operator: &str, key: &str, values: &[String], req: &Request) -> Tri {
    let Some(op) = parse_operator(operator) else {
        return Tri::Unknown(format!("condition operator `{operator}` is not supported by amikey"));
    };
    if values.iter().any(|v| v.contains("${")) {
        return Tri::Unknown(format!(
            "`{operator}` `{key}` uses a policy variable, which amikey does not evaluate"
        ));
    }
    let found = lookup(req, key);
    if op.base == Base::Null {
        let absent = match found {
            Lookup::Unknown(reason) => return Tri::Unknown(reason),
            Lookup::Absent => true,
            Lookup::Known(v) => v.is_empty(),
        };
        let holds = values.iter().any(|v| v.eq_ignore_ascii_case("true") == absent);
        return if holds { Tri::True } else { Tri::False };
    }
    let reqs = match found {
        Lookup::Unknown(reason) => return Tri::Unknown(reason),
        Lookup::Absent => {
            let holds = match op.set {
                None => op.if_exists || op.negated,
                Some(SetOp::AnyValue) => op.if_exists,
                Some(SetOp::AllValues) => true,
            };
            return if holds { Tri::True } else { Tri::False };
        }
        Lookup::Known(v) => v,
    };
    let m = |r: &String| values.iter().any(|v| value_matches(op.base, v, r));
    let holds = match (op.set, op.negated) {
        (None, false) | (Some(SetOp::AnyValue), false) => reqs.iter().any(m),
        (None, true) | (Some(SetOp::AllValues), true) => !reqs.iter().any(m),
        (Some(SetOp::AnyValue), true) => reqs.iter().any(|r| !m(r)),
        (Some(SetOp::AllValues), false) => reqs.iter().all(m),
    };
    if holds { Tri::True } else { Tri::False }
}

#[cfg(test)]
mod tests;
