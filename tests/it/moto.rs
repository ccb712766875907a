//! A patched moto server (tests/moto/server.py, pinned moto 5.2.5 with amikey's fidelity fixes),
//! started once per test binary on a free loopback port; tests that use it are serialised and
//! start from a reset state. Seeding goes through the AWS SDK, as a producer would.
//!
//! Python comes from `AMIKEY_MOTO_PYTHON`, else `.venv-moto/bin/python` (made by `scripts/setup`,
//! through `tests/moto/setup.sh`). Every test that takes the emulator is marked
//! `#[cfg_attr(not(amikey_external), ignore = "external: moto")]` (see `external.rs`): a plain
//! `cargo test` counts it as ignored; under `scripts/test` it runs, and a missing or broken
//! emulator fails it with a message naming `scripts/setup`, never a silent pass.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use amikey::aws::{Aws, AwsOptions};
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice};

pub const ACCOUNT: &str = "123456789012";
pub const CONSUMER: &str = "111122223333";

struct Server {
    endpoint: String,
    _child: Child,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var_os("AMIKEY_MOTO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-moto/bin/python"))
}

fn start() -> Result<Server, String> {
    let py = python();
    if !py.exists() {
        return Err(format!(
            "{} not found: run `scripts/setup` (it makes .venv-moto), or set AMIKEY_MOTO_PYTHON \
             to a Python with tests/moto/requirements.txt installed",
            py.display()
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?.keep();
    let port_file = dir.join("port");
    // The shell wrapper kills moto when this test process exits and its stdin pipe closes.
    let script = format!(
        "{} {} --host 127.0.0.1 --port 0 --port-file {} --min-amis >{}/moto.log 2>&1 & pid=$!; read _; kill $pid",
        py.display(),
        repo().join("tests/moto/server.py").display(),
        port_file.display(),
        dir.display()
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start moto: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(p) = std::fs::read_to_string(&port_file)
            && let Ok(port) = p.trim().parse::<u16>()
        {
            return Ok(Server { endpoint: format!("http://127.0.0.1:{port}"), _child: child });
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("moto.log")).unwrap_or_default();
            return Err(format!("moto did not start within 60 s:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `POST /moto-api/reset`, over a plain loopback connection (no `curl` needed): Ok on a 200.
fn reset(endpoint: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    write!(
        conn,
        "POST /moto-api/reset HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).map_err(|e| format!("read: {e}"))?;
    let status = answer.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") { Ok(()) } else { Err(format!("answered {status:?}")) }
}

/// One test's exclusive use of the reset emulator.
pub struct Moto {
    pub endpoint: String,
    pub dir: tempfile::TempDir,
    _guard: MutexGuard<'static, ()>,
}

impl Moto {
    /// Takes the emulator for this test and resets it.
    pub fn take() -> Moto {
        let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let server = match SERVER.get_or_init(start) {
            Ok(s) => s,
            Err(e) => {
                panic!("moto emulator unavailable (this test drives it and cannot pass without it): {e}")
            }
        };
        if let Err(e) = reset(&server.endpoint) {
            panic!(
                "moto reset at {} failed: {e}; run `scripts/setup` and see tests/moto/README.md",
                server.endpoint
            )
        }
        Moto { endpoint: server.endpoint.clone(), dir: tempfile::tempdir().unwrap(), _guard: guard }
    }

    /// The call log file the CLI writes for this test.
    pub fn call_log(&self) -> PathBuf {
        self.dir.path().join("calls.jsonl")
    }

    /// Operations logged so far (`Service:Operation`), in order.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.call_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Clears the call log.
    pub fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.call_log());
    }

    /// The amikey CLI with this emulator and static test credentials in its environment.
    pub fn amikey(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_amikey"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AMIKEY_CALL_LOG", self.call_log());
        c
    }

    /// An SDK connection as the producer (or, with `account`, as that account by assumed role).
    /// Temporary credentials (access key, secret, session token) of an assumed-role session:
    /// moto maps them to the role's account, so a process given them acts as that account.
    pub async fn session_credentials(&self, role_arn: &str, session: &str) -> (String, String, String) {
        let conf = aws_sdk_sts::config::Builder::new()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        let out = aws_sdk_sts::Client::from_conf(conf)
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session)
            .send()
            .await
            .unwrap();
        let c = out.credentials().unwrap();
        (c.access_key_id().to_string(), c.secret_access_key().to_string(), c.session_token().to_string())
    }

    /// Puts the String parameter `name` = `value` in `account`'s `region` (overwriting), as a
    /// producer's publish puts it there.
    pub async fn put_parameter(&self, account: &str, region: &str, name: &str, value: &str) {
        self.aws(Some(account))
            .await
            .ssm(region)
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }

    pub async fn aws(&self, account: Option<&str>) -> Aws {
        let opts = AwsOptions {
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.endpoint.clone()),
            access_key: Some("testing".into()),
            secret_key: Some("testing".into()),
            max_attempts: 2,
            ..Default::default()
        };
        let aws = Aws::connect(&opts, "us-east-1").await;
        match account {
            Some(a) => aws.assume(&format!("arn:aws:iam::{a}:role/amikey-test"), None, None).await,
            None => aws,
        }
    }
}

/// How a seeded volume is encrypted.
#[derive(Debug, Clone)]
pub enum Enc {
    /// With this CMK (ARN, id or alias).
    Key(String),
    /// With the region's AWS managed `aws/ebs` key.
    AwsManaged,
    /// Not at all.
    None,
}

/// Creates a CMK with an alias in `region`; returns its ARN.
pub async fn create_key(aws: &Aws, region: &str, alias: &str) -> String {
    let kms = aws.kms(region);
    let k = kms.create_key().description("amikey test").send().await.unwrap();
    let arn = k.key_metadata().unwrap().arn().unwrap().to_string();
    kms.create_alias().alias_name(alias).target_key_id(&arn).send().await.unwrap();
    arn
}

/// Creates a multi-Region primary in `primary` and replicas in `replicas`; returns region → ARN.
pub async fn create_mrk(
    aws: &Aws,
    primary: &str,
    replicas: &[&str],
) -> std::collections::BTreeMap<String, String> {
    let k = aws.kms(primary).create_key().multi_region(true).send().await.unwrap();
    let meta = k.key_metadata().unwrap();
    let mut out = std::collections::BTreeMap::from([(primary.to_string(), meta.arn().unwrap().to_string())]);
    for r in replicas {
        let rep =
            aws.kms(primary).replicate_key().key_id(meta.key_id()).replica_region(*r).send().await.unwrap();
        out.insert(r.to_string(), rep.replica_key_metadata().unwrap().arn().unwrap().to_string());
    }
    out
}

/// Builds an AMI in `region` with one EBS volume per entry (`/dev/xvda` first), each encrypted
/// as asked, the way AWS would: CreateVolume → CreateSnapshot → RegisterImage.
pub async fn create_ami(aws: &Aws, region: &str, volumes: &[(&str, Enc)]) -> (String, Vec<String>) {
    let ec2 = aws.ec2(region);
    let mut mappings = Vec::new();
    let mut snaps = Vec::new();
    for (device, enc) in volumes {
        let mut v = ec2.create_volume().availability_zone(format!("{region}a")).size(8);
        match enc {
            Enc::Key(k) => v = v.encrypted(true).kms_key_id(k),
            Enc::AwsManaged => {
                let ebs = aws.kms(region).describe_key().key_id("alias/aws/ebs").send().await.unwrap();
                v = v.encrypted(true).kms_key_id(ebs.key_metadata().unwrap().arn().unwrap());
            }
            Enc::None => {}
        }
        let vol = v.send().await.unwrap();
        let snap = ec2.create_snapshot().volume_id(vol.volume_id().unwrap()).send().await.unwrap();
        let sid = snap.snapshot_id().unwrap().to_string();
        mappings.push(
            BlockDeviceMapping::builder()
                .device_name(*device)
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(&sid)
                        .volume_size(8)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        );
        snaps.push(sid);
    }
    let name = format!("amikey-test-{}", snaps.join("-"));
    let img = ec2
        .register_image()
        .name(name)
        .root_device_name("/dev/xvda")
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .virtualization_type("hvm")
        .set_block_device_mappings(Some(mappings))
        .send()
        .await
        .unwrap();
    (img.image_id().unwrap().to_string(), snaps)
}

/// Runs `cmd`, returning (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run amikey");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses JSON stdout.
pub fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

#[allow(dead_code)]
pub fn repo_path(p: &str) -> PathBuf {
    repo().join(Path::new(p))
}

/// A `tests/moto/relay.py` in front of this test's moto (latency, throttling, faults), with its
/// call log; killed on drop.
pub struct Relay {
    pub endpoint: String,
    pub log: PathBuf,
    child: Child,
}

impl Relay {
    /// Starts a relay to `m`'s moto with extra relay flags (e.g. `--throttle 0.15 --seed 1`).
    pub fn start(m: &Moto, args: &[&str]) -> Relay {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let port_file = m.dir.path().join(format!("relay-{n}.port"));
        let log = m.dir.path().join(format!("relay-{n}.jsonl"));
        let child = Command::new(python())
            .arg(repo().join("tests/moto/relay.py"))
            .args(["--listen", "127.0.0.1:0", "--upstream", &m.endpoint, "--port-file"])
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start relay.py");
        let mut relay = Relay { endpoint: String::new(), log, child };
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

    /// The relay's call log so far (ts, service, region, action, status, ms, fault, ...).
    pub fn calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The relay's live thread count (Linux `/proc`). Each client connection has a handler
    /// thread that logs its request before it ends, so once the client is gone and the count is
    /// back to the idle count, every request it sent has been answered and logged.
    pub fn threads(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Relay {
    /// Waits until the relay is back to `idle` threads (see [`Relay::threads`]): every request a
    /// client had sent is answered and logged. Fails the test after `within`.
    pub fn wait_idle(&self, idle: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.threads() > idle {
            assert!(Instant::now() < deadline, "the relay still has requests in flight after {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
