//! cty values in gob, as a data source's `Execute` returns them when Packer talks gob (every
//! Packer from 1.7 to 1.11, and 1.12+ with `PACKER_FORCE_GOB`): the SDK's
//! `DatasourceServer.Execute` writes `gob.NewEncoder(w).Encode(value)` of a `cty.Value`, and
//! `cty.Value` is a `GobEncoder` (go-cty `cty/gob.go` in the `nywilken/go-cty` fork Packer builds
//! with) whose bytes are a nested gob stream of `gobValue{Version int; Ty Type; V interface{}}`;
//! `Ty` is itself a `GobEncoder` (`gobType{Version int; Impl typeImpl}`), and `V` holds cty's
//! internal representation: `map[string]interface{}` for objects and maps, `[]interface{}` for
//! lists, Go strings and bools, `nil` for null. Interface values carry the names go-cty registers
//! (`cty/types_to_register.go`): `github.com/zclconf/go-cty/cty.typeObject`, …,
//! `map[string]interface {}`, `[]interface {}`, and Go's own `string` and `bool`.
//!
//! The encoder emulates Go's `encoding/gob` encoder on that small set of Go types, byte for byte:
//! * type ids are process-wide in Go and handed out when a type is first compiled (a struct
//!   before its fields, a map or slice after its key and element); this module numbers them as
//!   a fresh Go process does, from Go's first user id (64). A decoder never depends on the numbers;
//! * each encoder (one per `GobEncode` call) sends a type's definition once, before its first use;
//!   for a type first met inside an interface value Go writes the definition into the middle of
//!   the enclosing message and flushes it there, splitting that message (`encodeInterface`);
//! * maps are written in sorted key order (Go's order is random: any order decodes the same).
//!
//! The unit tests pin the output to bytes produced by go-cty itself
//! (`tests/fixtures/wire/cty-gob-examples.txt`). Pure: values in, bytes out. Numbers (a
//! `*big.Float` `GobEncoder`) are not supported: no amikey output is a number.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::hcl_spec::{AttrSpec, CtyType, put_bytes, put_int, put_uint};

/// The Go types that occur in a cty value's gob form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum GoType {
    Bool,
    Int,
    Uint,
    String,
    Interface,
    /// `cty.Value` (GobEncoder).
    CtyValue,
    /// `cty.Type` (GobEncoder).
    CtyTypeT,
    GobValue,
    GobType,
    Primitive,
    List,
    Map,
    Object,
    /// `map[string]cty.Type` (`typeObject.AttrTypes`).
    MapStringType,
    /// `struct{}`.
    EmptyStruct,
    /// `map[string]struct{}` (`typeObject.AttrOptional`).
    MapStringEmptyStruct,
    /// `map[string]interface{}` (object and map values).
    MapStringIface,
    /// `[]interface{}` (list values).
    SliceIface,
}

/// What a type's wire definition says.
enum Def {
    Struct(&'static [(&'static str, GoType)]),
    Map(GoType, GoType),
    Slice(GoType),
    GobEncoder,
}

impl GoType {
    /// Go's predeclared type ids.
    fn builtin_id(self) -> Option<i64> {
        match self {
            GoType::Bool => Some(1),
            GoType::Int => Some(2),
            GoType::Uint => Some(3),
            GoType::String => Some(6),
            GoType::Interface => Some(8),
            _ => None,
        }
    }

    /// The `CommonType.Name` Go records: the Go name for named types and struct field types,
    /// empty for unnamed types first met as an interface's value or a map's element.
    fn wire_name(self) -> &'static str {
        match self {
            GoType::CtyValue => "Value",
            GoType::CtyTypeT => "Type",
            GoType::GobValue => "gobValue",
            GoType::GobType => "gobType",
            GoType::Primitive => "primitiveType",
            GoType::List => "typeList",
            GoType::Map => "typeMap",
            GoType::Object => "typeObject",
            GoType::MapStringType => "map[string]cty.Type",
            GoType::MapStringEmptyStruct => "map[string]struct {}",
            _ => "",
        }
    }

    fn def(self) -> Def {
        use GoType as T;
        match self {
            T::GobValue => Def::Struct(&[("Version", T::Int), ("Ty", T::CtyTypeT), ("V", T::Interface)]),
            T::GobType => Def::Struct(&[("Version", T::Int), ("Impl", T::Interface)]),
            T::Primitive => Def::Struct(&[("Kind", T::Uint)]),
            T::List | T::Map => Def::Struct(&[("ElementTypeT", T::CtyTypeT)]),
            T::Object => {
                Def::Struct(&[("AttrTypes", T::MapStringType), ("AttrOptional", T::MapStringEmptyStruct)])
            }
            T::EmptyStruct => Def::Struct(&[]),
            T::MapStringType => Def::Map(T::String, T::CtyTypeT),
            T::MapStringEmptyStruct => Def::Map(T::String, T::EmptyStruct),
            T::MapStringIface => Def::Map(T::String, T::Interface),
            T::SliceIface => Def::Slice(T::Interface),
            // Builtins never get here (see `builtin_id`).
            T::CtyValue | T::CtyTypeT | T::Bool | T::Int | T::Uint | T::String | T::Interface => {
                Def::GobEncoder
            }
        }
    }
}

/// Go's process-wide type ids.
struct Ids {
    ids: HashMap<GoType, i64>,
    next: i64,
}

/// Go's `firstUserId`.
const FIRST_USER_ID: i64 = 64;

impl Ids {
    fn new() -> Ids {
        Ids { ids: HashMap::new(), next: FIRST_USER_ID }
    }

    fn assign(&mut self, t: GoType) {
        self.ids.entry(t).or_insert_with(|| {
            let id = self.next;
            self.next += 1;
            id
        });
    }

    /// `getTypeInfo`: a struct takes its id before its fields, a map or slice after its parts.
    fn compile(&mut self, t: GoType) {
        if t.builtin_id().is_some() || self.ids.contains_key(&t) {
            return;
        }
        match t.def() {
            Def::Struct(fields) => {
                self.assign(t);
                for (_, f) in fields {
                    self.compile(*f);
                }
            }
            Def::Map(k, e) => {
                self.compile(k);
                self.compile(e);
                self.assign(t);
            }
            Def::Slice(e) => {
                self.compile(e);
                self.assign(t);
            }
            Def::GobEncoder => self.assign(t),
        }
    }

    fn id(&mut self, t: GoType) -> i64 {
        if let Some(id) = t.builtin_id() {
            return id;
        }
        self.compile(t);
        self.ids[&t]
    }
}

/// A cty type as go-cty represents it.
#[derive(Debug, Clone)]
enum Ty {
    Primitive(u8),
    List(Box<Ty>),
    Map(Box<Ty>),
    Object(Vec<(String, Ty)>),
}

impl Ty {
    fn of(t: &CtyType) -> Ty {
        match t {
            CtyType::String => Ty::Primitive(b'S'),
            CtyType::Number => Ty::Primitive(b'N'),
            CtyType::Bool => Ty::Primitive(b'B'),
            CtyType::List(e) => Ty::List(Box::new(Ty::of(e))),
            CtyType::Map(e) => Ty::Map(Box::new(Ty::of(e))),
        }
    }
}

/// A Go value of one of the types above.
#[derive(Debug, Clone)]
enum GoVal {
    Int(i64),
    Uint(u64),
    Str(String),
    Bool(bool),
    Struct(GoType, Vec<GoVal>),
    Map(GoType, Vec<(String, GoVal)>),
    Slice(GoType, Vec<GoVal>),
    /// Registered name, concrete type, value; `None` is a nil interface.
    Iface(Option<(&'static str, GoType, Box<GoVal>)>),
    /// A `cty.Type` field: its `GobEncode` runs when the field is written.
    CtyType(Ty),
    /// A top-level `cty.Value`: its type and its representation (an interface value).
    CtyValue(Ty, Box<GoVal>),
}

impl GoVal {
    /// Go's zero test for struct fields (zero fields are not sent).
    fn is_zero(&self) -> bool {
        match self {
            GoVal::Int(i) => *i == 0,
            GoVal::Uint(u) => *u == 0,
            GoVal::Str(s) => s.is_empty(),
            GoVal::Bool(b) => !*b,
            GoVal::Map(_, m) => m.is_empty(),
            GoVal::Slice(_, s) => s.is_empty(),
            GoVal::Iface(i) => i.is_none(),
            GoVal::Struct(..) | GoVal::CtyType(_) | GoVal::CtyValue(..) => false,
        }
    }

    fn go_type(&self) -> GoType {
        match self {
            GoVal::Int(_) => GoType::Int,
            GoVal::Uint(_) => GoType::Uint,
            GoVal::Str(_) => GoType::String,
            GoVal::Bool(_) => GoType::Bool,
            GoVal::Struct(t, _) | GoVal::Map(t, _) | GoVal::Slice(t, _) => *t,
            GoVal::Iface(_) => GoType::Interface,
            GoVal::CtyType(_) => GoType::CtyTypeT,
            GoVal::CtyValue(..) => GoType::CtyValue,
        }
    }
}

/// `gobType{Version: 0, Impl: t}`.
fn gob_type_struct(t: &Ty) -> GoVal {
    let (name, ty, fields) = match t {
        Ty::Primitive(k) => ("primitiveType", GoType::Primitive, vec![GoVal::Uint(u64::from(*k))]),
        Ty::List(e) => ("typeList", GoType::List, vec![GoVal::CtyType((**e).clone())]),
        Ty::Map(e) => ("typeMap", GoType::Map, vec![GoVal::CtyType((**e).clone())]),
        Ty::Object(attrs) => {
            let mut sorted: Vec<(String, GoVal)> =
                attrs.iter().map(|(k, t)| (k.clone(), GoVal::CtyType(t.clone()))).collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let optional = GoVal::Map(GoType::MapStringEmptyStruct, vec![]);
            ("typeObject", GoType::Object, vec![GoVal::Map(GoType::MapStringType, sorted), optional])
        }
    };
    let impl_value = GoVal::Iface(Some((registered_name(name), ty, Box::new(GoVal::Struct(ty, fields)))));
    GoVal::Struct(GoType::GobType, vec![GoVal::Int(0), impl_value])
}

/// The name go-cty registers a type implementation under (`cty/types_to_register.go`).
fn registered_name(go_name: &str) -> &'static str {
    match go_name {
        "primitiveType" => "github.com/zclconf/go-cty/cty.primitiveType",
        "typeList" => "github.com/zclconf/go-cty/cty.typeList",
        "typeMap" => "github.com/zclconf/go-cty/cty.typeMap",
        _ => "github.com/zclconf/go-cty/cty.typeObject",
    }
}

/// One Go `Encoder` (its own set of sent types) sharing the process-wide ids.
struct Encoder<'a> {
    ids: &'a mut Ids,
    sent: HashSet<GoType>,
}

/// `writeMessage`: the length, then the buffered bytes; the buffer starts over.
fn write_message(w: &mut Vec<u8>, b: &mut Vec<u8>) {
    put_uint(w, b.len() as u64);
    w.append(b);
}

impl Encoder<'_> {
    /// `Encoder.Encode(v)`: one stream holding `v`'s type definitions and its value.
    fn stream(ids: &mut Ids, v: &GoVal) -> Vec<u8> {
        let mut enc = Encoder { ids, sent: HashSet::new() };
        let (mut out, mut b) = (Vec::new(), Vec::new());
        let t = v.go_type();
        enc.send_type_descriptor(&mut out, &mut b, t);
        let id = enc.ids.id(t);
        put_int(&mut b, id);
        enc.encode(&mut out, &mut b, v);
        write_message(&mut out, &mut b);
        out
    }

    fn send_type_descriptor(&mut self, w: &mut Vec<u8>, b: &mut Vec<u8>, t: GoType) {
        if self.sent.contains(&t) {
            return;
        }
        if !self.send_type(w, b, t) {
            self.ids.compile(t);
            self.sent.insert(t);
        }
    }

    /// `sendType`: builtins and interfaces need no definition.
    fn send_type(&mut self, w: &mut Vec<u8>, b: &mut Vec<u8>, t: GoType) -> bool {
        if t.builtin_id().is_some() || self.sent.contains(&t) {
            return false;
        }
        self.ids.compile(t);
        let id = self.ids.id(t);
        put_int(b, -id);
        b.extend_from_slice(&self.wire_type(t));
        // This flushes whatever the enclosing message holds so far, as Go does.
        write_message(w, b);
        self.sent.insert(t);
        match t.def() {
            Def::Struct(fields) => {
                for (_, f) in fields {
                    self.send_type(w, b, *f);
                }
            }
            Def::Map(k, e) => {
                self.send_type(w, b, k);
                self.send_type(w, b, e);
            }
            Def::Slice(e) => {
                self.send_type(w, b, e);
            }
            Def::GobEncoder => {}
        }
        true
    }

    /// The `wireType` value for `t` (a struct with one of its kind fields set).
    fn wire_type(&mut self, t: GoType) -> Vec<u8> {
        let mut common = Vec::new();
        let name = t.wire_name();
        if name.is_empty() {
            common.push(0x02);
        } else {
            common.push(0x01);
            put_bytes(&mut common, name.as_bytes());
            common.push(0x01);
        }
        put_int(&mut common, self.ids.id(t));
        common.push(0x00);
        let mut out = Vec::new();
        match t.def() {
            Def::Slice(e) => {
                out.extend_from_slice(&[0x02, 0x01]); // SliceT, CommonType
                out.extend_from_slice(&common);
                out.push(0x01);
                put_int(&mut out, self.ids.id(e));
            }
            Def::Struct(fields) => {
                out.extend_from_slice(&[0x03, 0x01]); // StructT, CommonType
                out.extend_from_slice(&common);
                if !fields.is_empty() {
                    out.push(0x01);
                    put_uint(&mut out, fields.len() as u64);
                    for (fname, ft) in fields {
                        out.push(0x01);
                        put_bytes(&mut out, fname.as_bytes());
                        out.push(0x01);
                        put_int(&mut out, self.ids.id(*ft));
                        out.push(0x00);
                    }
                }
            }
            Def::Map(k, e) => {
                out.extend_from_slice(&[0x04, 0x01]); // MapT, CommonType
                out.extend_from_slice(&common);
                out.push(0x01);
                put_int(&mut out, self.ids.id(k));
                out.push(0x01);
                put_int(&mut out, self.ids.id(e));
            }
            Def::GobEncoder => {
                out.extend_from_slice(&[0x05, 0x01]); // GobEncoderT, CommonType
                out.extend_from_slice(&common);
            }
        }
        out.extend_from_slice(&[0x00, 0x00]);
        out
    }

    /// `encode`: a struct as its fields; anything else as a singleton (field delta 0).
    fn encode(&mut self, w: &mut Vec<u8>, b: &mut Vec<u8>, v: &GoVal) {
        match v {
            GoVal::Struct(_, fields) => self.encode_struct(w, b, fields),
            other => {
                b.push(0x00);
                self.op(w, b, other);
            }
        }
    }

    fn encode_struct(&mut self, w: &mut Vec<u8>, b: &mut Vec<u8>, fields: &[GoVal]) {
        let mut last = -1i64;
        for (i, f) in fields.iter().enumerate() {
            if f.is_zero() {
                continue;
            }
            let i = i as i64;
            put_uint(b, (i - last) as u64);
            last = i;
            self.op(w, b, f);
        }
        b.push(0x00);
    }

    fn op(&mut self, w: &mut Vec<u8>, b: &mut Vec<u8>, v: &GoVal) {
        match v {
            GoVal::Int(i) => put_int(b, *i),
            GoVal::Uint(u) => put_uint(b, *u),
            GoVal::Str(s) => put_bytes(b, s.as_bytes()),
            GoVal::Bool(x) => put_uint(b, u64::from(*x)),
            GoVal::Struct(_, fields) => self.encode_struct(w, b, fields),
            GoVal::Map(_, entries) => {
                put_uint(b, entries.len() as u64);
                for (k, e) in entries {
                    put_bytes(b, k.as_bytes());
                    self.op(w, b, e);
                }
            }
            GoVal::Slice(_, items) => {
                put_uint(b, items.len() as u64);
                for e in items {
                    self.op(w, b, e);
                }
            }
            GoVal::Iface(None) => put_uint(b, 0),
            GoVal::Iface(Some((name, t, inner))) => {
                put_bytes(b, name.as_bytes());
                self.send_type_descriptor(w, b, *t);
                let id = self.ids.id(*t);
                put_int(b, id);
                // The value goes in a buffer of its own; definitions met inside it are flushed
                // into this message (`b` becomes the writer).
                let mut data = Vec::new();
                self.encode(b, &mut data, inner);
                write_message(b, &mut data);
            }
            GoVal::CtyType(t) => {
                let bytes = Encoder::stream(self.ids, &gob_type_struct(t));
                put_bytes(b, &bytes);
            }
            GoVal::CtyValue(t, val) => {
                let gv = GoVal::Struct(
                    GoType::GobValue,
                    vec![GoVal::Int(0), GoVal::CtyType(t.clone()), (**val).clone()],
                );
                let bytes = Encoder::stream(self.ids, &gv);
                put_bytes(b, &bytes);
            }
        }
    }
}

/// cty's internal representation of `v` (of type `ty`) inside an interface. `path` names the
/// value in errors.
fn cty_repr(v: &Value, ty: &Ty, path: &str) -> Result<GoVal, String> {
    let wrong = || format!("{path}: expected {}, got {v}", ty_name(ty));
    let some = |name: &'static str, t: GoType, x: GoVal| Ok(GoVal::Iface(Some((name, t, Box::new(x)))));
    match (ty, v) {
        (_, Value::Null) => Ok(GoVal::Iface(None)),
        (Ty::Primitive(b'S'), Value::String(s)) => some("string", GoType::String, GoVal::Str(s.clone())),
        (Ty::Primitive(b'B'), Value::Bool(b)) => some("bool", GoType::Bool, GoVal::Bool(*b)),
        (Ty::Primitive(b'N'), Value::Number(_)) => {
            Err(format!("{path}: number values cannot be sent in gob mode (not supported by amikey)"))
        }
        (Ty::List(e), Value::Array(items)) => {
            let items = items
                .iter()
                .enumerate()
                .map(|(i, x)| cty_repr(x, e, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            some("[]interface {}", GoType::SliceIface, GoVal::Slice(GoType::SliceIface, items))
        }
        (Ty::Map(e), Value::Object(m)) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let entries = keys
                .into_iter()
                .map(|k| Ok((k.clone(), cty_repr(&m[k], e, &format!("{path}[{k:?}]"))?)))
                .collect::<Result<Vec<_>, String>>()?;
            some(
                "map[string]interface {}",
                GoType::MapStringIface,
                GoVal::Map(GoType::MapStringIface, entries),
            )
        }
        (Ty::Object(attrs), Value::Object(m)) => {
            if let Some(k) = m.keys().find(|k| !attrs.iter().any(|(a, _)| a == *k)) {
                return Err(format!("{k}: not in the output spec"));
            }
            let mut sorted: Vec<&(String, Ty)> = attrs.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let entries = sorted
                .into_iter()
                .map(|(k, t)| {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    Ok((k.clone(), cty_repr(m.get(k).unwrap_or(&Value::Null), t, &p)?))
                })
                .collect::<Result<Vec<_>, String>>()?;
            some(
                "map[string]interface {}",
                GoType::MapStringIface,
                GoVal::Map(GoType::MapStringIface, entries),
            )
        }
        _ => Err(wrong()),
    }
}

fn ty_name(t: &Ty) -> String {
    match t {
        Ty::Primitive(b'S') => "string".into(),
        Ty::Primitive(b'N') => "number".into(),
        Ty::Primitive(_) => "bool".into(),
        Ty::List(e) => format!("list({})", ty_name(e)),
        Ty::Map(e) => format!("map({})", ty_name(e)),
        Ty::Object(_) => "object".into(),
    }
}

fn object(attrs: &[AttrSpec], values: &Map<String, Value>) -> Result<(Ty, GoVal), String> {
    let ty = Ty::Object(attrs.iter().map(|a| (a.name.clone(), Ty::of(&a.ty))).collect());
    let repr = cty_repr(&Value::Object(values.clone()), &ty, "")?;
    Ok((ty, repr))
}

/// `cty.Value.GobEncode()` of the object with `attrs` (missing attributes are null), as a fresh
/// Go process produces it. `Err` names an attribute whose value does not fit its type.
pub fn gob_encode_object(attrs: &[AttrSpec], values: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let (ty, repr) = object(attrs, values)?;
    let gv = GoVal::Struct(GoType::GobValue, vec![GoVal::Int(0), GoVal::CtyType(ty), repr]);
    Ok(Encoder::stream(&mut Ids::new(), &gv))
}

/// `gob.NewEncoder(w).Encode(value)` of that object: the `Value` bytes of the SDK's
/// `ExecuteResponse` in gob mode (`rpc/datasource.go`), which Packer decodes into a `cty.Value`.
pub fn encode_execute_value(attrs: &[AttrSpec], values: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let (ty, repr) = object(attrs, values)?;
    Ok(Encoder::stream(&mut Ids::new(), &GoVal::CtyValue(ty, Box::new(repr))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIXTURES: &str = include_str!("../../tests/fixtures/wire/cty-gob-examples.txt");

    fn fixture(name: &str) -> Vec<u8> {
        let mut hex = String::new();
        let mut inside = false;
        for line in FIXTURES.lines() {
            if let Some(n) = line.strip_prefix("## ") {
                inside = n.trim() == name;
            } else if inside && !line.starts_with('#') {
                hex.push_str(line.trim());
            }
        }
        assert!(!hex.is_empty(), "no fixture {name}");
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    fn attr(name: &str, ty: CtyType) -> AttrSpec {
        AttrSpec { name: name.into(), ty, required: false }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn s() -> CtyType {
        CtyType::String
    }

    #[test]
    fn primitives_match_go_cty() {
        assert_eq!(gob_encode_object(&[attr("a", s())], &obj(json!({"a": "x"}))).unwrap(), fixture("string"));
        assert_eq!(
            gob_encode_object(&[attr("b", CtyType::Bool)], &obj(json!({"b": true}))).unwrap(),
            fixture("bool")
        );
    }

    #[test]
    fn collections_match_go_cty() {
        let m = [attr("m", CtyType::Map(Box::new(s())))];
        assert_eq!(gob_encode_object(&m, &obj(json!({"m": {"k": "v"}}))).unwrap(), fixture("map"));
        let l = [attr("l", CtyType::List(Box::new(s())))];
        assert_eq!(gob_encode_object(&l, &obj(json!({"l": ["x", "y"]}))).unwrap(), fixture("list"));
    }

    #[test]
    fn nulls_and_empty_collections_match_go_cty() {
        let n = [attr("n", CtyType::Map(Box::new(CtyType::Bool)))];
        assert_eq!(gob_encode_object(&n, &Map::new()).unwrap(), fixture("nulls"));
        let e = [attr("e", CtyType::Map(Box::new(s()))), attr("f", CtyType::List(Box::new(s())))];
        assert_eq!(gob_encode_object(&e, &obj(json!({"e": {}, "f": []}))).unwrap(), fixture("empty"));
    }

    fn preflight() -> (Vec<AttrSpec>, Map<String, Value>) {
        let map = |t| CtyType::Map(Box::new(t));
        let attrs = vec![
            attr("warnings", CtyType::List(Box::new(s()))),
            attr("kms_key_arns", map(s())),
            attr("ebs_encryption_by_default", map(CtyType::Bool)),
            attr("ebs_default_kms_key_arns", map(s())),
        ];
        let arn = |r: &str, k: &str| format!("arn:aws:kms:{r}:123456789012:key/{k}");
        let values = obj(json!({
            "ebs_default_kms_key_arns": {"us-east-1": arn("us-east-1", "e"), "eu-west-1": arn("eu-west-1", "d")},
            "ebs_encryption_by_default": {"eu-west-1": true, "us-east-1": false},
            "kms_key_arns": {"eu-west-1": arn("eu-west-1", "w"), "us-east-1": arn("us-east-1", "u")},
            "warnings": ["W: one"],
        }));
        (attrs, values)
    }

    #[test]
    fn the_preflight_output_matches_go_cty_and_the_sdk_reply() {
        let (attrs, values) = preflight();
        assert_eq!(gob_encode_object(&attrs, &values).unwrap(), fixture("preflight"));
        assert_eq!(encode_execute_value(&attrs, &values).unwrap(), fixture("preflight_outer"));
    }

    #[test]
    fn values_that_do_not_fit_are_errors() {
        let (attrs, _) = preflight();
        let e = gob_encode_object(&attrs, &obj(json!({"kms_key_arns": {"x": 1}}))).unwrap_err();
        assert!(e.starts_with("kms_key_arns[\"x\"]: expected string"), "{e}");
        let e = gob_encode_object(&attrs, &obj(json!({"nope": 1}))).unwrap_err();
        assert!(e.contains("not in the output spec"), "{e}");
        let e = gob_encode_object(&[attr("n", CtyType::Number)], &obj(json!({"n": 1}))).unwrap_err();
        assert!(e.contains("number"), "{e}");
    }
}
