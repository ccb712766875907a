//! Generates the prost types of `proto/hcl_spec.proto` (Packer's ConfigSpec, protobuf form) with
//! protox, a pure-Rust protobuf compiler: no `protoc` needed. Maps become `BTreeMap`s so the
//! encoding is deterministic.
//!
//! Also sets the `amikey_external` cfg when `AMIKEY_REQUIRE_EXTERNAL=1` (the README's test
//! command, `scripts/test`, sets it): tests that drive an external part (moto, Packer, zip, the
//! Go peers) carry `#[cfg_attr(not(amikey_external), ignore = "external: …")]`, so a plain
//! `cargo test` counts and names them as ignored, and under `scripts/test` they run and a
//! missing part fails them (`tests/it/external.rs`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/hcl_spec.proto");
    println!("cargo::rustc-check-cfg=cfg(amikey_external)");
    println!("cargo:rerun-if-env-changed=AMIKEY_REQUIRE_EXTERNAL");
    if std::env::var("AMIKEY_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        println!("cargo:rustc-cfg=amikey_external");
    }
    let fds = protox::compile(["hcl_spec.proto"], ["proto"])?;
    let mut cfg = prost_build::Config::new();
    cfg.btree_map(["."]);
    cfg.compile_fds(fds)?;
    Ok(())
}
