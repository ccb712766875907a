//! The Lambda function's decisions (issue 12), pure: which parameter an EventBridge
//! `Parameter Store Change` names and what that asks for, what a CloudFormation custom-resource
//! request asks for, the physical resource id, how much of the invocation's time the work may
//! use before the response to CloudFormation must go out, and the shape of that response.
//! Parsing the events (`aws_lambda_events`) and doing the work live in [`crate::lambda`].

use std::time::Duration;

use serde::Serialize;

/// What a changed parameter means to the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParameterRoute {
    /// `<ssm_path>/kms_key_arn`: the published key changed.
    KmsKeyArn,
    /// `<ssm_path>/image_id`: a new image (possibly under a new key).
    ImageId,
    /// Anything else: not ours (a rule matching too widely); nothing to do.
    Other,
}

/// The parameter path part of `ssm_path` (a path, or a shared parameter's ARN
/// `arn:aws:ssm:REGION:ACCOUNT:parameter/PATH`), without a trailing slash.
pub fn path_of(ssm_path: &str) -> String {
    let p = ssm_path.trim().trim_end_matches('/');
    match p.strip_prefix("arn:").and_then(|r| r.split_once(":parameter")) {
        Some((_, path)) if path.starts_with('/') => path.to_string(),
        Some((_, path)) => format!("/{path}"),
        None => p.to_string(),
    }
}

/// Which of the published parameters `changed` is (EventBridge names it by path, or by ARN).
pub fn route_parameter(changed: &str, ssm_path: &str) -> ParameterRoute {
    let changed = path_of(changed);
    let base = path_of(ssm_path);
    match changed.strip_prefix(base.as_str()) {
        Some("/kms_key_arn") => ParameterRoute::KmsKeyArn,
        Some("/image_id") => ParameterRoute::ImageId,
        _ => ParameterRoute::Other,
    }
}

/// What a `Parameter Store Change` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum ParameterDecision {
    /// Converge the grants for the key now published (and retire amikey's grants on the keys
    /// it replaced).
    Converge,
    /// Nothing to do, and why.
    Ignore {
        /// Why nothing is done.
        reason: String,
    },
}

/// Decides a `Parameter Store Change` for `name` with `operation` (`Create`, `Update`,
/// `Delete`, `LabelParameterVersion`, ...).
pub fn decide_parameter_change(name: &str, operation: &str, ssm_path: &str) -> ParameterDecision {
    match route_parameter(name, ssm_path) {
        ParameterRoute::Other => ParameterDecision::Ignore {
            reason: format!(
                "{name} is not {}/kms_key_arn or {}/image_id (narrow the EventBridge rule to those names)",
                path_of(ssm_path),
                path_of(ssm_path)
            ),
        },
        _ if operation == "Delete" => ParameterDecision::Ignore {
            reason: format!(
                "{name} was deleted: grants are kept (instances may still launch from the last image); \
                 delete the stack (or run amikey grant --retire-stale) to retire them"
            ),
        },
        _ => ParameterDecision::Converge,
    }
}

/// What a CloudFormation custom-resource request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceDecision {
    /// Create/Update: converge now.
    Converge,
    /// Delete of our resource: retire amikey's grants for the configured grantees.
    Release,
    /// Delete of a resource that was never ours (a Create that failed before we named it):
    /// nothing to undo, answer success so the stack can go.
    NothingToRelease,
}

/// The prefix of every physical resource id the function hands out.
pub const PHYSICAL_ID_PREFIX: &str = "amikey-grants:";

/// The physical resource id: one per region and published path, stable across updates (so an
/// Update never makes CloudFormation delete the "old" resource).
pub fn physical_resource_id(region: &str, ssm_path: &str) -> String {
    format!("{PHYSICAL_ID_PREFIX}{region}:{}", path_of(ssm_path))
}

/// Decides a custom-resource request of `request_type` for `physical_id` (none on Create).
pub fn decide_resource(request_type: &str, physical_id: Option<&str>) -> Result<ResourceDecision, String> {
    match request_type {
        "Create" | "Update" => Ok(ResourceDecision::Converge),
        "Delete" if physical_id.is_some_and(|p| p.starts_with(PHYSICAL_ID_PREFIX)) => {
            Ok(ResourceDecision::Release)
        }
        "Delete" => Ok(ResourceDecision::NothingToRelease),
        other => Err(format!("unknown RequestType {other:?} (expected Create, Update or Delete)")),
    }
}

/// How long the work may run when `remaining` is left before the invocation's deadline: the
/// rest is kept for the response PUT, so CloudFormation always gets an answer. Keeps a fifth of
/// the time, at least 2 s and at most 10 s; `None` when not even the reserve is left (answer at
/// once).
pub fn work_budget(remaining: Duration) -> Option<Duration> {
    let reserve = (remaining / 5).clamp(Duration::from_secs(2), Duration::from_secs(10));
    remaining.checked_sub(reserve).filter(|d| !d.is_zero())
}

/// The time the response PUT itself may take: what is left, less a little for the runtime to
/// report the invocation's result.
pub fn put_timeout(remaining: Duration) -> Duration {
    remaining.saturating_sub(Duration::from_millis(500)).max(Duration::from_millis(200))
}

/// CloudFormation rejects a response body over 4096 bytes; the reason is cut to leave room for
/// the ids around it, on a character boundary, marked with `…`.
pub const MAX_REASON_BYTES: usize = 2000;

/// `reason` cut to [`MAX_REASON_BYTES`].
pub fn clip_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_string();
    }
    let mut end = MAX_REASON_BYTES - '…'.len_utf8();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_published_parameters_only() {
        assert_eq!(
            route_parameter("/images/golden/kms_key_arn", "/images/golden"),
            ParameterRoute::KmsKeyArn
        );
        assert_eq!(route_parameter("/images/golden/image_id", "/images/golden/"), ParameterRoute::ImageId);
        assert_eq!(route_parameter("/images/golden/snapshot_ids", "/images/golden"), ParameterRoute::Other);
        assert_eq!(route_parameter("/images/golden2/kms_key_arn", "/images/golden"), ParameterRoute::Other);
        assert_eq!(route_parameter("/images/kms_key_arn", "/images/golden"), ParameterRoute::Other);
        assert_eq!(
            route_parameter(
                "arn:aws:ssm:eu-west-1:123456789012:parameter/images/golden/kms_key_arn",
                "/images/golden"
            ),
            ParameterRoute::KmsKeyArn
        );
        assert_eq!(
            route_parameter(
                "/images/golden/kms_key_arn",
                "arn:aws:ssm:eu-west-1:123456789012:parameter/images/golden"
            ),
            ParameterRoute::KmsKeyArn
        );
    }

    #[test]
    fn a_deleted_or_foreign_parameter_changes_nothing() {
        assert_eq!(decide_parameter_change("/p/kms_key_arn", "Update", "/p"), ParameterDecision::Converge);
        assert_eq!(decide_parameter_change("/p/image_id", "Create", "/p"), ParameterDecision::Converge);
        assert!(matches!(
            decide_parameter_change("/p/kms_key_arn", "Delete", "/p"),
            ParameterDecision::Ignore { reason } if reason.contains("grants are kept")
        ));
        assert!(matches!(
            decide_parameter_change("/q/kms_key_arn", "Update", "/p"),
            ParameterDecision::Ignore { reason } if reason.contains("narrow the EventBridge rule")
        ));
    }

    #[test]
    fn custom_resource_requests() {
        let ours = physical_resource_id("eu-west-1", "/images/golden/");
        assert_eq!(ours, "amikey-grants:eu-west-1:/images/golden");
        assert_eq!(decide_resource("Create", None), Ok(ResourceDecision::Converge));
        assert_eq!(decide_resource("Update", Some(&ours)), Ok(ResourceDecision::Converge));
        assert_eq!(decide_resource("Delete", Some(&ours)), Ok(ResourceDecision::Release));
        assert_eq!(
            decide_resource("Delete", Some("2026/12/01/[$LATEST]abc")),
            Ok(ResourceDecision::NothingToRelease)
        );
        assert!(decide_resource("Replace", None).unwrap_err().contains("unknown RequestType \"Replace\""));
    }

    #[test]
    fn the_response_always_has_time_left() {
        assert_eq!(work_budget(Duration::from_secs(60)), Some(Duration::from_secs(50)));
        assert_eq!(work_budget(Duration::from_secs(20)), Some(Duration::from_secs(16)));
        assert_eq!(work_budget(Duration::from_secs(5)), Some(Duration::from_secs(3)));
        assert_eq!(work_budget(Duration::from_secs(2)), None);
        assert_eq!(work_budget(Duration::ZERO), None);
        assert_eq!(put_timeout(Duration::from_secs(10)), Duration::from_millis(9500));
        assert_eq!(put_timeout(Duration::ZERO), Duration::from_millis(200));
    }

    #[test]
    fn reasons_fit_the_response() {
        assert_eq!(clip_reason("short"), "short");
        let long = "é".repeat(3000);
        let c = clip_reason(&long);
        assert!(c.len() <= MAX_REASON_BYTES && c.ends_with('…'), "{}", c.len());
    }
}
