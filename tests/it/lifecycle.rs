//! The AMI lifecycle against the patched moto emulator (fidelity fixes LC1-LC4): deprecation and
//! deregistration protection on publish, `amikey retire` after seven publishes, `amikey rollback`,
//! bad input, and the IAM policy's lifecycle statement, all through the real CLI binary.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::moto::{CONSUMER, Enc, Moto, create_ami, create_key, json, run};

const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];
const PATH: &str = "/images/base";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn ops(m: &Moto) -> Vec<String> {
    m.calls().iter().map(|c| c["operation"].as_str().unwrap_or("").to_string()).collect()
}

fn writes(m: &Moto) -> Vec<String> {
    ops(m)
        .into_iter()
        .filter(|op| {
            ["Modify", "Put", "Create", "Delete", "Deregister", "Enable", "Label"]
                .iter()
                .any(|p| op.starts_with(p))
        })
        .collect()
}

/// A CMK (alias/images) per region.
fn keys(m: &Moto) -> BTreeMap<String, String> {
    block_on(async {
        let aws = m.aws(None).await;
        let mut out = BTreeMap::new();
        for r in REGIONS {
            out.insert(r.to_string(), create_key(&aws, r, "alias/images").await);
        }
        out
    })
}

/// One AMI per region under that region's CMK: (artifact, region → (ami, snapshots)).
fn build(m: &Moto, keys: &BTreeMap<String, String>) -> (String, BTreeMap<String, (String, Vec<String>)>) {
    block_on(async {
        let aws = m.aws(None).await;
        let mut parts = Vec::new();
        let mut out = BTreeMap::new();
        for r in REGIONS {
            let (ami, snaps) = create_ami(&aws, r, &[("/dev/xvda", Enc::Key(keys[r].clone()))]).await;
            parts.push(format!("{r}:{ami}"));
            out.insert(r.to_string(), (ami, snaps));
        }
        (parts.join(","), out)
    })
}

fn publish(m: &Moto, artifact: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args =
        vec!["publish", "--artifact", artifact, "--kms-key-id", "alias/images", "--ssm-path", PATH];
    args.extend_from_slice(extra);
    run(m.amikey().args(&args))
}

fn describe(m: &Moto, region: &str, ami: &str) -> Option<aws_sdk_ec2::types::Image> {
    block_on(async {
        let aws = m.aws(None).await;
        let out = aws
            .ec2(region)
            .describe_images()
            .filters(aws_sdk_ec2::types::Filter::builder().name("image-id").values(ami).build())
            .send()
            .await
            .unwrap();
        out.images().first().cloned()
    })
}

fn param(m: &Moto, region: &str, suffix: &str) -> String {
    block_on(async {
        let aws = m.aws(None).await;
        let p = aws.ssm(region).get_parameter().name(format!("{PATH}/{suffix}")).send().await.unwrap();
        p.parameter().unwrap().value().unwrap().to_string()
    })
}

fn snapshot_exists(m: &Moto, region: &str, snap: &str) -> bool {
    block_on(async {
        let aws = m.aws(None).await;
        let out = aws.ec2(region).describe_snapshots().owner_ids("self").send().await.unwrap();
        out.snapshots().iter().any(|s| s.snapshot_id() == Some(snap))
    })
}

fn actions_of<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    r["actions"].as_array().unwrap().iter().filter(|a| a["kind"] == kind).collect()
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn publish_sets_and_verifies_deprecation_and_protection_in_every_region() {
    let m = Moto::take();
    let k = keys(&m);
    let (artifact, amis) = build(&m, &k);
    let lifecycle =
        ["--deprecate-after", "90d", "--deregistration-protection", "--deregistration-protection-cooldown"];

    // The dry-run plan names both items per region and writes nothing.
    let (code, out, err) =
        publish(&m, &artifact, &[&lifecycle[..], &["--dry-run", "--format", "json"]].concat());
    assert_eq!(code, 0, "{out}\n{err}");
    let plan = json(&out);
    for kind in ["deprecation", "deregistration_protection"] {
        let a = actions_of(&plan, kind);
        assert_eq!(a.len(), REGIONS.len(), "{kind}: {out}");
        assert!(a.iter().all(|a| a["status"] == "planned"), "{out}");
    }
    assert!(writes(&m).is_empty(), "dry run wrote: {:?}", writes(&m));

    let (code, out, err) = publish(&m, &artifact, &[&lifecycle[..], &["--format", "json"]].concat());
    assert_eq!(code, 0, "{out}\n{err}");
    let r = json(&out);
    for kind in ["deprecation", "deregistration_protection"] {
        let a = actions_of(&r, kind);
        assert_eq!(a.len(), REGIONS.len(), "{kind}: {out}");
        assert!(a.iter().all(|a| a["status"] == "changed"), "{out}");
    }
    // Read back independently of amikey: creation + 90 days, rounded to the minute; protection on.
    for r in REGIONS {
        let (ami, _) = &amis[r];
        let img = describe(&m, r, ami).expect("image");
        let created = amikey::core::lifecycle::parse_rfc3339(img.creation_date().unwrap()).unwrap();
        let want = amikey::core::lifecycle::round_to_minute(created + 90 * 86_400);
        let got =
            amikey::core::lifecycle::parse_rfc3339(img.deprecation_time().expect("DeprecationTime")).unwrap();
        assert_eq!(got, want, "{r}");
        assert_eq!(img.deregistration_protection(), Some("enabled-with-cooldown"), "{r}");
    }
    let enable: Vec<String> = writes(&m).into_iter().filter(|o| o.starts_with("EnableImage")).collect();
    assert_eq!(enable.len(), 2 * REGIONS.len(), "{enable:?}");

    // A re-run writes nothing: both read back as wanted.
    m.clear_calls();
    let (code, out, err) = publish(&m, &artifact, &[&lifecycle[..], &["--format", "json"]].concat());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(writes(&m).is_empty(), "re-run wrote: {:?}", writes(&m));
    let r = json(&out);
    assert!(actions_of(&r, "deprecation").iter().all(|a| a["status"] == "unchanged"), "{out}");

    // An absolute time that differs is written again; the text report names it.
    let (code, out, err) = publish(&m, &artifact, &["--deprecate-at", "2031-06-01T12:00:20Z"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("deprecation") && out.contains("at 2031-06-01T12:00:00Z"), "{out}");
    for r in REGIONS {
        let img = describe(&m, r, &amis[r].0).unwrap();
        assert!(img.deprecation_time().unwrap().starts_with("2031-06-01T12:00:00"), "{r}");
    }
}

/// Seven weekly publishes in two regions, with sharing to the consumer. Returns region → the
/// seven (ami, snapshots), oldest first.
fn seven_publishes(m: &Moto) -> BTreeMap<String, Vec<(String, Vec<String>)>> {
    let k = keys(m);
    let mut lineage: BTreeMap<String, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for _ in 0..7 {
        let (artifact, amis) = build(m, &k);
        let (code, out, err) = publish(m, &artifact, &["--ami-user", CONSUMER, "--snapshot-user", CONSUMER]);
        assert_eq!(code, 0, "{out}\n{err}");
        for (r, a) in amis {
            lineage.entry(r).or_default().push(a);
        }
    }
    lineage
}

fn verdicts(r: &Value, region: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let reg = r["regions"].as_array().unwrap().iter().find(|x| x["region"] == region).unwrap();
    reg["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let reasons = i["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["reason"].as_str().unwrap().to_string())
                .collect();
            (i["ami_id"].as_str().unwrap().to_string(), (i["verdict"].as_str().unwrap().to_string(), reasons))
        })
        .collect()
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn retire_keep_3_after_seven_publishes_deletes_exactly_the_unused_and_converges() {
    let m = Moto::take();
    let l = seven_publishes(&m);
    let (us, eu) = (&l["us-east-1"], &l["eu-west-1"]);
    // us-east-1: v2 labelled, v3 used by a launch template, v4's snapshot also backs another AMI.
    // eu-west-1: v1 protected.
    let other_ami = block_on(async {
        let aws = m.aws(None).await;
        let ssm = aws.ssm("us-east-1");
        ssm.label_parameter_version()
            .name(format!("{PATH}/image_id"))
            .parameter_version(2)
            .labels("golden")
            .send()
            .await
            .unwrap();
        aws.ec2("us-east-1")
            .create_launch_template()
            .launch_template_name("web")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder().image_id(&us[2].0).build(),
            )
            .send()
            .await
            .unwrap();
        aws.ec2("eu-west-1")
            .enable_image_deregistration_protection()
            .image_id(&eu[0].0)
            .send()
            .await
            .unwrap();
        let bdm = aws_sdk_ec2::types::BlockDeviceMapping::builder()
            .device_name("/dev/xvda")
            .ebs(aws_sdk_ec2::types::EbsBlockDevice::builder().snapshot_id(&us[3].1[0]).build())
            .build();
        let out = aws
            .ec2("us-east-1")
            .register_image()
            .name("sharing-a-snapshot")
            .root_device_name("/dev/xvda")
            .block_device_mappings(bdm)
            .send()
            .await
            .unwrap();
        out.image_id().unwrap().to_string()
    });
    let retire = |extra: &[&str]| {
        let mut args = vec!["retire", "--ssm-path", PATH, "--regions", "us-east-1,eu-west-1", "--keep", "3"];
        args.extend_from_slice(extra);
        run(m.amikey().args(&args))
    };

    // Without --yes: the plan only.
    m.clear_calls();
    let (code, out, err) = retire(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("would retire") && out.contains("re-run with --yes"), "{out}");
    assert!(writes(&m).is_empty(), "plan wrote: {:?}", writes(&m));
    let (code, out, _) = retire(&["--yes", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(writes(&m).is_empty(), "--dry-run wrote: {:?}\n{out}", writes(&m));

    m.clear_calls();
    let (code, out, err) = retire(&["--yes", "--format", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = json(&out);
    let expect = |lin: &Vec<(String, Vec<String>)>, region: &str, want: &[(usize, &str, &[&str])]| {
        let v = verdicts(&r, region);
        assert_eq!(v.len(), 7, "{region}: {v:?}");
        for (i, verdict, reasons) in want {
            let got = &v[&lin[*i].0];
            assert_eq!(got.0, *verdict, "{region} v{}: {got:?}", i + 1);
            assert_eq!(
                got.1,
                reasons.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{region} v{}",
                i + 1
            );
        }
    };
    expect(
        us,
        "us-east-1",
        &[
            (6, "keep", &["current", "keep_count"]),
            (5, "keep", &["keep_count"]),
            (4, "keep", &["keep_count"]),
            (3, "retire", &[]),
            (2, "keep", &["referenced"]),
            (1, "keep", &["labelled"]),
            (0, "retire", &[]),
        ],
    );
    expect(
        eu,
        "eu-west-1",
        &[
            (6, "keep", &["current", "keep_count"]),
            (3, "retire", &[]),
            (2, "retire", &[]),
            (1, "retire", &[]),
            (0, "keep", &["protected"]),
        ],
    );
    // Exactly those are gone, with their snapshots, except the one another AMI still uses.
    let retired: BTreeSet<(&str, usize)> =
        [("us-east-1", 3), ("us-east-1", 0), ("eu-west-1", 3), ("eu-west-1", 2), ("eu-west-1", 1)].into();
    for (region, lin) in [("us-east-1", us), ("eu-west-1", eu)] {
        for (i, (ami, snaps)) in lin.iter().enumerate() {
            let gone = retired.contains(&(region, i));
            assert_eq!(describe(&m, region, ami).is_none(), gone, "{region} v{} {ami}", i + 1);
            let shared = region == "us-east-1" && i == 3;
            assert_eq!(
                snapshot_exists(&m, region, &snaps[0]),
                !gone || shared,
                "{region} v{} {}",
                i + 1,
                snaps[0]
            );
        }
    }
    assert!(describe(&m, "us-east-1", &other_ami).is_some());
    let ops = ops(&m);
    assert_eq!(ops.iter().filter(|o| *o == "DeregisterImage").count(), 5, "{ops:?}");
    // Shared ones are unshared first (launch permission and createVolumePermission).
    assert_eq!(ops.iter().filter(|o| *o == "ModifyImageAttribute").count(), 5, "{ops:?}");
    assert_eq!(ops.iter().filter(|o| *o == "ModifySnapshotAttribute").count(), 5, "{ops:?}");
    let us_v4 =
        r["regions"].as_array().unwrap().iter().find(|x| x["region"] == "us-east-1").unwrap()["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["ami_id"] == us[3].0.as_str())
            .unwrap()
            .clone();
    assert_eq!(us_v4["snapshot_results"][0][1], "skipped", "{us_v4}");

    // Text: kept ones grouped by reason; a re-run deletes nothing.
    m.clear_calls();
    let (code, out, err) = retire(&["--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(writes(&m).is_empty(), "re-run wrote: {:?}", writes(&m));
    assert!(
        out.contains("labelled golden") && out.contains("launch-template/") && out.contains("0 retired"),
        "{out}"
    );
    assert!(out.contains("already deregistered"), "{out}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn rollback_to_version_repoints_every_region_after_verifying_or_changes_nothing() {
    let m = Moto::take();
    let k = keys(&m);
    let mut gens = Vec::new();
    for _ in 0..3 {
        let (artifact, amis) = build(&m, &k);
        let (code, out, err) = publish(&m, &artifact, &[]);
        assert_eq!(code, 0, "{out}\n{err}");
        gens.push(amis);
    }
    let rollback = |extra: &[&str]| {
        let mut args = vec!["rollback", "--ssm-path", PATH, "--regions", "eu-west-1,us-east-1"];
        args.extend_from_slice(extra);
        run(m.amikey().args(&args))
    };
    // Dry run: verified, planned, nothing written.
    m.clear_calls();
    let (code, out, err) = rollback(&["--to-version", "2", "--dry-run", "--format", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(writes(&m).is_empty(), "{:?}", writes(&m));
    let r = json(&out);
    assert_eq!(r["command"], "rollback");
    assert_eq!(actions_of(&r, "ssm_parameter").iter().filter(|a| a["status"] == "planned").count(), 2 * 2);

    let (code, out, err) = rollback(&["--to-version", "2"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for r in REGIONS {
        assert_eq!(param(&m, r, "image_id"), gens[1][r].0, "{r}");
        assert_eq!(param(&m, r, "snapshot_ids"), gens[1][r].1.join(","), "{r}");
        assert_eq!(param(&m, r, "kms_key_arn"), k[r], "{r}");
    }

    // Version 1's image in eu-west-1 is gone: the rollback is refused and nothing changes anywhere.
    block_on(async {
        let aws = m.aws(None).await;
        aws.ec2("eu-west-1").deregister_image().image_id(&gens[0]["eu-west-1"].0).send().await.unwrap();
    });
    m.clear_calls();
    let (code, out, err) = rollback(&["--to-version", "1"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("AMI_NOT_FOUND") && err.contains("nothing was changed"), "{out}\n{err}");
    assert!(writes(&m).is_empty(), "{:?}", writes(&m));
    for r in REGIONS {
        assert_eq!(param(&m, r, "image_id"), gens[1][r].0, "{r} changed by a refused rollback");
    }
    // A target under the AWS managed key is refused too.
    let bad = block_on(async {
        let aws = m.aws(None).await;
        create_ami(&aws, "us-east-1", &[("/dev/xvda", Enc::AwsManaged)]).await.0
    });
    let (code, out, err) = rollback(&["--to-image", &format!("us-east-1:{bad}")]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("AWS_MANAGED_KEY"), "{out}");
    assert_eq!(param(&m, "us-east-1", "image_id"), gens[1]["us-east-1"].0);
    // A version that does not exist everywhere: bad input, nothing written.
    let (code, _, err) = rollback(&["--to-version", "9"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no version 9"), "{err}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn lifecycle_bad_input_exits_2_without_any_aws_call() {
    let m = Moto::take();
    let cases: &[&[&str]] = &[
        &["retire", "--ssm-path", PATH],
        &["retire", "--regions", "us-east-1"],
        &["retire", "--ssm-path", "images", "--regions", "us-east-1"],
        &["retire", "--ssm-path", PATH, "--regions", "us-east1"],
        &["retire", "--ssm-path", PATH, "--ami-filter", "name=x", "--regions", "us-east-1"],
        &["retire", "--ami-filter", "name", "--regions", "us-east-1"],
        &["retire", "--ssm-path", PATH, "--regions", "us-east-1", "--account-role", "admin"],
        &["rollback", "--ssm-path", PATH, "--to-version", "0", "--regions", "us-east-1"],
        &["rollback", "--to-version", "2", "--regions", "us-east-1"],
        &["rollback", "--ssm-path", PATH, "--to-version", "2"],
        &["rollback", "--ssm-path", PATH, "--to-image", "us-east-1:ami-xyz"],
        &[
            "publish",
            "--artifact",
            "us-east-1:ami-12345678",
            "--kms-key-id",
            "alias/x",
            "--deprecate-at",
            "next week",
        ],
        &[
            "publish",
            "--artifact",
            "us-east-1:ami-12345678",
            "--kms-key-id",
            "alias/x",
            "--deprecate-after",
            "90y",
        ],
        &[
            "publish",
            "--artifact",
            "us-east-1:ami-12345678",
            "--kms-key-id",
            "alias/x",
            "--deprecate-after",
            "9d",
            "--deprecate-at",
            "2030-01-01T00:00:00Z",
        ],
        &[
            "publish",
            "--artifact",
            "us-east-1:ami-12345678",
            "--kms-key-id",
            "alias/x",
            "--deregistration-protection-cooldown",
        ],
    ];
    for args in cases {
        let (code, out, err) = run(m.amikey().args(*args));
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert!(err.starts_with("error: ") || err.contains("error:"), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(m.calls().is_empty(), "{args:?} made calls: {:?}", m.calls());
    }
}

/// The producer policy's `AmikeyLifecycle` statement is exactly the lifecycle calls made, and
/// every call the lifecycle commands make is in the policy.
#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn documented_iam_policy_covers_the_lifecycle_calls() {
    let m = Moto::take();
    let k = keys(&m);
    // Three publishes: plain (retired below), with deprecation and protection (kept: protected),
    // plain again (current).
    for extra in [&[][..], &["--deprecate-after", "30d", "--deregistration-protection"][..], &[][..]] {
        let (artifact, _) = build(&m, &k);
        let (code, out, err) = publish(&m, &artifact, &[extra, &["--ami-user", CONSUMER][..]].concat());
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let (code, out, err) = run(m.amikey().args([
        "retire",
        "--ssm-path",
        PATH,
        "--regions",
        "us-east-1",
        "--keep",
        "1",
        "--yes",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1 retired"), "{out}");
    let (code, out, err) =
        run(m.amikey().args(["rollback", "--ssm-path", PATH, "--regions", "us-east-1", "--to-version", "2"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::moto::repo_path("docs/iam-producer-policy.json")).unwrap(),
    )
    .unwrap();
    let actions = |st: &Value| -> Vec<String> {
        match &st["Action"] {
            Value::String(a) => vec![a.to_lowercase()],
            Value::Array(v) => v.iter().map(|a| a.as_str().unwrap().to_lowercase()).collect(),
            _ => panic!("bad Action"),
        }
    };
    let statements = policy["Statement"].as_array().unwrap();
    let allowed: BTreeSet<String> = statements.iter().flat_map(actions).collect();
    let lifecycle: BTreeSet<String> =
        statements.iter().filter(|s| s["Sid"] == "AmikeyLifecycle").flat_map(actions).collect();
    let used: BTreeSet<String> = m
        .calls()
        .iter()
        .map(|c| {
            format!("{}:{}", c["service"].as_str().unwrap(), c["operation"].as_str().unwrap()).to_lowercase()
        })
        .collect();
    let missing: Vec<_> = used.difference(&allowed).collect();
    assert!(missing.is_empty(), "calls not in docs/iam-producer-policy.json: {missing:?}");
    let unused: Vec<_> = lifecycle.difference(&used).collect();
    assert!(unused.is_empty(), "AmikeyLifecycle grants actions never called: {unused:?}");
    assert!(!lifecycle.is_empty());
}
