#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = amikey::wire::hcl_spec::decode_gob_spec(data);
    let _ = amikey::wire::hcl_spec::decode_proto_spec(data);
});
