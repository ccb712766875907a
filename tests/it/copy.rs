//! `amikey copy` against the patched moto emulator (C1: CopyImage across accounts, ClientToken,
//! tags): a 3-region AMI set copied into two consumer accounts under their own per-region keys,
//! verified and published in each, and a re-run that changes nothing (counted in the call log);
//! the consumer pulling on its own from the published parameters; each precondition failure as a
//! finding that touches nothing in that account; a SIGKILL mid-run, then a re-run that converges
//! without duplicates; more copies than call slots, pending for a while (C2), all started before
//! any finishes.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::moto::{ACCOUNT, CONSUMER, Enc, Moto, Relay, create_ami, create_key, json, run};

const OTHER: &str = "210987654321";
const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "us-west-2"];
const PATH: &str = "/images/golden";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// The producer's key policy: its own root, plus the consumer statements for `consumers`.
pub fn allow_consumers(consumers: &[&str]) -> String {
    let accounts =
        amikey::core::policy::Consumers::Accounts(consumers.iter().map(|c| c.to_string()).collect());
    let mut stmts = amikey::core::policy::generate(&accounts, None).unwrap();
    stmts.push(serde_json::json!({"Sid": "root", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:*", "Resource": "*"}));
    serde_json::json!({"Version": "2012-10-17", "Statement": stmts}).to_string()
}

struct Seeded {
    /// region → source AMI.
    amis: BTreeMap<String, String>,
    /// region → source snapshot.
    snaps: BTreeMap<String, String>,
    artifact: String,
}

/// The producer's 3-region AMI set under its per-region keys, whose policies allow `policy_for`;
/// AMIs and snapshots shared with `share`.
fn seed(m: &Moto, policy_for: &[&str], share: &[&str]) -> Seeded {
    block_on(async {
        let aws = m.aws(None).await;
        let (mut amis, mut snaps) = (BTreeMap::new(), BTreeMap::new());
        for r in REGIONS {
            let key = create_key(&aws, r, "alias/images").await;
            aws.kms(r)
                .put_key_policy()
                .key_id(&key)
                .policy_name("default")
                .policy(allow_consumers(policy_for))
                .send()
                .await
                .unwrap();
            let (ami, s) = create_ami(&aws, r, &[("/dev/xvda", Enc::Key(key))]).await;
            for a in share {
                share_launch(&aws, r, &ami, a).await;
                share_snapshot(&aws, r, &s[0], a).await;
            }
            amis.insert(r.to_string(), ami);
            snaps.insert(r.to_string(), s[0].clone());
        }
        let artifact = amis.iter().map(|(r, a)| format!("{r}:{a}")).collect::<Vec<_>>().join(",");
        Seeded { amis, snaps, artifact }
    })
}

async fn share_launch(aws: &amikey::aws::Aws, region: &str, ami: &str, account: &str) {
    aws.ec2(region)
        .modify_image_attribute()
        .image_id(ami)
        .launch_permission(
            aws_sdk_ec2::types::LaunchPermissionModifications::builder()
                .add(aws_sdk_ec2::types::LaunchPermission::builder().user_id(account).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
}

async fn share_snapshot(aws: &amikey::aws::Aws, region: &str, snap: &str, account: &str) {
    aws.ec2(region)
        .modify_snapshot_attribute()
        .snapshot_id(snap)
        .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
        .create_volume_permission(
            aws_sdk_ec2::types::CreateVolumePermissionModifications::builder()
                .add(aws_sdk_ec2::types::CreateVolumePermission::builder().user_id(account).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// `alias/mine` in every region of `account`: its own key per region; region → key ARN.
fn consumer_keys(m: &Moto, account: &str) -> BTreeMap<String, String> {
    block_on(async {
        let aws = m.aws(Some(account)).await;
        let mut keys = BTreeMap::new();
        for r in REGIONS {
            keys.insert(r.to_string(), create_key(&aws, r, "alias/mine").await);
        }
        keys
    })
}

fn param(m: &Moto, account: &str, region: &str, name: &str) -> Option<String> {
    block_on(async {
        let aws = m.aws(Some(account)).await;
        aws.ssm(region)
            .get_parameter()
            .name(name)
            .send()
            .await
            .ok()
            .and_then(|o| o.parameter()?.value().map(str::to_string))
    })
}

/// The images `account` owns in `region` tagged as copies of `source`.
fn copies_of(m: &Moto, account: &str, region: &str, source: &str) -> Vec<String> {
    block_on(async {
        let aws = m.aws(Some(account)).await;
        let out = aws
            .ec2(region)
            .describe_images()
            .owners("self")
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:amikey:source-image-id")
                    .values(source)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.images().iter().filter_map(|i| i.image_id().map(str::to_string)).collect()
    })
}

/// The key ARNs of the snapshots of `ami`, as `account` sees them.
fn snapshot_keys(m: &Moto, account: &str, region: &str, ami: &str) -> Vec<Option<String>> {
    block_on(async {
        let aws = m.aws(Some(account)).await;
        let img = amikey::aws::read::describe_image(&aws, region, ami).await.unwrap().unwrap();
        let ids: Vec<String> = img.block_devices.iter().filter_map(|b| b.snapshot_id.clone()).collect();
        let snaps = amikey::aws::read::describe_snapshots(&aws, region, &ids).await.unwrap();
        snaps.values().map(|s| s.encrypted.then(|| s.kms_key_id.clone()).flatten()).collect()
    })
}

fn count(m: &Moto, op: &str, who: Option<&str>) -> usize {
    m.calls().iter().filter(|c| c["operation"] == op && who.is_none_or(|w| c["who"] == w)).count()
}

fn copy_cmd(m: &Moto, artifact: &str, accounts: &[&str]) -> Command {
    let mut c = m.amikey();
    c.args(["copy", "--artifact", artifact, "--role-name", "amikey-copy", "--kms-key-id", "alias/mine"])
        .args(["--ssm-path", PATH, "--format", "json"]);
    for a in accounts {
        c.args(["--account", a]);
    }
    c
}

fn items(report: &Value) -> Vec<(String, String, String)> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["account"].as_str().unwrap().to_string(),
                i["region"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn three_regions_into_two_accounts_each_under_its_own_key_then_a_rerun_changes_nothing() {
    let m = Moto::take();
    let s = seed(&m, &[CONSUMER, OTHER], &[CONSUMER, OTHER]);
    let keys: BTreeMap<&str, BTreeMap<String, String>> =
        [(CONSUMER, consumer_keys(&m, CONSUMER)), (OTHER, consumer_keys(&m, OTHER))].into();
    let (code, out, err) = run(&mut copy_cmd(&m, &s.artifact, &[CONSUMER, OTHER]));
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json(&out);
    let want: Vec<(String, String, String)> = [CONSUMER, OTHER]
        .iter()
        .flat_map(|a| REGIONS.iter().map(move |r| (a.to_string(), r.to_string(), "copied".to_string())))
        .collect();
    assert_eq!(items(&report), want, "{out}");
    assert_eq!(count(&m, "CopyImage", None), 6);
    for (account, per_region) in &keys {
        for r in REGIONS {
            let copies = copies_of(&m, account, r, &s.amis[r]);
            assert_eq!(copies.len(), 1, "{account} {r}: {copies:?}");
            let copy = &copies[0];
            // Every snapshot of the copy under this account's own key in this region.
            assert_eq!(
                snapshot_keys(&m, account, r, copy),
                vec![Some(per_region[r].clone())],
                "{account} {r}"
            );
            assert_eq!(param(&m, account, r, &format!("{PATH}/image_id")).as_deref(), Some(copy.as_str()));
            assert_eq!(param(&m, account, r, &format!("{PATH}/kms_key_arn")), Some(per_region[r].clone()));
            assert_eq!(param(&m, account, r, &format!("{PATH}/source_image_id")), Some(s.amis[r].clone()));
            let snaps = param(&m, account, r, &format!("{PATH}/snapshot_ids")).unwrap();
            assert!(snaps.starts_with("snap-") && snaps != s.snaps[r], "{snaps}");
        }
        // The keys differ per region.
        assert_eq!(per_region.values().collect::<std::collections::BTreeSet<_>>().len(), 3);
    }

    // Re-run: zero CopyImage, zero PutParameter, everything unchanged.
    m.clear_calls();
    let (code, out, err) = run(&mut copy_cmd(&m, &s.artifact, &[CONSUMER, OTHER]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(items(&json(&out)).iter().all(|(_, _, st)| st == "unchanged"), "{out}");
    assert_eq!(count(&m, "CopyImage", None), 0);
    assert_eq!(count(&m, "PutParameter", None), 0);
    assert!(count(&m, "DescribeImages", None) > 0, "the re-run did read");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn a_consumer_pulls_from_the_published_parameters_and_copies_on_its_own() {
    let m = Moto::take();
    let s = seed(&m, &[CONSUMER], &[CONSUMER]);
    let keys = consumer_keys(&m, CONSUMER);
    // What `publish_accounts` leaves in the consumer account.
    block_on(async {
        let aws = m.aws(Some(CONSUMER)).await;
        for r in ["eu-west-1", "us-east-1"] {
            aws.ssm(r)
                .put_parameter()
                .name(format!("{PATH}/image_id"))
                .value(&s.amis[r])
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .data_type("aws:ec2:image")
                .send()
                .await
                .unwrap();
        }
    });
    let pull = || {
        let mut c = crate::consumer::as_consumer(&m);
        c.args([
            "copy",
            "--from-ssm-path",
            PATH,
            "--regions",
            "eu-west-1,us-east-1",
            "--kms-key-id",
            "alias/mine",
        ])
        .args(["--ssm-path", "/images/golden-local", "--format", "json"]);
        c
    };
    let (code, out, err) = run(&mut pull());
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        items(&json(&out)),
        vec![
            (CONSUMER.into(), "eu-west-1".into(), "copied".into()),
            (CONSUMER.into(), "us-east-1".into(), "copied".into())
        ]
    );
    for r in ["eu-west-1", "us-east-1"] {
        let copy = param(&m, CONSUMER, r, "/images/golden-local/image_id").unwrap();
        assert_ne!(copy, s.amis[r]);
        assert_eq!(snapshot_keys(&m, CONSUMER, r, &copy), vec![Some(keys[r].clone())]);
        assert_eq!(param(&m, CONSUMER, r, "/images/golden-local/source_image_id"), Some(s.amis[r].clone()));
    }
    assert!(copies_of(&m, CONSUMER, "us-west-2", &s.amis["us-west-2"]).is_empty());
    m.clear_calls();
    let (code, out, _) = run(&mut pull());
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&m, "CopyImage", None), 0);
    // Nothing published at the path in a region it was not asked for.
    let (code, _, err) = run(crate::consumer::as_consumer(&m).args([
        "copy",
        "--from-ssm-path",
        "/images/nothing-here",
        "--regions",
        "eu-west-1",
        "--kms-key-id",
        "alias/mine",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/images/nothing-here/image_id does not exist in eu-west-1"), "{err}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn each_precondition_failure_is_a_finding_and_touches_nothing_in_that_account() {
    let m = Moto::take();
    const GOOD: &str = "444455556666";
    const NO_LAUNCH: &str = "555566667777";
    const NO_SNAPSHOT: &str = "666677778888";
    const NO_KEY: &str = "777788889999";
    const DISABLED: &str = "888899990000";
    const NO_POLICY: &str = "999900001111";
    let all = [GOOD, NO_LAUNCH, NO_SNAPSHOT, NO_KEY, DISABLED, NO_POLICY];
    let s = seed(&m, &[GOOD, NO_LAUNCH, NO_SNAPSHOT, NO_KEY, DISABLED], &[GOOD, NO_KEY, DISABLED, NO_POLICY]);
    block_on(async {
        let aws = m.aws(None).await;
        for r in REGIONS {
            share_snapshot(&aws, r, &s.snaps[r], NO_LAUNCH).await;
            share_launch(&aws, r, &s.amis[r], NO_SNAPSHOT).await;
        }
    });
    for a in [GOOD, NO_LAUNCH, NO_SNAPSHOT, DISABLED, NO_POLICY] {
        consumer_keys(&m, a);
    }
    block_on(async {
        let aws = m.aws(Some(DISABLED)).await;
        for r in REGIONS {
            let k = aws.kms(r).describe_key().key_id("alias/mine").send().await.unwrap();
            aws.kms(r).disable_key().key_id(k.key_metadata().unwrap().key_id()).send().await.unwrap();
        }
    });
    let (code, out, err) = run(&mut copy_cmd(&m, &s.artifact, &all));
    assert_eq!(code, 1, "findings, not errors: {out}\n{err}");
    let report = json(&out);
    let mut by_account: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in report["items"].as_array().unwrap() {
        let codes: Vec<String> = i["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_string())
            .collect();
        for f in i["findings"].as_array().unwrap() {
            let msg = f["message"].as_str().unwrap();
            assert!(
                msg.starts_with(&format!(
                    "{} {}: ",
                    i["account"].as_str().unwrap(),
                    i["region"].as_str().unwrap()
                )),
                "{msg}"
            );
        }
        by_account.entry(i["account"].as_str().unwrap().to_string()).or_default().extend(codes);
    }
    let expect = |a: &str, code: &str| {
        let got = &by_account[a];
        assert_eq!(got, &vec![code.to_string(); 3], "{a}: {out}");
    };
    assert!(by_account[GOOD].is_empty(), "{out}");
    expect(NO_LAUNCH, "NOT_SHARED_LAUNCH");
    expect(NO_SNAPSHOT, "NOT_SHARED_SNAPSHOT");
    expect(NO_KEY, "DEST_KEY_NOT_FOUND");
    expect(DISABLED, "DEST_KEY_NOT_ENABLED");
    expect(NO_POLICY, "SOURCE_KEY_POLICY_DENIES");
    assert!(
        out.contains(&format!("amikey policy generate --consumer-account {NO_POLICY} --key arn:aws:kms:")),
        "{out}"
    );
    // The good account got its copies; the others nothing at all.
    assert_eq!(count(&m, "CopyImage", Some(GOOD)), 3);
    for a in [NO_LAUNCH, NO_SNAPSHOT, NO_KEY, DISABLED, NO_POLICY] {
        assert_eq!(
            count(&m, "CopyImage", Some(a)) + count(&m, "PutParameter", Some(a)),
            0,
            "{a} was written"
        );
        for r in REGIONS {
            assert!(copies_of(&m, a, r, &s.amis[r]).is_empty());
        }
    }
    // Bad input: nothing is called.
    m.clear_calls();
    let (code, _, err) = run(m.amikey().args([
        "copy",
        "--artifact",
        &s.artifact,
        "--account",
        "12345",
        "--role-name",
        "r",
        "--kms-key-id",
        "alias/aws/ebs",
    ]));
    assert_eq!(code, 2);
    assert!(err.contains("not a 12-digit account id"), "{err}");
    assert!(m.calls().is_empty());
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn sigkill_mid_run_then_a_rerun_converges_without_duplicates() {
    let m = Moto::take();
    let s = seed(&m, &[CONSUMER, OTHER], &[CONSUMER, OTHER]);
    consumer_keys(&m, CONSUMER);
    consumer_keys(&m, OTHER);
    let relay = Relay::start(&m, &["--delay", "150-300", "--seed", "7"]);
    let mut cmd = copy_cmd(&m, &s.artifact, &[CONSUMER, OTHER]);
    cmd.env("AWS_ENDPOINT_URL", &relay.endpoint)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Kill as soon as the first copy has been started, while the others are in flight or not yet.
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&m, "CopyImage", None) == 0 {
        assert!(child.try_wait().unwrap().is_none(), "amikey finished before it could be killed");
        assert!(Instant::now() < deadline, "no CopyImage within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let started = count(&m, "CopyImage", None);
    assert!(started < 6, "everything was copied before the kill ({started})");
    drop(relay);

    let (code, out, err) = run(&mut copy_cmd(&m, &s.artifact, &[CONSUMER, OTHER]));
    assert_eq!(code, 0, "{out}\n{err}");
    for a in [CONSUMER, OTHER] {
        for r in REGIONS {
            let copies = copies_of(&m, a, r, &s.amis[r]);
            assert_eq!(copies.len(), 1, "{a} {r}: duplicate or missing copy {copies:?}");
            assert_eq!(param(&m, a, r, &format!("{PATH}/image_id")), Some(copies[0].clone()));
        }
    }
    // A third run changes nothing.
    m.clear_calls();
    let (code, out, _) = run(&mut copy_cmd(&m, &s.artifact, &[CONSUMER, OTHER]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&m, "CopyImage", None) + count(&m, "PutParameter", None), 0);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn copies_beyond_the_call_slots_all_start_before_any_finishes() {
    // More items than MAX_CONCURRENT_COPIES, and copies that stay pending (moto C2): a copy
    // waiting for `available` must not hold one of the slots, so every CopyImage is sent before
    // the first copy is available (before the first PutParameter). Were a slot held for a copy's
    // whole life, the items past the slots would start only once an earlier copy had finished.
    let m = Moto::take();
    let n = amikey::core::copy::MAX_CONCURRENT_COPIES / REGIONS.len() + 1;
    let accounts: Vec<String> = (1..=n).map(|i| format!("3000000000{i:02}")).collect();
    let accounts: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let s = seed(&m, &accounts, &accounts);
    for a in &accounts {
        consumer_keys(&m, a);
    }
    block_on(async {
        let aws = m.aws(None).await;
        for r in REGIONS {
            aws.ec2(r)
                .create_tags()
                .resources(&s.amis[r])
                .tags(aws_sdk_ec2::types::Tag::builder().key("amikey-moto:copy-seconds").value("8").build())
                .send()
                .await
                .unwrap();
        }
    });
    m.clear_calls();
    let (code, out, err) = run(&mut copy_cmd(&m, &s.artifact, &accounts));
    assert_eq!(code, 0, "{out}\n{err}");
    let items = items(&json(&out));
    assert_eq!(items.len(), n * REGIONS.len());
    assert!(items.len() > amikey::core::copy::MAX_CONCURRENT_COPIES);
    assert!(items.iter().all(|(_, _, st)| st == "copied"), "{out}");
    let ops: Vec<String> =
        m.calls().iter().map(|c| c["operation"].as_str().unwrap_or_default().to_string()).collect();
    let last_copy = ops.iter().rposition(|o| o == "CopyImage").unwrap();
    let first_put = ops.iter().position(|o| o == "PutParameter").unwrap();
    assert_eq!(ops.iter().filter(|o| *o == "CopyImage").count(), items.len());
    assert!(last_copy < first_put, "CopyImage #{last_copy} came after the first PutParameter (#{first_put})");
}
