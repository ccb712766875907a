//! Property tests: arbitrary bytes into every decoder of the wire layer terminate with a value
//! or an error — never a panic, never an allocation beyond the input's size.

use amikey::wire::{codec, cty, hcl_spec, mux::FrameHeader, template};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn netrpc_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(Some((_, used))) = codec::decode_message(&bytes) {
            prop_assert!(used <= bytes.len());
        }
        let _ = codec::decode_value(&bytes);
    }

    #[test]
    fn netrpc_decoder_on_mutated_valid_messages(
        body in "[a-zA-Z0-9 ]{0,300}",
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = codec::encode_request("Ui.Say", 7, &codec::str_value(&body)).unwrap();
        let (m, used) = codec::decode_message(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(codec::as_text(&m.body).unwrap(), body);
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        let n = cut % (bytes.len() + 1);
        let _ = codec::decode_message(&bytes[..n]);
    }

    #[test]
    fn yamux_frame_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(Some((h, payload, used))) = FrameHeader::decode_frame(&bytes) {
            prop_assert!(used <= bytes.len());
            prop_assert!(payload.len() <= h.length as usize);
            prop_assert_eq!(&h.encode()[..], &bytes[..12]);
        }
    }

    #[test]
    fn cty_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = cty::decode(&bytes);
    }

    #[test]
    fn cty_decoder_on_jsonish_text(s in r#"[\{\}\[\]",:a-z0-9<> ]{0,200}"#) {
        let _ = cty::decode(s.as_bytes());
        let wrapped = format!(r#"{{"value":{s},"type":{s}}}"#);
        let _ = cty::decode(wrapped.as_bytes());
    }

    #[test]
    fn template_renderer_never_panics(s in r#"[\{\}`" a-z_\-|.]{0,200}"#) {
        let vars = [("x".to_string(), "y".to_string())].into();
        let env = |_: &str| None;
        let ctx = template::TemplateContext {
            user_variables: &vars,
            build_name: "b",
            build_type: "t",
            timestamp: "0",
            env: &env,
        };
        if let Ok(out) = template::render(&s, &ctx) {
            prop_assert!(out.len() <= template::MAX_RENDERED);
        }
    }

    #[test]
    fn gob_spec_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = hcl_spec::decode_gob_spec(&bytes);
        let _ = hcl_spec::decode_proto_spec(&bytes);
    }

    #[test]
    fn gob_spec_decoder_on_mutated_real_specs(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = hcl_spec::encode_gob_spec(&amikey::postprocessor::config_spec());
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        let _ = hcl_spec::decode_gob_spec(&bytes);
    }
}
