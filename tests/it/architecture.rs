//! House rule 3: `src/wire` knows nothing of AWS or of amikey's domain; only
//! `src/postprocessor.rs` composes the two.

#[test]
fn wire_imports_no_aws_core_or_engine() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/wire");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for banned in ["aws_", "crate::core", "crate::engine", "crate::postprocessor"] {
            assert!(!text.contains(banned), "{} mentions {banned}", path.display());
        }
    }
}
