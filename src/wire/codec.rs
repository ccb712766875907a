//! Go `net/rpc` over msgpack, as Packer speaks it (ugorji `codec.GoRpc` with
//! `MsgpackHandle{WriteExt: true}`): pure functions over bytes, no I/O.
//!
//! A request is two consecutive msgpack objects: the header
//! `{"ServiceMethod": str, "Seq": uint}` and the body (the single argument). A response is
//! `{"ServiceMethod", "Seq", "Error"}` plus a body that is **always** present (`0x80`, an empty
//! map, when `Error` is set; Go's `invalidRequest`). msgpack has no framing, so decoding is
//! incremental: [`decode_message`] returns `Ok(None)` ("incomplete") until both objects are in the
//! buffer. A structural scan ([`value_len`]) measures an object without allocating, with a depth
//! and a size cap, before `rmpv` builds it, so garbage can neither panic nor allocate unboundedly.
//!
//! See: docs/protocol.md §4; packer-plugin-sdk `rpc/client.go`, `rpc/server.go`; ugorji `codec/rpc.go`.

use rmpv::Value;

/// Largest single net/rpc message (header + body) accepted or produced.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Deepest msgpack nesting accepted. Packer's deepest value (HCL2 `Configs`) is 4 levels.
pub const MAX_DEPTH: usize = 64;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A byte that starts no msgpack object (`0xc1` is "never used").
    #[error("invalid msgpack marker 0x{marker:02x} at offset {offset}")]
    InvalidMarker {
        /// The byte.
        marker: u8,
        /// Where it was found.
        offset: usize,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("msgpack nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A message larger than [`MAX_MESSAGE`].
    #[error("net/rpc message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// The header is not a `{ServiceMethod, Seq[, Error]}` map.
    #[error("malformed net/rpc header: {0}")]
    BadHeader(String),
    /// rmpv refused a value the scan accepted (should not happen; reported, not panicked).
    #[error("malformed msgpack value: {0}")]
    BadValue(String),
}

/// A decoded request (`Seq`, method, argument) or response (`Seq`, method, error, reply).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `ServiceMethod`, e.g. `PostProcessor.Configure`.
    pub service_method: String,
    /// `Seq`, chosen by the client; the response echoes it.
    pub seq: u64,
    /// `Error`: `None` for a request; `Some("")` for a successful response.
    pub error: Option<String>,
    /// The body object.
    pub body: Value,
}

impl Message {
    /// True when this is a response (its header had an `Error` key).
    pub fn is_response(&self) -> bool {
        self.error.is_some()
    }
}

/// Length in bytes of the one msgpack object at the start of `buf`, or `Ok(None)` if `buf` holds
/// only a prefix of it. Allocation-free; rejects invalid markers, nesting deeper than
/// [`MAX_DEPTH`] and objects longer than [`MAX_MESSAGE`].
pub fn value_len(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    // `stack` holds, per open container, how many objects are still to be read in it. The
    // object being measured is the single element of an implicit outer container.
    let mut stack: Vec<u64> = Vec::with_capacity(8);
    stack.push(1);
    let mut pos = 0usize;
    loop {
        // Pop finished containers.
        while let Some(&0) = stack.last() {
            stack.pop();
        }
        if stack.is_empty() {
            // The last object's payload may still be missing.
            return Ok((pos <= buf.len()).then_some(pos));
        }
        if pos > MAX_MESSAGE {
            return Err(CodecError::TooLarge);
        }
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        if let Some(top) = stack.last_mut() {
            *top -= 1;
        }
        let at = pos;
        pos += 1;
        // (payload bytes to skip, children objects)
        let (skip, children): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => match read_be(buf, pos, 1) {
                Some(n) => {
                    pos += 1;
                    (n, 0)
                }
                None => return Ok(None),
            },
            0xc5 | 0xda => match read_be(buf, pos, 2) {
                Some(n) => {
                    pos += 2;
                    (n, 0)
                }
                None => return Ok(None),
            },
            0xc6 | 0xdb => match read_be(buf, pos, 4) {
                Some(n) => {
                    pos += 4;
                    (n, 0)
                }
                None => return Ok(None),
            },
            // ext 8/16/32: length, then a type byte, then data.
            0xc7 => match read_be(buf, pos, 1) {
                Some(n) => {
                    pos += 1;
                    (n + 1, 0)
                }
                None => return Ok(None),
            },
            0xc8 => match read_be(buf, pos, 2) {
                Some(n) => {
                    pos += 2;
                    (n + 1, 0)
                }
                None => return Ok(None),
            },
            0xc9 => match read_be(buf, pos, 4) {
                Some(n) => {
                    pos += 4;
                    (n + 1, 0)
                }
                None => return Ok(None),
            },
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            // fixext 1/2/4/8/16: type byte + data.
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => match read_be(buf, pos, 2) {
                Some(n) => {
                    pos += 2;
                    (0, n)
                }
                None => return Ok(None),
            },
            0xdd => match read_be(buf, pos, 4) {
                Some(n) => {
                    pos += 4;
                    (0, n)
                }
                None => return Ok(None),
            },
            0xde => match read_be(buf, pos, 2) {
                Some(n) => {
                    pos += 2;
                    (0, 2 * n)
                }
                None => return Ok(None),
            },
            0xdf => match read_be(buf, pos, 4) {
                Some(n) => {
                    pos += 4;
                    (0, 2 * n)
                }
                None => return Ok(None),
            },
            0xc1 => {
                return Err(CodecError::InvalidMarker { marker, offset: at });
            }
        };
        if skip > MAX_MESSAGE as u64 || children > MAX_MESSAGE as u64 {
            return Err(CodecError::TooLarge);
        }
        pos += skip as usize;
        if children > 0 {
            if stack.len() > MAX_DEPTH {
                return Err(CodecError::TooDeep);
            }
            stack.push(children);
        }
    }
}

fn read_be(buf: &[u8], pos: usize, n: usize) -> Option<u64> {
    let bytes = buf.get(pos..pos.checked_add(n)?)?;
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Decodes one complete msgpack object at the start of `buf`: `Ok(None)` if incomplete,
/// otherwise the value and the number of bytes used.
pub fn decode_value(buf: &[u8]) -> Result<Option<(Value, usize)>, CodecError> {
    let Some(len) = value_len(buf)? else {
        return Ok(None);
    };
    let mut slice = &buf[..len];
    let value = rmpv::decode::read_value_with_max_depth(&mut slice, 2 * MAX_DEPTH + 8)
        .map_err(|e| CodecError::BadValue(e.to_string()))?;
    Ok(Some((value, len)))
}

/// Decodes one net/rpc message (header + body) at the start of `buf`: `Ok(None)` until both
/// objects are complete, otherwise the message and the bytes used.
pub fn decode_message(buf: &[u8]) -> Result<Option<(Message, usize)>, CodecError> {
    let Some((header, used_header)) = decode_value(buf)? else {
        return Ok(None);
    };
    let Some((body, used_body)) = decode_value(&buf[used_header..])? else {
        return Ok(None);
    };
    let mut service_method = None;
    let mut seq = None;
    let mut error = None;
    // Decode by key, never by position: hashicorp/go-msgpack sorts keys, ugorji does not.
    let Value::Map(entries) = header else {
        return Err(CodecError::BadHeader(format!("expected a map, got {header}")));
    };
    for (k, v) in entries {
        match as_text(&k).as_deref() {
            Some("ServiceMethod") => service_method = as_text(&v),
            Some("Seq") => seq = v.as_u64(),
            Some("Error") => error = Some(as_text(&v).unwrap_or_default()),
            _ => {}
        }
    }
    let service_method =
        service_method.ok_or_else(|| CodecError::BadHeader("no ServiceMethod string".into()))?;
    let seq = seq.ok_or_else(|| CodecError::BadHeader("no unsigned Seq".into()))?;
    Ok(Some((Message { service_method, seq, error, body }, used_header + used_body)))
}

/// A msgpack str or bin as text (Go decodes either into a `string`).
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Encodes a request: `{"ServiceMethod", "Seq"}` then `body`.
pub fn encode_request(service_method: &str, seq: u64, body: &Value) -> Result<Vec<u8>, CodecError> {
    let header = Value::Map(vec![
        (str_value("ServiceMethod"), str_value(service_method)),
        (str_value("Seq"), Value::from(seq)),
    ]);
    encode_pair(&header, body)
}

/// Encodes a response: `{"ServiceMethod", "Seq", "Error"}` then `body`. When `error` is not
/// empty the body is replaced by `0x80` (an empty map), as Go's server does.
pub fn encode_response(
    service_method: &str,
    seq: u64,
    error: &str,
    body: &Value,
) -> Result<Vec<u8>, CodecError> {
    let header = Value::Map(vec![
        (str_value("ServiceMethod"), str_value(service_method)),
        (str_value("Seq"), Value::from(seq)),
        (str_value("Error"), str_value(error)),
    ]);
    if error.is_empty() { encode_pair(&header, body) } else { encode_pair(&header, &Value::Map(Vec::new())) }
}

fn encode_pair(header: &Value, body: &Value) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    rmpv::encode::write_value(&mut out, header).map_err(|e| CodecError::BadValue(e.to_string()))?;
    rmpv::encode::write_value(&mut out, body).map_err(|e| CodecError::BadValue(e.to_string()))?;
    if out.len() > MAX_MESSAGE {
        return Err(CodecError::TooLarge);
    }
    Ok(out)
}

/// A msgpack str.
pub fn str_value(s: &str) -> Value {
    Value::String(s.into())
}

/// A msgpack map with string keys, in the given order (Go encodes struct fields in declaration
/// order, keyed by field name).
pub fn struct_value(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(fields.into_iter().map(|(k, v)| (str_value(k), v)).collect())
}

/// Looks up a string key in a msgpack map (str or bin keys).
pub fn map_get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Map(entries) => {
            entries.iter().find(|(k, _)| as_text(k).as_deref() == Some(key)).map(|(_, v)| v)
        }
        _ => None,
    }
}

/// Converts a msgpack value to JSON: str and bin become strings (bin lossily, as UTF-8), map
/// keys are stringified, ext values become null, non-finite floats become null.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                J::from(u)
            } else if let Some(s) = i.as_i64() {
                J::from(s)
            } else {
                J::Null
            }
        }
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(_) | Value::Binary(_) => J::String(as_text(v).unwrap_or_default()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match as_text(k) {
                        Some(s) => s,
                        None => k.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(..) => J::Null,
    }
}

/// Converts JSON to msgpack: strings become str, integers ints, other numbers float64.
pub fn from_json(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        J::String(s) => str_value(s),
        J::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        J::Object(o) => Value::Map(o.iter().map(|(k, v)| (str_value(k), from_json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // tests/fixtures/wire/json-template-session.txt frame [6]: PostProcessor.PostProcess(1).
    const POST_PROCESS_REQ: &str = "82 ad 53 65 72 76 69 63 65 4d 65 74 68 6f 64 b9
        50 6f 73 74 50 72 6f 63 65 73 73 6f 72 2e 50 6f 73 74 50 72 6f 63 65 73 73 a3 53 65 71 01 01";

    #[test]
    fn decodes_captured_post_process_request() {
        let bytes = hex(POST_PROCESS_REQ);
        let (msg, used) = decode_message(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(msg.service_method, "PostProcessor.PostProcess");
        assert_eq!(msg.seq, 1);
        assert_eq!(msg.error, None);
        assert_eq!(msg.body.as_u64(), Some(1));
    }

    #[test]
    fn encodes_captured_post_process_request_byte_exact() {
        let out = encode_request("PostProcessor.PostProcess", 1, &Value::from(1u32)).unwrap();
        assert_eq!(out, hex(POST_PROCESS_REQ));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = hex(POST_PROCESS_REQ);
        for n in 0..bytes.len() {
            assert_eq!(decode_message(&bytes[..n]).unwrap(), None, "prefix {n}");
        }
    }

    #[test]
    fn encodes_captured_configure_response_byte_exact() {
        // Frame [5]: {"ServiceMethod":"PostProcessor.Configure","Seq":0,"Error":""} nil
        let want = hex("83 ad 53 65 72 76 69 63 65 4d 65 74 68 6f 64 b7
            50 6f 73 74 50 72 6f 63 65 73 73 6f 72 2e 43 6f 6e 66 69 67 75 72 65
            a3 53 65 71 00 a5 45 72 72 6f 72 a0 c0");
        let out = encode_response("PostProcessor.Configure", 0, "", &Value::Nil).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn encodes_captured_error_response_with_empty_map_body() {
        // Frame [34]: Ui.Bogus -> Error "rpc: can't find method Ui.Bogus", body {}.
        let want = hex("83 ad 53 65 72 76 69 63 65 4d 65 74 68 6f 64 a8 55 69 2e 42 6f 67 75 73
            a3 53 65 71 0b a5 45 72 72 6f 72 bf 72 70 63 3a 20 63 61 6e 27 74 20 66
            69 6e 64 20 6d 65 74 68 6f 64 20 55 69 2e 42 6f 67 75 73 80");
        let out = encode_response("Ui.Bogus", 11, "rpc: can't find method Ui.Bogus", &Value::Nil).unwrap();
        assert_eq!(out, want);
        let (msg, _) = decode_message(&want).unwrap().unwrap();
        assert_eq!(msg.error.as_deref(), Some("rpc: can't find method Ui.Bogus"));
    }

    #[test]
    fn encodes_captured_post_process_reply_byte_exact() {
        // Frame [35].
        let want = hex("83 ad 53 65 72 76 69 63 65 4d 65 74 68 6f 64 b9
            50 6f 73 74 50 72 6f 63 65 73 73 6f 72 2e 50 6f 73 74 50 72 6f 63 65 73 73
            a3 53 65 71 01 a5 45 72 72 6f 72 a0 84 a3 45 72 72 c0 a4 4b 65 65 70
            c3 ad 46 6f 72 63 65 4f 76 65 72 72 69 64 65 c2 a8 53 74 72 65 61 6d 49 64 01");
        let body = struct_value(vec![
            ("Err", Value::Nil),
            ("Keep", Value::Boolean(true)),
            ("ForceOverride", Value::Boolean(false)),
            ("StreamId", Value::from(1u32)),
        ]);
        let out = encode_response("PostProcessor.PostProcess", 1, "", &body).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn encodes_ui_say_with_str8() {
        // Frame [11]: a 37-byte string goes out as str8 (d9 25).
        let want = hex("82 ad 53 65 72 76 69 63 65 4d 65 74 68 6f 64 a6 55 69 2e 53 61 79
            a3 53 65 71 00 d9 25 66 61 6b 65 20 70 6f 73 74 2d 70 72 6f 63 65 73 73 6f 72
            3a 20 68 65 6c 6c 6f 20 76 69 61 20 55 69 2e 53 61 79");
        let out = encode_request("Ui.Say", 0, &str_value("fake post-processor: hello via Ui.Say")).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn decodes_sorted_keys_and_wide_ints() {
        // go-msgpack sorts keys; ugorji writes signed ints for positive values.
        let mut bytes = vec![0x82, 0xa3, b'S', b'e', b'q', 0xd1, 0x01, 0x2c, 0xad];
        bytes.extend_from_slice(b"ServiceMethod");
        bytes.push(0xa5);
        bytes.extend_from_slice(b"A.Bcd");
        bytes.push(0xc0);
        let (msg, used) = decode_message(&bytes).unwrap().unwrap();
        assert_eq!((msg.seq, used), (300, bytes.len()));
        assert_eq!(msg.service_method, "A.Bcd");
    }

    #[test]
    fn a_truncated_trailing_payload_is_incomplete() {
        // Found by proptest: a fixstr whose bytes have not arrived yet.
        assert_eq!(value_len(&[0xa5, b'a']).unwrap(), None);
        assert_eq!(value_len(&[0x91, 0xcb, 0, 0]).unwrap(), None);
    }

    #[test]
    fn two_messages_in_one_buffer() {
        let mut bytes = encode_request("A.B", 0, &Value::Nil).unwrap();
        let first = bytes.len();
        bytes.extend(encode_request("A.C", 1, &str_value("x")).unwrap());
        let (m, used) = decode_message(&bytes).unwrap().unwrap();
        assert_eq!((m.service_method.as_str(), used), ("A.B", first));
        let (m, _) = decode_message(&bytes[used..]).unwrap().unwrap();
        assert_eq!(m.service_method, "A.C");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(decode_message(&[0xc1]), Err(CodecError::InvalidMarker { .. })));
        assert!(matches!(decode_message(&[0x01, 0xc0]), Err(CodecError::BadHeader(_))));
        // A 1-Mi-element array claim: incomplete, and nothing is allocated for it.
        assert_eq!(decode_value(&[0xdd, 0x00, 0x10, 0x00, 0x00]).unwrap(), None);
        // A 4-Gi-element claim is refused outright.
        assert_eq!(decode_value(&[0xdd, 0xff, 0xff, 0xff, 0xff]), Err(CodecError::TooLarge));
        // A bin32 claim beyond the cap is refused outright.
        assert_eq!(decode_value(&[0xc6, 0xff, 0xff, 0xff, 0xff]), Err(CodecError::TooLarge));
        let deep = vec![0x91u8; MAX_DEPTH + 5];
        assert_eq!(decode_value(&deep), Err(CodecError::TooDeep));
    }

    #[test]
    fn json_round_trip() {
        let j = serde_json::json!({"a": [1, -2, 3.5, true, null, "s"], "b": {"c": "d"}});
        assert_eq!(to_json(&from_json(&j)), j);
        assert_eq!(to_json(&Value::Binary(b"{}".to_vec())), serde_json::json!("{}"));
    }
}
