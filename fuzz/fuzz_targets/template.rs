#![no_main]
use std::collections::BTreeMap;

libfuzzer_sys::fuzz_target!(|s: &str| {
    let vars: BTreeMap<String, String> = [("x".to_string(), "y".repeat(1000))].into();
    let env = |_: &str| None;
    let ctx = amikey::wire::template::TemplateContext {
        user_variables: &vars,
        build_name: "b",
        build_type: "t",
        timestamp: "0",
        env: &env,
    };
    let _ = amikey::wire::template::render(s, &ctx);
});
