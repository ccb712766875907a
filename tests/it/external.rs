//! External parts the integration tests drive: one rule for all of them.
//!
//! A test that needs a part outside the Rust build (the moto emulator, a Packer binary, `zip`,
//! a Go peer built by `scripts/setup`) is marked
//!
//! ```text
//! #[test]
//! #[cfg_attr(not(amikey_external), ignore = "external: packer 1.6.6")]
//! ```
//!
//! and finds the part with [`require`]. A plain `cargo test` therefore lists such a test as
//! `ignored, external: …` and counts it in the summary: a visible, named skip, never a pass.
//! The README's test command (`scripts/test`) sets `AMIKEY_REQUIRE_EXTERNAL=1`, which turns the
//! cfg on (see `build.rs`): the tests run, and a missing part fails the test with a message that
//! says how to install it. `cargo test -- --include-ignored` runs them too, with the same rule.

use std::path::PathBuf;

/// The path of an external program: `$AMIKEY_<NAME>` if set (name upper-cased, `-` and `.` as
/// `_`), else the first `name` on `PATH`. Panics, failing the test, when it is missing: the
/// test asked for the part, so its absence is a failure, never a silent pass.
pub fn require(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| {
        panic!(
            "external part `{name}` is missing: run `scripts/setup` (or set {}); \
             this test drives it and cannot pass without it",
            env_name(name)
        )
    })
}

/// Like [`require`], without the panic.
pub fn find(name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_name(name)).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn env_name(name: &str) -> String {
    let tail: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("AMIKEY_{tail}")
}

#[test]
fn env_names() {
    assert_eq!(env_name("packer"), "AMIKEY_PACKER");
    assert_eq!(env_name("packer-1.9.4"), "AMIKEY_PACKER_1_9_4");
}

#[test]
fn require_fails_loudly_on_a_missing_part() {
    let r = std::panic::catch_unwind(|| require("amikey-no-such-tool-xyz"));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("`amikey-no-such-tool-xyz` is missing") && msg.contains("scripts/setup"), "{msg}");
}
