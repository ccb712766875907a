//! `scripts/release` naming, on the debug plugin binary and on fake binaries (no release build
//! here): archive and checksum names from the binary's own `describe`, the binary's name inside
//! the zip, a checksum file `sha256sum -c` accepts, byte-identical re-runs, and refusals of what
//! Packer would refuse. Skipped, with a message, when `zip` is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::moto::repo_path;

const PLUGIN: &str = env!("CARGO_BIN_EXE_packer-plugin-amikey");

fn zip_available() -> bool {
    let ok = Command::new("sh").args(["-c", "command -v zip && command -v unzip"]).output();
    if ok.map(|o| o.status.success()).unwrap_or(false) {
        return true;
    }
    eprintln!("SKIP: `zip`/`unzip` not installed (scripts/setup installs them); scripts/release not tested");
    false
}

fn release(binary: &Path, out: &Path) -> (i32, String, String) {
    let o = Command::new(repo_path("scripts/release"))
        .arg("--binary")
        .arg(binary)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn fake(dir: &Path, describe: &str) -> PathBuf {
    let p = dir.join("fake-plugin");
    std::fs::write(&p, format!("#!/bin/sh\n[ \"$1\" = describe ] && echo '{describe}'\n")).unwrap();
    Command::new("chmod").arg("+x").arg(&p).status().unwrap();
    p
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn names_come_from_describe_and_the_archive_is_reproducible() {
    if !zip_available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("dist");
    let (code, stdout, stderr) = release(Path::new(PLUGIN), &out);
    assert_eq!(code, 0, "{stderr}");
    let v = env!("CARGO_PKG_VERSION");
    let stem = format!("packer-plugin-amikey_v{v}_x5.0_{}_{}", std::env::consts::OS, arch());
    let sums = format!("packer-plugin-amikey_v{v}_SHA256SUMS");
    assert!(stdout.contains(&format!("{stem}.zip")) && stdout.contains(&sums), "{stdout}");
    let mut files: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, [sums.clone(), format!("{stem}.zip")]);

    let listing = Command::new("unzip").arg("-Z1").arg(out.join(format!("{stem}.zip"))).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout).trim(), stem, "the binary inside the zip");
    let check = Command::new("sha256sum").arg("-c").arg(&sums).current_dir(&out).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    let first = std::fs::read(out.join(&sums)).unwrap();
    assert_eq!(release(Path::new(PLUGIN), &out).0, 0);
    assert_eq!(std::fs::read(out.join(&sums)).unwrap(), first, "a re-run must give the same bytes");
}

#[test]
fn refuses_what_packer_would_refuse() {
    if !zip_available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("dist");
    let cases = [
        (r#"{"version":"0.2.0-dev","api_version":"x5.0"}"#, "not a release semver"),
        (r#"{"version":"0.2.0","api_version":"5.0"}"#, "not of the form x5.0"),
    ];
    for (describe, want) in cases {
        let (code, _, stderr) = release(&fake(d.path(), describe), &out);
        assert_eq!(code, 1, "{describe}: {stderr}");
        assert!(stderr.contains(want), "{describe}: {stderr}");
        assert!(
            !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
            "{describe}: wrote files"
        );
    }
    let (code, _, stderr) = release(&d.path().join("missing"), &out);
    assert_eq!(code, 2, "{stderr}");
    // A good fake: the name follows its describe, not Cargo.toml.
    let (code, stdout, stderr) =
        release(&fake(d.path(), r#"{"version":"1.2.3","api_version":"x5.1"}"#), &out);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("packer-plugin-amikey_v1.2.3_x5.1_"), "{stdout}");
    assert!(stdout.contains("packer-plugin-amikey_v1.2.3_SHA256SUMS"), "{stdout}");
}
