//! The AWS Lambda function (`bootstrap`, issue 12): keeps one consumer account's grants right in
//! its region, with amikey's own grant and doctor code ([`crate::consumer`]).
//!
//! Configured by environment ([`FunctionConfig::from_env`]). One entry point, [`handle`], takes
//! the raw event and the invocation's deadline:
//! - EventBridge `Parameter Store Change` for `<ssm_path>/kms_key_arn` or `<ssm_path>/image_id`:
//!   converge the grants for the key now published and retire amikey's grants on the keys it
//!   replaced (`amikey grant --ssm-path P --region R --retire-stale`);
//! - a CloudFormation custom-resource request: Create/Update converge, Delete retires amikey's
//!   grants; the answer is PUT to the pre-signed `ResponseURL` ([`respond`]) before the deadline,
//!   whatever happens;
//! - EventBridge `Scheduled Event`: the doctor's checks on the published image, logged and
//!   returned.
//!
//! Anything else is a clear error (a failed invocation), never a panic. Every grant action is
//! one JSON line on stdout (CloudWatch Logs), so Logs Insights can query them. Re-delivery of an
//! event is idempotent: grants are named deterministically and a converged account makes no
//! write. The decisions are pure, in [`crate::core::lambda`].

pub mod respond;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceRequest, CloudFormationCustomResourceResponse,
    CloudFormationCustomResourceResponseStatus,
};
use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::aws::read;
use crate::aws::{Aws, AwsOptions};
use crate::consumer::{self, ConsumerError, GrantReport, GrantRequest, Outcome};
use crate::core::grants::GrantAction;
use crate::core::lambda::{self as decide, ParameterDecision, ResourceDecision};

/// The function's configuration, from its environment.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// `AMIKEY_SSM_PATH`: the producer's `ssm_path` as published in this account (a path, or a
    /// shared parameter's ARN).
    pub ssm_path: String,
    /// `AWS_REGION`: the function's (and the grants') region.
    pub region: String,
    /// `AMIKEY_SERVICES`: services whose service-linked roles get grants (default
    /// `autoscaling`), comma or space separated, as `amikey grant --service`.
    pub services: Vec<String>,
    /// `AMIKEY_GRANTEE_ROLES`: extra grantee role ARNs, as `amikey grant --grantee-role`.
    pub roles: Vec<String>,
    /// How to reach AWS (the Lambda environment's credentials and region).
    pub aws: AwsOptions,
}

fn list(v: Option<String>) -> Vec<String> {
    v.unwrap_or_default()
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl FunctionConfig {
    /// Reads and checks the configuration (no AWS call). The error names the variable to fix.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<FunctionConfig, String> {
        let ssm_path = get("AMIKEY_SSM_PATH").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).ok_or(
            "AMIKEY_SSM_PATH is not set: set it to the producer's ssm_path as published in this account (e.g. /images/golden)",
        )?;
        consumer::key_parameter(&ssm_path).map_err(|e| format!("AMIKEY_SSM_PATH: {e}"))?;
        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .filter(|r| !r.is_empty())
            .ok_or("AWS_REGION is not set (Lambda sets it; set it when running the function elsewhere)")?;
        if !crate::core::artifact::valid_region(&region, true) {
            return Err(format!("AWS_REGION {region:?} is not a region name"));
        }
        // Unset: `autoscaling`, as documented; set (even empty): exactly the services named.
        let services = match get("AMIKEY_SERVICES") {
            None => vec!["autoscaling".to_string()],
            set => list(set),
        };
        let roles = list(get("AMIKEY_GRANTEE_ROLES"));
        let (grantees, _) = consumer::grantees(&services, &roles)
            .map_err(|e| format!("AMIKEY_SERVICES / AMIKEY_GRANTEE_ROLES: {e}"))?;
        if grantees.is_empty() {
            return Err(
                "AMIKEY_SERVICES names no service that needs a grant, and AMIKEY_GRANTEE_ROLES is empty"
                    .into(),
            );
        }
        let aws = AwsOptions {
            region: Some(region.clone()),
            max_attempts: crate::core::config::max_attempts(None),
            ..AwsOptions::default()
        };
        Ok(FunctionConfig { ssm_path, region, services, roles, aws })
    }

    fn grant_request(&self, release: bool) -> GrantRequest {
        GrantRequest {
            ssm_path: Some(self.ssm_path.clone()),
            regions: vec![self.region.clone()],
            services: self.services.clone(),
            roles: self.roles.clone(),
            retire_stale: true,
            skip_region_validation: true,
            release,
            ..GrantRequest::default()
        }
    }
}

/// Why an invocation failed; the message is what the logs and the invocation's error show.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FunctionError {
    /// `UnrecognisedEvent`, `MalformedEvent`, `Configuration`, `GrantsNotConverged`,
    /// `ResponseNotDelivered`, `CustomResourceFailed`, `AwsError`, `WrongRegion`.
    pub kind: &'static str,
    /// What happened and what to do.
    pub message: String,
}

fn err(kind: &'static str, message: impl Into<String>) -> FunctionError {
    FunctionError { kind, message: message.into() }
}

/// One structured log line (stdout: CloudWatch Logs).
// In Lambda, stdout is the function's log stream (CloudWatch Logs), not a handshake or a report:
// the crate-wide print_stdout rule guards the plugin's and the CLI's stdout, which this is not.
#[allow(clippy::print_stdout)]
pub fn log_line(level: &str, fields: Value) {
    let mut line = json!({ "level": level });
    if let (Some(l), Value::Object(f)) = (line.as_object_mut(), fields) {
        l.extend(f);
    }
    println!("{line}");
}

/// What the event is, once recognised.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// EventBridge `Parameter Store Change`.
    ParameterChange {
        /// The parameter's name (path or ARN).
        name: String,
        /// `Create`, `Update`, `Delete`, `LabelParameterVersion`, ...
        operation: String,
        /// The event's region.
        region: Option<String>,
    },
    /// EventBridge `Scheduled Event`.
    Schedule,
    /// A CloudFormation custom-resource request (parsed later, so a malformed one can still be
    /// answered).
    CustomResource,
}

#[derive(Deserialize)]
struct ParameterDetail {
    name: String,
    operation: String,
}

fn keys_of(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "an empty object".into(),
        Value::Object(m) => {
            format!("an object with keys {}", m.keys().cloned().collect::<Vec<_>>().join(", "))
        }
        Value::Null => "null".into(),
        Value::Array(_) => "an array".into(),
        other => format!("{other}"),
    }
}

/// Recognises an event. Errors say what was expected.
pub fn classify(event: &Value) -> Result<Event, FunctionError> {
    let is_object = event.is_object();
    if is_object && (event.get("RequestType").is_some() || event.get("ResponseURL").is_some()) {
        return Ok(Event::CustomResource);
    }
    if !(is_object && event.get("detail-type").is_some()) {
        return Err(err(
            "UnrecognisedEvent",
            format!(
                "expected an EventBridge event (Parameter Store Change, Scheduled Event) or a CloudFormation \
                 custom-resource request, got {}",
                keys_of(event)
            ),
        ));
    }
    let ev: CloudWatchEvent<Value> = serde_json::from_value(event.clone())
        .map_err(|e| err("MalformedEvent", format!("not a valid EventBridge event: {e}")))?;
    match (ev.source.as_deref(), ev.detail_type.as_deref()) {
        (Some("aws.ssm"), Some("Parameter Store Change")) => {
            let d: ParameterDetail =
                serde_json::from_value(ev.detail.unwrap_or(Value::Null)).map_err(|e| {
                    err(
                        "MalformedEvent",
                        format!("Parameter Store Change without a valid detail (name, operation): {e}"),
                    )
                })?;
            Ok(Event::ParameterChange { name: d.name, operation: d.operation, region: ev.region })
        }
        (Some("aws.events"), Some("Scheduled Event")) => Ok(Event::Schedule),
        (source, detail_type) => Err(err(
            "UnrecognisedEvent",
            format!(
                "EventBridge event {:?} from {:?} is not one this function handles (Parameter Store Change from \
                 aws.ssm, Scheduled Event from aws.events): check the rule's event pattern",
                detail_type.unwrap_or_default(),
                source.unwrap_or_default()
            ),
        )),
    }
}

/// Handles one invocation. `config` is the result of [`FunctionConfig::from_env`] (a broken
/// configuration still lets a custom-resource request be answered); `deadline` is the
/// invocation's deadline (from the Lambda context).
pub async fn handle(
    config: &Result<FunctionConfig, String>,
    event: Value,
    deadline: SystemTime,
) -> Result<Value, FunctionError> {
    let result = match classify(&event) {
        Ok(Event::CustomResource) => custom_resource(config, &event, deadline).await,
        Ok(e) => match config {
            Err(e) => Err(err("Configuration", e.clone())),
            Ok(cfg) => match e {
                Event::ParameterChange { name, operation, region } => {
                    parameter_change(cfg, &name, &operation, region.as_deref()).await
                }
                _ => schedule(cfg).await,
            },
        },
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        log_line("error", json!({ "error": e.kind, "message": e.message }));
    }
    result
}

/// Logs one line per action of a grant report, and returns its counts.
fn log_actions(report: &GrantReport, cause: &str) -> Value {
    let (mut created, mut retired, mut unchanged, mut failed) = (0, 0, 0, 0);
    for a in &report.actions {
        let (verb, key_arn, region, grantee_arn, grant_id, name, reason) = match &a.action {
            GrantAction::Create { key_arn, region, grantee_arn, name, .. } => (
                "create_grant",
                key_arn,
                region,
                grantee_arn,
                a.created_grant_id.clone(),
                Some(name.clone()),
                None,
            ),
            GrantAction::Unchanged { key_arn, region, grantee_arn, grant_id, name } => {
                ("keep_grant", key_arn, region, grantee_arn, Some(grant_id.clone()), name.clone(), None)
            }
            GrantAction::Retire { key_arn, region, grantee_arn, grant_id, name, reason } => (
                "retire_grant",
                key_arn,
                region,
                grantee_arn,
                Some(grant_id.clone()),
                name.clone(),
                Some(*reason),
            ),
        };
        match (verb, a.outcome) {
            (_, Outcome::Failed) => failed += 1,
            ("create_grant", Outcome::Changed) => created += 1,
            ("retire_grant", Outcome::Changed) => retired += 1,
            _ => unchanged += 1,
        }
        log_line(
            if a.outcome == Outcome::Failed { "error" } else { "info" },
            json!({
                "cause": cause,
                "action": verb,
                "outcome": a.outcome,
                "account": report.account,
                "region": region,
                "key_arn": key_arn,
                "grantee_arn": grantee_arn,
                "grant_id": grant_id,
                "grant_name": name,
                "reason": reason,
            }),
        );
    }
    for p in &report.problems {
        log_line("error", json!({ "cause": cause, "problem": p }));
    }
    json!({
        "account": report.account,
        "keys": report.keys,
        "created": created,
        "retired": retired,
        "unchanged": unchanged,
        "failed": failed,
        "problems": report.problems,
        "notes": report.notes,
    })
}

fn problems_text(report: &GrantReport) -> String {
    report
        .problems
        .iter()
        .map(|p| match &p.fix {
            Some(fix) => format!("{} {}: {} (fix: {fix})", p.code, p.region, p.message),
            None => format!("{} {}: {}", p.code, p.region, p.message),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn consumer_error(e: ConsumerError) -> FunctionError {
    match e {
        ConsumerError::Input(m) => err("GrantsNotConverged", m),
        ConsumerError::Aws(e) => err("AwsError", format!("{e} (the event can be re-delivered safely)")),
    }
}

/// Converges (or, with `release`, retires) this account's grants in the function's region.
/// Problems KMS reports fail the run, with their fixes.
async fn converge(cfg: &FunctionConfig, release: bool, cause: &str) -> Result<Value, FunctionError> {
    let report = consumer::grant(&cfg.aws, &cfg.grant_request(release)).await.map_err(consumer_error)?;
    let summary = log_actions(&report, cause);
    if report.problems.is_empty() {
        Ok(summary)
    } else {
        Err(err("GrantsNotConverged", problems_text(&report)))
    }
}

async fn parameter_change(
    cfg: &FunctionConfig,
    name: &str,
    operation: &str,
    region: Option<&str>,
) -> Result<Value, FunctionError> {
    if let Some(r) = region.filter(|r| *r != cfg.region) {
        return Err(err(
            "WrongRegion",
            format!(
                "the event is for {r} but this function converges {}: deploy the stack in {r} too (rules only see their own region's parameters)",
                cfg.region
            ),
        ));
    }
    match decide::decide_parameter_change(name, operation, &cfg.ssm_path) {
        ParameterDecision::Ignore { reason } => {
            log_line(
                "info",
                json!({ "cause": "parameter_change", "parameter": name, "action": "none", "reason": reason }),
            );
            Ok(json!({ "event": "parameter_change", "parameter": name, "action": "none", "reason": reason }))
        }
        ParameterDecision::Converge => {
            let summary = converge(cfg, false, "parameter_change").await?;
            Ok(
                json!({ "event": "parameter_change", "parameter": name, "operation": operation, "grants": summary }),
            )
        }
    }
}

/// The daily drift check: the doctor's checks on the image published in this region.
async fn schedule(cfg: &FunctionConfig) -> Result<Value, FunctionError> {
    let aws = Aws::connect(&cfg.aws, &cfg.region).await;
    let (_, pinned) = consumer::key_parameter(&cfg.ssm_path).map_err(consumer_error)?;
    let region = pinned.unwrap_or_else(|| cfg.region.clone());
    let image_param = format!("{}/image_id", cfg.ssm_path.trim_end_matches('/'));
    let image = read::get_parameter(&aws, &region, &image_param)
        .await
        .map_err(|e| consumer_error(e.into()))?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            err(
                "GrantsNotConverged",
                format!(
                    "no parameter {image_param} in {region}: nothing to check (is AMIKEY_SSM_PATH the producer's ssm_path, published to this account?)"
                ),
            )
        })?;
    let req = consumer::DoctorRequest {
        ami: format!("{}:{image}", cfg.region),
        ssm_path: Some(cfg.ssm_path.clone()),
        services: cfg.services.clone(),
        roles: cfg.roles.clone(),
        skip_region_validation: true,
        ..Default::default()
    };
    let now =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let report = consumer::doctor(&cfg.aws, &req, now).await.map_err(consumer_error)?;
    for c in &report.checks {
        log_line(
            if c.status == crate::core::doctor::Status::Fail { "error" } else { "info" },
            json!({ "cause": "schedule", "check": c.id, "status": c.status, "detail": c.detail, "fix": c.fix }),
        );
    }
    let failing = report.exit_code() != 0;
    Ok(json!({ "event": "schedule", "drift": failing, "doctor": report }))
}

/// The fields every response needs, read leniently so a malformed request is still answered.
struct ResponseTarget {
    url: String,
    stack_id: String,
    request_id: String,
    logical_id: String,
    physical_id: Option<String>,
    request_type: String,
}

fn target_of(event: &Value) -> Option<ResponseTarget> {
    let s = |k: &str| event.get(k).and_then(Value::as_str).map(String::from);
    Some(ResponseTarget {
        url: s("ResponseURL")?,
        stack_id: s("StackId")?,
        request_id: s("RequestId")?,
        logical_id: s("LogicalResourceId")?,
        physical_id: s("PhysicalResourceId"),
        request_type: s("RequestType").unwrap_or_default(),
    })
}

fn remaining(deadline: SystemTime) -> Duration {
    deadline.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
}

async fn custom_resource(
    config: &Result<FunctionConfig, String>,
    event: &Value,
    deadline: SystemTime,
) -> Result<Value, FunctionError> {
    let Some(target) = target_of(event) else {
        return Err(err(
            "MalformedEvent",
            "custom-resource request without ResponseURL, StackId, RequestId and LogicalResourceId: cannot answer CloudFormation",
        ));
    };
    // The RequestType first (its error names the field), then the typed parse
    // (aws_lambda_events) checks the whole request.
    let decision =
        decide::decide_resource(&target.request_type, target.physical_id.as_deref()).and_then(|d| {
            serde_json::from_value::<CloudFormationCustomResourceRequest>(event.clone())
                .map(|_| d)
                .map_err(|e| format!("malformed custom-resource request: {e}"))
        });
    let physical_id = match (&target.physical_id, config) {
        // Update and Delete keep the id CloudFormation knows (an Update never replaces).
        (Some(p), _) => p.clone(),
        (None, Ok(cfg)) => decide::physical_resource_id(&cfg.region, &cfg.ssm_path),
        (None, Err(_)) => format!("{}unconfigured", decide::PHYSICAL_ID_PREFIX),
    };
    let cause = format!("custom_resource_{}", target.request_type.to_lowercase());
    let outcome: Result<Value, String> = match (decision, config) {
        (Err(e), _) => Err(e),
        (Ok(ResourceDecision::NothingToRelease), _) => {
            Ok(json!({ "note": "not created by this function: nothing to release" }))
        }
        (Ok(ResourceDecision::Release), Err(e)) => {
            // Blocking the stack's deletion helps no one: say what was left.
            log_line(
                "error",
                json!({ "cause": cause, "message": format!("grants not retired, the function is not configured ({e}): run amikey grant --retire-stale by hand") }),
            );
            Ok(json!({ "note": "function not configured: nothing retired" }))
        }
        (Ok(_), Err(e)) => Err(format!("the function is not configured: {e}")),
        (Ok(d), Ok(cfg)) => match decide::work_budget(remaining(deadline)) {
            None => {
                Err("too little time left in the invocation to do the work (raise the function's timeout)"
                    .into())
            }
            Some(budget) => {
                let work = async {
                    if d == ResourceDecision::Release && !published(cfg).await? {
                        return Ok(json!({ "note": "nothing published in this region: nothing to release" }));
                    }
                    converge(cfg, d == ResourceDecision::Release, &cause).await.map_err(|e| e.to_string())
                };
                match tokio::time::timeout(budget, work).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "not finished within {} s (the function's timeout less the time kept to answer): grants may be partly in place; a stack update converges them",
                        budget.as_secs()
                    )),
                }
            }
        },
    };
    let (status, reason, data) = match &outcome {
        Ok(v) => {
            let mut data = HashMap::new();
            for k in ["account", "created", "retired", "unchanged"] {
                if let Some(x) = v.get(k) {
                    data.insert(k.to_string(), x.as_str().map(String::from).unwrap_or_else(|| x.to_string()));
                }
            }
            (CloudFormationCustomResourceResponseStatus::Success, None, data)
        }
        Err(e) => {
            (CloudFormationCustomResourceResponseStatus::Failed, Some(decide::clip_reason(e)), HashMap::new())
        }
    };
    let mut response = CloudFormationCustomResourceResponse::default();
    response.status = status;
    response.reason = reason.clone();
    response.physical_resource_id = physical_id.clone();
    response.stack_id = target.stack_id.clone();
    response.request_id = target.request_id.clone();
    response.logical_resource_id = target.logical_id.clone();
    response.data = data;
    let body = serde_json::to_vec(&response).map_err(|e| err("ResponseNotDelivered", e.to_string()))?;
    let put = respond::put(&target.url, body, decide::put_timeout(remaining(deadline))).await;
    let status_text = if outcome.is_ok() { "SUCCESS" } else { "FAILED" };
    log_line(
        if outcome.is_ok() && put.is_ok() { "info" } else { "error" },
        json!({
            "cause": cause,
            "action": "respond",
            "status": status_text,
            "reason": reason,
            "physical_resource_id": physical_id,
            "delivered": put.is_ok(),
            "put_error": put.as_ref().err(),
        }),
    );
    match (outcome, put) {
        (_, Err(e)) => Err(err(
            "ResponseNotDelivered",
            format!(
                "the {status_text} response did not reach CloudFormation ({e}); the stack waits until its own timeout"
            ),
        )),
        (Err(e), Ok(())) => Err(err("CustomResourceFailed", e)),
        (Ok(v), Ok(())) => Ok(
            json!({ "event": cause, "status": status_text, "physical_resource_id": physical_id, "result": v }),
        ),
    }
}

/// Whether the key parameter exists in the function's region.
async fn published(cfg: &FunctionConfig) -> Result<bool, String> {
    let aws = Aws::connect(&cfg.aws, &cfg.region).await;
    match consumer::published_keys(&aws, &cfg.ssm_path, std::slice::from_ref(&cfg.region)).await {
        Ok(_) => Ok(true),
        Err(ConsumerError::Input(_)) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn configuration_from_the_environment() {
        let c = FunctionConfig::from_env(env(&[
            ("AMIKEY_SSM_PATH", "/images/golden"),
            ("AWS_REGION", "eu-west-1"),
            ("AMIKEY_SERVICES", "autoscaling, spot"),
            ("AMIKEY_GRANTEE_ROLES", "arn:aws:iam::111122223333:role/ci"),
        ]))
        .unwrap();
        assert_eq!(c.services, ["autoscaling", "spot"]);
        assert_eq!(c.roles, ["arn:aws:iam::111122223333:role/ci"]);
        assert_eq!(c.aws.region.as_deref(), Some("eu-west-1"));
        let r = c.grant_request(false);
        assert!(r.retire_stale && !r.release && r.regions == ["eu-west-1"]);
        assert_eq!(c.aws.max_attempts, 5, "the default 4 retries: 5 attempts");
        // AMIKEY_SERVICES unset: autoscaling (with the roles); set empty: only the roles.
        let base = [
            ("AMIKEY_SSM_PATH", "/p"),
            ("AWS_REGION", "eu-west-1"),
            ("AMIKEY_GRANTEE_ROLES", "arn:aws:iam::111122223333:role/ci"),
        ];
        assert_eq!(FunctionConfig::from_env(env(&base)).unwrap().services, ["autoscaling"]);
        let mut none = base.to_vec();
        none.push(("AMIKEY_SERVICES", ""));
        assert!(FunctionConfig::from_env(env(&none)).unwrap().services.is_empty());

        for (pairs, want) in [
            (vec![("AWS_REGION", "eu-west-1")], "AMIKEY_SSM_PATH is not set"),
            (vec![("AMIKEY_SSM_PATH", "images"), ("AWS_REGION", "eu-west-1")], "AMIKEY_SSM_PATH: --ssm-path"),
            (vec![("AMIKEY_SSM_PATH", "/p")], "AWS_REGION is not set"),
            (
                vec![("AMIKEY_SSM_PATH", "/p"), ("AWS_REGION", "eu-west-1"), ("AMIKEY_SERVICES", "nope")],
                "AMIKEY_SERVICES",
            ),
            (
                vec![
                    ("AMIKEY_SSM_PATH", "/p"),
                    ("AWS_REGION", "eu-west-1"),
                    ("AMIKEY_GRANTEE_ROLES", "role/x"),
                ],
                "AMIKEY_GRANTEE_ROLES",
            ),
        ] {
            let e = FunctionConfig::from_env(env(&pairs)).unwrap_err();
            assert!(e.contains(want), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn classifies_events_and_names_what_is_wrong() {
        let ps = json!({
            "version": "0", "id": "1", "detail-type": "Parameter Store Change", "source": "aws.ssm",
            "account": "111122223333", "time": "2026-12-01T10:00:00Z", "region": "eu-west-1",
            "resources": ["arn:aws:ssm:eu-west-1:111122223333:parameter/images/golden/kms_key_arn"],
            "detail": { "name": "/images/golden/kms_key_arn", "type": "String", "operation": "Update" }
        });
        assert_eq!(
            classify(&ps).unwrap(),
            Event::ParameterChange {
                name: "/images/golden/kms_key_arn".into(),
                operation: "Update".into(),
                region: Some("eu-west-1".into())
            }
        );
        let sched = json!({
            "version": "0", "id": "2", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "111122223333", "time": "2026-12-01T10:00:00Z", "region": "eu-west-1",
            "resources": ["arn:aws:events:eu-west-1:111122223333:rule/amikey-drift"], "detail": {}
        });
        assert_eq!(classify(&sched).unwrap(), Event::Schedule);
        assert_eq!(classify(&json!({"RequestType": "Create"})).unwrap(), Event::CustomResource);

        let mut other = sched.clone();
        other["source"] = json!("aws.ec2");
        other["detail-type"] = json!("EC2 Instance State-change Notification");
        let e = classify(&other).unwrap_err();
        assert_eq!(e.kind, "UnrecognisedEvent");
        assert!(e.message.contains("check the rule's event pattern"), "{e}");

        let mut no_detail = ps.clone();
        no_detail["detail"] = json!({"type": "String"});
        let e = classify(&no_detail).unwrap_err();
        assert_eq!(e.kind, "MalformedEvent");
        assert!(e.message.contains("missing field `name`"), "{e}");

        let mut bad_time = ps.clone();
        bad_time["time"] = json!("yesterday");
        assert_eq!(classify(&bad_time).unwrap_err().kind, "MalformedEvent");

        for v in [json!({}), json!(null), json!([1]), json!("x"), json!({"hello": 1})] {
            let e = classify(&v).unwrap_err();
            assert_eq!(e.kind, "UnrecognisedEvent", "{v}");
            assert!(e.message.contains("expected an EventBridge event"), "{e}");
        }
    }

    #[test]
    fn a_request_without_a_response_url_is_refused_without_any_call() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let cfg = Err("unset".to_string());
        let deadline = SystemTime::now() + Duration::from_secs(30);
        let e = rt
            .block_on(handle(&cfg, json!({"RequestType": "Create", "StackId": "s"}), deadline))
            .unwrap_err();
        assert_eq!(e.kind, "MalformedEvent");
        assert!(e.message.contains("cannot answer CloudFormation"), "{e}");
        let e = rt.block_on(handle(&cfg, json!({"detail-type": "Scheduled Event"}), deadline)).unwrap_err();
        assert_eq!(e.kind, "MalformedEvent", "{e}");
    }
}
