//! Smoke tests against a real Packer (Debian's 1.6.6 here): the plugin installed as a legacy
//! `packer-post-processor-amikey` in a temp dir used as `PACKER_PLUGIN_PATH` and working dir,
//! `env -i`-style environment. Skipped, with a message, when `packer` is not on PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_packer-plugin-amikey");

fn packer() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("packer")).find(|p| p.is_file())
}

struct Env {
    dir: tempfile::TempDir,
    packer: PathBuf,
}

impl Env {
    fn new() -> Option<Env> {
        let Some(packer) = packer() else {
            eprintln!("SKIP: `packer` not found on PATH; the real-Packer smoke tests did not run");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(BIN, dir.path().join("packer-post-processor-amikey")).unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Some(Env { dir, packer })
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

fn assert_plugin_used(env: &Env, log: &str) {
    let l = env.log(log);
    assert!(l.contains("packer-post-processor-amikey plugin:"), "plugin never started:\n{l}");
    assert!(!l.contains("panic"), "{l}");
}

#[test]
fn json_template_validate_and_build() {
    let Some(env) = Env::new() else { return };
    env.write("t.json", &JSON.replace(" EXTRA", ""));
    let (out, text) = env.run(&["validate", "t.json"], "v.log");
    assert!(out.status.success(), "{text}\n{}", env.log("v.log"));
    assert_plugin_used(&env, "v.log");

    env.write("bad.json", &JSON.replace(" EXTRA", r#", "bogus_key": "x""#));
    let (out, text) = env.run(&["validate", "bad.json"], "vb.log");
    assert!(!out.status.success());
    assert!(text.contains("bogus_key"), "{text}");

    let (out, text) = env.run(&["build", "t.json"], "b.log");
    assert!(!out.status.success());
    assert!(text.contains("unsupported builder \"fnoeding.null\""), "{text}");
}

#[test]
fn hcl2_template_validate_and_build() {
    let Some(env) = Env::new() else { return };
    env.write("t.pkr.hcl", &HCL.replace("EXTRA", ""));
    let (out, text) = env.run(&["validate", "t.pkr.hcl"], "v.log");
    // 1.6.6's HCL2 validate exits 0 even when a plugin fails to load: read the output too.
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("rror"), "{text}");
    assert_plugin_used(&env, "v.log");

    env.write("bad.pkr.hcl", &HCL.replace("EXTRA", r#"bogus_key = "x""#));
    let (out, text) = env.run(&["validate", "bad.pkr.hcl"], "vb.log");
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("bogus_key"), "{text}");

    let (out, text) = env.run(&["build", "t.pkr.hcl"], "b.log");
    assert!(!out.status.success());
    assert!(text.contains("unsupported builder \"fnoeding.null\""), "{text}");
    // The first Configure carried `<unknown>` for build.ID and passed; the build got this far.
    assert!(Path::new(&env.dir.path().join("b.log")).exists());
}
