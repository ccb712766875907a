//! `scripts/release` naming, on the debug plugin binary and on fake binaries (no release build
//! here): archive and checksum names from the binary's own `describe`, the binary's name inside
//! the zip, a checksum file `sha256sum -c` accepts, byte-identical re-runs, and refusals of what
//! Packer would refuse. The script needs `zip`: the tests are external (see
//! `external.rs`), ignored by a plain `cargo test` and failing under `scripts/test` when it is
//! missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::moto::repo_path;

const PLUGIN: &str = env!("CARGO_BIN_EXE_packer-plugin-amikey");

/// Fails the test unless `zip` is installed (`scripts/setup` installs it).
fn require_zip() {
    crate::external::require("zip");
}

/// The names of the entries of a zip archive, read from its central directory as the end
/// record locates it (no `unzip` needed).
fn zip_entries(zip: &[u8]) -> Vec<String> {
    let u16_at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_le_bytes([zip[i], zip[i + 1], zip[i + 2], zip[i + 3]]) as usize;
    let end = (0..=zip.len().saturating_sub(22))
        .rev()
        .find(|&i| zip[i..i + 4] == *b"PK\x05\x06")
        .expect("no end-of-central-directory record: not a zip");
    let (count, mut i) = (u16_at(end + 10), u32_at(end + 16));
    let mut names = Vec::new();
    for _ in 0..count {
        assert_eq!(zip[i..i + 4], *b"PK\x01\x02", "central directory entry at {i}");
        let (name_len, extra, comment) = (u16_at(i + 28), u16_at(i + 30), u16_at(i + 32));
        names.push(String::from_utf8_lossy(&zip[i + 46..i + 46 + name_len]).into_owned());
        i += 46 + name_len + extra + comment;
    }
    names
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
#[cfg_attr(not(amikey_external), ignore = "external: zip")]
fn names_come_from_describe_and_the_archive_is_reproducible() {
    require_zip();
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

    let archive = std::fs::read(out.join(format!("{stem}.zip"))).unwrap();
    assert_eq!(zip_entries(&archive), std::slice::from_ref(&stem), "the binary inside the zip");
    let check = Command::new("sha256sum").arg("-c").arg(&sums).current_dir(&out).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    let first = std::fs::read(out.join(&sums)).unwrap();
    assert_eq!(release(Path::new(PLUGIN), &out).0, 0);
    assert_eq!(std::fs::read(out.join(&sums)).unwrap(), first, "a re-run must give the same bytes");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: zip")]
fn refuses_what_packer_would_refuse() {
    require_zip();
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
