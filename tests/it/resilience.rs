//! `amikey publish` through `tests/moto/relay.py` in front of moto: throttling, a run killed
//! between writes, a region that keeps failing, broken answers. Each asserts the final state in
//! moto, not only the exit code. No timing is asserted except a generous bound that catches hangs.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::consumer::as_consumer;
use crate::moto::{CONSUMER, Enc, Moto, Relay, create_ami, create_key, json, run};

const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "us-west-2"];
/// Anything slower than this is a hang (every call has connect/read/attempt timeouts).
const HANG: Duration = Duration::from_secs(120);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// One CMK (alias/images) per region.
fn seed_keys(m: &Moto) -> BTreeMap<String, String> {
    block_on(async {
        let aws = m.aws(None).await;
        let mut keys = BTreeMap::new();
        for r in REGIONS {
            keys.insert(r.to_string(), create_key(&aws, r, "alias/images").await);
        }
        keys
    })
}

/// A one-volume AMI per region under that region's CMK: (artifact id, region → (ami, snapshot)).
fn seed_amis(m: &Moto, keys: &BTreeMap<String, String>) -> (String, BTreeMap<String, (String, String)>) {
    block_on(async {
        let aws = m.aws(None).await;
        let mut parts = Vec::new();
        let mut amis = BTreeMap::new();
        for r in REGIONS {
            let (ami, snaps) = create_ami(&aws, r, &[("/dev/xvda", Enc::Key(keys[r].clone()))]).await;
            parts.push(format!("{r}:{ami}"));
            amis.insert(r.to_string(), (ami, snaps[0].clone()));
        }
        (parts.join(","), amis)
    })
}

fn publish_args(artifact: &str, path: &str) -> Vec<String> {
    [
        "publish",
        "--artifact",
        artifact,
        "--kms-key-id",
        "alias/images",
        "--ami-user",
        CONSUMER,
        "--snapshot-user",
        CONSUMER,
        "--ssm-path",
        path,
        "--format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What moto holds for these AMIs: launch permissions and create-volume permissions as listed
/// (duplicates would show), and every parameter under `path` per region with type and value.
fn state(m: &Moto, amis: &BTreeMap<String, (String, String)>, path: &str) -> BTreeMap<String, Value> {
    block_on(async {
        let aws = m.aws(None).await;
        let mut out = BTreeMap::new();
        for (region, (ami, snap)) in amis {
            let launch: Vec<String> = amikey::aws::gather::launch_permissions(&aws, region, ami)
                .await
                .unwrap()
                .users
                .into_iter()
                .collect();
            let volume: Vec<String> =
                amikey::aws::gather::snapshot_users(&aws, region, snap).await.unwrap().into_iter().collect();
            let params =
                aws.ssm(region).get_parameters_by_path().path(path).recursive(true).send().await.unwrap();
            let mut ps: Vec<Value> = params
                .parameters()
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "name": p.name(),
                        "type": p.r#type().map(|t| t.as_str().to_string()),
                        "data_type": p.data_type(),
                        "value": p.value(),
                    })
                })
                .collect();
            ps.sort_by_key(|p| p["name"].as_str().unwrap_or("").to_string());
            out.insert(
                region.clone(),
                serde_json::json!({ "launch": launch, "volume": volume, "parameters": ps }),
            );
        }
        out
    })
}

/// `text` with this set's AMI and snapshot ids and SSM path replaced by placeholders, so two
/// sets seeded the same way compare equal.
fn normalise(text: &str, amis: &BTreeMap<String, (String, String)>, path: &str) -> String {
    let mut t = text.replace(path, "/PATH");
    for (region, (ami, snap)) in amis {
        t = t.replace(ami, &format!("AMI-{region}")).replace(snap, &format!("SNAP-{region}"));
    }
    t
}

fn statuses(report: &Value) -> BTreeMap<(String, String), Vec<String>> {
    let mut m: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for a in report["actions"].as_array().unwrap() {
        m.entry((a["region"].as_str().unwrap().into(), a["status"].as_str().unwrap().into()))
            .or_default()
            .push(a["kind"].as_str().unwrap().into());
    }
    m
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn throttled_publish_equals_the_clean_run() {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let (clean_artifact, clean_amis) = seed_amis(&m, &keys);
    let (throttled_artifact, throttled_amis) = seed_amis(&m, &keys);

    let (code, clean_out, err) = run(m.amikey().args(publish_args(&clean_artifact, "/clean")));
    assert_eq!(code, 0, "{clean_out}\n{err}");

    let relay = Relay::start(&m, &["--throttle", "0.15", "--seed", "1"]);
    let (code, throttled_out, err) = run(m
        .amikey()
        .env("AWS_ENDPOINT_URL", &relay.endpoint)
        .args(publish_args(&throttled_artifact, "/throttled"))
        .args(["--max-retries", "10"]));
    assert_eq!(code, 0, "{throttled_out}\n{err}");
    let throttled_calls = relay.calls().iter().filter(|c| c["fault"] == "throttle").count();
    assert!(throttled_calls > 0, "the relay throttled nothing: {:?}", relay.calls());

    assert_eq!(
        normalise(&throttled_out, &throttled_amis, "/throttled"),
        normalise(&clean_out, &clean_amis, "/clean"),
        "the report under 15 % throttling differs from the clean run's"
    );
    let clean_state = serde_json::to_string_pretty(&state(&m, &clean_amis, "/clean")).unwrap();
    let throttled_state = serde_json::to_string_pretty(&state(&m, &throttled_amis, "/throttled")).unwrap();
    assert_eq!(
        normalise(&throttled_state, &throttled_amis, "/throttled"),
        normalise(&clean_state, &clean_amis, "/clean")
    );
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn killed_between_writes_then_rerun_converges_without_duplicates() {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let (artifact, amis) = seed_amis(&m, &keys);
    // With a publish account the writes come in two waves (its parameters need the AMI shared
    // first), and 100-600 ms per call spreads the first wave out: a kill after the first write
    // lands between writes.
    let mut args = publish_args(&artifact, "/images");
    args.extend(["--publish-account", CONSUMER, "--publish-role-name", "amikey-publisher"].map(String::from));
    let total = 3 * (1 + 1 + 3 + 3);
    let relay = Relay::start(&m, &["--delay", "100-600", "--seed", "3"]);
    let idle = relay.threads();
    assert!(idle > 0, "cannot read the relay's thread count");
    let mut child = m
        .amikey()
        .env("AWS_ENDPOINT_URL", &relay.endpoint)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let is_write = |c: &Value| {
        let a = c["action"].as_str().unwrap_or("");
        a.starts_with("Modify") || a == "PutParameter"
    };
    loop {
        if relay.calls().iter().any(|c| is_write(c) && c["status"] == 200) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "publish finished before it could be killed");
        assert!(start.elapsed() < HANG, "no write within {HANG:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: no cleanup, no cancel handling.
    child.kill().unwrap();
    child.wait().unwrap();
    // Requests already in the relay still reach moto; wait until each is answered and logged.
    relay.wait_idle(idle, HANG);
    let written_before = relay.calls().iter().filter(|c| is_write(c) && c["status"] == 200).count();
    assert!(written_before < total, "the kill came too late to test anything ({written_before} writes)");
    drop(relay);

    let (code, out, err) = run(m.amikey().args(&args));
    assert_eq!(code, 0, "re-run after SIGKILL: {out}\n{err}");
    let report = json(&out);
    let actions = report["actions"].as_array().unwrap();
    assert_eq!(actions.len(), total, "{out}");
    assert!(actions.iter().any(|a| a["status"] == "unchanged"), "nothing of the killed run was kept: {out}");
    assert!(actions.iter().any(|a| a["status"] == "changed"), "the killed run did everything: {out}");
    assert!(actions.iter().all(|a| a["status"] == "unchanged" || a["status"] == "changed"), "{out}");

    m.clear_calls();
    let (code, out, _) = run(m.amikey().args(&args));
    assert_eq!(code, 0, "{out}");
    assert!(json(&out)["actions"].as_array().unwrap().iter().all(|a| a["status"] == "unchanged"), "{out}");

    let consumer_params = block_on(async {
        let aws = m.aws(Some(CONSUMER)).await;
        let mut n = BTreeMap::new();
        for r in REGIONS {
            let p = aws.ssm(r).get_parameters_by_path().path("/images").send().await.unwrap();
            let mut names: Vec<String> =
                p.parameters().iter().filter_map(|p| p.name()).map(String::from).collect();
            names.sort();
            n.insert(r.to_string(), names);
        }
        n
    });
    for (region, s) in state(&m, &amis, "/images") {
        assert_eq!(s["launch"], serde_json::json!([CONSUMER]), "{region}: {s}");
        assert_eq!(s["volume"], serde_json::json!([CONSUMER]), "{region}: {s}");
        let names: Vec<&str> =
            s["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["/images/image_id", "/images/kms_key_arn", "/images/snapshot_ids"],
            "{region}: {s}"
        );
        assert_eq!(s["parameters"][0]["value"], amis[&region].0.as_str());
        assert_eq!(consumer_params[&region], names, "{region} in the publish account");
    }
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn a_region_that_cannot_be_read_does_not_stop_the_others() {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let (artifact, amis) = seed_amis(&m, &keys);
    let relay = Relay::start(&m, &["--fail", "DescribeSnapshots:1000", "--fault-region", "us-west-2"]);
    let start = Instant::now();
    let (code, out, err) = run(m
        .amikey()
        .env("AWS_ENDPOINT_URL", &relay.endpoint)
        .args(publish_args(&artifact, "/images"))
        .args(["--max-retries", "2"]));
    assert!(start.elapsed() < HANG);
    assert_eq!(code, 2, "{out}\n{err}");
    let report = json(&out);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{out}");
    assert_eq!(errors[0]["region"], "us-west-2");
    let e = errors[0]["error"].as_str().unwrap();
    assert!(e.contains("DescribeSnapshots") && e.contains("us-west-2"), "{e}");
    assert!(report["summary"].as_str().unwrap().contains("could not read us-west-2"), "{out}");

    let st = statuses(&report);
    for r in ["eu-west-1", "us-east-1"] {
        assert_eq!(st[&(r.to_string(), "changed".to_string())].len(), 5, "{r}: {out}");
    }
    let skipped = &st[&("us-west-2".to_string(), "skipped".to_string())];
    assert_eq!(skipped.len(), 5, "us-west-2 lists what was not applied: {out}");
    assert!(!st.contains_key(&("us-west-2".to_string(), "changed".to_string())), "{out}");

    let s = state(&m, &amis, "/images");
    assert_eq!(s["eu-west-1"]["launch"], serde_json::json!([CONSUMER]));
    assert_eq!(s["us-east-1"]["parameters"].as_array().unwrap().len(), 3);
    assert_eq!(s["us-west-2"]["launch"], serde_json::json!([]), "nothing may change in us-west-2");
    assert_eq!(s["us-west-2"]["parameters"].as_array().unwrap().len(), 0);
    drop(relay);

    // Once the region answers again, a re-run completes it and leaves the others unchanged.
    let (code, out, _) = run(m.amikey().args(publish_args(&artifact, "/images")));
    assert_eq!(code, 0, "{out}");
    let st = statuses(&json(&out));
    assert_eq!(st[&("us-west-2".to_string(), "changed".to_string())].len(), 5, "{out}");
    assert_eq!(st[&("eu-west-1".to_string(), "unchanged".to_string())].len(), 5, "{out}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn a_write_that_keeps_failing_in_one_region_is_named_and_the_others_are_applied() {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let (artifact, amis) = seed_amis(&m, &keys);
    let relay = Relay::start(&m, &["--fail", "ModifySnapshotAttribute:1000", "--fault-region", "eu-west-1"]);
    let idle = relay.threads();
    assert!(idle > 0, "cannot read the relay's thread count");
    let (code, out, err) = run(m
        .amikey()
        .env("AWS_ENDPOINT_URL", &relay.endpoint)
        .args(publish_args(&artifact, "/images"))
        .args(["--max-retries", "2"]));
    assert_eq!(code, 2, "{out}\n{err}");
    let report = json(&out);
    let failed: Vec<&Value> =
        report["actions"].as_array().unwrap().iter().filter(|a| a["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert_eq!(failed[0]["region"], "eu-west-1");
    assert_eq!(failed[0]["kind"], "create_volume_permission");
    let e = failed[0]["error"].as_str().unwrap();
    assert!(e.contains("ModifySnapshotAttribute") && e.contains("eu-west-1"), "{e}");
    let st = statuses(&report);
    for r in ["us-east-1", "us-west-2"] {
        assert_eq!(st[&(r.to_string(), "changed".to_string())].len(), 5, "{r}: {out}");
    }
    // `max_retries` counts retries, as in packer-plugin-amazon: 2 retries, 3 attempts.
    relay.wait_idle(idle, HANG);
    let attempts = relay
        .calls()
        .iter()
        .filter(|c| c["action"] == "ModifySnapshotAttribute" && c["region"] == "eu-west-1")
        .count();
    assert_eq!(attempts, 3, "--max-retries 2 must make 1 attempt + 2 retries");
    let s = state(&m, &amis, "/images");
    assert_eq!(s["eu-west-1"]["volume"], serde_json::json!([]));
    assert_eq!(s["us-west-2"]["volume"], serde_json::json!([CONSUMER]));
}

fn broken_answers(flag: &str) {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let (artifact, amis) = seed_amis(&m, &keys);
    let relay = Relay::start(&m, &[flag, "DescribeImages:1000"]);
    let start = Instant::now();
    let (code, out, err) = run(m
        .amikey()
        .env("AWS_ENDPOINT_URL", &relay.endpoint)
        .args(publish_args(&artifact, "/images"))
        .args(["--max-retries", "2"]));
    assert!(start.elapsed() < HANG, "{flag}: took {:?}", start.elapsed());
    assert_eq!(code, 2, "{flag}: {out}\n{err}");
    assert!(out.is_empty(), "{flag}: no report on stdout when nothing could be read: {out}");
    assert!(
        err.contains("could not read the current state, nothing was written")
            && err.contains("DescribeImages"),
        "{flag}: {err}"
    );
    for region in REGIONS {
        assert!(err.contains(region), "{flag}: {region} not named: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let s = state(&m, &amis, "/images");
    assert!(s.values().all(|r| r["launch"] == serde_json::json!([])), "{s:?}");
    drop(relay);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn garbage_answers_give_a_clear_error_not_a_hang() {
    broken_answers("--garbage");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn connections_closed_mid_response_give_a_clear_error_not_a_hang() {
    broken_answers("--close-mid-response");
}

/// Issue 6 for grants: `amikey grant` (3 regions × 2 service-linked roles) through a slow relay,
/// SIGKILLed once the first CreateGrant is answered, then re-run. `grant` sends all its
/// CreateGrant calls in one concurrent wave, so at the kill the others are in the relay and land
/// or not; the relay log, read once the relay is idle, says exactly which landed. moto answers a
/// CreateGrant with an existing grant Name by returning that grant, so ListGrants alone would
/// hide a duplicate create: the calls are counted too.
#[test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
fn killed_grant_run_then_rerun_converges_without_duplicate_grants() {
    const PATH: &str = "/images/golden";
    let m = Moto::take();
    let keys = seed_keys(&m);
    block_on(async {
        let aws = m.aws(Some(CONSUMER)).await;
        for r in REGIONS {
            aws.ssm(r)
                .put_parameter()
                .name(format!("{PATH}/kms_key_arn"))
                .value(&keys[r])
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .send()
                .await
                .unwrap();
        }
    });
    let grantees = [
        format!(
            "arn:aws:iam::{CONSUMER}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
        ),
        format!("arn:aws:iam::{CONSUMER}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"),
    ];
    let pairs = REGIONS.len() * grantees.len();
    let args = [
        "grant",
        "--ssm-path",
        PATH,
        "--region",
        "eu-west-1,us-east-1,us-west-2",
        "--service",
        "autoscaling",
        "--service",
        "spot",
        "--format",
        "json",
    ];
    let is_create = |c: &Value| c["action"] == "CreateGrant";

    let relay = Relay::start(&m, &["--delay", "50-1000", "--seed", "6"]);
    let idle = relay.threads();
    assert!(idle > 0, "cannot read the relay's thread count");
    let mut child = as_consumer(&m)
        .env("AWS_ENDPOINT_URL", &relay.endpoint)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !relay.calls().iter().any(|c| is_create(c) && c["status"] == 200) {
        assert!(child.try_wait().unwrap().is_none(), "grant finished before it could be killed");
        assert!(start.elapsed() < HANG, "no CreateGrant within {HANG:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: no cleanup, no cancel handling.
    child.kill().unwrap();
    child.wait().unwrap();
    // Requests already in the relay still reach moto; wait until each is answered and logged.
    relay.wait_idle(idle, HANG);
    let creates: Vec<Value> = relay.calls().into_iter().filter(|c| is_create(c)).collect();
    assert!(creates.iter().all(|c| c["status"] == 200), "{creates:?}");
    let landed = creates.len();
    assert!((1..=pairs).contains(&landed), "the killed run made {landed} CreateGrant calls: {creates:?}");
    drop(relay);

    let creates_ok = |m: &Moto| {
        let calls = m.calls();
        let all = calls.iter().filter(|c| c["operation"] == "CreateGrant").count();
        let ok = calls.iter().filter(|c| c["operation"] == "CreateGrant" && c["ok"] == true).count();
        assert_eq!(all, ok, "a CreateGrant failed: {calls:?}");
        ok
    };
    m.clear_calls();
    let (code, out, err) = run(as_consumer(&m).args(args));
    assert_eq!(code, 0, "re-run after SIGKILL: {out}\n{err}");
    let rerun = creates_ok(&m);
    assert_eq!(
        landed + rerun,
        pairs,
        "CreateGrant calls: {landed} landed in the killed run, {rerun} in the re-run, for {pairs} key × grantee pairs:\n{out}"
    );

    eprintln!("CreateGrant: {landed} landed in the killed run, {rerun} in the re-run");
    m.clear_calls();
    let (code, out, err) = run(as_consumer(&m).args(args));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(creates_ok(&m), 0, "a third run creates nothing:\n{out}");

    let grants = block_on(async {
        let aws = m.aws(None).await;
        let mut out = BTreeMap::new();
        for r in REGIONS {
            let l = aws.kms(r).list_grants().key_id(&keys[r]).send().await.unwrap();
            let mut g: Vec<String> =
                l.grants().iter().filter_map(|g| g.grantee_principal()).map(String::from).collect();
            g.sort();
            out.insert(r, g);
        }
        out
    });
    for r in REGIONS {
        for g in &grantees {
            let n = grants[r].iter().filter(|x| *x == g).count();
            assert_eq!(n, 1, "{r}: {n} grants for {g}: {grants:?}");
        }
        assert_eq!(grants[r].len(), grantees.len(), "{r}: {grants:?}");
    }
}
