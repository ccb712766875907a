//! cty JSON, as HCL2-mode `Configure` delivers it: Packer marshals the decoded block with
//! `ctyjson.Marshal(v, cty.DynamicPseudoType)`, which wraps it as `{"value": V, "type": T}`
//! (SDK `rpc/cty_encode.go`). This module unwraps that into a plain `serde_json::Value`, checks
//! that the type is well-formed, and spots unknown-value placeholders.
//!
//! Unknowns exist only in the first of HCL2's two `Configure` calls (before the build ran):
//! * Packer 1.6.6 substitutes the string `"<unknown>"` for `build.*` references, also inside
//!   interpolated strings (`"hello bar <unknown>"`) [V];
//! * modern Packer (`WriteUnknownPlaceholderValues`) writes `"<unknown>"` for strings, `0` for
//!   numbers, `false` for bools and empty collections — only the strings are recognisable.
//!
//! Attributes the user did not set arrive as `null`. Numbers are arbitrary-precision JSON
//! numbers. Size is bounded by the net/rpc message cap; depth by serde_json's recursion limit.

use serde_json::Value;

/// The placeholder string both Packer generations use for unknown values.
pub const UNKNOWN: &str = "<unknown>";

/// Why cty JSON was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtyError {
    /// Not JSON.
    #[error("HCL2 configuration is not valid cty JSON: {0}")]
    Json(String),
    /// JSON, but not `{"value", "type"}`.
    #[error("HCL2 configuration is not a {{\"value\",\"type\"}} cty object")]
    NotWrapped,
    /// The type expression is malformed.
    #[error("HCL2 configuration has a malformed cty type: {0}")]
    BadType(String),
}

/// A decoded cty value.
#[derive(Debug, Clone, PartialEq)]
pub struct CtyValue {
    /// The value, as JSON.
    pub value: Value,
    /// True if some string contains [`UNKNOWN`].
    pub has_unknowns: bool,
}

/// Decodes the cty JSON bytes of one `Configure` argument.
pub fn decode(bytes: &[u8]) -> Result<CtyValue, CtyError> {
    let json: Value = serde_json::from_slice(bytes).map_err(|e| CtyError::Json(e.to_string()))?;
    let Value::Object(mut top) = json else {
        return Err(CtyError::NotWrapped);
    };
    if top.len() != 2 {
        return Err(CtyError::NotWrapped);
    }
    let (Some(value), Some(ty)) = (top.remove("value"), top.remove("type")) else {
        return Err(CtyError::NotWrapped);
    };
    check_type(&ty, 0)?;
    let has_unknowns = contains_unknown(&value);
    Ok(CtyValue { value, has_unknowns })
}

fn check_type(t: &Value, depth: usize) -> Result<(), CtyError> {
    if depth > 32 {
        return Err(CtyError::BadType("nested too deeply".into()));
    }
    match t {
        Value::String(s) => match s.as_str() {
            "string" | "number" | "bool" | "dynamic" => Ok(()),
            other => Err(CtyError::BadType(format!("unknown primitive {other:?}"))),
        },
        Value::Array(a) => match (a.first().and_then(Value::as_str), a.get(1), a.len()) {
            (Some("list" | "set" | "map"), Some(elem), 2) => check_type(elem, depth + 1),
            (Some("object"), Some(Value::Object(attrs)), 2 | 3) => {
                attrs.values().try_for_each(|v| check_type(v, depth + 1))
            }
            (Some("tuple"), Some(Value::Array(elems)), 2) => {
                elems.iter().try_for_each(|v| check_type(v, depth + 1))
            }
            _ => Err(CtyError::BadType(t.to_string())),
        },
        other => Err(CtyError::BadType(other.to_string())),
    }
}

/// True if any string in `v` contains the unknown placeholder.
pub fn contains_unknown(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(UNKNOWN),
        Value::Array(a) => a.iter().any(contains_unknown),
        Value::Object(o) => o.values().any(contains_unknown),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_the_captured_first_configure_with_unknowns() {
        // tests/fixtures/wire/hcl2-template-session.txt frame [6], the bin argument.
        let bytes = br#"{"value":{"count":3,"message":"hello bar \u003cunknown\u003e","names":["x","y"],"tags":{"a":"b"}},"type":["object",{"count":"number","message":"string","names":["list","string"],"tags":["map","string"]}]}"#;
        let v = decode(bytes).unwrap();
        assert!(v.has_unknowns);
        assert_eq!(v.value["message"], json!("hello bar <unknown>"));
        assert_eq!(v.value["count"], json!(3));
    }

    #[test]
    fn decodes_the_captured_second_configure() {
        let bytes = br#"{"value":{"count":3,"message":"hello bar Null","names":["x","y"],"tags":{"a":"b"}},"type":["object",{"count":"number","message":"string","names":["list","string"],"tags":["map","string"]}]}"#;
        let v = decode(bytes).unwrap();
        assert!(!v.has_unknowns);
        assert_eq!(v.value["names"], json!(["x", "y"]));
    }

    #[test]
    fn nulls_and_modern_placeholders() {
        let v = decode(br#"{"value":{"a":null,"b":"<unknown>","c":0,"d":[]},"type":["object",{"a":"string","b":"string","c":"number","d":["list","string"]}]}"#).unwrap();
        assert!(v.has_unknowns);
        assert_eq!(v.value["a"], Value::Null);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert!(matches!(decode(b"nope"), Err(CtyError::Json(_))));
        assert_eq!(decode(b"{}"), Err(CtyError::NotWrapped));
        assert_eq!(decode(br#"{"value":1}"#), Err(CtyError::NotWrapped));
        assert!(matches!(decode(br#"{"value":1,"type":"int"}"#), Err(CtyError::BadType(_))));
        assert!(matches!(decode(br#"{"value":1,"type":["list"]}"#), Err(CtyError::BadType(_))));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(decode(deep.as_bytes()).is_err());
    }
}
