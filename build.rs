//! Generates the prost types of `proto/hcl_spec.proto` (Packer's ConfigSpec, protobuf form) with
//! protox, a pure-Rust protobuf compiler: no `protoc` needed. Maps become `BTreeMap`s so the
//! encoding is deterministic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/hcl_spec.proto");
    let fds = protox::compile(["hcl_spec.proto"], ["proto"])?;
    let mut cfg = prost_build::Config::new();
    cfg.btree_map(["."]);
    cfg.compile_fds(fds)?;
    Ok(())
}
