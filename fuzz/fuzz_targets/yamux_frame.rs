#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = amikey::wire::mux::FrameHeader::decode_frame(data);
});
