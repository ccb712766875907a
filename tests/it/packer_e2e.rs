//! End to end with a real Packer (Debian's 1.6.6) and its real `amazon-ebs` builder against the
//! patched moto emulator: three regions, a CMK per region (`alias/amikey-demo`), `ami_users`,
//! `snapshot_users`, and the amikey plugin (debug build, installed as the legacy
//! `packer-post-processor-amikey` in a temp `PACKER_PLUGIN_PATH`) in the post-processor chain.
//! The templates are the ones users read: `packer-examples/moto/` (good builds) and
//! `tests/fixtures/e2e/` (a region left on `aws/ebs`). Packer runs with an `env -i`-style
//! environment (static keys in the template, IMDS disabled, checkpoint off); every run has a
//! generous deadline that only catches hangs. After each build the emulator is inspected through
//! the AWS SDK. Skipped, with a message, when `packer` is not on PATH.
//!
//! What "clean" means for SIGINT during post-processing: Packer sends `PostProcessor.Cancel`;
//! amikey stops reading at once and starts no new write, but lets writes already sent finish.
//! So in every account and region the SSM parameter set is all or nothing (`image_id`,
//! `kms_key_arn`, `snapshot_ids`), and a publish account's parameters never exist without the
//! AMI shared with that account (they are written in a later wave).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use amikey::aws::Aws;
use aws_sdk_ec2::types::Filter;

use crate::moto::{CONSUMER, Moto, create_key, repo_path};

const PLUGIN: &str = env!("CARGO_BIN_EXE_packer-plugin-amikey");
const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "us-west-2"];
const ALIAS: &str = "alias/amikey-demo";
/// Only catches hangs: a direct build takes a few seconds.
const DEADLINE: Duration = Duration::from_secs(240);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn packer_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("packer")).find(|p| p.is_file())
}

/// A Packer working directory: plugin, empty HOME, var-file with the emulator and the keys.
struct Workdir {
    dir: tempfile::TempDir,
    packer: PathBuf,
}

struct Run {
    status: ExitStatus,
    /// stdout then stderr.
    text: String,
}

impl Workdir {
    fn new(endpoint: &str, keys: &BTreeMap<String, String>) -> Option<Workdir> {
        let Some(packer) = packer_on_path() else {
            eprintln!("SKIP: `packer` not found on PATH; the real-Packer end-to-end tests did not run");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::copy(PLUGIN, dir.path().join("plugins/packer-post-processor-amikey")).unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        let vars = serde_json::json!({
            "endpoint": endpoint,
            "kms_us_east_1": keys["us-east-1"],
            "kms_us_west_2": keys["us-west-2"],
            "kms_eu_west_1": keys["eu-west-1"],
        });
        std::fs::write(dir.path().join("vars.json"), vars.to_string()).unwrap();
        Some(Workdir { dir, packer })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Copies a repository template into the working directory, applying `edits` (from → to,
    /// each must match).
    fn template(&self, repo_rel: &str, name: &str, edits: &[(&str, &str)]) {
        let mut text = std::fs::read_to_string(repo_path(repo_rel)).unwrap();
        for (from, to) in edits {
            assert!(text.contains(from), "{repo_rel} no longer contains {from:?}");
            text = text.replace(from, to);
        }
        std::fs::write(self.path(name), text).unwrap();
    }

    fn command(&self, args: &[&str], log: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(&self.packer);
        c.args(args)
            .current_dir(d)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", d.join("home"))
            .env("PACKER_PLUGIN_PATH", d.join("plugins"))
            .env("PACKER_LOG", "1")
            .env("PACKER_LOG_PATH", d.join(log))
            .env("CHECKPOINT_DISABLE", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, as a terminal job: SIGINT goes to Packer and its plugins.
            .process_group(0);
        c
    }

    /// Runs Packer to the end (or the hang deadline).
    fn run(&self, args: &[&str], log: &str) -> Run {
        self.run_until(args, log, None)
    }

    /// Runs Packer; when a stdout line contains `interrupt_at`, sends SIGINT to its process group
    /// (what Ctrl-C in a terminal does).
    fn run_until(&self, args: &[&str], log: &str, interrupt_at: Option<&str>) -> Run {
        let mut child = self.command(args, log).spawn().expect("start packer");
        let pgid = child.id();
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        let out_thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let start = Instant::now();
        let mut text = String::new();
        let mut interrupted = interrupt_at.is_none();
        let status = loop {
            while let Ok(line) = rx.try_recv() {
                if !interrupted && interrupt_at.is_some_and(|m| line.contains(m)) {
                    signal_group(pgid, "-INT");
                    interrupted = true;
                }
                text.push_str(&line);
                text.push('\n');
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > DEADLINE {
                kill_hung(&mut child, pgid);
                panic!("packer {args:?} hung for {DEADLINE:?}; output so far:\n{text}\n{}", self.log(log));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        out_thread.join().unwrap();
        text.extend(rx.try_iter().map(|l| l + "\n"));
        text.push_str(&err_thread.join().unwrap());
        assert!(interrupted, "`{}` never appeared in packer's output:\n{text}", interrupt_at.unwrap_or(""));
        Run { status, text }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

fn signal_group(pgid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, "--", &format!("-{pgid}")]).status().unwrap();
    assert!(ok.success(), "kill {sig} -{pgid} failed");
}

fn kill_hung(child: &mut Child, pgid: u32) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
    let _ = child.wait();
}

/// One CMK per region behind `alias/amikey-demo`, as a producer account has.
fn seed_keys(m: &Moto) -> BTreeMap<String, String> {
    block_on(async {
        let aws = m.aws(None).await;
        let mut keys = BTreeMap::new();
        for r in REGIONS {
            keys.insert(r.to_string(), create_key(&aws, r, ALIAS).await);
        }
        keys
    })
}

/// `name → value` of the parameters under `path` in `region`.
async fn params(aws: &Aws, region: &str, path: &str) -> BTreeMap<String, String> {
    let out = aws.ssm(region).get_parameters_by_path().path(path).recursive(true).send().await.unwrap();
    out.parameters()
        .iter()
        .map(|p| (p.name().unwrap_or("").to_string(), p.value().unwrap_or("").to_string()))
        .collect()
}

/// AMIs named `name` owned by the producer in `region`: image id → snapshot ids.
async fn amis_named(aws: &Aws, region: &str, name: &str) -> BTreeMap<String, Vec<String>> {
    let out = aws
        .ec2(region)
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("name").values(name).build())
        .send()
        .await
        .unwrap();
    out.images()
        .iter()
        .map(|i| {
            let snaps = i
                .block_device_mappings()
                .iter()
                .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
                .collect();
            (i.image_id().unwrap().to_string(), snaps)
        })
        .collect()
}

async fn launch_users(aws: &Aws, region: &str, ami: &str) -> Vec<String> {
    amikey::aws::gather::launch_permissions(aws, region, ami).await.unwrap().users.into_iter().collect()
}

async fn volume_users(aws: &Aws, region: &str, snap: &str) -> Vec<String> {
    amikey::aws::gather::snapshot_users(aws, region, snap).await.unwrap().into_iter().collect()
}

async fn snapshot_key(aws: &Aws, region: &str, snap: &str) -> Option<String> {
    let s = aws.ec2(region).describe_snapshots().snapshot_ids(snap).send().await.unwrap();
    s.snapshots().first().and_then(|s| s.kms_key_id()).map(str::to_string)
}

/// The three parameters amikey publishes under `path`.
fn param_names(path: &str) -> Vec<String> {
    ["image_id", "kms_key_arn", "snapshot_ids"].iter().map(|n| format!("{path}/{n}")).collect()
}

/// Asserts a good build's outcome: in each region one AMI named `ami_name`, every snapshot under
/// the region's CMK, shared with the consumer (launch + createVolumePermission), and the SSM
/// parameters under `ssm_path` in the producer (and, if `consumer_params`, the consumer) account.
fn assert_published(
    m: &Moto,
    keys: &BTreeMap<String, String>,
    ami_name: &str,
    ssm_path: &str,
    consumer_params: bool,
) {
    block_on(async {
        let producer = m.aws(None).await;
        let consumer = m.aws(Some(CONSUMER)).await;
        for r in REGIONS {
            let amis = amis_named(&producer, r, ami_name).await;
            assert_eq!(amis.len(), 1, "{r}: AMIs named {ami_name}: {amis:?}");
            let (ami, snaps) = amis.into_iter().next().unwrap();
            assert!(!snaps.is_empty(), "{r} {ami}: no snapshots");
            assert_eq!(launch_users(&producer, r, &ami).await, [CONSUMER], "{r} {ami} launch permission");
            for s in &snaps {
                assert_eq!(
                    snapshot_key(&producer, r, s).await.as_deref(),
                    Some(keys[r].as_str()),
                    "{r} {s} key"
                );
                assert_eq!(volume_users(&producer, r, s).await, [CONSUMER], "{r} {s} createVolumePermission");
            }
            let mut accounts = vec![("producer", &producer)];
            if consumer_params {
                accounts.push(("consumer", &consumer));
            }
            for (who, aws) in accounts {
                let p = params(aws, r, ssm_path).await;
                assert_eq!(p.keys().cloned().collect::<Vec<_>>(), param_names(ssm_path), "{who} {r}: {p:?}");
                assert_eq!(p[&format!("{ssm_path}/image_id")], ami, "{who} {r}");
                assert_eq!(p[&format!("{ssm_path}/kms_key_arn")], keys[r], "{who} {r}");
                let mut published: Vec<&str> = p[&format!("{ssm_path}/snapshot_ids")].split(',').collect();
                published.sort_unstable();
                let mut want: Vec<&str> = snaps.iter().map(String::as_str).collect();
                want.sort_unstable();
                assert_eq!(published, want, "{who} {r} snapshot_ids");
            }
            if !consumer_params {
                assert!(
                    params(&consumer, r, ssm_path).await.is_empty(),
                    "consumer {r}: unexpected parameters"
                );
            }
        }
    });
}

fn assert_no_params(m: &Moto, path: &str) {
    block_on(async {
        let producer = m.aws(None).await;
        let consumer = m.aws(Some(CONSUMER)).await;
        for r in REGIONS {
            assert!(params(&producer, r, path).await.is_empty(), "producer {r}: parameters under {path}");
            assert!(params(&consumer, r, path).await.is_empty(), "consumer {r}: parameters under {path}");
        }
    });
}

fn assert_validates(w: &Workdir, template: &str) {
    let v = w.run(&["validate", "-var-file=vars.json", template], "validate.log");
    // Packer 1.6.6 in HCL2 mode exits 0 even when a plugin fails to load: read the output too.
    assert!(v.status.success(), "validate {template}:\n{}", v.text);
    assert!(!v.text.to_lowercase().contains("error"), "validate {template}:\n{}", v.text);
    // (1.6.6 prints nothing at all for a valid template, JSON or HCL2.)
    assert!(v.text.trim().is_empty(), "validate {template}:\n{}", v.text);
    let log = w.log("validate.log");
    assert!(log.contains("packer-post-processor-amikey plugin:"), "amikey never started:\n{log}");
}

fn assert_plugin_did_not_panic(w: &Workdir, log: &str) {
    let l = w.log(log);
    assert!(
        !l.lines().any(|x| x.contains("packer-post-processor-amikey plugin:") && x.contains("panicked")),
        "the plugin panicked:\n{l}"
    );
}

#[test]
fn hcl2_build_verifies_shares_and_publishes_in_three_regions() {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let Some(w) = Workdir::new(&m.endpoint, &keys) else { return };
    w.template("packer-examples/moto/amazon-ebs.pkr.hcl", "amazon-ebs.pkr.hcl", &[]);
    assert_validates(&w, "amazon-ebs.pkr.hcl");

    let b = w.run(&["build", "-color=false", "-var-file=vars.json", "amazon-ebs.pkr.hcl"], "build.log");
    assert!(b.status.success(), "build failed:\n{}\n{}", b.text, w.log("build.log"));
    assert!(b.text.contains("Running post-processor:  (type amikey)"), "{}", b.text);
    assert!(b.text.contains("amikey verified 3 AMI(s)"), "{}", b.text);
    assert_plugin_did_not_panic(&w, "build.log");
    assert_published(&m, &keys, "amikey-demo-base", "/amikey-demo/base", true);

    // The manifest post-processor (its own chain in HCL2) recorded the builder's region:ami pairs.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("packer-manifest.json")).unwrap()).unwrap();
    let id = manifest["builds"][0]["artifact_id"].as_str().unwrap();
    let regions: Vec<&str> = id.split(',').map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(regions, ["eu-west-1", "us-east-1", "us-west-2"], "{id}");
}

#[test]
fn json_build_verifies_shares_and_publishes() {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let Some(w) = Workdir::new(&m.endpoint, &keys) else { return };
    w.template("packer-examples/moto/amazon-ebs.json", "amazon-ebs.json", &[]);
    assert_validates(&w, "amazon-ebs.json");

    let b = w.run(&["build", "-color=false", "-var-file=vars.json", "amazon-ebs.json"], "build.log");
    assert!(b.status.success(), "build failed:\n{}\n{}", b.text, w.log("build.log"));
    assert!(b.text.contains("amikey verified 3 AMI(s)"), "{}", b.text);
    assert_plugin_did_not_panic(&w, "build.log");
    assert_published(&m, &keys, "amikey-demo-base-json", "/amikey-demo/base-json", false);
}

/// The `AWS_MANAGED_KEY` line of amikey's report: `(region, snapshot id)`.
fn aws_managed_finding(text: &str) -> (String, String) {
    let line = text
        .lines()
        .find(|l| l.contains("AWS_MANAGED_KEY:"))
        .unwrap_or_else(|| panic!("no AWS_MANAGED_KEY finding:\n{text}"));
    let region = REGIONS.iter().find(|r| line.contains(*r)).map(|r| r.to_string()).unwrap_or_default();
    let snap = line
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|t| t.starts_with("snap-"))
        .unwrap_or_else(|| panic!("no snapshot id in {line:?}"))
        .to_string();
    (region, snap)
}

#[test]
fn a_region_left_on_aws_ebs_fails_the_build_naming_region_and_snapshot() {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let Some(w) = Workdir::new(&m.endpoint, &keys) else { return };
    w.template("tests/fixtures/e2e/amazon-ebs-aws-managed.pkr.hcl", "broken.pkr.hcl", &[]);
    assert_validates(&w, "broken.pkr.hcl");

    let b = w.run(&["build", "-color=false", "-var-file=vars.json", "broken.pkr.hcl"], "build.log");
    assert!(!b.status.success(), "the build should fail:\n{}", b.text);
    assert!(b.text.contains("Post-processor failed"), "{}", b.text);
    assert!(b.text.contains("nothing was shared or published"), "{}", b.text);
    let (region, snap) = aws_managed_finding(&b.text);
    assert_eq!(region, "eu-west-1", "{}", b.text);
    assert!(snap.len() > "snap-".len() && snap[5..].chars().all(|c| c.is_ascii_hexdigit()), "{snap}");
    // Only eu-west-1 is wrong (Packer prints the error twice: as it happens and in the summary).
    let wrong: Vec<&str> = b.text.lines().filter(|l| l.contains("AWS_MANAGED_KEY:")).collect();
    assert!(wrong.iter().all(|l| l.contains("eu-west-1") && l.contains(&snap)), "{wrong:?}");
    assert!(b.text.contains("ok   us-east-1") && b.text.contains("ok   us-west-2"), "{}", b.text);
    assert_plugin_did_not_panic(&w, "build.log");
    assert_no_params(&m, "/amikey-demo/broken");
    // Packer destroyed the builder's AMIs after the post-processor error (docs/protocol.md §5).
    block_on(async {
        let aws = m.aws(None).await;
        for r in REGIONS {
            assert!(amis_named(&aws, r, "amikey-demo-broken").await.is_empty(), "{r}: AMI kept");
        }
    });
}

#[test]
fn on_violation_warn_keeps_the_amis_reports_and_publishes_nothing() {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let Some(w) = Workdir::new(&m.endpoint, &keys) else { return };
    w.template(
        "tests/fixtures/e2e/amazon-ebs-aws-managed.pkr.hcl",
        "warn.pkr.hcl",
        &[(
            r#"ssm_path       = "/amikey-demo/broken""#,
            "ssm_path       = \"/amikey-demo/broken\"\n    on_violation   = \"warn\"",
        )],
    );
    assert_validates(&w, "warn.pkr.hcl");

    let b = w.run(&["build", "-color=false", "-var-file=vars.json", "warn.pkr.hcl"], "build.log");
    assert!(b.status.success(), "on_violation = warn must not fail the build:\n{}", b.text);
    assert!(b.text.contains("on_violation = \"warn\""), "{}", b.text);
    let (region, _) = aws_managed_finding(&b.text);
    assert_eq!(region, "eu-west-1");
    assert!(b.text.contains("amikey: NOT verified"), "{}", b.text);
    assert_no_params(&m, "/amikey-demo/broken");
    block_on(async {
        let aws = m.aws(None).await;
        for r in REGIONS {
            let amis = amis_named(&aws, r, "amikey-demo-broken").await;
            assert_eq!(amis.len(), 1, "{r}: the AMI must be kept: {amis:?}");
            let (ami, _) = amis.into_iter().next().unwrap();
            assert!(launch_users(&aws, r, &ami).await.is_empty(), "{r}: shared despite the finding");
        }
    });
}

/// A relay in front of the harness's moto adding `delay_ms` to every call (amikey's endpoint
/// only; the builder stays direct). Killed when dropped.
struct Relay {
    endpoint: String,
    child: Child,
}

impl Relay {
    fn start(upstream: &str, delay_ms: u32, dir: &Path) -> Relay {
        let py = std::env::var_os("AMIKEY_MOTO_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_path(".venv-moto/bin/python"));
        let port_file = dir.join("relay.port");
        let child = Command::new(py)
            .arg(repo_path("tests/moto/relay.py"))
            .args(["--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .args(["--upstream", upstream, "--delay", &format!("{delay_ms}-{delay_ms}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start relay.py");
        // Owned by the guard from here on: killed and reaped on every path, panics included.
        let mut relay = Relay { endpoint: String::new(), child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(port) =
                std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse::<u16>().ok())
            {
                relay.endpoint = format!("http://127.0.0.1:{port}");
                return relay;
            }
            assert!(Instant::now() < deadline, "relay.py did not start within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the good HCL2 template with amikey behind a 2 s relay and sends SIGINT to Packer's
/// process group when `interrupt_at` appears; returns Packer's output.
fn interrupted_build(m: &Moto, keys: &BTreeMap<String, String>, interrupt_at: &str) -> String {
    let w = Workdir::new(&m.endpoint, keys).expect("checked by the caller");
    let relay = Relay::start(&m.endpoint, 2000, w.dir.path());
    let pp_endpoint = format!("endpoint_url = \"{}\"", relay.endpoint);
    w.template(
        "packer-examples/moto/amazon-ebs.pkr.hcl",
        "slow.pkr.hcl",
        &[("endpoint_url = var.endpoint", pp_endpoint.as_str())],
    );
    let started = Instant::now();
    let b = w.run_until(
        &["build", "-color=false", "-var-file=vars.json", "slow.pkr.hcl"],
        "build.log",
        Some(interrupt_at),
    );
    eprintln!("interrupted at {interrupt_at:?}: packer exited after {:?}", started.elapsed());
    assert!(!b.status.success(), "an interrupted build must not succeed:\n{}", b.text);
    assert!(
        b.text.contains("Cleanly cancelled builds after being interrupted."),
        "not a clean cancel:\n{}\n{}",
        b.text,
        w.log("build.log")
    );
    assert!(b.text.contains("cancelled"), "{}", b.text);
    assert_plugin_did_not_panic(&w, "build.log");
    let log = w.log("build.log");
    assert!(
        log.contains("PostProcessor.Cancel") || log.contains("cancel received"),
        "no Cancel seen:\n{log}"
    );
    drop(relay);
    b.text
}

/// Per account and region: all three parameters or none; publish-account parameters only for an
/// AMI shared with that account. Returns how many (account, region) sets were written.
fn assert_all_or_nothing(m: &Moto, path: &str) -> usize {
    block_on(async {
        let producer = m.aws(None).await;
        let consumer = m.aws(Some(CONSUMER)).await;
        let mut written = 0;
        for r in REGIONS {
            for (who, aws) in [("producer", &producer), ("consumer", &consumer)] {
                let p = params(aws, r, path).await;
                if p.is_empty() {
                    continue;
                }
                assert_eq!(
                    p.keys().cloned().collect::<Vec<_>>(),
                    param_names(path),
                    "{who} {r}: half-written: {p:?}"
                );
                if who == "consumer" {
                    let ami = &p[&format!("{path}/image_id")];
                    assert_eq!(
                        launch_users(&producer, r, ami).await,
                        [CONSUMER],
                        "{r}: consumer parameter for an unshared AMI"
                    );
                }
                written += 1;
            }
        }
        written
    })
}

#[test]
fn sigint_while_amikey_verifies_cancels_cleanly_and_writes_nothing() {
    if packer_on_path().is_none() {
        eprintln!("SKIP: `packer` not found on PATH; the real-Packer end-to-end tests did not run");
        return;
    }
    let m = Moto::take();
    let keys = seed_keys(&m);
    // amikey's own first line, said just before its first AWS read: interrupting on Packer's
    // "Running post-processor" line instead races with the plugin's start-up.
    let text = interrupted_build(&m, &keys, "Checking 3 AMI(s)");
    assert!(!text.contains("Applying "), "amikey reached the write phase:\n{text}");
    assert!(text.contains("Post-processor failed: cancelled"), "{text}");
    assert_eq!(assert_all_or_nothing(&m, "/amikey-demo/base"), 0, "{text}");
}

#[test]
fn sigint_while_amikey_writes_lets_writes_in_flight_finish_and_starts_no_new_one() {
    if packer_on_path().is_none() {
        eprintln!("SKIP: `packer` not found on PATH; the real-Packer end-to-end tests did not run");
        return;
    }
    let m = Moto::take();
    let keys = seed_keys(&m);
    // "Applying N change(s)" is said just before the first wave (permissions and the producer's
    // parameters) is sent; the publish account's parameters come in a second wave.
    let text = interrupted_build(&m, &keys, "Applying ");
    let written = assert_all_or_nothing(&m, "/amikey-demo/base");
    eprintln!("parameter sets written before the cancel took effect: {written}");
    assert!(text.contains("not attempted: cancelled"), "the second wave should be skipped:\n{text}");
    // A cancelled amikey fails its step, even though part of its work was done: no success
    // artifact. (The template's `manifest` still runs: in HCL2 each `post-processor` block is a
    // chain of its own, fed by the builder.)
    assert!(text.contains("Post-processor failed: cancelled"), "{text}");
    block_on(async {
        let consumer = m.aws(Some(CONSUMER)).await;
        for r in REGIONS {
            assert!(params(&consumer, r, "/amikey-demo/base").await.is_empty(), "consumer {r}: wave 1 ran");
        }
    });
}
