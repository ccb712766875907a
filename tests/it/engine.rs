//! `amikey check` and `amikey publish` against the patched moto emulator: the scenarios of the
//! core issue, driven through the real CLI binary.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::moto::{CONSUMER, Enc, Moto, create_ami, create_key, create_mrk, json, run};

const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "us-west-2"];

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Seeds a CMK (alias/images) and a one-volume AMI per region, encrypted as `enc` says (default:
/// the region's CMK). Returns (artifact id, region → key ARN, region → snapshot ids).
fn seed(m: &Moto, enc: &[(&str, Enc)]) -> (String, BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let overrides: BTreeMap<&str, Enc> = enc.iter().cloned().collect();
    block_on(async {
        let aws = m.aws(None).await;
        let mut keys = BTreeMap::new();
        let mut snaps = BTreeMap::new();
        let mut parts = Vec::new();
        for r in REGIONS {
            let k = create_key(&aws, r, "alias/images").await;
            let e = overrides.get(r).cloned().unwrap_or(Enc::Key(k.clone()));
            let (ami, s) = create_ami(&aws, r, &[("/dev/xvda", e)]).await;
            parts.push(format!("{r}:{ami}"));
            keys.insert(r.to_string(), k);
            snaps.insert(r.to_string(), s);
        }
        (parts.join(","), keys, snaps)
    })
}

fn codes(report: &Value) -> Vec<String> {
    let mut v: Vec<String> = report["regions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["findings"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap().to_string())
        })
        .collect();
    v.sort();
    v
}

fn writes(m: &Moto) -> Vec<String> {
    m.calls()
        .iter()
        .map(|c| c["operation"].as_str().unwrap_or("").to_string())
        .filter(|op| {
            op.starts_with("Modify")
                || op.starts_with("Put")
                || op.starts_with("Create")
                || op.starts_with("Delete")
        })
        .collect()
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn check_all_good_in_three_regions() {
    let m = Moto::take();
    let (artifact, keys, snaps) = seed(&m, &[]);
    let (code, out, err) = run(m.amikey().args([
        "check",
        "--artifact",
        &artifact,
        "--kms-key-id",
        "alias/images",
        "--format",
        "json",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let r = json(&out);
    assert_eq!(r["regions"].as_array().unwrap().len(), 3);
    for reg in r["regions"].as_array().unwrap() {
        let region = reg["region"].as_str().unwrap();
        assert_eq!(reg["intended_kms_key_arn"], keys[region].as_str());
        assert_eq!(reg["snapshots"][0]["snapshot_id"], snaps[region][0].as_str());
        assert_eq!(reg["snapshots"][0]["kms_key_arn"], keys[region].as_str());
        assert_eq!(reg["snapshots"][0]["encrypted"], true);
    }
    assert!(writes(&m).is_empty(), "check must not write: {:?}", writes(&m));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn check_finds_aws_managed_key_in_one_region() {
    let m = Moto::take();
    let (artifact, keys, snaps) = seed(&m, &[("eu-west-1", Enc::AwsManaged)]);
    let (code, out, err) =
        run(m.amikey().args(["check", "--artifact", &artifact, "--kms-key-id", "alias/images"]));
    assert_eq!(code, 1, "{out}\n{err}");
    let snap = &snaps["eu-west-1"][0];
    let line = out.lines().find(|l| l.contains("AWS_MANAGED_KEY")).unwrap_or_else(|| panic!("{out}"));
    for needle in [
        "eu-west-1",
        snap.as_str(),
        "/dev/xvda",
        "alias/aws/ebs",
        keys["eu-west-1"].as_str(),
        "never be shared",
        "region_kms_key_ids",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from: {line}");
    }
    assert!(out.contains("ok   us-east-1"), "other regions are reported clean:\n{out}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn check_finds_unencrypted_snapshot() {
    let m = Moto::take();
    let (artifact, ..) = seed(&m, &[("us-west-2", Enc::None)]);
    let (code, out, _) = run(m.amikey().args([
        "check",
        "--artifact",
        &artifact,
        "--kms-key-id",
        "alias/images",
        "--format",
        "json",
    ]));
    assert_eq!(code, 1);
    assert_eq!(codes(&json(&out)), ["UNENCRYPTED"]);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn key_id_arn_alias_and_alias_arn_are_equivalent() {
    let m = Moto::take();
    let (artifact, keys, _) = seed(&m, &[]);
    let arn = &keys["us-east-1"];
    let id = arn.rsplit('/').next().unwrap().to_string();
    let alias_arn = format!("arn:aws:kms:us-east-1:{}:alias/images", crate::moto::ACCOUNT);
    let one = artifact.split(',').find(|p| p.starts_with("us-east-1:")).unwrap().to_string();
    for key in [id.as_str(), arn.as_str(), "alias/images", alias_arn.as_str()] {
        let (code, out, err) =
            run(m.amikey().args(["check", "--artifact", &one, "--kms-key-id", key, "--format", "json"]));
        assert_eq!(code, 0, "key {key}: {out}\n{err}");
        assert_eq!(json(&out)["regions"][0]["intended_kms_key_arn"], arn.as_str(), "key {key}");
    }
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn multi_region_key_with_a_replica_per_region() {
    let m = Moto::take();
    let (artifact, arns) = block_on(async {
        let aws = m.aws(None).await;
        let arns = create_mrk(&aws, "us-east-1", &["eu-west-1", "us-west-2"]).await;
        let mut parts = Vec::new();
        for r in REGIONS {
            let (ami, _) = create_ami(&aws, r, &[("/dev/xvda", Enc::Key(arns[r].clone()))]).await;
            parts.push(format!("{r}:{ami}"));
        }
        (parts.join(","), arns)
    });
    let mrk = arns["us-east-1"].rsplit('/').next().unwrap().to_string();
    assert!(mrk.starts_with("mrk-"));
    let (code, out, err) =
        run(m.amikey().args(["check", "--artifact", &artifact, "--kms-key-id", &mrk, "--format", "json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    for reg in json(&out)["regions"].as_array().unwrap() {
        assert_eq!(
            reg["intended_kms_key_arn"],
            arns[reg["region"].as_str().unwrap()].as_str(),
            "each region resolves to its own replica"
        );
    }
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn disabled_key_is_reported() {
    let m = Moto::take();
    let (artifact, keys, _) = seed(&m, &[]);
    block_on(async {
        let aws = m.aws(None).await;
        let id = keys["eu-west-1"].rsplit('/').next().unwrap().to_string();
        aws.kms("eu-west-1").disable_key().key_id(id).send().await.unwrap();
    });
    let (code, out, _) = run(m.amikey().args([
        "check",
        "--artifact",
        &artifact,
        "--kms-key-id",
        "alias/images",
        "--format",
        "json",
    ]));
    assert_eq!(code, 1);
    assert_eq!(codes(&json(&out)), ["KEY_NOT_ENABLED"]);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn missing_ami_is_reported() {
    let m = Moto::take();
    let (artifact, ..) = seed(&m, &[]);
    let artifact = artifact.replace(artifact.split(',').next().unwrap(), "eu-west-1:ami-0123456789abcdef0");
    let (code, out, _) = run(m.amikey().args([
        "check",
        "--artifact",
        &artifact,
        "--kms-key-id",
        "alias/images",
        "--format",
        "json",
    ]));
    assert_eq!(code, 1, "{out}");
    assert_eq!(codes(&json(&out)), ["AMI_NOT_FOUND"]);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn second_volume_with_the_wrong_key() {
    let m = Moto::take();
    let (artifact, other, snaps) = block_on(async {
        let aws = m.aws(None).await;
        let good = create_key(&aws, "eu-west-1", "alias/images").await;
        let other = create_key(&aws, "eu-west-1", "alias/other").await;
        let (ami, snaps) = create_ami(
            &aws,
            "eu-west-1",
            &[("/dev/xvda", Enc::Key(good)), ("/dev/sdb", Enc::Key(other.clone()))],
        )
        .await;
        (format!("eu-west-1:{ami}"), other, snaps)
    });
    let (code, out, _) = run(m.amikey().args([
        "check",
        "--artifact",
        &artifact,
        "--kms-key-id",
        "alias/images",
        "--format",
        "json",
    ]));
    assert_eq!(code, 1, "{out}");
    let r = json(&out);
    assert_eq!(codes(&r), ["WRONG_KEY"]);
    let f = &r["regions"][0]["findings"][0];
    assert_eq!(f["snapshot_id"], snaps[1].as_str());
    let msg = f["message"].as_str().unwrap();
    assert!(msg.contains("/dev/sdb") && msg.contains(&other) && msg.contains("alias/other"), "{msg}");
    assert_eq!(r["regions"][0]["snapshots"].as_array().unwrap().len(), 2);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn no_intended_key_for_a_region_is_a_finding() {
    let m = Moto::take();
    let (artifact, keys, _) = seed(&m, &[]);
    let (code, out, _) = run(m.amikey().args([
        "check",
        "--artifact",
        &artifact,
        "--region-kms-key-id",
        &format!("eu-west-1={}", keys["eu-west-1"]),
        "--region-kms-key-id",
        "us-east-1=alias/images",
        "--format",
        "json",
    ]));
    assert_eq!(code, 1);
    assert_eq!(codes(&json(&out)), ["NO_INTENDED_KEY"]);
}

fn publish_args(artifact: &str) -> Vec<String> {
    [
        "publish",
        "--artifact",
        artifact,
        "--kms-key-id",
        "alias/images",
        "--ami-user",
        "444455556666",
        "--snapshot-user",
        "444455556666",
        "--ssm-path",
        "/images/base",
        "--format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn publish_twice_second_run_makes_no_write() {
    let m = Moto::take();
    let (artifact, keys, _) = seed(&m, &[]);
    let (code, out, err) = run(m.amikey().args(publish_args(&artifact)));
    assert_eq!(code, 0, "{out}\n{err}");
    let first = json(&out);
    assert!(first["actions"].as_array().unwrap().iter().all(|a| a["status"] == "changed"), "{out}");
    assert_eq!(
        writes(&m).len(),
        3 * (1 + 1 + 3),
        "one launch-permission, one volume-permission and three parameter writes per region: {:?}",
        writes(&m)
    );

    m.clear_calls();
    let (code, out, _) = run(m.amikey().args(publish_args(&artifact)));
    assert_eq!(code, 0);
    let second = json(&out);
    assert!(second["actions"].as_array().unwrap().iter().all(|a| a["status"] == "unchanged"), "{out}");
    assert_eq!(second["actions"].as_array().unwrap().len(), first["actions"].as_array().unwrap().len());
    assert!(writes(&m).is_empty(), "re-run wrote: {:?}", writes(&m));

    // The parameters hold what consumers need.
    block_on(async {
        let aws = m.aws(None).await;
        let ssm = aws.ssm("eu-west-1");
        let p = ssm.get_parameter().name("/images/base/kms_key_arn").send().await.unwrap();
        assert_eq!(p.parameter().unwrap().value(), Some(keys["eu-west-1"].as_str()));
        let p = ssm.get_parameter().name("/images/base/image_id").send().await.unwrap();
        assert_eq!(p.parameter().unwrap().data_type(), Some("aws:ec2:image"));
        assert!(artifact.contains(p.parameter().unwrap().value().unwrap()));
    });
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn dry_run_plans_and_writes_nothing() {
    let m = Moto::take();
    let (artifact, ..) = seed(&m, &[]);
    let mut args = publish_args(&artifact);
    args.push("--dry-run".into());
    let (code, out, _) = run(m.amikey().args(&args));
    assert_eq!(code, 0, "{out}");
    let r = json(&out);
    assert!(r["actions"].as_array().unwrap().iter().all(|a| a["status"] == "planned"));
    assert_eq!(r["dry_run"], true);
    assert!(writes(&m).is_empty(), "{:?}", writes(&m));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn publish_with_findings_changes_nothing() {
    let m = Moto::take();
    let (artifact, ..) = seed(&m, &[("us-east-1", Enc::AwsManaged)]);
    let (code, out, _) = run(m.amikey().args(publish_args(&artifact)));
    assert_eq!(code, 1, "{out}");
    assert!(json(&out)["actions"].as_array().unwrap().is_empty());
    assert!(writes(&m).is_empty(), "{:?}", writes(&m));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn publish_to_a_consumer_account_by_assumed_role() {
    let m = Moto::take();
    let (artifact, keys, _) = seed(&m, &[]);
    let mut args = publish_args(&artifact);
    args.extend(["--publish-account", CONSUMER, "--publish-role-name", "amikey-publisher"].map(String::from));
    let (code, out, err) = run(m.amikey().args(&args));
    assert_eq!(code, 0, "{out}\n{err}");
    let r = json(&out);
    let consumer_params = r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["account"] == CONSUMER && a["kind"] == "ssm_parameter")
        .count();
    assert_eq!(consumer_params, 9);
    block_on(async {
        let consumer = m.aws(Some(CONSUMER)).await;
        for r in REGIONS {
            let ami = artifact.split(',').find(|p| p.starts_with(r)).unwrap().split(':').nth(1).unwrap();
            let seen = consumer.ec2(r).describe_images().image_ids(ami).send().await.unwrap();
            assert_eq!(seen.images().len(), 1, "consumer sees the AMI in {r}");
            let p = consumer.ssm(r).get_parameter().name("/images/base/kms_key_arn").send().await.unwrap();
            assert_eq!(p.parameter().unwrap().value(), Some(keys[r].as_str()));
            let p = consumer.ssm(r).get_parameter().name("/images/base/image_id").send().await.unwrap();
            assert_eq!(p.parameter().unwrap().value(), Some(ami));
        }
    });
    // The consumer got launch permission although it is not among --ami-user.
    assert!(
        r["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["target"].as_str().unwrap().ends_with(&format!("user {CONSUMER}")))
    );
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn bad_input_exits_2_and_calls_nothing() {
    let m = Moto::take();
    let cases: &[&[&str]] = &[
        &["check", "--artifact", "us-east-1-ami-12345678", "--kms-key-id", "alias/images"],
        &["check", "--artifact", "us-east1:ami-12345678", "--kms-key-id", "alias/images"],
        &["check", "--artifact", "us-east-1:ami-XYZ", "--kms-key-id", "alias/images"],
        &["check", "--artifact", "us-east-1:ami-12345678", "--kms-key-id", "not a key"],
        &[
            "publish",
            "--artifact",
            "us-east-1:ami-12345678",
            "--kms-key-id",
            "alias/images",
            "--ami-user",
            "12",
        ],
        &["publish", "--artifact", "us-east-1:ami-12345678", "--kms-key-id", "alias/aws/ebs"],
    ];
    for args in cases {
        let (code, out, err) = run(m.amikey().args(*args));
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(m.calls().is_empty(), "{args:?} made calls: {:?}", m.calls());
    }
}

/// The README's IAM policy (docs/iam-producer-policy.json) must allow every call `check` and
/// `publish` make, so the documented policy cannot drift from the code.
#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn documented_iam_policy_covers_every_call_made() {
    let m = Moto::take();
    let (artifact, ..) = seed(&m, &[]);
    let mut args = publish_args(&artifact);
    args.extend(["--publish-account", CONSUMER, "--publish-role-name", "amikey-publisher"].map(String::from));
    assert_eq!(run(m.amikey().args(&args)).0, 0);
    assert_eq!(run(m.amikey().args(["check", "--artifact", &artifact, "--kms-key-id", "alias/images"])).0, 0);
    // A wrong key makes check look up the snapshot key's alias too.
    let _ = run(m.amikey().args(["check", "--artifact", &artifact, "--kms-key-id", "alias/nope"]));
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::moto::repo_path("docs/iam-producer-policy.json")).unwrap(),
    )
    .unwrap();
    let mut allowed = std::collections::BTreeSet::new();
    // The lifecycle statements are pinned by tests/it/lifecycle.rs (retire, rollback, deprecation).
    for st in policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["Sid"].as_str().is_some_and(|sid| sid.starts_with("AmikeyLifecycle")))
    {
        match &st["Action"] {
            Value::String(a) => {
                allowed.insert(a.to_lowercase());
            }
            Value::Array(v) => allowed.extend(v.iter().map(|a| a.as_str().unwrap().to_lowercase())),
            _ => panic!("bad Action"),
        }
    }
    let mut used = std::collections::BTreeSet::new();
    for c in m.calls() {
        let svc = c["service"].as_str().unwrap().to_lowercase();
        used.insert(format!("{svc}:{}", c["operation"].as_str().unwrap()).to_lowercase());
    }
    // Assuming the publish role happens inside the SDK's credential provider.
    used.insert("sts:assumerole".into());
    let missing: Vec<_> = used.difference(&allowed).collect();
    assert!(missing.is_empty(), "calls not in docs/iam-producer-policy.json: {missing:?} (used: {used:?})");
    let unused: Vec<_> = allowed.difference(&used).filter(|a| *a != "ssm:addtagstoresource").collect();
    assert!(unused.is_empty(), "policy grants actions amikey never calls: {unused:?}");
}
