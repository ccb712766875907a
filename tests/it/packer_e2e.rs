//! End to end with a real Packer and its real `amazon-ebs` builder against the patched moto
//! emulator: three regions, a CMK per region (`alias/amikey-demo`), `ami_users`,
//! `snapshot_users`, and the amikey plugin (debug build) in the post-processor chain. After each
//! build the emulator is inspected through the AWS SDK.
//!
//! This module holds the machinery and the scenarios; its own tests run them on Debian's Packer
//! 1.6.6 with the plugin installed under its legacy name `packer-post-processor-amikey`.
//! `packer_modern.rs` runs the same scenarios on Packer 1.9.4 with `required_plugins` (bundled
//! and current amazon plugin). Both are external-part tests (`tests/it/external.rs`): without
//! the Packer binary they are listed as ignored, and under `scripts/test` a missing one fails.
//!
//! The templates are the ones users read: `packer-examples/moto/` (1.6.6) and
//! `packer-examples/moto/modern/` (1.7+). The failing variant ("a region left on `aws/ebs`") is
//! derived from them by [`aws_managed`]; `tests/fixtures/e2e/amazon-ebs-aws-managed.pkr.hcl`
//! (used by `scripts/demo`) is that derivation, checked by a test. Packer runs with an
//! `env -i`-style environment (static keys in the template, IMDS disabled, checkpoint off);
//! every run has a generous deadline that only catches hangs.
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

use crate::external::require;
use crate::moto::{CONSUMER, Moto, Relay, create_key, repo_path};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_packer-plugin-amikey");
pub const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "us-west-2"];
const ALIAS: &str = "alias/amikey-demo";
/// Only catches hangs: a direct build takes a few seconds (tens with the current amazon plugin).
const DEADLINE: Duration = Duration::from_secs(300);

/// The 1.6.6 templates and their 1.7+ twins (the same build plus `required_plugins`).
pub const LEGACY_HCL: &str = "packer-examples/moto/amazon-ebs.pkr.hcl";
pub const MODERN_HCL: &str = "packer-examples/moto/modern/amazon-ebs.pkr.hcl";
pub const JSON: &str = "packer-examples/moto/amazon-ebs.json";
const AWS_MANAGED_FIXTURE: &str = "tests/fixtures/e2e/amazon-ebs-aws-managed.pkr.hcl";

/// The Go peer binary of the current amazon plugin (tests/peers/amazon, built by scripts/setup).
pub const AMAZON_PEER: &str = "packer-plugin-amazon_v1.8.2";

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// How Packer finds amikey (and the builder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// Packer 1.6.x: the single-component binary `packer-post-processor-amikey` in the
    /// `PACKER_PLUGIN_PATH` folder.
    LegacyName,
    /// Packer 1.7+: what `packer init` installs for `required_plugins`,
    /// `<folder>/github.com/amikey/amikey/packer-plugin-amikey_v<version>_<api>_linux_amd64` with
    /// its `_SHA256SUM`. With `amazon`, packer-plugin-amazon v1.8.2 is installed the same way
    /// under `github.com/hashicorp/amazon`, so its `amazon-ebs` replaces the bundled one.
    Required { amazon: bool },
}

/// A Packer binary and the install path it is driven through.
#[derive(Clone, Debug)]
pub struct Packer {
    pub bin: PathBuf,
    pub install: Install,
}

impl Packer {
    /// Debian's Packer 1.6.6 (`packer` on PATH), legacy plugin name.
    pub fn legacy() -> Packer {
        Packer { bin: require("packer"), install: Install::LegacyName }
    }

    /// Packer 1.9.4 built by scripts/setup (`packer-1.9.4`), `required_plugins` layout.
    pub fn v1_9_4(amazon: bool) -> Packer {
        Packer { bin: require("packer-1.9.4"), install: Install::Required { amazon } }
    }

    pub fn modern(&self) -> bool {
        self.install != Install::LegacyName
    }

    /// The HCL2 example this Packer runs: the 1.6.6 one, or its 1.7+ twin; with the external
    /// amazon plugin, that plugin is declared in `required_plugins` too.
    pub fn hcl_example(&self) -> String {
        match self.install {
            Install::LegacyName => example(LEGACY_HCL),
            Install::Required { amazon: false } => example(MODERN_HCL),
            Install::Required { amazon: true } => edit(
                &example(MODERN_HCL),
                &[(
                    "  required_plugins {\n",
                    "  required_plugins {\n    amazon = {\n      source  = \"github.com/hashicorp/amazon\"\n      version = \"= 1.8.2\"\n    }\n",
                )],
            ),
        }
    }
}

/// A Packer working directory: plugins, empty HOME, var-file with the emulator and the keys.
pub struct Workdir {
    pub dir: tempfile::TempDir,
    pub packer: Packer,
    /// The plugin binary's file name: Packer prefixes the plugin's log lines with it.
    pub plugin_name: String,
    endpoint: String,
}

pub struct Run {
    pub status: ExitStatus,
    /// stdout then stderr.
    pub text: String,
}

/// `version` and `api_version` from a plugin's `describe`.
pub fn describe(bin: &Path) -> (String, String) {
    let out = Command::new(bin).arg("describe").output().expect("run describe");
    assert!(out.status.success(), "{} describe failed: {out:?}", bin.display());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("describe prints JSON");
    let field = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("describe has no {k}: {v}")).to_string();
    (field("version"), field("api_version"))
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// Installs `bin` as `packer init` does for `required_plugins` source `source` (host/ns/type):
/// `<plugins>/<source>/packer-plugin-<type>_v<version>_<api>_linux_amd64` plus `_SHA256SUM`
/// holding the hex digest. Returns the file name.
pub fn install_required(plugins: &Path, source: &str, bin: &Path) -> String {
    let (version, api) = describe(bin);
    let kind = source.rsplit('/').next().unwrap();
    let name = format!("packer-plugin-{kind}_v{version}_{api}_linux_amd64");
    let dir = plugins.join(source);
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join(&name);
    std::fs::copy(bin, &dest).unwrap();
    std::fs::write(dir.join(format!("{name}_SHA256SUM")), sha256_hex(&dest)).unwrap();
    name
}

impl Workdir {
    pub fn new(packer: &Packer, endpoint: &str, keys: &BTreeMap<String, String>) -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        let plugin_name = match packer.install {
            Install::LegacyName => {
                std::fs::copy(PLUGIN, plugins.join("packer-post-processor-amikey")).unwrap();
                "packer-post-processor-amikey".to_string()
            }
            Install::Required { amazon } => {
                if amazon {
                    install_required(&plugins, "github.com/hashicorp/amazon", &require(AMAZON_PEER));
                }
                install_required(&plugins, "github.com/amikey/amikey", Path::new(PLUGIN))
            }
        };
        std::fs::create_dir(dir.path().join("home")).unwrap();
        let vars = serde_json::json!({
            "endpoint": endpoint,
            "kms_us_east_1": keys["us-east-1"],
            "kms_us_west_2": keys["us-west-2"],
            "kms_eu_west_1": keys["eu-west-1"],
        });
        std::fs::write(dir.path().join("vars.json"), vars.to_string()).unwrap();
        Workdir { dir, packer: packer.clone(), plugin_name, endpoint: endpoint.to_string() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a template into the working directory.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    /// Every file under `plugins/`, relative, sorted.
    pub fn plugin_files(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path("plugins"), &self.path("plugins"), &mut out);
        out.sort();
        out
    }

    fn command(&self, args: &[&str], log: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(&self.packer.bin);
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
            // The templates point EC2 at the emulator (`custom_endpoint_ec2`). The amazon plugin
            // v1.8.2 also checks the credentials with STS (no template setting for its endpoint),
            // and its region copies ignore `custom_endpoint_ec2`: its AWS SDK for Go v2 takes
            // both endpoints from the environment. amikey's own `endpoint_url` takes precedence
            // over these; the Go SDK v1 of 1.6.6 and of the bundled v1.2.1 ignores them.
            .env("AWS_ENDPOINT_URL_STS", &self.endpoint)
            .env("AWS_ENDPOINT_URL_EC2", &self.endpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, as a terminal job: SIGINT goes to Packer and its plugins.
            .process_group(0);
        c
    }

    /// Runs Packer to the end (or the hang deadline).
    pub fn run(&self, args: &[&str], log: &str) -> Run {
        self.run_until(args, log, None)
    }

    /// `packer build -color=false -var-file=vars.json TEMPLATE`, logging to build.log.
    pub fn build(&self, template: &str) -> Run {
        self.run(&["build", "-color=false", "-var-file=vars.json", template], "build.log")
    }

    /// Runs Packer; when a stdout line contains `interrupt_at`, sends SIGINT to its process group
    /// (what Ctrl-C in a terminal does).
    pub fn run_until(&self, args: &[&str], log: &str, interrupt_at: Option<&str>) -> Run {
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

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Packer's log lines from the amikey plugin process.
    pub fn plugin_lines(&self, log: &str) -> Vec<String> {
        let prefix = format!("{} plugin:", self.plugin_name);
        self.log(log).lines().filter(|l| l.contains(&prefix)).map(str::to_string).collect()
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

// ---------------------------------------------------------------------------------------------
// Templates: the examples, and variants derived from them.

/// A repository file's text.
pub fn example(repo_rel: &str) -> String {
    std::fs::read_to_string(repo_path(repo_rel)).unwrap_or_else(|e| panic!("{repo_rel}: {e}"))
}

/// `text` with each `from` replaced by `to`; each must occur exactly once, so a change to the
/// example that an edit no longer fits fails here, by name.
pub fn edit(text: &str, edits: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "the template should contain {from:?} once:\n{text}");
        text = text.replacen(from, to, 1);
    }
    text
}

/// The example build with a classic mistake: the copy to eu-west-1 is encrypted with the AWS
/// managed key `aws/ebs`, and nothing is shared by the builder (Packer itself refuses to share
/// `aws/ebs` snapshots, so the mistake slips through the build and only amikey catches it).
pub fn aws_managed(example_text: &str) -> String {
    let header = "# Derived from the example amazon-ebs.pkr.hcl by tests/it/packer_e2e.rs (aws_managed); a test\n\
                  # keeps this copy equal to the derivation. The same build with a classic mistake: the copy to\n\
                  # eu-west-1 is encrypted with the AWS managed key aws/ebs. amikey fails the build, naming region,\n\
                  # AMI, snapshot, the key found and the key expected, and shares and publishes nothing.\n\n";
    let text = edit(
        example_text,
        &[
            (r#"ami_name      = "amikey-demo-base""#, r#"ami_name      = "amikey-demo-broken""#),
            (
                "    \"eu-west-1\" = var.kms_eu_west_1\n  }\n  ami_users      = [var.consumer_account]\n  snapshot_users = [var.consumer_account]\n",
                "    \"eu-west-1\" = \"\" # the mistake: the copy to eu-west-1 gets the AWS managed aws/ebs key\n  }\n",
            ),
            (r#"ssm_path       = "/amikey-demo/base""#, r#"ssm_path       = "/amikey-demo/broken""#),
            (
                "\n  # Record the (passed-through) AMI ids for the CLI steps of scripts/demo.\n  post-processor \"manifest\" {\n    output = \"packer-manifest.json\"\n  }\n",
                "",
            ),
        ],
    );
    format!("{header}{text}")
}

/// `aws_managed` with amikey told to warn instead of failing.
pub fn warn_only(example_text: &str) -> String {
    edit(
        &aws_managed(example_text),
        &[(
            r#"ssm_path       = "/amikey-demo/broken""#,
            "ssm_path       = \"/amikey-demo/broken\"\n    on_violation   = \"warn\"",
        )],
    )
}

/// One CMK per region behind `alias/amikey-demo`, as a producer account has.
pub fn seed_keys(m: &Moto) -> BTreeMap<String, String> {
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
pub async fn params(aws: &Aws, region: &str, path: &str) -> BTreeMap<String, String> {
    let out = aws.ssm(region).get_parameters_by_path().path(path).recursive(true).send().await.unwrap();
    out.parameters()
        .iter()
        .map(|p| (p.name().unwrap_or("").to_string(), p.value().unwrap_or("").to_string()))
        .collect()
}

/// AMIs named `name` owned by the producer in `region`: image id → snapshot ids.
pub async fn amis_named(aws: &Aws, region: &str, name: &str) -> BTreeMap<String, Vec<String>> {
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

pub async fn snapshot_key(aws: &Aws, region: &str, snap: &str) -> Option<String> {
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
pub fn assert_published(
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

pub fn assert_no_params(m: &Moto, path: &str) {
    block_on(async {
        let producer = m.aws(None).await;
        let consumer = m.aws(Some(CONSUMER)).await;
        for r in REGIONS {
            assert!(params(&producer, r, path).await.is_empty(), "producer {r}: parameters under {path}");
            assert!(params(&consumer, r, path).await.is_empty(), "consumer {r}: parameters under {path}");
        }
    });
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

// ---------------------------------------------------------------------------------------------
// Scenarios, each run by a test here (1.6.6) and in packer_modern.rs (1.9.4).

/// `packer init` (1.7+ only): the plugin is already installed where `required_plugins` wants
/// it, so init has nothing to fetch (there is no network) and changes nothing.
pub fn assert_init_is_offline_noop(w: &Workdir, template: &str) {
    let before = w.plugin_files();
    let i = w.run(&["init", template], "init.log");
    assert!(i.status.success(), "packer init {template}:\n{}\n{}", i.text, w.log("init.log"));
    assert!(!i.text.contains("Installed plugin"), "init fetched something:\n{}", i.text);
    assert_eq!(w.plugin_files(), before, "packer init changed the plugin folder:\n{}", i.text);
}

pub fn assert_validates(w: &Workdir, template: &str) {
    let v = w.run(&["validate", "-var-file=vars.json", template], "validate.log");
    // Packer 1.6.6 in HCL2 mode exits 0 even when a plugin fails to load: read the output too.
    assert!(v.status.success(), "validate {template}:\n{}\n{}", v.text, w.log("validate.log"));
    assert!(!v.text.to_lowercase().contains("error"), "validate {template}:\n{}", v.text);
    if w.packer.modern() {
        assert!(v.text.trim().ends_with("The configuration is valid."), "validate {template}:\n{}", v.text);
        // 1.9.4 warns when the bundled amazon plugin serves the builder, and only then.
        let bundled = w.packer.install == (Install::Required { amazon: false });
        assert_eq!(v.text.contains("Bundled plugins used"), bundled, "validate {template}:\n{}", v.text);
    } else {
        // (1.6.6 prints nothing at all for a valid template, JSON or HCL2.)
        assert!(v.text.trim().is_empty(), "validate {template}:\n{}", v.text);
    }
    assert!(!w.plugin_lines("validate.log").is_empty(), "amikey never started:\n{}", w.log("validate.log"));
}

/// init (1.7+) and validate.
pub fn prepare(w: &Workdir, template: &str) {
    if w.packer.modern() && template.ends_with(".pkr.hcl") {
        assert_init_is_offline_noop(w, template);
    }
    assert_validates(w, template);
}

pub fn assert_plugin_did_not_panic(w: &Workdir, log: &str) {
    let panics: Vec<String> = w.plugin_lines(log).into_iter().filter(|l| l.contains("panicked")).collect();
    assert!(panics.is_empty(), "the plugin panicked:\n{}", w.log(log));
}

/// Which `amazon-ebs` ran: the plugin binary that served the builder, from Packer's log.
pub fn assert_builder_from(w: &Workdir, log: &str) {
    let l = w.log(log);
    let external =
        l.contains("Starting external plugin") && l.contains("packer-plugin-amazon_v1.8.2_x5.0_linux_amd64");
    let want = w.packer.install == (Install::Required { amazon: true });
    assert_eq!(external, want, "amazon-ebs from the external plugin v1.8.2: want {want}:\n{l}");
}

pub fn good_hcl2_build(p: &Packer) {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let w = Workdir::new(p, &m.endpoint, &keys);
    w.write("amazon-ebs.pkr.hcl", &p.hcl_example());
    prepare(&w, "amazon-ebs.pkr.hcl");

    let b = w.build("amazon-ebs.pkr.hcl");
    assert!(b.status.success(), "build failed:\n{}\n{}", b.text, w.log("build.log"));
    assert!(b.text.contains("Running post-processor:  (type amikey)"), "{}", b.text);
    assert!(b.text.contains("amikey verified 3 AMI(s)"), "{}", b.text);
    assert_plugin_did_not_panic(&w, "build.log");
    assert_builder_from(&w, "build.log");
    assert_published(&m, &keys, "amikey-demo-base", "/amikey-demo/base", true);

    // The manifest post-processor (its own chain in HCL2) recorded the builder's region:ami pairs.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("packer-manifest.json")).unwrap()).unwrap();
    let id = manifest["builds"][0]["artifact_id"].as_str().unwrap();
    let regions: Vec<&str> = id.split(',').map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(regions, ["eu-west-1", "us-east-1", "us-west-2"], "{id}");
}

/// The legacy JSON template (on 1.7+ amikey is still found in the `required_plugins` layout).
pub fn json_build(p: &Packer) {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let w = Workdir::new(p, &m.endpoint, &keys);
    w.write("amazon-ebs.json", &example(JSON));
    prepare(&w, "amazon-ebs.json");

    let b = w.build("amazon-ebs.json");
    assert!(b.status.success(), "build failed:\n{}\n{}", b.text, w.log("build.log"));
    assert!(b.text.contains("amikey verified 3 AMI(s)"), "{}", b.text);
    assert_plugin_did_not_panic(&w, "build.log");
    assert_published(&m, &keys, "amikey-demo-base-json", "/amikey-demo/base-json", false);
}

pub fn aws_managed_build(p: &Packer) {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let w = Workdir::new(p, &m.endpoint, &keys);
    w.write("broken.pkr.hcl", &aws_managed(&p.hcl_example()));
    prepare(&w, "broken.pkr.hcl");

    let b = w.build("broken.pkr.hcl");
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
    assert_builder_from(&w, "build.log");
    assert_no_params(&m, "/amikey-demo/broken");
    // Packer destroyed the builder's AMIs after the post-processor error.
    block_on(async {
        let aws = m.aws(None).await;
        for r in REGIONS {
            assert!(amis_named(&aws, r, "amikey-demo-broken").await.is_empty(), "{r}: AMI kept");
        }
    });
}

pub fn warn_build(p: &Packer) {
    let m = Moto::take();
    let keys = seed_keys(&m);
    let w = Workdir::new(p, &m.endpoint, &keys);
    w.write("warn.pkr.hcl", &warn_only(&p.hcl_example()));
    prepare(&w, "warn.pkr.hcl");

    let b = w.build("warn.pkr.hcl");
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

/// Builds the good HCL2 template with amikey behind a relay adding 2 s to each of its calls (the
/// builder stays direct) and sends SIGINT to Packer's process group when `interrupt_at`
/// appears; returns Packer's output.
fn interrupted_build(p: &Packer, m: &Moto, keys: &BTreeMap<String, String>, interrupt_at: &str) -> String {
    let w = Workdir::new(p, &m.endpoint, keys);
    let relay = Relay::start(m, &["--delay", "2000-2000"]);
    let pp_endpoint = format!("endpoint_url = \"{}\"", relay.endpoint);
    w.write("slow.pkr.hcl", &edit(&p.hcl_example(), &[("endpoint_url = var.endpoint", &pp_endpoint)]));
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

pub fn sigint_while_verifying(p: &Packer) {
    let m = Moto::take();
    let keys = seed_keys(&m);
    // amikey's own first line, said just before its first AWS read: interrupting on Packer's
    // "Running post-processor" line instead races with the plugin's start-up.
    let text = interrupted_build(p, &m, &keys, "Checking 3 AMI(s)");
    assert!(!text.contains("Applying "), "amikey reached the write phase:\n{text}");
    assert!(text.contains("Post-processor failed: cancelled"), "{text}");
    assert_eq!(assert_all_or_nothing(&m, "/amikey-demo/base"), 0, "{text}");
}

pub fn sigint_while_writing(p: &Packer) {
    let m = Moto::take();
    let keys = seed_keys(&m);
    // "Applying N change(s)" is said just before the first wave (permissions and the producer's
    // parameters) is sent; the publish account's parameters come in a second wave.
    let text = interrupted_build(p, &m, &keys, "Applying ");
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

// ---------------------------------------------------------------------------------------------
// Debian's Packer 1.6.6, plugin under its legacy name.

#[test]
fn aws_managed_fixture_is_the_derivation_of_the_example() {
    let derived = aws_managed(&example(LEGACY_HCL));
    let fixture = example(AWS_MANAGED_FIXTURE);
    assert!(
        fixture == derived,
        "{AWS_MANAGED_FIXTURE} drifted from aws_managed({LEGACY_HCL}); rewrite it with the derivation:\n{derived}"
    );
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.6.6, moto")]
fn hcl2_build_verifies_shares_and_publishes_in_three_regions() {
    good_hcl2_build(&Packer::legacy());
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.6.6, moto")]
fn json_build_verifies_shares_and_publishes() {
    json_build(&Packer::legacy());
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.6.6, moto")]
fn a_region_left_on_aws_ebs_fails_the_build_naming_region_and_snapshot() {
    aws_managed_build(&Packer::legacy());
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.6.6, moto")]
fn on_violation_warn_keeps_the_amis_reports_and_publishes_nothing() {
    warn_build(&Packer::legacy());
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.6.6, moto")]
fn sigint_while_amikey_verifies_cancels_cleanly_and_writes_nothing() {
    sigint_while_verifying(&Packer::legacy());
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.6.6, moto")]
fn sigint_while_amikey_writes_lets_writes_in_flight_finish_and_starts_no_new_one() {
    sigint_while_writing(&Packer::legacy());
}
