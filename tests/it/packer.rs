//! Real Packer, with the null builder: Debian's 1.6.6 (`packer` on PATH) and 1.9.4
//! (`packer-1.9.4`, built by `scripts/setup`), each in a temp dir used as `PACKER_PLUGIN_PATH` and
//! working dir, with an `env -i`-style environment.
//!
//! * The legacy-named binary (`packer-post-processor-amikey`, started with no arguments) on
//!   both: 1.6.6 wants the 3-field handshake and 1.9.4 the 4-field one, and the plugin tells them
//!   apart by the PACKER_LOG/PACKER_LOG_PATH 1.6.x always clears.
//! * `data "amikey-preflight"` on 1.9.4 (gob: 1.9.4 never passes `--protobuf`), on moto: its
//!   outputs feed a `local` that a shell-local post-processor prints; a preflight error fails
//!   `packer build` with amikey's message (1.9.4's `validate` does not execute data sources).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::external;
use crate::moto::{Moto, create_key};

const BIN: &str = env!("CARGO_BIN_EXE_packer-plugin-amikey");

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

struct Env {
    dir: tempfile::TempDir,
    packer: PathBuf,
}

impl Env {
    /// A work dir with the plugin installed under `plugin_name`, driven by the Packer `packer`.
    fn new(packer: &str, plugin_name: &str) -> Env {
        let packer = external::require(packer);
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(BIN, dir.path().join(plugin_name)).unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Env { dir, packer }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, args: &[&str], log: &str) -> (Output, String) {
        let d = self.dir.path();
        let out = Command::new(&self.packer)
            .args(args)
            .current_dir(d)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", d.join("home"))
            .env("PACKER_PLUGIN_PATH", d)
            .env("PACKER_LOG", "1")
            .env("PACKER_LOG_PATH", d.join(log))
            .env("CHECKPOINT_DISABLE", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out, text)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

const JSON: &str = r#"{
  "variables": {"key": "alias/amikey"},
  "builders": [{"type": "null", "communicator": "none"}],
  "post-processors": [{"type": "amikey", "kms_key_id": "{{user `key`}}",
                       "ssm_path": "/amis/{{build_name}}", "max_retries": 2 EXTRA}]
}"#;

const HCL: &str = r#"
source "null" "n" {
  communicator = "none"
}
build {
  sources = ["source.null.n"]
  post-processor "amikey" {
    kms_key_id  = "alias/amikey"
    max_retries = 2
    ami_users   = ["111122223333"]
    ssm_path    = "/amis/${build.ID}"
    EXTRA
  }
}
"#;

fn assert_legacy_plugin_used(env: &Env, log: &str) {
    let l = env.log(log);
    assert!(l.contains("packer-post-processor-amikey plugin:"), "plugin never started:\n{l}");
    assert!(!l.contains("panic"), "{l}");
}

/// JSON and HCL2 validate (good and with a bogus key: the ConfigSpec and Configure reached the
/// plugin) and build up to amikey's "unsupported builder" (PostProcess ran) on `packer`.
fn legacy_named_binary_round(packer: &str) -> Env {
    let env = Env::new(packer, "packer-post-processor-amikey");
    env.write("t.json", &JSON.replace(" EXTRA", ""));
    let (out, text) = env.run(&["validate", "t.json"], "v.log");
    assert!(out.status.success(), "{text}\n{}", env.log("v.log"));
    assert_legacy_plugin_used(&env, "v.log");

    env.write("bad.json", &JSON.replace(" EXTRA", r#", "bogus_key": "x""#));
    let (out, text) = env.run(&["validate", "bad.json"], "vb.log");
    assert!(!out.status.success());
    assert!(text.contains("bogus_key"), "{text}");

    let (out, text) = env.run(&["build", "t.json"], "b.log");
    assert!(!out.status.success());
    assert!(text.contains("unsupported builder \"fnoeding.null\""), "{text}");

    env.write("t.pkr.hcl", &HCL.replace("EXTRA", ""));
    let (out, text) = env.run(&["validate", "t.pkr.hcl"], "hv.log");
    // 1.6.6's HCL2 validate exits 0 even when a plugin fails to load: read the output too.
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("rror"), "{text}");
    assert_legacy_plugin_used(&env, "hv.log");

    env.write("bad.pkr.hcl", &HCL.replace("EXTRA", r#"bogus_key = "x""#));
    let (out, text) = env.run(&["validate", "bad.pkr.hcl"], "hvb.log");
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("bogus_key"), "{text}");

    let (out, text) = env.run(&["build", "t.pkr.hcl"], "hb.log");
    assert!(!out.status.success());
    assert!(text.contains("unsupported builder \"fnoeding.null\""), "{text}");
    // The first Configure carried `<unknown>` for build.ID and passed; the build got this far.
    assert!(Path::new(&env.dir.path().join("hb.log")).exists());
    env
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.6.6")]
fn legacy_named_binary_on_packer_1_6_6_json_and_hcl2() {
    let env = legacy_named_binary_round("packer");
    // 1.6.6 took the 3-field line; the plugin said what to rename on a Packer >= 1.7.
    assert!(env.log("v.log").contains("rename the binary from packer-post-processor-amikey"));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4")]
fn legacy_named_binary_on_packer_1_9_4_json_and_hcl2() {
    let env = legacy_named_binary_round("packer-1.9.4");
    let log = env.log("v.log");
    assert!(!log.contains("rename the binary"), "{log}");
    // 1.9.4 accepted the handshake line (it refuses a 3-field one).
    assert!(
        log.contains("Received unix RPC address for") && log.contains("packer-post-processor-amikey"),
        "{log}"
    );
    assert!(!log.contains("protocol version 4"), "{log}");
}

/// A template whose `amikey-preflight` outputs feed a local printed by shell-local.
fn datasource_template(endpoint: &str, extra: &str) -> String {
    format!(
        r#"
data "amikey-preflight" "keys" {{
  regions      = ["eu-west-1", "us-east-1"]
  kms_key_id   = "alias/images"
  access_key   = "testing"
  secret_key   = "testing"
  region       = "us-east-1"
  endpoint_url = "{endpoint}"
  max_retries  = 2
  {extra}
}}
locals {{
  build_key  = data.amikey-preflight.keys.kms_key_arns["us-east-1"]
  copy_keys  = {{ "eu-west-1" = data.amikey-preflight.keys.kms_key_arns["eu-west-1"] }}
  by_default = data.amikey-preflight.keys.ebs_encryption_by_default["us-east-1"]
}}
source "null" "n" {{
  communicator = "none"
}}
build {{
  sources = ["source.null.n"]
  post-processor "shell-local" {{
    inline = ["echo BUILD_KEY=${{local.build_key}} COPY_KEY=${{local.copy_keys["eu-west-1"]}} DEFAULT=${{local.by_default}}"]
  }}
}}
"#
    )
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, moto")]
fn preflight_data_source_on_packer_1_9_4_gob_feeds_locals() {
    let m = Moto::take();
    let (east, west) = block_on(async {
        let aws = m.aws(None).await;
        (
            create_key(&aws, "us-east-1", "alias/images").await,
            create_key(&aws, "eu-west-1", "alias/images").await,
        )
    });
    let env = Env::new("packer-1.9.4", "packer-plugin-amikey");
    env.write("t.pkr.hcl", &datasource_template(&m.endpoint, ""));
    let (out, text) = env.run(&["validate", "t.pkr.hcl"], "v.log");
    assert!(out.status.success(), "{text}\n{}", env.log("v.log"));
    let (out, text) = env.run(&["build", "t.pkr.hcl"], "b.log");
    let log = env.log("b.log");
    assert!(out.status.success(), "{text}\n{log}");
    assert!(text.contains(&format!("BUILD_KEY={east} COPY_KEY={west} DEFAULT=false")), "{text}");
    // Packer 1.9.4 started the data source without --protobuf (gob) and used its value.
    assert!(log.contains(r#""start", "datasource", "preflight"}"#), "{log}");
    assert!(!log.contains("--protobuf"), "{log}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, moto")]
fn preflight_error_fails_packer_1_9_4_build_with_amikeys_message() {
    let m = Moto::take();
    let east = block_on(async {
        let aws = m.aws(None).await;
        create_key(&aws, "eu-west-1", "alias/images").await;
        create_key(&aws, "us-east-1", "alias/images").await
    });
    let env = Env::new("packer-1.9.4", "packer-plugin-amikey");
    // The us-east-1 key named for eu-west-1: KEY_WRONG_REGION.
    env.write(
        "t.pkr.hcl",
        &datasource_template(&m.endpoint, &format!(r#"region_kms_key_ids = {{ "eu-west-1" = "{east}" }}"#)),
    );
    // 1.9.4's validate starts and configures data sources but does not execute them (a bad
    // block is caught there; a bad key only by Execute): the error surfaces at build.
    let (out, text) = env.run(&["validate", "t.pkr.hcl"], "v.log");
    assert!(out.status.success(), "{text}");
    assert!(env.log("v.log").contains(r#""start", "datasource", "preflight"}"#));
    let (out, text) = env.run(&["build", "t.pkr.hcl"], "b.log");
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("amikey-preflight: the intended keys are not usable"), "{text}");
    assert!(text.contains("KEY_WRONG_REGION"), "{text}");
    // A bad block is refused by Configure, so validate already fails with amikey's message.
    let empty = datasource_template(&m.endpoint, "").replace(r#"["eu-west-1", "us-east-1"]"#, "[]");
    env.write("empty.pkr.hcl", &empty);
    let (out, text) = env.run(&["validate", "empty.pkr.hcl"], "ve.log");
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("amikey-preflight: `regions` is required"), "{text}");
}
