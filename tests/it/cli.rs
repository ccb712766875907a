//! CLI behaviour that needs no AWS.

use std::process::Command;

fn amikey() -> Command {
    Command::new(env!("CARGO_BIN_EXE_amikey"))
}

#[test]
fn help_teaches_the_subcommands_and_exit_codes() {
    let out = amikey().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in ["check", "publish", "Exit codes", "aws/ebs"] {
        assert!(text.contains(needle), "{needle:?} missing from --help:\n{text}");
    }
}

#[test]
fn no_amis_is_a_clear_error() {
    let out = amikey().args(["check", "--kms-key-id", "alias/x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no AMIs given"));
}

#[test]
fn region_key_flag_needs_an_equals_sign() {
    let out = amikey()
        .args(["check", "--artifact", "us-east-1:ami-12345678", "--region-kms-key-id", "eu-west-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected REGION=KEY"));
}

#[test]
fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("amikey.hcl");
    std::fs::write(&f, "kms_key = \"alias/x\"\n").unwrap();
    let out = amikey()
        .args(["check", "--artifact", "us-east-1:ami-12345678", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kms_key"), "{err}");
}
