//! cty values in msgpack, as a data source's `Execute` returns them when Packer talks protobuf
//! (`start datasource --protobuf NAME`): the SDK's `DatasourceServer.Execute` marshals the value
//! with go-cty's `msgpack.Marshal(v, cty.DynamicPseudoType)`, which wraps it as a 2-array of
//! the type's JSON (msgpack bin) and the value encoded by that type (go-cty
//! `msgpack/dynamic.go`, `msgpack/marshal.go`): strings as str, bools as bool, whole numbers
//! that fit as int and others as float64, lists as arrays, maps and objects as maps with keys
//! in sorted order, null as nil. Pure: bytes in, bytes out.
//!
//! The value is always an object whose attributes are the output spec's, so Packer can check
//! `data.TYPE.NAME.ATTR` references against the OutputSpec before the data source runs.

use rmpv::Value as Mp;
use serde_json::{Map, Value};

use super::hcl_spec::{AttrSpec, CtyType};

/// The cty JSON of a type (`"string"`, `["map","string"]`).
pub fn type_json(ty: &CtyType) -> Value {
    match ty {
        CtyType::String => Value::from("string"),
        CtyType::Number => Value::from("number"),
        CtyType::Bool => Value::from("bool"),
        CtyType::List(t) => Value::Array(vec!["list".into(), type_json(t)]),
        CtyType::Map(t) => Value::Array(vec!["map".into(), type_json(t)]),
    }
}

/// The cty JSON of the object type with `attrs`.
pub fn object_type_json(attrs: &[AttrSpec]) -> Value {
    // Go's encoding/json writes map keys sorted; so does this (whatever serde_json's Map does).
    let mut sorted: Vec<&AttrSpec> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let fields: Map<String, Value> = sorted.into_iter().map(|a| (a.name.clone(), type_json(&a.ty))).collect();
    Value::Array(vec!["object".into(), Value::Object(fields)])
}

fn encode(v: &Value, ty: &CtyType, path: &str) -> Result<Mp, String> {
    let wrong = || format!("{path}: expected {}, got {v}", type_json(ty));
    Ok(match (ty, v) {
        (_, Value::Null) => Mp::Nil,
        (CtyType::String, Value::String(s)) => Mp::from(s.as_str()),
        (CtyType::Bool, Value::Bool(b)) => Mp::Boolean(*b),
        (CtyType::Number, Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Mp::from(i),
            (_, Some(u), _) => Mp::from(u),
            (_, _, Some(f)) => Mp::F64(f),
            _ => return Err(wrong()),
        },
        (CtyType::List(t), Value::Array(items)) => Mp::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| encode(x, t, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        (CtyType::Map(t), Value::Object(m)) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Mp::Map(
                keys.into_iter()
                    .map(|k| Ok((Mp::from(k.as_str()), encode(&m[k], t, &format!("{path}[{k:?}]"))?)))
                    .collect::<Result<_, String>>()?,
            )
        }
        _ => return Err(wrong()),
    })
}

/// Encodes `values` as the cty object of `attrs` (missing attributes are null), wrapped for
/// `cty.DynamicPseudoType`. `Err` names an attribute whose value does not fit its type.
pub fn encode_dynamic_object(attrs: &[AttrSpec], values: &Map<String, Value>) -> Result<Vec<u8>, String> {
    if let Some(k) = values.keys().find(|k| !attrs.iter().any(|a| &a.name == *k)) {
        return Err(format!("{k}: not in the output spec"));
    }
    let mut sorted: Vec<&AttrSpec> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let fields = sorted
        .into_iter()
        .map(|a| {
            Ok((
                Mp::from(a.name.as_str()),
                encode(values.get(&a.name).unwrap_or(&Value::Null), &a.ty, &a.name)?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let ty = serde_json::to_vec(&object_type_json(attrs)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &Mp::Array(vec![Mp::Binary(ty), Mp::Map(fields)]))
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decodes what [`encode_dynamic_object`] (or go-cty) wrote: `(type JSON, value as JSON)`.
/// For the conformance harness and fuzzing.
pub fn decode_dynamic(bytes: &[u8]) -> Result<(Value, Value), String> {
    let mut r = bytes;
    let v = rmpv::decode::read_value(&mut r).map_err(|e| format!("not msgpack: {e}"))?;
    if !r.is_empty() {
        return Err(format!("{} trailing bytes", r.len()));
    }
    let Mp::Array(parts) = v else { return Err("not a [type, value] array".into()) };
    let [Mp::Binary(ty), value] = parts.as_slice() else {
        return Err("not a [bin type, value] pair".into());
    };
    let ty: Value = serde_json::from_slice(ty).map_err(|e| format!("type is not JSON: {e}"))?;
    Ok((ty, super::codec::to_json(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(name: &str, ty: CtyType) -> AttrSpec {
        AttrSpec { name: name.into(), ty, required: false }
    }

    #[test]
    fn an_object_of_maps_matches_go_cty_bytes() {
        // go-cty: msgpack.Marshal(cty.ObjectVal({"a": cty.MapVal({"x": "y"}), "b": cty.NullVal(bool)}),
        // cty.DynamicPseudoType): fixarray(2), bin8 type JSON, fixmap(2) sorted keys.
        let attrs = [attr("b", CtyType::Bool), attr("a", CtyType::Map(Box::new(CtyType::String)))];
        let values: Map<String, Value> = serde_json::from_str(r#"{"a":{"x":"y"}}"#).unwrap();
        let got = encode_dynamic_object(&attrs, &values).unwrap();
        let ty = br#"["object",{"a":["map","string"],"b":"bool"}]"#;
        let mut want = vec![0x92, 0xc4, ty.len() as u8];
        want.extend_from_slice(ty);
        want.extend_from_slice(&[0x82, 0xa1, b'a', 0x81, 0xa1, b'x', 0xa1, b'y', 0xa1, b'b', 0xc0]);
        assert_eq!(got, want);
        let (t, v) = decode_dynamic(&got).unwrap();
        assert_eq!(t, serde_json::json!(["object", {"a": ["map", "string"], "b": "bool"}]));
        assert_eq!(v, serde_json::json!({"a": {"x": "y"}, "b": null}));
    }

    #[test]
    fn numbers_lists_and_type_errors() {
        let attrs = [attr("n", CtyType::Number), attr("l", CtyType::List(Box::new(CtyType::Number)))];
        let values: Map<String, Value> = serde_json::from_str(r#"{"n":2.5,"l":[1,2]}"#).unwrap();
        let (_, v) = decode_dynamic(&encode_dynamic_object(&attrs, &values).unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"l": [1, 2], "n": 2.5}));
        let bad: Map<String, Value> = serde_json::from_str(r#"{"n":"x"}"#).unwrap();
        assert!(encode_dynamic_object(&attrs, &bad).unwrap_err().starts_with("n:"));
        let extra: Map<String, Value> = serde_json::from_str(r#"{"z":1}"#).unwrap();
        assert!(encode_dynamic_object(&attrs, &extra).is_err());
        assert!(decode_dynamic(&[0x92, 0x01]).is_err());
        assert!(decode_dynamic(b"").is_err());
    }
}
