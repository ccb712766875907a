//! The consumer side against the patched moto emulator, through the real CLI binary run as the
//! consumer account (assumed-role credentials): `grant` from a published path, re-runs that
//! change nothing (counted in the call log: moto's Name idempotency would hide duplicates),
//! multi-Region replicas, `--retire-stale`, `doctor` before and after, `policy check` and
//! `policy generate --merge`.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::moto::{ACCOUNT, CONSUMER, Enc, Moto, create_ami, create_key, create_mrk, json, run};

const PATH: &str = "/images/golden";
const ASG_ROLE: &str = "role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn asg_arn() -> String {
    format!("arn:aws:iam::{CONSUMER}:{ASG_ROLE}")
}

/// The amikey CLI with credentials of an assumed-role session in the consumer account (moto
/// maps the session's access key to that account).
pub(crate) fn as_consumer(m: &Moto) -> Command {
    let (key, secret, token) = block_on(m.session_credentials(
        &format!("arn:aws:iam::{CONSUMER}:role/consumer-admin"),
        "amikey-consumer-test",
    ));
    let mut c = m.amikey();
    c.env("AWS_ACCESS_KEY_ID", key).env("AWS_SECRET_ACCESS_KEY", secret).env("AWS_SESSION_TOKEN", token);
    c
}

fn count(m: &Moto, op: &str) -> usize {
    m.calls().iter().filter(|c| c["operation"] == op).count()
}

/// Producer grants on `key` (ListGrants as the key owner).
fn grants_on(m: &Moto, region: &str, key: &str) -> Vec<Value> {
    block_on(async {
        let aws = m.aws(None).await;
        let out = aws.kms(region).list_grants().key_id(key).send().await.unwrap();
        out.grants()
            .iter()
            .map(|g| {
                serde_json::json!({
                    "name": g.name(),
                    "grantee": g.grantee_principal(),
                    "operations": g.operations().iter().map(|o| o.as_str().to_string()).collect::<Vec<_>>(),
                })
            })
            .collect()
    })
}

/// Puts `<PATH>/kms_key_arn` in the consumer account in `region` (as `publish_accounts` does).
fn publish_in_consumer(m: &Moto, region: &str, key: &str) {
    block_on(m.put_parameter(CONSUMER, region, &format!("{PATH}/kms_key_arn"), key));
}

/// Gives the consumer launch permission on `ami` (as the producer).
async fn share_ami(aws: &amikey::aws::Aws, region: &str, ami: &str) {
    aws.ec2(region)
        .modify_image_attribute()
        .image_id(ami)
        .launch_permission(
            aws_sdk_ec2::types::LaunchPermissionModifications::builder()
                .add(aws_sdk_ec2::types::LaunchPermission::builder().user_id(CONSUMER).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Keys (alias/images) in three regions; the mapping published in the consumer account in two.
fn seed_keys(m: &Moto) -> BTreeMap<String, String> {
    let keys = block_on(async {
        let aws = m.aws(None).await;
        let mut keys = BTreeMap::new();
        for r in ["eu-west-1", "us-east-1", "us-west-2"] {
            keys.insert(r.to_string(), create_key(&aws, r, "alias/images").await);
        }
        keys
    });
    publish_in_consumer(m, "eu-west-1", &keys["eu-west-1"]);
    publish_in_consumer(m, "us-east-1", &keys["us-east-1"]);
    keys
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn grant_from_published_path_makes_one_grant_per_region_and_a_rerun_changes_nothing() {
    let m = Moto::take();
    let keys = seed_keys(&m);

    let (code, out, err) =
        run(as_consumer(&m).args(["grant", "--ssm-path", PATH, "--dry-run", "--format", "json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(count(&m, "CreateGrant"), 0, "--dry-run writes nothing");
    let plan = json(&out);
    assert_eq!(plan["actions"].as_array().unwrap().len(), 2, "{out}");
    assert!(plan["actions"].as_array().unwrap().iter().all(|a| a["outcome"] == "planned"));

    m.clear_calls();
    let (code, out, err) = run(as_consumer(&m).args(["grant", "--ssm-path", PATH, "--format", "json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let r = json(&out);
    assert_eq!(r["account"], CONSUMER);
    let regions: Vec<&str> =
        r["keys"].as_array().unwrap().iter().map(|k| k["region"].as_str().unwrap()).collect();
    assert_eq!(regions, ["eu-west-1", "us-east-1"], "only where the parameter exists");
    assert_eq!(count(&m, "CreateGrant"), 2);
    assert!(
        m.calls().iter().filter(|c| c["operation"] == "GetParameter").count() > 3,
        "every region is asked by default"
    );
    for region in ["eu-west-1", "us-east-1"] {
        let g = grants_on(&m, region, &keys[region]);
        assert_eq!(g.len(), 1, "{region}: {g:?}");
        assert_eq!(g[0]["grantee"], asg_arn().as_str());
        assert!(g[0]["name"].as_str().unwrap().starts_with("amikey-autoscaling-"));
        assert_eq!(
            g[0]["operations"].as_array().unwrap().len(),
            8,
            "the operations AWS documents for the Auto Scaling role"
        );
    }
    assert!(grants_on(&m, "us-west-2", &keys["us-west-2"]).is_empty(), "not published there");

    m.clear_calls();
    let (code, out, err) = run(as_consumer(&m).args(["grant", "--ssm-path", PATH]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(count(&m, "CreateGrant"), 0, "a re-run makes no CreateGrant call:\n{out}");
    assert!(out.contains("0 changed, 2 already in place"), "{out}");
    for region in ["eu-west-1", "us-east-1"] {
        assert_eq!(grants_on(&m, region, &keys[region]).len(), 1);
    }

    // A second grantee in one region only: exactly one more grant.
    m.clear_calls();
    let (code, out, err) = run(as_consumer(&m).args([
        "grant",
        "--ssm-path",
        PATH,
        "--region",
        "eu-west-1",
        "--service",
        "autoscaling",
        "--service",
        "spot",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(count(&m, "CreateGrant"), 1, "{out}");
    assert_eq!(grants_on(&m, "eu-west-1", &keys["eu-west-1"]).len(), 2);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn multi_region_key_gets_a_grant_per_replica() {
    let m = Moto::take();
    let arns = block_on(async {
        let aws = m.aws(None).await;
        create_mrk(&aws, "us-east-1", &["eu-west-1", "us-west-2"]).await
    });
    let (code, out, err) =
        run(as_consumer(&m).args(["grant", "--key-arn", &arns["us-east-1"], "--format", "json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(count(&m, "CreateGrant"), 3, "{out}");
    let mut names = std::collections::BTreeSet::new();
    for (region, arn) in &arns {
        let g = grants_on(&m, region, arn);
        assert_eq!(g.len(), 1, "{region}: {g:?}");
        names.insert(g[0]["name"].as_str().unwrap().to_string());
    }
    assert_eq!(names.len(), 3, "each replica's grant has its own name");

    m.clear_calls();
    let (code, out, _) = run(as_consumer(&m).args(["grant", "--key-arn", &arns["eu-west-1"]]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&m, "CreateGrant"), 0, "any replica's ARN names the same set:\n{out}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn retire_stale_retires_grants_on_keys_no_longer_published() {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let (code, out, _) = run(as_consumer(&m).args(["grant", "--ssm-path", PATH, "--region", "eu-west-1"]));
    assert_eq!(code, 0, "{out}");
    // The producer rotates to a new key in eu-west-1.
    let new_key = block_on(async { create_key(&m.aws(None).await, "eu-west-1", "alias/images-v2").await });
    publish_in_consumer(&m, "eu-west-1", &new_key);

    let (code, out, _) = run(as_consumer(&m).args(["grant", "--ssm-path", PATH, "--region", "eu-west-1"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pass --retire-stale"), "the old grant is kept and reported:\n{out}");
    assert_eq!(grants_on(&m, "eu-west-1", &keys["eu-west-1"]).len(), 1);

    m.clear_calls();
    let (code, out, _) =
        run(as_consumer(&m).args(["grant", "--ssm-path", PATH, "--region", "eu-west-1", "--retire-stale"]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&m, "RetireGrant"), 1, "{out}");
    assert!(grants_on(&m, "eu-west-1", &keys["eu-west-1"]).is_empty(), "{out}");
    assert_eq!(grants_on(&m, "eu-west-1", &new_key).len(), 1);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn doctor_names_the_missing_grant_and_passes_after_grant() {
    let m = Moto::take();
    let (key, ami) = block_on(async {
        let aws = m.aws(None).await;
        let key = create_key(&aws, "eu-west-1", "alias/images").await;
        let (ami, _) = create_ami(&aws, "eu-west-1", &[("/dev/xvda", Enc::Key(key.clone()))]).await;
        share_ami(&aws, "eu-west-1", &ami).await;
        (key, ami)
    });
    publish_in_consumer(&m, "eu-west-1", &key);
    let target = format!("eu-west-1:{ami}");

    let (code, out, err) = run(as_consumer(&m).args(["doctor", "--ami", &target, "--ssm-path", PATH]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("✘ Grant for autoscaling on the key"), "{out}");
    assert!(out.contains(&format!("fix: amikey grant --key-arn {key} --service autoscaling")), "{out}");
    assert!(out.contains("likely cause of Client.InternalError"), "{out}");
    assert!(out.contains("✔ AMI shared with this account"), "{out}");
    assert_eq!(count(&m, "CreateGrant"), 0, "doctor is read-only");

    let (code, out, err) = run(as_consumer(&m).args(["grant", "--ssm-path", PATH, "--region", "eu-west-1"]));
    assert_eq!(code, 0, "{out}\n{err}");

    let (code, out, err) =
        run(as_consumer(&m).args(["doctor", "--ami", &target, "--ssm-path", PATH, "--format", "json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let r = json(&out);
    let statuses: Vec<(String, String)> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string()))
        .collect();
    assert!(statuses.iter().all(|(_, s)| s != "fail"), "{statuses:?}");
    assert!(statuses.contains(&(format!("grant:autoscaling:{key}"), "pass".into())), "{statuses:?}");
    assert!(statuses.contains(&("slr.exists:autoscaling".into(), "pass".into())), "{statuses:?}");
    assert!(r["likely_cause"].is_null());
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn doctor_flags_a_launch_template_that_re_encrypts_with_another_key() {
    let m = Moto::take();
    let (key, ami) = block_on(async {
        let aws = m.aws(None).await;
        let key = create_key(&aws, "eu-west-1", "alias/images").await;
        let (ami, snaps) = create_ami(&aws, "eu-west-1", &[("/dev/xvda", Enc::Key(key.clone()))]).await;
        let ec2 = aws.ec2("eu-west-1");
        share_ami(&aws, "eu-west-1", &ami).await;
        ec2.modify_snapshot_attribute()
            .snapshot_id(&snaps[0])
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .create_volume_permission(
                aws_sdk_ec2::types::CreateVolumePermissionModifications::builder()
                    .add(aws_sdk_ec2::types::CreateVolumePermission::builder().user_id(CONSUMER).build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        (key, ami)
    });
    let (other, lt) = block_on(async {
        let consumer = m.aws(Some(CONSUMER)).await;
        let other = create_key(&consumer, "eu-west-1", "alias/consumer-ebs").await;
        let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
            .image_id(&ami)
            .block_device_mappings(
                aws_sdk_ec2::types::LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        aws_sdk_ec2::types::LaunchTemplateEbsBlockDeviceRequest::builder()
                            .encrypted(true)
                            .kms_key_id(&other)
                            .build(),
                    )
                    .build(),
            )
            .build();
        let out = consumer
            .ec2("eu-west-1")
            .create_launch_template()
            .launch_template_name("web")
            .launch_template_data(data)
            .send()
            .await
            .unwrap();
        (other, out.launch_template().unwrap().launch_template_id().unwrap().to_string())
    });
    // The AMI's snapshots are visible, so no published key is needed.
    let (code, out, err) =
        run(as_consumer(&m).args(["grant", "--ami", &format!("eu-west-1:{ami}"), "--format", "json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json(&out)["keys"][0]["key_arn"], key.as_str());

    let (code, out, err) = run(as_consumer(&m).args([
        "doctor",
        "--ami",
        &format!("eu-west-1:{ami}"),
        "--asg",
        "web-asg",
        "--launch-template",
        &lt,
    ]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains(&format!("re-encrypts /dev/xvda with {other}")), "{out}");
    assert!(out.contains(&format!("fix: amikey grant --key-arn {other} --service autoscaling")), "{out}");
    assert!(out.contains("(ASG web-asg)"), "{out}");
}

const RESTRICTIVE: &str = r#"{"Version":"2012-10-17","Id":"restrictive","Statement":[
 {"Sid":"Owner","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"},
 {"Sid":"ConsumerCryptoOnly","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},
  "Action":["kms:Decrypt","kms:DescribeKey","kms:ReEncrypt*","kms:GenerateDataKey*"],"Resource":"*"}]}"#;

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn policy_check_finds_the_missing_grant_permission_and_merge_fixes_it() {
    let m = Moto::take();
    let key = block_on(async {
        let aws = m.aws(None).await;
        let key = create_key(&aws, "eu-west-1", "alias/images").await;
        aws.kms("eu-west-1")
            .put_key_policy()
            .key_id(&key)
            .policy_name("default")
            .policy(RESTRICTIVE)
            .send()
            .await
            .unwrap();
        key
    });
    let (code, out, err) = run(m.amikey().args([
        "policy",
        "check",
        "--key",
        &key,
        "--consumer-account",
        CONSUMER,
        "--format",
        "json",
    ]));
    assert_eq!(code, 1, "{out}\n{err}");
    let codes: Vec<String> = json(&out)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect();
    assert!(codes.contains(&"CONSUMER_CANNOT_CREATE_GRANT".to_string()), "{codes:?}");

    let (code, merged, err) = run(m.amikey().args([
        "policy",
        "generate",
        "--consumer-account",
        CONSUMER,
        "--key",
        "alias/images",
        "--region",
        "eu-west-1",
        "--merge",
    ]));
    assert_eq!(code, 0, "{merged}\n{err}");
    let doc = json(&merged);
    let sids: Vec<&str> =
        doc["Statement"].as_array().unwrap().iter().map(|s| s["Sid"].as_str().unwrap()).collect();
    assert_eq!(sids, ["Owner", "ConsumerCryptoOnly", "AmikeyConsumerCrypto", "AmikeyConsumerGrants"]);
    block_on(async {
        let aws = m.aws(None).await;
        aws.kms("eu-west-1")
            .put_key_policy()
            .key_id(&key)
            .policy_name("default")
            .policy(&merged)
            .send()
            .await
            .unwrap();
    });
    let (code, out, err) =
        run(m.amikey().args(["policy", "check", "--key", &key, "--consumer-account", CONSUMER]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("✔"), "{out}");
    let _ = ACCOUNT;
}

/// A loopback stand-in for KMS and STS, for what moto cannot produce (it never enforces key
/// policies, nor checks that a grantee exists): DescribeKey and ListGrants answer normally,
/// CreateGrant fails with `error_type`, STS GetCallerIdentity names the consumer account.
mod stub {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    pub const KEY: &str = "arn:aws:kms:eu-west-1:444455556666:key/12ee9c11-3476-492c-b5cc-ed4a4d636337";

    fn answer(target: &str, body: &str, error_type: &str) -> (u16, &'static str, String) {
        let json = "application/x-amz-json-1.1";
        match target.rsplit('.').next().unwrap_or_default() {
            "DescribeKey" => (
                200,
                json,
                format!(
                    r#"{{"KeyMetadata":{{"KeyId":"12ee9c11-3476-492c-b5cc-ed4a4d636337","Arn":"{KEY}","AWSAccountId":"444455556666","KeyManager":"CUSTOMER","KeyState":"Enabled","Enabled":true,"MultiRegion":false}}}}"#
                ),
            ),
            "ListGrants" => (200, json, r#"{"Grants":[],"Truncated":false}"#.into()),
            "CreateGrant" => (
                400,
                json,
                format!(
                    r#"{{"__type":"{error_type}","message":"refused by the stub ({error_type}) for kms:CreateGrant on {KEY}"}}"#
                ),
            ),
            _ if body.contains("Action=GetCallerIdentity") => (
                200,
                "text/xml",
                "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult>\
                 <Arn>arn:aws:sts::111122223333:assumed-role/admin/s</Arn><UserId>AROAEXAMPLE:s</UserId>\
                 <Account>111122223333</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>r</RequestId>\
                 </ResponseMetadata></GetCallerIdentityResponse>"
                    .into(),
            ),
            _ => (400, json, format!(r#"{{"__type":"UnknownOperationException","message":"stub: {target}"}}"#)),
        }
    }

    /// Starts the stub on a free port; returns its URL. The thread lives as long as the test
    /// binary.
    pub fn start(error_type: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let (mut len, mut target) = (0usize, String::new());
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                match k.to_ascii_lowercase().as_str() {
                                    "content-length" => len = v.trim().parse().unwrap_or(0),
                                    "x-amz-target" => target = v.trim().to_string(),
                                    _ => {}
                                }
                            }
                        }
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let (status, ctype, text) =
                            answer(&target, &String::from_utf8_lossy(&body), error_type);
                        let resp = format!(
                            "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nx-amzn-RequestId: stub\r\n\r\n{text}",
                            if status == 200 { "OK" } else { "Bad Request" },
                            text.len()
                        );
                        if conn.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    pub fn amikey(url: &str) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_amikey"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::temp_dir())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "eu-west-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", url);
        c
    }
}

#[test]
fn access_denied_on_create_grant_names_the_missing_key_policy_permission() {
    let url = stub::start("AccessDeniedException");
    let (code, out, err) = run(stub::amikey(&url).args(["grant", "--key-arn", stub::KEY]));
    assert_eq!(code, 1, "something missing that amikey cannot fix:\n{out}\n{err}");
    assert!(out.contains("✘ ACCESS_DENIED in eu-west-1"), "{out}");
    assert!(out.contains("kms:CreateGrant without a `kms:GrantIsForAWSResource` condition"), "{out}");
    assert!(
        out.contains(&format!(
            "fix: amikey policy generate --consumer-account 111122223333 --key {} --merge",
            stub::KEY
        )),
        "{out}"
    );
    assert!(out.contains("FAILED to create amikey-autoscaling-"), "{out}");

    let (code, out, _) = run(stub::amikey(&url).args(["grant", "--key-arn", stub::KEY, "--format", "json"]));
    assert_eq!(code, 1);
    let r = json(&out);
    assert_eq!(r["problems"][0]["code"], "ACCESS_DENIED");
    assert_eq!(r["actions"][0]["outcome"], "failed");
}

#[test]
fn missing_service_linked_role_says_how_to_create_it() {
    let url = stub::start("InvalidArnException");
    let (code, out, err) = run(stub::amikey(&url).args([
        "grant",
        "--key-arn",
        stub::KEY,
        "--service",
        "AWSServiceRoleForAutoScaling_prod",
    ]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("✘ SERVICE_LINKED_ROLE_MISSING"), "{out}");
    assert!(out.contains("AWSServiceRoleForAutoScaling_prod"), "{out}");
    assert!(
        out.contains(
            "fix: aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com --custom-suffix prod"
        ),
        "{out}"
    );

    let (code, _, err) =
        run(stub::amikey(&url).args(["grant", "--key-arn", stub::KEY, "--create-service-linked-role"]));
    assert_eq!(code, 2);
    assert!(err.contains("needs the IAM API") && err.contains("aws iam create-service-linked-role"), "{err}");
}

/// `publish` checks the intended key's policy for `ami_users`: a warning by default, a finding
/// that stops the publish with `check_key_policy = "fail"`.
#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn publish_checks_the_key_policy_for_ami_users() {
    let m = Moto::take();
    let (key, ami) = block_on(async {
        let aws = m.aws(None).await;
        let key = create_key(&aws, "eu-west-1", "alias/images").await;
        aws.kms("eu-west-1")
            .put_key_policy()
            .key_id(&key)
            .policy_name("default")
            .policy(RESTRICTIVE)
            .send()
            .await
            .unwrap();
        let (ami, _) = create_ami(&aws, "eu-west-1", &[("/dev/xvda", Enc::Key(key.clone()))]).await;
        (key, ami)
    });
    let artifact = format!("eu-west-1:{ami}");
    let base = ["publish", "--artifact", &artifact, "--kms-key-id", "alias/images", "--ami-user", CONSUMER];

    let cfg = m.dir.path().join("fail.hcl");
    std::fs::write(&cfg, "check_key_policy = \"fail\"\n").unwrap();
    let (code, out, err) = run(m.amikey().args(base).args(["--format", "json", "--config"]).arg(&cfg));
    assert_eq!(code, 1, "{out}\n{err}");
    let r = json(&out);
    let f = &r["regions"][0]["findings"];
    assert!(f.as_array().unwrap().iter().all(|x| x["code"] == "KEY_POLICY_DENIES_CONSUMER"), "{f}");
    assert!(f[0]["message"].as_str().unwrap().contains("CONSUMER_CANNOT_CREATE_GRANT"), "{f}");
    assert_eq!(count(&m, "ModifyImageAttribute"), 0, "fail: nothing shared");

    let (code, out, err) = run(m.amikey().args(base).args(["--format", "json"]));
    assert_eq!(code, 0, "warn (the default) does not stop the publish:\n{out}\n{err}");
    let r = json(&out);
    let warnings: Vec<&str> = r["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&key) && w.contains(CONSUMER) && w.contains("CONSUMER_CANNOT_CREATE_GRANT")),
        "{warnings:?}"
    );
    assert_eq!(count(&m, "ModifyImageAttribute"), 1);
    assert!(count(&m, "GetKeyPolicy") >= 2);
}

/// docs/iam-consumer-policy.json (in README) allows exactly the calls `grant` and `doctor` make.
#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn documented_consumer_iam_policy_covers_every_call_made() {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let ami = block_on(async {
        let aws = m.aws(None).await;
        let (ami, _) =
            create_ami(&aws, "eu-west-1", &[("/dev/xvda", Enc::Key(keys["eu-west-1"].clone()))]).await;
        share_ami(&aws, "eu-west-1", &ami).await;
        ami
    });
    let lt = block_on(async {
        let consumer = m.aws(Some(CONSUMER)).await;
        let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder().image_id(&ami).build();
        let out = consumer
            .ec2("eu-west-1")
            .create_launch_template()
            .launch_template_name("web")
            .launch_template_data(data)
            .send()
            .await
            .unwrap();
        out.launch_template().unwrap().launch_template_id().unwrap().to_string()
    });
    m.clear_calls();
    let new_key = block_on(async { create_key(&m.aws(None).await, "eu-west-1", "alias/v2").await });
    assert_eq!(run(as_consumer(&m).args(["grant", "--ssm-path", PATH])).0, 0);
    publish_in_consumer(&m, "eu-west-1", &new_key);
    assert_eq!(run(as_consumer(&m).args(["grant", "--ssm-path", PATH, "--retire-stale"])).0, 0);
    let target = format!("eu-west-1:{ami}");
    let _ =
        run(as_consumer(&m).args(["doctor", "--ami", &target, "--ssm-path", PATH, "--launch-template", &lt]));
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::moto::repo_path("docs/iam-consumer-policy.json")).unwrap(),
    )
    .unwrap();
    let allowed: std::collections::BTreeSet<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_lowercase()))
        .collect();
    let used: std::collections::BTreeSet<String> = m
        .calls()
        .iter()
        .map(|c| {
            format!("{}:{}", c["service"].as_str().unwrap(), c["operation"].as_str().unwrap()).to_lowercase()
        })
        .collect();
    let missing: Vec<_> = used.difference(&allowed).collect();
    assert!(missing.is_empty(), "calls not in docs/iam-consumer-policy.json: {missing:?}");
    let unused: Vec<_> = allowed.difference(&used).collect();
    assert!(unused.is_empty(), "policy grants actions amikey grant/doctor never call: {unused:?}");
}

/// Help teaches (examples, exit codes); bad input is a clear error (exit 2) before any call.
#[test]
fn consumer_help_and_bad_input() {
    let amikey = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_amikey"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            // Nothing listens here: a call would fail as an AWS error, not as bad input.
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
        c
    };
    for (cmd, needles) in [
        (vec!["grant", "--help"], vec!["Exit codes", "--ssm-path", "amikey grant --ssm-path /images/golden"]),
        (vec!["doctor", "--help"], vec!["Exit codes", "--launch-template", "Client.InternalError"]),
        (vec!["policy", "generate", "--help"], vec!["--merge", "--identity-policy", "put-key-policy"]),
        (vec!["policy", "check", "--help"], vec!["CONSUMER_CANNOT_CREATE_GRANT", "Exit codes"]),
    ] {
        let (code, out, _) = run(amikey().args(&cmd));
        assert_eq!(code, 0, "{cmd:?}");
        for n in needles {
            assert!(out.contains(n), "{cmd:?} help lacks {n:?}:\n{out}");
        }
    }
    for (cmd, needle) in [
        (vec!["grant"], "which keys?"),
        (vec!["grant", "--key-arn", "alias/images"], "not a key ARN"),
        (vec!["grant", "--ssm-path", "images"], "absolute parameter path"),
        (vec!["grant", "--ssm-path", "/x", "--service", "lambda"], "unknown service"),
        (vec!["grant", "--ssm-path", "/x", "--region", "mars-1"], "unknown region"),
        (vec!["grant", "--ssm-path", "/x", "--service", "ecs-autoscaling"], "needs no grant"),
        (vec!["doctor", "--ami", "eu-west-1:ami-12345678", "--asg", "web"], "--launch-template"),
        (vec!["doctor", "--ami", "nowhere"], "--ami"),
        (vec!["policy", "generate"], "--consumer-account"),
        (vec!["policy", "generate", "--consumer-account", "12"], "12-digit"),
        (vec!["policy", "check", "--key", "alias/x", "--consumer-account", CONSUMER], "--region"),
    ] {
        let (code, out, err) = run(amikey().args(&cmd));
        assert_eq!(code, 2, "{cmd:?}: {out}{err}");
        assert!(err.contains(needle), "{cmd:?}: {err}");
        assert!(!err.contains("127.0.0.1:9"), "{cmd:?} called AWS: {err}");
    }
}
