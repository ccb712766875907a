//! The Lambda function (`bootstrap`, `--features lambda`) under AWS's Lambda Runtime Interface
//! Emulator (`aws-lambda-rie`, built by tests/peers/build.sh), with moto behind it: Parameter
//! Store Change events, CloudFormation custom-resource Create/Update/Delete (the response PUT
//! caught by a local HTTP server), a schedule event, malformed events, re-delivery. The org
//! rollout (20 accounts × 3 regions) calls the library's `amikey::lambda::handle` directly, the
//! entry point `bootstrap` wraps, for speed (60 functions under 60 emulators would test the
//! emulator, not the convergence). The templates: cfn-lint, and a deploy into moto's
//! CloudFormation whose custom resource the real function answers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use amikey::aws::{Aws, AwsOptions};
use serde_json::{Value, json};

use crate::moto::{ACCOUNT, CONSUMER, Enc, Moto, create_ami, create_key};

const PATH: &str = "/images/golden";
const REGION: &str = "eu-west-1";
const ROLE: &str = "role/ci-launcher";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(f)
}

fn bootstrap() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_bootstrap") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "the `bootstrap` binary is built only with the `lambda` feature: run `cargo test --features lambda` \
             (scripts/test does)"
        ),
    }
}

fn asg_role(account: &str) -> String {
    format!(
        "arn:aws:iam::{account}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
    )
}

/// Puts `<PATH>/<name>` = `value` in `account`'s `region` (what the producer's publish puts there).
async fn publish(m: &Moto, account: &str, region: &str, name: &str, value: &str) {
    m.put_parameter(account, region, &format!("{PATH}/{name}"), value).await;
}

/// (grantee, name) of every grant on `key`, listed by its owner.
async fn grants_on(m: &Moto, region: &str, key: &str) -> Vec<(String, String)> {
    let aws = m.aws(None).await;
    let out = aws.kms(region).list_grants().key_id(key).send().await.unwrap();
    let mut v: Vec<(String, String)> = out
        .grants()
        .iter()
        .map(|g| {
            (g.grantee_principal().unwrap_or_default().to_string(), g.name().unwrap_or_default().to_string())
        })
        .collect();
    v.sort();
    v
}

fn count(m: &Moto, op: &str) -> usize {
    m.calls().iter().filter(|c| c["operation"] == op).count()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `aws-lambda-rie` running `bootstrap` as `account`, against moto; killed on drop.
struct Rie {
    url: String,
    out: PathBuf,
    child: Child,
}

impl Rie {
    fn start(m: &Moto, account: &str, env: &[(&str, &str)]) -> Rie {
        let rie = crate::external::require("aws-lambda-rie");
        let (ak, sk, token) = block_on(m.session_credentials(
            &format!("arn:aws:iam::{account}:role/amikey-grants"),
            "amikey-lambda-test",
        ));
        let (port, api) = (free_port(), free_port());
        let n = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
        let out = m.dir.path().join(format!("rie-{n}.out"));
        let mut cmd = Command::new(rie);
        cmd.arg("--runtime-interface-emulator-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--runtime-api-address")
            .arg(format!("127.0.0.1:{api}"))
            .arg(bootstrap())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", m.dir.path())
            .env("AWS_ACCESS_KEY_ID", ak)
            .env("AWS_SECRET_ACCESS_KEY", sk)
            .env("AWS_SESSION_TOKEN", token)
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", &m.endpoint)
            .env("AMIKEY_CALL_LOG", m.call_log())
            .env("AWS_LAMBDA_FUNCTION_TIMEOUT", "30")
            .env("LOG_LEVEL", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let f = std::fs::File::create(&out).unwrap();
        let child = cmd
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .expect("start aws-lambda-rie");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aws-lambda-rie did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Rie { url: format!("http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"), out, child }
    }

    /// Invokes the function with `payload` (raw bytes); returns (HTTP status, body as JSON or a
    /// JSON string).
    fn invoke_raw(&self, payload: &str) -> (u16, Value) {
        let out = Command::new("curl")
            .args(["-s", "-m", "60", "-X", "POST", "-w", "\n%{http_code}", "--data-binary", "@-", &self.url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(payload.as_bytes())?;
                c.wait_with_output()
            })
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let v = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
        (code.trim().parse().unwrap_or(0), v)
    }

    fn invoke(&self, event: &Value) -> Value {
        let (code, v) = self.invoke_raw(&event.to_string());
        assert_eq!(code, 200, "{v}\n{}", self.output());
        v
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The function's structured log lines so far.
    fn logs(&self) -> Vec<Value> {
        self.output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("level").is_some())
            .collect()
    }
}

impl Drop for Rie {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A failed invocation's error, as the runtime reports it.
fn error_of(v: &Value) -> (String, String) {
    (
        v["errorType"].as_str().unwrap_or_default().to_string(),
        v["errorMessage"].as_str().unwrap_or_default().to_string(),
    )
}

fn parameter_event(region: &str, account: &str, name: &str, operation: &str) -> Value {
    json!({
        "version": "0", "id": format!("ev-{name}-{operation}"), "detail-type": "Parameter Store Change",
        "source": "aws.ssm", "account": account, "time": "2026-12-01T10:00:00Z", "region": region,
        "resources": [format!("arn:aws:ssm:{region}:{account}:parameter{PATH}/{name}")],
        "detail": { "name": format!("{PATH}/{name}"), "type": "String", "operation": operation }
    })
}

fn schedule_event(account: &str) -> Value {
    json!({
        "version": "0", "id": "sched-1", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": account, "time": "2026-12-01T06:00:00Z", "region": REGION,
        "resources": [format!("arn:aws:events:{REGION}:{account}:rule/amikey-drift")], "detail": {}
    })
}

fn cfn_event(request_type: &str, url: &str, physical: Option<&str>) -> Value {
    let mut e = json!({
        "RequestType": request_type,
        "ServiceToken": format!("arn:aws:lambda:{REGION}:{CONSUMER}:function:amikey-grants"),
        "ResponseURL": url,
        "StackId": format!("arn:aws:cloudformation:{REGION}:{CONSUMER}:stack/amikey-grants/guid"),
        "RequestId": format!("req-{request_type}"),
        "LogicalResourceId": "Grants",
        "ResourceType": "Custom::AmikeyGrants",
        "ResourceProperties": { "ServiceToken": "x", "SsmPath": PATH }
    });
    if let Some(p) = physical {
        e["PhysicalResourceId"] = json!(p);
    }
    if request_type == "Update" {
        e["OldResourceProperties"] = json!({ "ServiceToken": "x", "SsmPath": PATH });
    }
    e
}

/// A request the catcher received.
#[derive(Debug, Clone)]
struct Caught {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// Stands in for the pre-signed S3 ResponseURL: records every request; answers 200, or (with
/// `hang`) never answers.
struct Catcher {
    base: String,
    caught: Arc<Mutex<Vec<Caught>>>,
}

impl Catcher {
    fn start(hang: bool) -> Catcher {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let caught = Arc::new(Mutex::new(Vec::new()));
        let sink = caught.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.lines();
                    let first: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
                    let headers: BTreeMap<String, String> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                    let mut body = buf[head_end + 4..].to_vec();
                    while body.len() < len {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => body.extend_from_slice(&chunk[..n]),
                        }
                    }
                    sink.lock().unwrap().push(Caught {
                        method: first.first().unwrap_or(&"").to_string(),
                        target: first.get(1).unwrap_or(&"").to_string(),
                        headers,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    if hang {
                        // Never answer: hold the connection until the client gives up.
                        let _ = s.read(&mut chunk);
                    } else {
                        let _ =
                            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                });
            }
        });
        Catcher { base, caught }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/cfn-response/{name}?X-Amz-Signature=abc", self.base)
    }

    fn take(&self) -> Vec<Caught> {
        std::mem::take(&mut *self.caught.lock().unwrap())
    }
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto, aws-lambda-rie")]
fn parameter_change_converges_rotation_retires_and_redelivery_makes_no_second_grant() {
    let m = Moto::take();
    let (k1, k2) = block_on(async {
        let aws = m.aws(None).await;
        (create_key(&aws, REGION, "alias/images-1").await, create_key(&aws, REGION, "alias/images-2").await)
    });
    block_on(publish(&m, CONSUMER, REGION, "kms_key_arn", &k1));
    let role = format!("arn:aws:iam::{CONSUMER}:{ROLE}");
    let rie = Rie::start(&m, CONSUMER, &[("AMIKEY_SSM_PATH", PATH), ("AMIKEY_GRANTEE_ROLES", &role)]);
    let ev = parameter_event(REGION, CONSUMER, "kms_key_arn", "Update");

    let r = rie.invoke(&ev);
    assert_eq!(r["grants"]["created"], 2, "{r}");
    assert_eq!(r["grants"]["account"], CONSUMER, "{r}");
    let g = block_on(grants_on(&m, REGION, &k1));
    let grantees: Vec<&str> = g.iter().map(|(who, _)| who.as_str()).collect();
    let mut want = vec![asg_role(CONSUMER), role.clone()];
    want.sort();
    assert_eq!(grantees, want, "one grant per grantee: {g:?}");
    assert!(g.iter().all(|(_, n)| n.starts_with("amikey-")), "{g:?}");
    assert_eq!(count(&m, "CreateGrant"), 2);
    let lines: Vec<Value> = rie.logs().into_iter().filter(|l| l["action"] == "create_grant").collect();
    assert_eq!(lines.len(), 2, "one log line per action:\n{}", rie.output());
    assert!(
        lines
            .iter()
            .all(|l| l["key_arn"] == k1.as_str() && l["outcome"] == "changed" && l["grant_id"].is_string())
    );

    // The same event again (EventBridge delivers at least once): no write at all.
    m.clear_calls();
    let r = rie.invoke(&ev);
    assert_eq!(
        (r["grants"]["created"].clone(), r["grants"]["unchanged"].clone()),
        (json!(0), json!(2)),
        "{r}"
    );
    assert_eq!(count(&m, "CreateGrant") + count(&m, "RetireGrant"), 0, "{:?}", m.calls());
    assert_eq!(block_on(grants_on(&m, REGION, &k1)).len(), 2);

    // Rotation: the producer publishes k2; the grants follow, and amikey's grants on k1 go.
    block_on(publish(&m, CONSUMER, REGION, "kms_key_arn", &k2));
    m.clear_calls();
    let r = rie.invoke(&ev);
    assert_eq!((r["grants"]["created"].clone(), r["grants"]["retired"].clone()), (json!(2), json!(2)), "{r}");
    assert_eq!(block_on(grants_on(&m, REGION, &k2)).len(), 2);
    assert!(block_on(grants_on(&m, REGION, &k1)).is_empty(), "the replaced key's amikey grants are retired");
    let retired: Vec<Value> = rie.logs().into_iter().filter(|l| l["action"] == "retire_grant").collect();
    assert_eq!(retired.len(), 2, "{}", rie.output());
    assert!(retired.iter().all(|l| l["key_arn"] == k1.as_str() && l["reason"] == "key_not_published"));

    // An image_id change converges too (nothing to do now); a foreign parameter is ignored.
    m.clear_calls();
    let r = rie.invoke(&parameter_event(REGION, CONSUMER, "image_id", "Update"));
    assert_eq!(r["grants"]["unchanged"], 2, "{r}");
    let r = rie.invoke(&parameter_event(REGION, CONSUMER, "snapshot_ids", "Update"));
    assert_eq!(r["action"], "none", "{r}");
    assert_eq!(count(&m, "CreateGrant") + count(&m, "RetireGrant"), 0);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto, aws-lambda-rie")]
fn custom_resource_create_update_delete_answer_cloudformation() {
    let m = Moto::take();
    let key = block_on(async { create_key(&m.aws(None).await, REGION, "alias/images").await });
    block_on(publish(&m, CONSUMER, REGION, "kms_key_arn", &key));
    let catcher = Catcher::start(false);
    let rie = Rie::start(&m, CONSUMER, &[("AMIKEY_SSM_PATH", PATH)]);
    let physical = format!("amikey-grants:{REGION}:{PATH}");

    let r = rie.invoke(&cfn_event("Create", &catcher.url("create"), None));
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let caught = catcher.take();
    assert_eq!(caught.len(), 1, "exactly one response: {caught:?}");
    let c = &caught[0];
    assert_eq!((c.method.as_str(), c.target.as_str()), ("PUT", "/cfn-response/create?X-Amz-Signature=abc"));
    assert_eq!(
        c.headers.get("content-type").map(String::as_str),
        Some(""),
        "signed for an empty Content-Type"
    );
    assert_eq!(c.body["Status"], "SUCCESS", "{:?}", c.body);
    assert_eq!(c.body["PhysicalResourceId"], physical.as_str());
    assert_eq!(c.body["RequestId"], "req-Create");
    assert_eq!(c.body["LogicalResourceId"], "Grants");
    assert_eq!(
        c.body["StackId"],
        format!("arn:aws:cloudformation:{REGION}:{CONSUMER}:stack/amikey-grants/guid")
    );
    assert_eq!(c.body["Data"]["created"], "1", "{:?}", c.body);
    assert_eq!(block_on(grants_on(&m, REGION, &key)).len(), 1);

    let r = rie.invoke(&cfn_event("Update", &catcher.url("update"), Some(&physical)));
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let c = &catcher.take()[0];
    assert_eq!(
        (c.body["Status"].as_str(), c.body["PhysicalResourceId"].as_str()),
        (Some("SUCCESS"), Some(physical.as_str()))
    );
    assert_eq!(c.body["Data"]["created"], "0", "converged already: {:?}", c.body);

    let r = rie.invoke(&cfn_event("Delete", &catcher.url("delete"), Some(&physical)));
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let c = &catcher.take()[0];
    assert_eq!(c.body["Status"], "SUCCESS", "{:?}", c.body);
    assert_eq!(c.body["Data"]["retired"], "1", "{:?}", c.body);
    assert!(block_on(grants_on(&m, REGION, &key)).is_empty(), "Delete retires amikey's grants");

    // Delete delivered again: nothing left to retire, still SUCCESS.
    m.clear_calls();
    let r = rie.invoke(&cfn_event("Delete", &catcher.url("delete2"), Some(&physical)));
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(catcher.take()[0].body["Status"], "SUCCESS");
    assert_eq!(count(&m, "RetireGrant") + count(&m, "CreateGrant"), 0);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto, aws-lambda-rie")]
fn custom_resource_failures_are_answered_and_never_left_hanging() {
    let m = Moto::take();
    let catcher = Catcher::start(false);

    // Not configured: CloudFormation hears FAILED with the variable to set, not silence.
    let rie = Rie::start(&m, CONSUMER, &[]);
    let (code, r) = rie.invoke_raw(&cfn_event("Create", &catcher.url("c1"), None).to_string());
    assert_eq!(code, 200);
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "CustomResourceFailed", "{r}");
    assert!(msg.contains("AMIKEY_SSM_PATH is not set"), "{r}");
    let c = &catcher.take()[0];
    assert_eq!(c.body["Status"], "FAILED");
    assert!(c.body["Reason"].as_str().unwrap().contains("AMIKEY_SSM_PATH is not set"), "{:?}", c.body);
    let failed_id = c.body["PhysicalResourceId"].as_str().unwrap().to_string();
    // The rollback's Delete of that resource succeeds: nothing was created.
    let r = rie.invoke(&cfn_event("Delete", &catcher.url("d1"), Some(&failed_id)));
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(catcher.take()[0].body["Status"], "SUCCESS");
    drop(rie);

    // Configured, but nothing published: FAILED with the reason; an unknown RequestType too.
    let rie = Rie::start(&m, CONSUMER, &[("AMIKEY_SSM_PATH", PATH)]);
    let (_, r) = rie.invoke_raw(&cfn_event("Create", &catcher.url("c2"), None).to_string());
    assert!(!error_of(&r).1.is_empty(), "{r}");
    let c = &catcher.take()[0];
    assert_eq!(c.body["Status"], "FAILED");
    assert!(
        c.body["Reason"].as_str().unwrap().contains(&format!("no parameter {PATH}/kms_key_arn")),
        "{:?}",
        c.body
    );
    let (_, r) = rie.invoke_raw(&cfn_event("Replace", &catcher.url("c3"), None).to_string());
    assert!(!error_of(&r).1.is_empty(), "{r}");
    let c = &catcher.take()[0];
    assert_eq!(c.body["Status"], "FAILED");
    assert!(c.body["Reason"].as_str().unwrap().contains("RequestType"), "{:?}", c.body);
    drop(rie);

    // A ResponseURL that never answers: the function gives up before its own timeout and
    // says so; the invocation ends, it does not hang until Lambda kills it.
    let key = block_on(async { create_key(&m.aws(None).await, REGION, "alias/images").await });
    block_on(publish(&m, CONSUMER, REGION, "kms_key_arn", &key));
    let silent = Catcher::start(true);
    let rie = Rie::start(&m, CONSUMER, &[("AMIKEY_SSM_PATH", PATH), ("AWS_LAMBDA_FUNCTION_TIMEOUT", "6")]);
    let started = Instant::now();
    let (code, r) = rie.invoke_raw(&cfn_event("Create", &silent.url("c4"), None).to_string());
    let took = started.elapsed();
    assert_eq!(code, 200, "{r}");
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "ResponseNotDelivered", "{r}");
    assert!(msg.contains("did not reach CloudFormation"), "{msg}");
    assert!(took < Duration::from_secs(6), "answered within the 6 s timeout, took {took:?}");
    assert_eq!(silent.take().len(), 1, "the PUT was sent");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto, aws-lambda-rie")]
fn schedule_event_reports_the_doctors_checks() {
    let m = Moto::take();
    let (key, ami) = block_on(async {
        let aws = m.aws(None).await;
        let key = create_key(&aws, REGION, "alias/images").await;
        let (ami, _) = create_ami(&aws, REGION, &[("/dev/xvda", Enc::Key(key.clone()))]).await;
        aws.ec2(REGION)
            .modify_image_attribute()
            .image_id(&ami)
            .launch_permission(
                aws_sdk_ec2::types::LaunchPermissionModifications::builder()
                    .add(aws_sdk_ec2::types::LaunchPermission::builder().user_id(CONSUMER).build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        (key, ami)
    });
    block_on(async {
        publish(&m, CONSUMER, REGION, "kms_key_arn", &key).await;
        publish(&m, CONSUMER, REGION, "image_id", &ami).await;
    });
    let rie = Rie::start(&m, CONSUMER, &[("AMIKEY_SSM_PATH", PATH)]);

    let r = rie.invoke(&schedule_event(CONSUMER));
    assert_eq!(r["drift"], true, "no grant yet: {r}");
    assert_eq!(r["doctor"]["ami_id"], ami.as_str());
    let failing: Vec<&str> = r["doctor"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(failing, [format!("grant:autoscaling:{key}")], "{r}");
    let logged = rie.logs().into_iter().filter(|l| l["cause"] == "schedule").count();
    assert_eq!(logged, r["doctor"]["checks"].as_array().unwrap().len(), "one line per check");
    assert_eq!(count(&m, "CreateGrant"), 0, "the drift check only reads");

    rie.invoke(&parameter_event(REGION, CONSUMER, "image_id", "Update"));
    let r = rie.invoke(&schedule_event(CONSUMER));
    assert_eq!(r["drift"], false, "{r}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto, aws-lambda-rie")]
fn malformed_and_unexpected_events_fail_cleanly_and_the_function_keeps_serving() {
    let m = Moto::take();
    let key = block_on(async { create_key(&m.aws(None).await, REGION, "alias/images").await });
    block_on(publish(&m, CONSUMER, REGION, "kms_key_arn", &key));
    let rie = Rie::start(&m, CONSUMER, &[("AMIKEY_SSM_PATH", PATH)]);
    let mut ec2_event = schedule_event(CONSUMER);
    ec2_event["source"] = json!("aws.ec2");
    ec2_event["detail-type"] = json!("EC2 Instance State-change Notification");
    let mut no_name = parameter_event(REGION, CONSUMER, "kms_key_arn", "Update");
    no_name["detail"] = json!({ "operation": "Update" });
    let mut bad_time = parameter_event(REGION, CONSUMER, "kms_key_arn", "Update");
    bad_time["time"] = json!("yesterday");
    let cases: Vec<(String, &str)> = vec![
        ("{}".into(), "UnrecognisedEvent"),
        ("[1, 2]".into(), "UnrecognisedEvent"),
        ("\"hello\"".into(), "UnrecognisedEvent"),
        ("null".into(), "UnrecognisedEvent"),
        ("{\"detail-type\": 1}".into(), "MalformedEvent"),
        (ec2_event.to_string(), "UnrecognisedEvent"),
        (no_name.to_string(), "MalformedEvent"),
        (bad_time.to_string(), "MalformedEvent"),
        (parameter_event("us-west-2", CONSUMER, "kms_key_arn", "Update").to_string(), "WrongRegion"),
        (json!({"RequestType": "Create"}).to_string(), "MalformedEvent"),
    ];
    for (payload, want) in &cases {
        let (code, r) = rie.invoke_raw(payload);
        assert_eq!(code, 200, "{payload}: {r}");
        let (kind, msg) = error_of(&r);
        assert_eq!(kind, *want, "{payload}: {r}");
        assert!(!msg.is_empty(), "{payload}: {r}");
    }
    // Not JSON at all: the runtime refuses it as an invocation error.
    let (_, r) = rie.invoke_raw("not json {");
    assert!(!error_of(&r).1.is_empty(), "{r}");
    let errors = rie.logs().into_iter().filter(|l| l["level"] == "error").count();
    assert!(errors >= cases.len(), "each refusal is logged:\n{}", rie.output());
    assert!(!rie.output().contains("panicked"), "{}", rie.output());
    assert_eq!(count(&m, "CreateGrant"), 0, "no bad event wrote anything");

    // Still serving, from the same process.
    let r = rie.invoke(&parameter_event(REGION, CONSUMER, "kms_key_arn", "Update"));
    assert_eq!(r["grants"]["created"], 1, "{r}");
}

/// The function's configuration for `account`, reaching moto by an assumed role.
fn config_for(m: &Moto, account: &str, region: &str) -> amikey::lambda::FunctionConfig {
    let role = format!("arn:aws:iam::{account}:{ROLE}");
    let env = BTreeMap::from([
        ("AMIKEY_SSM_PATH", PATH.to_string()),
        ("AWS_REGION", region.to_string()),
        ("AMIKEY_GRANTEE_ROLES", role),
    ]);
    let mut cfg = amikey::lambda::FunctionConfig::from_env(|k| env.get(k).cloned()).unwrap();
    cfg.aws = AwsOptions {
        region: Some(region.into()),
        endpoint_url: Some(m.endpoint.clone()),
        access_key: Some("testing".into()),
        secret_key: Some("testing".into()),
        assume_role: Some((format!("arn:aws:iam::{account}:role/amikey-grants"), None, None)),
        max_attempts: 3,
        ..AwsOptions::default()
    };
    cfg
}

/// Delivers `name`'s Parameter Store Change to every (account, region) function at once;
/// returns the summed (created, retired).
async fn deliver_all(m: &Moto, targets: &[(String, String)], name: &str) -> (u64, u64) {
    let runs = targets.iter().map(|(account, region)| async move {
        let cfg = Ok(config_for(m, account, region));
        let deadline = SystemTime::now() + Duration::from_secs(120);
        let ev = parameter_event(region, account, name, "Update");
        amikey::lambda::handle(&cfg, ev, deadline).await
    });
    let mut sum = (0, 0);
    for (t, r) in targets.iter().zip(futures::future::join_all(runs).await) {
        let r = r.unwrap_or_else(|e| panic!("{t:?}: {e}"));
        sum.0 += r["grants"]["created"].as_u64().unwrap();
        sum.1 += r["grants"]["retired"].as_u64().unwrap();
    }
    sum
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn org_key_rotation_reaches_every_account_and_region_with_exactly_one_grant_each() {
    let m = Moto::take();
    let regions = ["eu-west-1", "us-east-1", "us-west-2"];
    let accounts: Vec<String> = (1..=20).map(|i| format!("{}", 210000000000u64 + i)).collect();
    let targets: Vec<(String, String)> =
        accounts.iter().flat_map(|a| regions.iter().map(move |r| (a.clone(), r.to_string()))).collect();
    block_on(async {
        let aws: Aws = m.aws(None).await;
        let mut old = BTreeMap::new();
        for r in regions {
            old.insert(r, create_key(&aws, r, "alias/images-old").await);
        }
        futures::future::join_all(
            targets.iter().map(|(a, r)| publish(&m, a, r, "kms_key_arn", &old[r.as_str()])),
        )
        .await;
        assert_eq!(deliver_all(&m, &targets, "kms_key_arn").await, (120, 0), "2 grantees × 60");

        // The producer rotates: a new key per region, published to every account.
        let mut new = BTreeMap::new();
        for r in regions {
            new.insert(r, create_key(&aws, r, "alias/images-new").await);
        }
        futures::future::join_all(
            targets.iter().map(|(a, r)| publish(&m, a, r, "kms_key_arn", &new[r.as_str()])),
        )
        .await;
        assert_eq!(deliver_all(&m, &targets, "kms_key_arn").await, (120, 120));

        for r in regions {
            let g = grants_on(&m, r, &new[r]).await;
            let mut per_grantee: BTreeMap<&str, usize> = BTreeMap::new();
            for (who, _) in &g {
                *per_grantee.entry(who.as_str()).or_default() += 1;
            }
            assert_eq!(per_grantee.len(), 40, "{r}: every account's two grantees: {per_grantee:?}");
            assert!(per_grantee.values().all(|n| *n == 1), "{r}: exactly one grant each: {per_grantee:?}");
            for a in &accounts {
                assert_eq!(per_grantee.get(asg_role(a).as_str()), Some(&1), "{r} {a}");
            }
            assert!(grants_on(&m, r, &old[r]).await.is_empty(), "{r}: the old key keeps no amikey grant");
        }
        // Every event delivered once more: nothing to do anywhere.
        assert_eq!(deliver_all(&m, &targets, "kms_key_arn").await, (0, 0));
    });
}

fn cfn_lint() -> PathBuf {
    if let Some(p) = crate::external::find("cfn-lint") {
        return p;
    }
    let py = std::env::var_os("AMIKEY_MOTO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::moto::repo_path(".venv-moto/bin/python"));
    let p = py.parent().map(|d| d.join("cfn-lint")).unwrap_or_default();
    assert!(
        p.is_file(),
        "cfn-lint is missing: run scripts/setup (it comes with the moto venv), or set AMIKEY_CFN_LINT"
    );
    p
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: cfn-lint")]
fn templates_lint_clean_and_the_role_has_exactly_the_documented_consumer_policy() {
    let lint = cfn_lint();
    for t in ["deploy/amikey-grants.json", "deploy/stackset.json"] {
        let out = Command::new(&lint).arg(crate::moto::repo_path(t)).output().unwrap();
        assert!(
            out.status.success(),
            "{t}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The lint can fail: a wrong runtime is caught.
    let mut t: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::moto::repo_path("deploy/amikey-grants.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::moto::repo_path("docs/iam-consumer-policy.json")).unwrap(),
    )
    .unwrap();
    let templated =
        serde_json::to_string(&t["Resources"]["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"])
            .unwrap();
    let expected = serde_json::to_string(&doc).unwrap().replace(
        "\"arn:aws:kms:*:PRODUCER_ACCOUNT:key/*\"",
        "{\"Fn::Sub\":\"arn:aws:kms:*:${ProducerAccountId}:key/*\"}",
    );
    assert_eq!(templated, expected, "the function's role is exactly docs/iam-consumer-policy.json");
    t["Resources"]["Function"]["Properties"]["Runtime"] = json!("provided.al2099");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, t.to_string()).unwrap();
    let out = Command::new(&lint).arg(&bad).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stdout).contains("E3030"), "{out:?}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto, aws-lambda-rie, zip")]
fn template_deploys_into_moto_cloudformation_and_the_function_completes_its_custom_resource() {
    let m = Moto::take();
    let zip = crate::external::require("zip");
    let key = block_on(async { create_key(&m.aws(None).await, "us-east-1", "alias/images").await });
    // moto's CloudFormation answers the ResponseURL in us-east-1 and the default account only.
    block_on(async {
        let aws = m.aws(None).await;
        aws.ssm("us-east-1")
            .put_parameter()
            .name(format!("{PATH}/kms_key_arn"))
            .value(&key)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    });
    let dir = m.dir.path();
    std::fs::copy(bootstrap(), dir.join("bootstrap")).unwrap();
    let st = Command::new(zip).current_dir(dir).args(["-q", "code.zip", "bootstrap"]).status().unwrap();
    assert!(st.success());
    let py = std::env::var_os("AMIKEY_MOTO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::moto::repo_path(".venv-moto/bin/python"));
    let params =
        json!({"CodeBucket": "amikey-code", "CodeKey": "amikey-lambda.zip", "ProducerAccountId": ACCOUNT});
    let out = Command::new(&py)
        .arg(crate::moto::repo_path("tests/lambda/cfn_stack.py"))
        .args(["create", &m.endpoint])
        .arg(crate::moto::repo_path("deploy/amikey-grants.json"))
        .arg(dir.join("code.zip"))
        .arg(params.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stack: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stack["status"], "CREATE_IN_PROGRESS", "waiting for the custom resource: {stack}");
    let types: Vec<&str> =
        stack["resources"].as_object().unwrap().values().map(|r| r["type"].as_str().unwrap()).collect();
    for t in [
        "AWS::IAM::Role",
        "AWS::Lambda::Function",
        "AWS::Events::Rule",
        "AWS::Lambda::Permission",
        "AWS::Logs::LogGroup",
        "Custom::AmikeyGrants",
    ] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }
    assert_eq!(stack["function"]["Runtime"], "provided.al2023");
    assert_eq!(stack["function"]["Handler"], "bootstrap");
    assert_eq!(stack["function"]["Environment"]["Variables"]["AMIKEY_SSM_PATH"], PATH);
    let pattern =
        stack["rules"].as_array().unwrap().iter().find_map(|r| r["pattern"].as_object().cloned()).unwrap();
    assert_eq!(
        Value::Object(pattern)["detail"]["name"],
        json!([format!("{PATH}/kms_key_arn"), format!("{PATH}/image_id")])
    );
    assert!(
        stack["role_policy"].to_string().contains(&format!("arn:aws:kms:*:{ACCOUNT}:key/*")),
        "{}",
        stack["role_policy"]
    );

    // What moto would send the function (it tries Docker, absent here): the same request, to
    // the real function under the emulator, answering moto's own ResponseURL.
    let stack_id = stack["stack_id"].as_str().unwrap();
    let rie = Rie::start(&m, ACCOUNT, &[("AMIKEY_SSM_PATH", PATH), ("AWS_REGION", "us-east-1")]);
    let mut ev = cfn_event(
        "Create",
        &format!("{}/cloudformation_us-east-1/cfnresponse?stack={stack_id}", m.endpoint),
        None,
    );
    ev["StackId"] = json!(stack_id);
    let r = rie.invoke(&ev);
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let out = Command::new(&py)
        .arg(crate::moto::repo_path("tests/lambda/cfn_stack.py"))
        .args(["wait", &m.endpoint, stack_id, "CREATE_COMPLETE"])
        .output()
        .unwrap();
    let done: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(done["StackStatus"], "CREATE_COMPLETE", "{done}");
    let outputs = done["Outputs"].as_array().unwrap();
    assert!(
        outputs.iter().any(|o| o["OutputKey"] == "GrantsCreatedOnDeploy" && o["OutputValue"] == "1"),
        "{outputs:?}"
    );
    assert_eq!(block_on(grants_on(&m, "us-east-1", &key)).len(), 1);
}
