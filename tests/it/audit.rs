//! `amikey audit` against the patched moto emulator: every finding code moto can produce, the
//! `--ami-filter` and `--regions` selection, the batched call pattern, and bad input.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{LaunchPermission, LaunchPermissionModifications};
use serde_json::Value;

use crate::moto::{ACCOUNT, CONSUMER, Enc, Moto, create_ami, create_key, json, run};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// ami name → ami id, per case.
struct Seeded {
    amis: BTreeMap<&'static str, String>,
}

fn seed(m: &Moto) -> Seeded {
    block_on(async {
        let aws = m.aws(None).await;
        let mut amis = BTreeMap::new();
        let good = create_key(&aws, "eu-west-1", "alias/good").await;
        let off = create_key(&aws, "eu-west-1", "alias/off").await;
        let doomed = create_key(&aws, "us-east-1", "alias/doomed").await;
        let shared_ok = create_key(&aws, "us-east-1", "alias/shared-ok").await;
        let kms = aws.kms("eu-west-1");
        kms.disable_key().key_id(&off).send().await.unwrap();
        aws.kms("us-east-1")
            .schedule_key_deletion()
            .key_id(&doomed)
            .pending_window_in_days(7)
            .send()
            .await
            .unwrap();
        // shared-ok lets the consumer account use it; the other keys keep moto's default policy
        // (the owner account only).
        let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Owner", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "Consumer", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{CONSUMER}:root")},
             "Action": "kms:*", "Resource": "*"}]});
        aws.kms("us-east-1")
            .put_key_policy()
            .key_id(&shared_ok)
            .policy_name("default")
            .policy(policy.to_string())
            .send()
            .await
            .unwrap();
        let cases: [(&str, &str, Enc); 7] = [
            ("good", "eu-west-1", Enc::Key(good.clone())),
            ("plain", "eu-west-1", Enc::None),
            ("ebs", "eu-west-1", Enc::AwsManaged),
            ("off", "eu-west-1", Enc::Key(off)),
            ("doomed", "us-east-1", Enc::Key(doomed)),
            ("shared-bad", "eu-west-1", Enc::Key(good)),
            ("shared-ok", "us-east-1", Enc::Key(shared_ok)),
        ];
        for (name, region, enc) in cases {
            let (ami, _) = create_ami(&aws, region, &[("/dev/xvda", enc)]).await;
            if name.starts_with("shared") {
                aws.ec2(region)
                    .modify_image_attribute()
                    .image_id(&ami)
                    .launch_permission(
                        LaunchPermissionModifications::builder()
                            .add(LaunchPermission::builder().user_id(CONSUMER).build())
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
            amis.insert(name, ami);
        }
        Seeded { amis }
    })
}

fn by_ami(report: &Value, s: &Seeded) -> BTreeMap<String, Vec<String>> {
    let names: BTreeMap<&str, &str> = s.amis.iter().map(|(n, a)| (a.as_str(), *n)).collect();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in report["findings"].as_array().unwrap() {
        let name = names.get(f["ami_id"].as_str().unwrap()).copied().unwrap_or("?");
        out.entry(name.to_string()).or_default().push(f["code"].as_str().unwrap().to_string());
    }
    out
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn audit_reports_every_kind_of_bad_image_once() {
    let m = Moto::take();
    let s = seed(&m);
    let (code, out, err) =
        run(m.amikey().args(["audit", "--regions", "us-east-1,eu-west-1", "--format", "json"]));
    assert_eq!(code, 1, "{out}\n{err}");
    let r = json(&out);
    let want: BTreeMap<String, Vec<String>> = [
        ("doomed", "KEY_PENDING_DELETION"),
        ("ebs", "AWS_MANAGED_KEY"),
        ("off", "KEY_DISABLED"),
        ("plain", "UNENCRYPTED"),
        ("shared-bad", "SHARED_KEY_INACCESSIBLE"),
    ]
    .iter()
    .map(|(n, c)| (n.to_string(), vec![c.to_string()]))
    .collect();
    assert_eq!(by_ami(&r, &s), want, "{out}");
    let shared =
        r["findings"].as_array().unwrap().iter().find(|f| f["code"] == "SHARED_KEY_INACCESSIBLE").unwrap();
    assert_eq!(shared["accounts"], serde_json::json!([CONSUMER]));
    assert!(
        shared["message"].as_str().unwrap().contains("amikey policy generate --consumer-account"),
        "{shared}"
    );
    let regions: Vec<(&str, u64)> = r["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["region"].as_str().unwrap(), x["images"].as_u64().unwrap()))
        .collect();
    assert_eq!(regions, [("eu-west-1", 5), ("us-east-1", 2)]);
    assert_eq!(
        r["summary"],
        "audit: 2 region(s), 7 image(s), 5 with findings, 5 finding(s) (AWS_MANAGED_KEY 1, KEY_DISABLED 1, \
         KEY_PENDING_DELETION 1, SHARED_KEY_INACCESSIBLE 1, UNENCRYPTED 1)"
    );

    // The call pattern: per region one DescribeImages, one DescribeSnapshots batch, one
    // DescribeImageAttribute per image, one DescribeKey per distinct key, GetKeyPolicy only for
    // the keys of shared images; nothing is written.
    let mut calls: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in m.calls() {
        *calls
            .entry((c["region"].as_str().unwrap().into(), c["operation"].as_str().unwrap().into()))
            .or_insert(0) += 1;
    }
    let n = |r: &str, op: &str| calls.get(&(r.to_string(), op.to_string())).copied().unwrap_or(0);
    assert_eq!(n("eu-west-1", "DescribeImages"), 1);
    assert_eq!(n("eu-west-1", "DescribeSnapshots"), 1);
    assert_eq!(n("eu-west-1", "DescribeImageAttribute"), 5);
    assert_eq!(n("eu-west-1", "DescribeKey"), 3, "good, off, aws/ebs: {calls:?}");
    assert_eq!(n("eu-west-1", "GetKeyPolicy"), 1);
    assert_eq!(n("us-east-1", "GetKeyPolicy"), 1);
    assert!(
        calls.keys().all(|(_, op)| op.starts_with("Describe") || op.starts_with("Get")),
        "audit must only read: {calls:?}"
    );

    // Text: one line per finding, sorted, then regions and the summary.
    let (code, text, _) = run(m.amikey().args(["audit", "--regions", "eu-west-1,us-east-1"]));
    assert_eq!(code, 1);
    let mut first: Vec<&str> = text.lines().take(5).map(|l| l.split_whitespace().next().unwrap()).collect();
    first.sort();
    assert_eq!(
        first,
        ["AWS_MANAGED_KEY", "KEY_DISABLED", "KEY_PENDING_DELETION", "SHARED_KEY_INACCESSIBLE", "UNENCRYPTED"],
        "{text}"
    );
    let eu = text.find("eu-west-1 ami-").unwrap();
    let us = text.find("us-east-1 ami-").unwrap();
    assert!(eu < us, "findings sorted by region: {text}");
    assert!(text.trim_end().ends_with("UNENCRYPTED 1)"), "{text}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn ami_filter_and_default_regions() {
    let m = Moto::take();
    let s = seed(&m);
    // Every enabled region by default (DescribeRegions); the filter keeps one image.
    let (code, out, err) = run(m.amikey().args([
        "audit",
        "--ami-filter",
        &format!("image-id={}", s.amis["good"]),
        "--ami-filter",
        "name=amikey-test-*",
        "--format",
        "json",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let r = json(&out);
    assert!(r["regions"].as_array().unwrap().len() > 10, "every enabled region: {out}");
    let images: u64 = r["regions"].as_array().unwrap().iter().map(|x| x["images"].as_u64().unwrap()).sum();
    assert_eq!(images, 1, "{out}");
    assert!(m.calls().iter().any(|c| c["operation"] == "DescribeRegions"));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn audit_bad_input_is_refused_before_any_call() {
    let m = Moto::take();
    for args in [
        vec!["audit", "--ami-filter", "name"],
        vec!["audit", "--regions", "mars-north-1"],
        vec!["audit", "--concurrency", "0"],
    ] {
        let (code, out, err) = run(m.amikey().args(&args));
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(m.calls().is_empty(), "{args:?} made calls");
    }
}
