//! JSON front end: a small position-tracking JSON parser (serde_json reports no positions for
//! values), legacy JSON templates (`builders`, `post-processors`, `{{user `x`}}`) and HCL2 JSON
//! (`.pkr.json`, evaluated through [`super::hcl::evaluate`]).
//!
//! Must not know: files, the rules.

use std::collections::BTreeMap;

use hcl::{Expression, TemplateExpr};

use super::hcl::{RawAttr, RawBlock};
use super::{
    Attr, Block, Build, LoadedVars, Pos, RELEVANT_KEYS, RawFinding, SYNTAX, Template, Val, VarValue,
};

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 100;

/// A JSON value with the position of its first character.
#[derive(Debug, Clone, PartialEq)]
pub struct JNode {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub val: JVal,
}

/// A JSON value; objects keep key order and key positions.
#[derive(Debug, Clone, PartialEq)]
pub enum JVal {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<JNode>),
    /// An object: `(key, key position, value)`.
    Obj(Vec<(String, Pos, JNode)>),
}

impl JNode {
    fn get(&self, key: &str) -> Option<&JNode> {
        match &self.val {
            JVal::Obj(entries) => entries.iter().rev().find(|(k, _, _)| k == key).map(|(_, _, v)| v),
            _ => None,
        }
    }

    fn entries(&self) -> &[(String, Pos, JNode)] {
        match &self.val {
            JVal::Obj(e) => e,
            _ => &[],
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
    col: usize,
}

/// A parse error: where and what.
pub type ParseError = (Pos, String);

impl Parser<'_> {
    fn pos(&self) -> Pos {
        Pos { file: 0, line: self.line, col: self.col }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        if b == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if b & 0xC0 != 0x80 {
            self.col += 1;
        }
        Some(b)
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ParseError> {
        Err((self.pos(), msg.into()))
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.bump();
            Ok(())
        } else {
            self.err(format!("expected `{}`", c as char))
        }
    }

    fn value(&mut self, depth: usize) -> Result<JNode, ParseError> {
        if depth > MAX_DEPTH {
            return self.err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.ws();
        let pos = self.pos();
        let val = match self.peek() {
            Some(b'{') => {
                self.bump();
                let mut entries = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.bump();
                } else {
                    loop {
                        self.ws();
                        let kpos = self.pos();
                        let k = self.string()?;
                        self.ws();
                        self.expect(b':')?;
                        let v = self.value(depth + 1)?;
                        entries.push((k, kpos, v));
                        self.ws();
                        match self.bump() {
                            Some(b',') => continue,
                            Some(b'}') => break,
                            _ => return self.err("expected `,` or `}` in object"),
                        }
                    }
                }
                JVal::Obj(entries)
            }
            Some(b'[') => {
                self.bump();
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.bump();
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        match self.bump() {
                            Some(b',') => continue,
                            Some(b']') => break,
                            _ => return self.err("expected `,` or `]` in array"),
                        }
                    }
                }
                JVal::Arr(items)
            }
            Some(b'"') => JVal::Str(self.string()?),
            Some(b't') => self.word("true", JVal::Bool(true))?,
            Some(b'f') => self.word("false", JVal::Bool(false))?,
            Some(b'n') => self.word("null", JVal::Null)?,
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                    self.bump();
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                match text.parse::<f64>() {
                    Ok(n) if n.is_finite() => JVal::Num(n),
                    _ => return Err((pos, format!("invalid number `{text}`"))),
                }
            }
            Some(_) => return self.err("expected a JSON value"),
            None => return self.err("unexpected end of input"),
        };
        Ok(JNode { pos, val })
    }

    fn word(&mut self, w: &str, v: JVal) -> Result<JVal, ParseError> {
        if self.s.get(self.i..self.i + w.len()) == Some(w.as_bytes()) {
            for _ in 0..w.len() {
                self.bump();
            }
            Ok(v)
        } else {
            self.err("expected a JSON value")
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut n = 0u32;
        for _ in 0..4 {
            let d = match self.bump() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return self.err("invalid \\u escape"),
            };
            n = n * 16 + u32::from(d);
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.expect(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.bump() {
                None => return self.err("unterminated string"),
                Some(b'"') => break,
                Some(b'\\') => {
                    let c = match self.bump() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi)
                                && self.s.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                self.bump();
                                self.bump();
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                            } else {
                                hi
                            };
                            char::from_u32(code).unwrap_or('\u{FFFD}')
                        }
                        _ => return self.err("invalid escape"),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(c) if c < 0x20 => return self.err("control character in string"),
                Some(c) => out.push(c),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Parses JSON text with positions.
pub fn parse(text: &str) -> Result<JNode, ParseError> {
    let mut p = Parser { s: text.as_bytes(), i: 0, line: 1, col: 1 };
    // A UTF-8 byte-order mark is tolerated.
    if text.starts_with('\u{feff}') {
        p.i = 3;
    }
    let v = p.value(0)?;
    p.ws();
    if p.peek().is_some() {
        return p.err("trailing characters after the JSON value");
    }
    Ok(v)
}

fn syntax(pos: Pos, msg: String) -> Template {
    Template {
        findings: vec![RawFinding {
            rule: SYNTAX,
            pos,
            message: format!("cannot parse the JSON template: {msg}"),
            help: "fix the JSON syntax; nothing else was checked in this file".into(),
        }],
        ..Template::default()
    }
}

/// Parses a JSON template. `None` when the JSON is valid but not a Packer template (a var file,
/// a manifest, `package.json`).
pub fn parse_template(text: &str, vars: &LoadedVars) -> Option<Template> {
    let root = match parse(text) {
        Ok(r) => r,
        Err((pos, msg)) => return Some(syntax(pos, msg)),
    };
    if root.get("builders").is_some() {
        return Some(legacy(&root, vars));
    }
    if root.get("source").is_some() || root.get("build").is_some() {
        return Some(super::hcl::evaluate(&hcl2_root(&root), vars));
    }
    None
}

/// A JSON var file: a top-level object of values.
pub fn var_file(text: &str) -> Result<Vec<(String, hcl::Value)>, String> {
    let root = parse(text).map_err(|(p, m)| format!("{}:{}: {m}", p.line, p.col))?;
    match &root.val {
        JVal::Obj(entries) => Ok(entries.iter().map(|(k, _, v)| (k.clone(), to_hcl_value(v))).collect()),
        _ => Err("a JSON var file must be an object".into()),
    }
}

fn to_hcl_value(n: &JNode) -> hcl::Value {
    match &n.val {
        JVal::Null => hcl::Value::Null,
        JVal::Bool(b) => hcl::Value::Bool(*b),
        JVal::Num(f) => num(*f).map(hcl::Value::Number).unwrap_or(hcl::Value::Null),
        JVal::Str(s) => hcl::Value::String(s.clone()),
        JVal::Arr(items) => hcl::Value::Array(items.iter().map(to_hcl_value).collect()),
        JVal::Obj(e) => hcl::Value::Object(e.iter().map(|(k, _, v)| (k.clone(), to_hcl_value(v))).collect()),
    }
}

fn num(f: f64) -> Option<hcl::Number> {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Some(hcl::Number::from(f as i64))
    } else {
        hcl::Number::from_f64(f)
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy JSON templates.

/// Substitutes `{{user `x`}}` (and `{{ user "x" }}`); any other `{{…}}` makes the value unknown.
fn interpolate(s: &str, vars: &BTreeMap<String, Option<String>>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("unterminated `{{`".into());
        };
        let inner = after[..end].trim();
        let name = inner
            .strip_prefix("user")
            .map(|n| n.trim().trim_matches(|c| c == '`' || c == '"'))
            .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace));
        match name {
            Some(n) => match vars.get(n) {
                Some(Some(v)) => out.push_str(v),
                Some(None) => return Err(format!("variable `{n}` has no static value")),
                None => return Err(format!("variable `{n}` is not declared in `variables`")),
            },
            None => return Err(format!("`{{{{{inner}}}}}` is not evaluated statically")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn legacy_val(n: &JNode, vars: &BTreeMap<String, Option<String>>) -> Val {
    match &n.val {
        JVal::Null => Val::Null,
        JVal::Bool(b) => Val::Bool(*b),
        JVal::Num(f) => Val::Num(*f),
        JVal::Str(s) => match interpolate(s, vars) {
            Ok(v) => Val::Str(v),
            Err(e) => Val::Unknown(e),
        },
        JVal::Arr(items) => Val::List(items.iter().map(|i| legacy_val(i, vars)).collect()),
        JVal::Obj(e) => Val::Map(e.iter().map(|(k, _, v)| (k.clone(), legacy_val(v, vars))).collect()),
    }
}

fn legacy_block(
    n: &JNode,
    kind: &str,
    name: &str,
    vars: &BTreeMap<String, Option<String>>,
    notes: &mut Vec<(Pos, String)>,
    note_all: bool,
) -> Block {
    let mut b = Block {
        kind: kind.into(),
        name: name.into(),
        pos: n.get("type").map(|t| t.pos).unwrap_or(n.pos),
        ..Block::default()
    };
    for (k, kpos, v) in n.entries() {
        if k == "launch_block_device_mappings" {
            if let JVal::Arr(items) = &v.val {
                for i in items {
                    let nb = legacy_block(i, k, "", vars, notes, note_all);
                    b.blocks.push((k.clone(), Block { pos: *kpos, ..nb }));
                }
            }
            continue;
        }
        let val = legacy_val(v, vars);
        if val.is_unknown() && (note_all || k == "keep_input_artifact") && RELEVANT_KEYS.contains(&k.as_str())
        {
            notes.push((
                *kpos,
                format!(
                    "`{k}` cannot be evaluated statically ({}); rules that need it were skipped",
                    first_unknown(&val)
                ),
            ));
        }
        let entries = v.entries().iter().map(|(ek, ep, _)| (ek.clone(), *ep)).collect();
        b.attrs.insert(k.clone(), Attr { pos: *kpos, val, entries });
    }
    b
}

fn first_unknown(v: &Val) -> String {
    match v {
        Val::Unknown(r) => r.clone(),
        Val::List(l) => l.iter().find(|x| x.is_unknown()).map(first_unknown).unwrap_or_default(),
        Val::Map(m) => m.values().find(|x| x.is_unknown()).map(first_unknown).unwrap_or_default(),
        _ => String::new(),
    }
}

fn legacy(root: &JNode, loaded: &LoadedVars) -> Template {
    let mut t = Template::default();
    // Variables: a default may itself use {{env}}; -var and var files override.
    let mut vars: BTreeMap<String, Option<String>> = BTreeMap::new();
    if let Some(vs) = root.get("variables") {
        let empty = BTreeMap::new();
        for (k, kpos, v) in vs.entries() {
            let value = match loaded.get(k) {
                Some(VarValue::Cli(s)) => Some(s.clone()),
                Some(VarValue::Typed(hcl::Value::String(s))) => Some(s.clone()),
                Some(VarValue::Typed(other)) => Some(other.to_string()),
                None => {
                    match legacy_val(v, &empty) {
                        Val::Str(s) => Some(s),
                        Val::Unknown(r) => {
                            t.notes.push((*kpos, format!("default of variable `{k}` cannot be evaluated ({r}); uses of it were skipped")));
                            None
                        }
                        other => other.scalar_string(),
                    }
                }
            };
            vars.insert(k.clone(), value);
        }
    }
    let mut build = Build::default();
    if let Some(JNode { val: JVal::Arr(bs), .. }) = root.get("builders") {
        for bn in bs {
            let kind = match bn.get("type").map(|t| &t.val) {
                Some(JVal::Str(s)) => s.clone(),
                _ => continue,
            };
            let name = match bn.get("name").map(|t| &t.val) {
                Some(JVal::Str(s)) => s.clone(),
                _ => kind.clone(),
            };
            let ami = super::AMI_BUILDERS.contains(&kind.as_str());
            let mut notes = Vec::new();
            let b = legacy_block(bn, &kind, &name, &vars, &mut notes, ami);
            t.notes.extend(notes);
            build.builders.push(b);
        }
    }
    let pp_block = |n: &JNode, notes: &mut Vec<(Pos, String)>| -> Option<Block> {
        match &n.val {
            JVal::Str(s) => Some(Block { kind: s.clone(), pos: n.pos, ..Block::default() }),
            JVal::Obj(_) => {
                let kind = match n.get("type").map(|t| &t.val) {
                    Some(JVal::Str(s)) => s.clone(),
                    _ => return None,
                };
                let is_amikey = kind == "amikey";
                Some(legacy_block(n, &kind, "", &vars, notes, is_amikey))
            }
            _ => None,
        }
    };
    if let Some(JNode { val: JVal::Arr(pps), .. }) = root.get("post-processors") {
        for p in pps {
            let chain: Vec<Block> = match &p.val {
                JVal::Arr(items) => items.iter().filter_map(|i| pp_block(i, &mut t.notes)).collect(),
                _ => pp_block(p, &mut t.notes).into_iter().collect(),
            };
            if !chain.is_empty() {
                build.chains.push(chain);
            }
        }
    }
    t.builds.push(build);
    t
}

// ---------------------------------------------------------------------------------------------
// HCL2 JSON (`.pkr.json`) → the same raw blocks the HCL front end builds.

fn to_expr(n: &JNode) -> Expression {
    match &n.val {
        JVal::Null => Expression::Null,
        JVal::Bool(b) => Expression::Bool(*b),
        JVal::Num(f) => num(*f).map(Expression::Number).unwrap_or(Expression::Null),
        JVal::Str(s) if s.contains("${") || s.contains("%{") => {
            Expression::TemplateExpr(Box::new(TemplateExpr::QuotedString(s.clone())))
        }
        JVal::Str(s) => Expression::String(s.clone()),
        JVal::Arr(items) => Expression::Array(items.iter().map(to_expr).collect()),
        JVal::Obj(e) => Expression::Object(
            e.iter().map(|(k, _, v)| (hcl::ObjectKey::from(k.clone()), to_expr(v))).collect(),
        ),
    }
}

/// Keys that are nested blocks (not attributes), by parent block type, with their label count.
fn block_schema(parent: &str, key: &str) -> Option<usize> {
    match (parent, key) {
        ("", "packer") | ("", "locals") | ("", "build") => Some(0),
        ("", "variable") | ("", "local") => Some(1),
        ("", "source") => Some(2),
        ("packer", "required_plugins") => Some(0),
        ("build", "source") | ("build", "post-processor") | ("build", "provisioner") => Some(1),
        ("build", "post-processors") => Some(0),
        ("post-processors", "post-processor") => Some(1),
        ("source", "launch_block_device_mappings") | ("source", "ami_block_device_mappings") => Some(0),
        _ => None,
    }
}

/// Expands `{"label": {"label2": body}}` (or arrays of such) into blocks.
fn expand(ident: &str, n: &JNode, labels: Vec<String>, left: usize, pos: Pos, out: &mut Vec<RawBlock>) {
    if let JVal::Arr(items) = &n.val {
        for i in items {
            expand(ident, i, labels.clone(), left, pos, out);
        }
        return;
    }
    if left == 0 {
        out.push(body_of(ident, labels, n, pos));
        return;
    }
    for (k, kpos, v) in n.entries() {
        let mut l = labels.clone();
        l.push(k.clone());
        expand(ident, v, l, left - 1, if labels.is_empty() { *kpos } else { pos }, out);
    }
}

fn body_of(ident: &str, labels: Vec<String>, n: &JNode, pos: Pos) -> RawBlock {
    let mut b = RawBlock { ident: ident.to_string(), labels, pos, ..RawBlock::default() };
    for (k, kpos, v) in n.entries() {
        if k == "//" {
            continue; // HCL JSON comment
        }
        match block_schema(ident, k) {
            Some(nlabels) => expand(k, v, Vec::new(), nlabels, *kpos, &mut b.blocks),
            None => b.attrs.push(RawAttr {
                key: k.clone(),
                pos: *kpos,
                expr: to_expr(v),
                entries: v.entries().iter().map(|(ek, ep, _)| (ek.clone(), *ep)).collect(),
            }),
        }
    }
    b
}

fn hcl2_root(root: &JNode) -> RawBlock {
    body_of("", Vec::new(), root, root.pos)
}
