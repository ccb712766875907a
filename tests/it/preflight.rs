//! `amikey preflight` against the patched moto emulator: EBS encryption by default with
//! aws/ebs, a key from another region, a disabled key, consumers missing from the key policy,
//! and a run driven by a Packer template.

use serde_json::Value;

use crate::moto::{CONSUMER, Moto, create_key, json, run};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// `(region, code)` of every finding.
fn findings(report: &Value) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for r in report["regions"].as_array().unwrap() {
        for f in r["findings"].as_array().unwrap() {
            v.push((r["region"].as_str().unwrap().to_string(), f["code"].as_str().unwrap().to_string()));
        }
    }
    v
}

fn region<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["regions"].as_array().unwrap().iter().find(|r| r["region"] == name).unwrap()
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn ebs_default_encryption_with_aws_ebs_is_a_warning_and_reported_per_region() {
    let m = Moto::take();
    let (east, west) = block_on(async {
        let aws = m.aws(None).await;
        aws.ec2("eu-west-1").enable_ebs_encryption_by_default().send().await.unwrap();
        (
            create_key(&aws, "us-east-1", "alias/images").await,
            create_key(&aws, "eu-west-1", "alias/images").await,
        )
    });
    let (code, out, err) = run(m.amikey().args([
        "preflight",
        "--regions",
        "us-east-1,eu-west-1",
        "--kms-key-id",
        "alias/images",
        "--format",
        "json",
    ]));
    assert_eq!(code, 0, "warnings only: {out}{err}");
    let r = json(&out);
    assert_eq!(findings(&r), [("eu-west-1".to_string(), "EBS_DEFAULT_AWS_MANAGED".to_string())]);
    let eu = region(&r, "eu-west-1");
    assert_eq!(eu["ebs_encryption_by_default"], true);
    assert_eq!(eu["ebs_default_key_aws_managed"], true);
    assert_eq!(eu["intended_kms_key_arn"], west.as_str());
    let us = region(&r, "us-east-1");
    assert_eq!(us["ebs_encryption_by_default"], false);
    assert_eq!(us["intended_kms_key_arn"], east.as_str());
    let ops: Vec<String> =
        m.calls().iter().map(|c| c["operation"].as_str().unwrap_or("").to_string()).collect();
    for op in ["GetEbsEncryptionByDefault", "GetEbsDefaultKmsKeyId", "DescribeKey"] {
        assert!(ops.iter().any(|o| o == op), "{op} not called: {ops:?}");
    }
    assert!(
        m.calls().iter().all(|c| {
            let op = c["operation"].as_str().unwrap_or("");
            op.starts_with("Get") || op.starts_with("Describe") || op.starts_with("List")
        }),
        "preflight must be read-only: {ops:?}"
    );
    let (code, text, _) =
        run(m.amikey().args(["preflight", "--regions", "eu-west-1", "--kms-key-id", "alias/images"]));
    assert_eq!(code, 0);
    assert!(text.contains("EBS encryption by default: on, with the AWS managed key"), "{text}");
    assert!(text.contains("warning EBS_DEFAULT_AWS_MANAGED"), "{text}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn a_key_from_another_region_in_region_kms_key_ids_is_key_wrong_region() {
    let m = Moto::take();
    let east = block_on(async {
        let aws = m.aws(None).await;
        create_key(&aws, "eu-west-1", "alias/images").await;
        create_key(&aws, "us-east-1", "alias/images").await
    });
    let (code, out, err) = run(m.amikey().args([
        "preflight",
        "--kms-key-id",
        "alias/images",
        "--region-kms-key-id",
        &format!("eu-west-1={east}"),
        "--regions",
        "eu-west-1,us-east-1",
        "--format",
        "json",
    ]));
    assert_eq!(code, 1, "{out}{err}");
    let r = json(&out);
    assert_eq!(findings(&r), [("eu-west-1".to_string(), "KEY_WRONG_REGION".to_string())]);
    let msg = region(&r, "eu-west-1")["findings"][0]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&east) && msg.contains("needs a key (or multi-Region replica) in eu-west-1"),
        "{msg}"
    );
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn a_disabled_key_and_a_missing_alias_are_errors() {
    let m = Moto::take();
    block_on(async {
        let aws = m.aws(None).await;
        let k = create_key(&aws, "us-east-1", "alias/images").await;
        aws.kms("us-east-1").disable_key().key_id(&k).send().await.unwrap();
    });
    let (code, out, err) = run(m.amikey().args([
        "preflight",
        "--regions",
        "us-east-1,us-west-2",
        "--kms-key-id",
        "alias/images",
        "--format",
        "json",
    ]));
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        findings(&json(&out)),
        [
            ("us-east-1".to_string(), "KEY_NOT_ENABLED".to_string()),
            ("us-west-2".to_string(), "KEY_NOT_FOUND".to_string())
        ]
    );
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn consumers_the_key_policy_does_not_allow_are_warnings() {
    let m = Moto::take();
    block_on(async {
        let aws = m.aws(None).await;
        create_key(&aws, "us-east-1", "alias/images").await;
    });
    let (code, out, err) = run(m.amikey().args([
        "preflight",
        "--regions",
        "us-east-1",
        "--kms-key-id",
        "alias/images",
        "--ami-user",
        CONSUMER,
        "--format",
        "json",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let f = findings(&json(&out));
    assert!(f.iter().any(|(_, c)| c == "CONSUMER_CANNOT_CREATE_GRANT"), "{f:?}");
    assert!(m.calls().iter().any(|c| c["operation"] == "GetKeyPolicy"));
    let (code, _, err) = run(m.amikey().args([
        "preflight",
        "--regions",
        "us-east-1",
        "--kms-key-id",
        "alias/images",
        "--ami-user",
        "12345",
    ]));
    assert_eq!(code, 2);
    assert!(err.contains("not a 12-digit account id"), "{err}");
}

const TEMPLATE: &str = r#"
variable "copy_key" {
  type = string
}

source "amazon-ebs" "app" {
  region             = "us-east-1"
  ami_regions        = ["eu-west-1"]
  encrypt_boot       = true
  kms_key_id         = "alias/images"
  region_kms_key_ids = { "eu-west-1" = var.copy_key }
  ami_users          = ["CONSUMER"]
  snapshot_users     = ["CONSUMER"]
}

build {
  sources = ["source.amazon-ebs.app"]
  post-processor "amikey" {
    kms_key_id         = "alias/other"
    region_kms_key_ids = { "eu-west-1" = var.copy_key }
  }
}
"#;

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn a_template_gives_the_regions_keys_and_consumers() {
    let m = Moto::take();
    let (east, west) = block_on(async {
        let aws = m.aws(None).await;
        (
            create_key(&aws, "us-east-1", "alias/images").await,
            create_key(&aws, "eu-west-1", "alias/images").await,
        )
    });
    let t = m.dir.path().join("build.pkr.hcl");
    std::fs::write(&t, TEMPLATE.replace("CONSUMER", CONSUMER)).unwrap();
    let vars = m.dir.path().join("prod.pkrvars.hcl");
    std::fs::write(&vars, format!("copy_key = \"{east}\"\n")).unwrap();
    // The copy key variable points at the us-east-1 key: wrong region for eu-west-1.
    let (code, out, err) = run(m
        .amikey()
        .args(["preflight", "--format", "json", "--template"])
        .arg(&t)
        .arg("-var-file")
        .arg(&vars));
    assert_eq!(code, 1, "{out}{err}");
    let r = json(&out);
    let f = findings(&r);
    assert!(f.contains(&("eu-west-1".into(), "KEY_WRONG_REGION".into())), "{f:?}");
    // The builder's key is checked; amikey expecting another one is a warning.
    assert!(f.contains(&("us-east-1".into(), "AMIKEY_KEY_DISAGREES".into())), "{f:?}");
    assert!(
        f.iter().any(|(r, c)| r == "us-east-1" && c == "CONSUMER_CANNOT_CREATE_GRANT"),
        "ami_users from the template: {f:?}"
    );
    assert_eq!(region(&r, "us-east-1")["intended_kms_key_arn"], east.as_str());
    // -var wins over the var file: the right key makes the errors go away.
    let (code, out, err) = run(m
        .amikey()
        .args(["preflight", "--format", "json", "--template"])
        .arg(&t)
        .arg("-var-file")
        .arg(&vars)
        .args(["-var", &format!("copy_key={west}")]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(region(&json(&out), "eu-west-1")["intended_kms_key_arn"], west.as_str());
    // A template whose values cannot be evaluated is a clear input error.
    let (code, _, err) = run(m.amikey().args(["preflight", "--template"]).arg(&t));
    assert_eq!(code, 2);
    assert!(err.contains("region_kms_key_ids") && err.contains("-var"), "{err}");
}
