#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = amikey::wire::cty::decode(data);
});
