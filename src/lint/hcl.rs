//! HCL2 front end: parses `.pkr.hcl` with hcl-edit (for spans), evaluates what is static with
//! hcl-rs, and builds the [`Template`] model. `.pkr.json` files reach the same evaluator through
//! [`RawBlock`], built by [`super::json`].
//!
//! Evaluated: `var.*` (defaults, `-var`, var files), `local.*` / `local` blocks (to a fixed
//! point), `source.name` / `source.type` when a build has one source, string interpolation,
//! for-expressions, index traversals, conditionals and the pure common functions of Packer's
//! library (see [`PURE_FUNCTIONS`]). Anything else (`timestamp()`, `env()`, `formatdate()`,
//! `path.root`, a variable without a value) becomes [`Val::Unknown`] with a note.
//!
//! Must not know: files (the caller passes text) and the rules.

use std::collections::BTreeMap;

use hcl::Value;
use hcl::edit::Span;
use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::{Expression, ObjectKey};

use super::{
    Attr, Block, Build, LoadedVars, Pos, RELEVANT_KEYS, RawFinding, SYNTAX, Template, Val, VarValue,
};

/// Deepest bracket nesting accepted before parsing (deeper input is refused, not parsed).
pub const MAX_NESTING: usize = 100;

/// Byte offset → line/column, precomputed.
pub struct LineIndex<'a> {
    file: usize,
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Indexes `text`.
    pub fn new(text: &'a str, file: usize) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { file, text, starts }
    }

    /// Position of byte `offset`.
    pub fn pos(&self, offset: usize) -> Pos {
        let line = self.starts.partition_point(|s| *s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let end = offset.min(self.text.len()).max(start);
        let col = self.text.get(start..end).map(|s| s.chars().count()).unwrap_or(end - start) + 1;
        Pos { file: self.file, line, col }
    }
}

/// One attribute before evaluation.
#[derive(Debug, Clone)]
pub struct RawAttr {
    /// Key.
    pub key: String,
    /// Position of the key.
    pub pos: Pos,
    /// The expression.
    pub expr: Expression,
    /// Positions of literal object keys of the value.
    pub entries: BTreeMap<String, Pos>,
}

/// One block before evaluation (the root body is a block with an empty ident).
#[derive(Debug, Clone, Default)]
pub struct RawBlock {
    /// Block type (`source`, `build`, …).
    pub ident: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Position of the block type.
    pub pos: Pos,
    /// Attributes in order.
    pub attrs: Vec<RawAttr>,
    /// Nested blocks in order.
    pub blocks: Vec<RawBlock>,
}

impl RawBlock {
    fn blocks<'s>(&'s self, ident: &'s str) -> impl Iterator<Item = &'s RawBlock> + 's {
        self.blocks.iter().filter(move |b| b.ident == ident)
    }

    fn attr(&self, key: &str) -> Option<&RawAttr> {
        self.attrs.iter().rev().find(|a| a.key == key)
    }
}

/// Maximum bracket nesting in `text`, ignoring nothing (a cheap upper bound).
pub fn nesting(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'{' | b'[' | b'(' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parses and evaluates a `.pkr.hcl` template. Never fails: syntax errors become AMK000.
pub fn parse_template(text: &str, vars: &LoadedVars) -> Template {
    parse_templates(&[text], vars)
}

/// Parses and evaluates the `.pkr.hcl` files of one directory as a single template (Packer's
/// semantics); positions carry the index of their file. A file that does not parse is reported
/// (AMK000) and left out; the others are still checked.
pub fn parse_templates(texts: &[&str], vars: &LoadedVars) -> Template {
    let mut root = RawBlock::default();
    let mut findings = Vec::new();
    for (file, text) in texts.iter().enumerate() {
        if nesting(text) > MAX_NESTING {
            let pos = Pos { file, line: 1, col: 1 };
            findings.push(syntax_error(pos, format!("brackets nest deeper than {MAX_NESTING} levels")));
            continue;
        }
        match hcl::edit::parser::parse_body(text) {
            Ok(body) => {
                let b = convert_body(&body, &LineIndex::new(text, file));
                root.attrs.extend(b.attrs);
                root.blocks.extend(b.blocks);
            }
            Err(e) => {
                let loc = e.location();
                let pos = Pos { file, line: loc.line(), col: loc.column() };
                findings.push(syntax_error(pos, e.message().to_string()));
            }
        }
    }
    let mut t = evaluate(&root, vars);
    t.findings.extend(findings);
    t
}

fn syntax_error(pos: Pos, message: String) -> RawFinding {
    RawFinding {
        rule: SYNTAX,
        pos,
        message: format!("cannot parse the template: {message}"),
        help: "fix the syntax (`packer validate` shows the same error); the rest of the template was checked without this file".into(),
    }
}

fn span_pos(s: &impl Span, idx: &LineIndex) -> Pos {
    s.span().map(|r| idx.pos(r.start)).unwrap_or_default()
}

fn convert_body(body: &hcl::edit::structure::Body, idx: &LineIndex) -> RawBlock {
    let mut out = RawBlock::default();
    for s in body.iter() {
        if let Some(a) = s.as_attribute() {
            let mut entries = BTreeMap::new();
            if let hcl::edit::expr::Expression::Object(obj) = &a.value {
                for (k, _) in obj.iter() {
                    let (name, pos) = match k {
                        hcl::edit::expr::ObjectKey::Ident(i) => {
                            (Some(i.as_str().to_string()), span_pos(i, idx))
                        }
                        hcl::edit::expr::ObjectKey::Expression(hcl::edit::expr::Expression::String(s)) => {
                            (Some(s.as_str().to_string()), span_pos(s, idx))
                        }
                        _ => (None, Pos::default()),
                    };
                    if let Some(n) = name {
                        entries.insert(n, pos);
                    }
                }
            }
            out.attrs.push(RawAttr {
                key: a.key.as_str().to_string(),
                pos: span_pos(&a.key, idx),
                expr: Expression::from(a.value.clone()),
                entries,
            });
        } else if let Some(b) = s.as_block() {
            out.blocks.push(convert_block(b, idx));
        }
    }
    out
}

fn convert_block(b: &hcl::edit::structure::Block, idx: &LineIndex) -> RawBlock {
    let inner = convert_body(&b.body, idx);
    RawBlock {
        ident: b.ident.as_str().to_string(),
        labels: b.labels.iter().map(|l| l.as_str().to_string()).collect(),
        pos: span_pos(&b.ident, idx),
        attrs: inner.attrs,
        blocks: inner.blocks,
    }
}

/// Parses a `.pkrvars.hcl` var file: top-level attributes, evaluated without variables.
pub fn var_file(text: &str) -> Result<Vec<(String, Value)>, String> {
    if nesting(text) > MAX_NESTING {
        return Err(format!("brackets nest deeper than {MAX_NESTING} levels"));
    }
    let body: hcl::Body = hcl::parse(text).map_err(|e| e.to_string())?;
    let ctx = base_context();
    let mut out = Vec::new();
    for a in body.attributes() {
        let v = a.expr().evaluate(&ctx).map_err(|e| format!("{}: {e}", a.key()))?;
        out.push((a.key().to_string(), v));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Functions. `Func` is a plain fn pointer, so these carry no state.

fn str_arg(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err("expected a string".into()),
    }
}

fn f_lower(args: FuncArgs) -> Result<Value, String> {
    let v = args.first().ok_or("lower: one argument")?;
    Ok(Value::String(str_arg(v)?.to_lowercase()))
}

fn f_upper(args: FuncArgs) -> Result<Value, String> {
    let v = args.first().ok_or("upper: one argument")?;
    Ok(Value::String(str_arg(v)?.to_uppercase()))
}

fn f_concat(args: FuncArgs) -> Result<Value, String> {
    let mut out = Vec::new();
    for a in args.iter() {
        match a {
            Value::Array(items) => out.extend(items.iter().cloned()),
            _ => return Err("concat: arguments must be lists".into()),
        }
    }
    Ok(Value::Array(out))
}

fn f_merge(args: FuncArgs) -> Result<Value, String> {
    let mut out = hcl::Map::new();
    for a in args.iter() {
        match a {
            Value::Object(m) => out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone()))),
            Value::Null => {}
            _ => return Err("merge: arguments must be maps".into()),
        }
    }
    Ok(Value::Object(out))
}

fn f_join(args: FuncArgs) -> Result<Value, String> {
    let sep = str_arg(args.first().ok_or("join: separator")?)?;
    let mut parts = Vec::new();
    for a in args.iter().skip(1) {
        match a {
            Value::Array(items) => {
                for i in items {
                    parts.push(str_arg(i)?);
                }
            }
            _ => return Err("join: lists expected".into()),
        }
    }
    Ok(Value::String(parts.join(&sep)))
}

fn f_coalesce(args: FuncArgs) -> Result<Value, String> {
    args.iter()
        .find(|v| !matches!(v, Value::Null) && !matches!(v, Value::String(s) if s.is_empty()))
        .cloned()
        .ok_or_else(|| "coalesce: no non-null argument".into())
}

fn f_format(args: FuncArgs) -> Result<Value, String> {
    let fmt = str_arg(args.first().ok_or("format: format string")?)?;
    let mut rest = args.iter().skip(1);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s' | 'd' | 'v') => out.push_str(&str_arg(rest.next().ok_or("format: too few arguments")?)?),
            _ => return Err("format: only %s, %d, %v and %% are evaluated statically".into()),
        }
    }
    Ok(Value::String(out))
}

fn list_arg<'v>(f: &str, v: Option<&'v Value>) -> Result<&'v [Value], String> {
    match v {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(format!("{f}: expected a list")),
    }
}

fn nth_str(args: &FuncArgs, i: usize, f: &str) -> Result<String, String> {
    str_arg(args.get(i).ok_or_else(|| format!("{f}: missing argument {}", i + 1))?)
}

/// `lookup(map, key, default)`: Packer's (cty's) lookup; the default is used only when the key
/// is missing.
fn f_lookup(args: FuncArgs) -> Result<Value, String> {
    let Some(Value::Object(m)) = args.first() else { return Err("lookup: expected a map".into()) };
    let key = nth_str(&args, 1, "lookup")?;
    match (m.get(&key), args.get(2)) {
        (Some(v), _) => Ok(v.clone()),
        (None, Some(d)) => Ok(d.clone()),
        (None, None) => Err(format!("lookup: the map has no key {key:?} and no default")),
    }
}

/// `split(separator, string)`, as Go's `strings.Split`.
fn f_split(args: FuncArgs) -> Result<Value, String> {
    let sep = nth_str(&args, 0, "split")?;
    let s = nth_str(&args, 1, "split")?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep.as_str()).map(|p| Value::String(p.to_string())).collect()
    };
    Ok(Value::Array(parts))
}

/// `regex_replace(string, pattern, replacement)`: Go's `Regexp.ReplaceAllString` (`$1`,
/// `${name}` in the replacement). A pattern outside the common RE2 subset (e.g. Unicode classes)
/// is an error, so the value stays unknown rather than wrong.
fn f_regex_replace(args: FuncArgs) -> Result<Value, String> {
    let s = nth_str(&args, 0, "regex_replace")?;
    let pattern = nth_str(&args, 1, "regex_replace")?;
    let with = nth_str(&args, 2, "regex_replace")?;
    let re = regex_lite::Regex::new(&pattern).map_err(|e| format!("regex_replace: {e}"))?;
    Ok(Value::String(re.replace_all(&s, with.as_str()).into_owned()))
}

/// `replace(string, substring, replacement)`: Packer's replace is cty's, a plain substring
/// replacement (no `/regex/` form, unlike Terraform's).
fn f_replace(args: FuncArgs) -> Result<Value, String> {
    let s = nth_str(&args, 0, "replace")?;
    let from = nth_str(&args, 1, "replace")?;
    let to = nth_str(&args, 2, "replace")?;
    if from.is_empty() {
        return Err("replace: empty substring".into());
    }
    Ok(Value::String(s.replace(&from, &to)))
}

fn f_trimspace(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(nth_str(&args, 0, "trimspace")?.trim().to_string()))
}

fn f_trimprefix(args: FuncArgs) -> Result<Value, String> {
    let s = nth_str(&args, 0, "trimprefix")?;
    let p = nth_str(&args, 1, "trimprefix")?;
    Ok(Value::String(s.strip_prefix(p.as_str()).unwrap_or(&s).to_string()))
}

fn f_trimsuffix(args: FuncArgs) -> Result<Value, String> {
    let s = nth_str(&args, 0, "trimsuffix")?;
    let p = nth_str(&args, 1, "trimsuffix")?;
    Ok(Value::String(s.strip_suffix(p.as_str()).unwrap_or(&s).to_string()))
}

/// `element(list, index)`: the index wraps around, as in cty.
fn f_element(args: FuncArgs) -> Result<Value, String> {
    let items = list_arg("element", args.first())?;
    let i = match args.get(1) {
        Some(Value::Number(n)) => n.as_u64().ok_or("element: index must be a whole number >= 0")?,
        _ => return Err("element: index must be a number".into()),
    };
    if items.is_empty() {
        return Err("element: empty list".into());
    }
    let len = u64::try_from(items.len()).map_err(|e| e.to_string())?;
    let at = usize::try_from(i % len).map_err(|e| e.to_string())?;
    items.get(at).cloned().ok_or_else(|| "element: out of range".into())
}

fn f_contains(args: FuncArgs) -> Result<Value, String> {
    let items = list_arg("contains", args.first())?;
    let v = args.get(1).ok_or("contains: missing value")?;
    Ok(Value::Bool(items.contains(v)))
}

fn f_length(args: FuncArgs) -> Result<Value, String> {
    let n = match args.first() {
        Some(Value::Array(items)) => items.len(),
        Some(Value::Object(m)) => m.len(),
        Some(Value::String(s)) => s.chars().count(),
        _ => return Err("length: expected a list, map or string".into()),
    };
    Ok(Value::from(u64::try_from(n).map_err(|e| e.to_string())?))
}

fn sorted_entries(f: &str, v: Option<&Value>) -> Result<Vec<(String, Value)>, String> {
    let Some(Value::Object(m)) = v else { return Err(format!("{f}: expected a map")) };
    let mut e: Vec<(String, Value)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    e.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(e)
}

fn f_keys(args: FuncArgs) -> Result<Value, String> {
    let e = sorted_entries("keys", args.first())?;
    Ok(Value::Array(e.into_iter().map(|(k, _)| Value::String(k)).collect()))
}

fn f_values(args: FuncArgs) -> Result<Value, String> {
    let e = sorted_entries("values", args.first())?;
    Ok(Value::Array(e.into_iter().map(|(_, v)| v).collect()))
}

fn f_distinct(args: FuncArgs) -> Result<Value, String> {
    let mut out: Vec<Value> = Vec::new();
    for v in list_arg("distinct", args.first())? {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(Value::Array(out))
}

fn f_flatten(args: FuncArgs) -> Result<Value, String> {
    fn flat(items: &[Value], out: &mut Vec<Value>) {
        for v in items {
            match v {
                Value::Array(inner) => flat(inner, out),
                other => out.push(other.clone()),
            }
        }
    }
    let mut out = Vec::new();
    flat(list_arg("flatten", args.first())?, &mut out);
    Ok(Value::Array(out))
}

fn f_compact(args: FuncArgs) -> Result<Value, String> {
    let items = list_arg("compact", args.first())?;
    Ok(Value::Array(
        items
            .iter()
            .filter(|v| !matches!(v, Value::Null) && !matches!(v, Value::String(s) if s.is_empty()))
            .cloned()
            .collect(),
    ))
}

/// The functions lint evaluates: pure (same arguments, same result; no clock, environment,
/// file or network) and common in templates. `formatdate` is pure too but is left out: its time
/// argument is in practice `timestamp()`, which is not, and it feeds names, not the keys and
/// regions the rules read.
pub const PURE_FUNCTIONS: &[&str] = &[
    "coalesce",
    "compact",
    "concat",
    "contains",
    "distinct",
    "element",
    "flatten",
    "format",
    "join",
    "keys",
    "length",
    "lookup",
    "lower",
    "merge",
    "regex_replace",
    "replace",
    "split",
    "trimprefix",
    "trimspace",
    "trimsuffix",
    "upper",
    "values",
];

fn base_context() -> Context<'static> {
    let mut ctx = Context::new();
    let any = || FuncDef::builder().variadic_param(ParamType::Any);
    let funcs: [(&str, hcl::eval::Func); 22] = [
        ("coalesce", f_coalesce),
        ("compact", f_compact),
        ("concat", f_concat),
        ("contains", f_contains),
        ("distinct", f_distinct),
        ("element", f_element),
        ("flatten", f_flatten),
        ("format", f_format),
        ("join", f_join),
        ("keys", f_keys),
        ("length", f_length),
        ("lookup", f_lookup),
        ("lower", f_lower),
        ("merge", f_merge),
        ("regex_replace", f_regex_replace),
        ("replace", f_replace),
        ("split", f_split),
        ("trimprefix", f_trimprefix),
        ("trimspace", f_trimspace),
        ("trimsuffix", f_trimsuffix),
        ("upper", f_upper),
        ("values", f_values),
    ];
    for (name, f) in funcs {
        ctx.declare_func(name, any().build(f));
    }
    ctx
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

/// `hcl::Value` → [`Val`].
pub fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Val::Str(s.clone()),
        Value::Array(items) => Val::List(items.iter().map(to_val).collect()),
        Value::Object(m) => Val::Map(m.iter().map(|(k, v)| (k.clone(), to_val(v))).collect()),
    }
}

fn short(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or_default();
    first.chars().take(160).collect()
}

/// Evaluates `expr`; on failure, evaluates list items and object entries one by one so a single
/// unknown entry does not hide the others.
fn eval(expr: &Expression, ctx: &Context) -> Val {
    match expr.evaluate(ctx) {
        Ok(v) => to_val(&v),
        Err(e) => match expr {
            Expression::Array(items) => Val::List(items.iter().map(|i| eval(i, ctx)).collect()),
            Expression::Object(obj) => {
                let mut m = BTreeMap::new();
                for (k, v) in obj.iter() {
                    let key = match k {
                        ObjectKey::Identifier(i) => i.to_string(),
                        ObjectKey::Expression(ke) => match ke.evaluate(ctx) {
                            Ok(Value::String(s)) => s,
                            _ => return Val::Unknown(short(e)),
                        },
                        _ => return Val::Unknown(short(e)),
                    };
                    m.insert(key, eval(v, ctx));
                }
                Val::Map(m)
            }
            _ => Val::Unknown(short(e)),
        },
    }
}

/// Is the variable's declared type `string` (or absent)? `-var` values are then taken verbatim.
fn is_string_type(t: Option<&RawAttr>) -> bool {
    match t.map(|a| &a.expr) {
        None => true,
        Some(Expression::Variable(v)) => v.as_str() == "string",
        Some(_) => false,
    }
}

fn cli_value(raw: &str, string_type: bool, ctx: &Context) -> Value {
    if string_type {
        return Value::String(raw.to_string());
    }
    match raw.parse::<Expression>().ok().and_then(|e| e.evaluate(ctx).ok()) {
        Some(v) => v,
        None => Value::String(raw.to_string()),
    }
}

fn eval_block(
    raw: &RawBlock,
    kind: &str,
    name: &str,
    ctx: &Context,
    notes: &mut Vec<(Pos, String)>,
) -> Block {
    let mut b = Block { kind: kind.to_string(), name: name.to_string(), pos: raw.pos, ..Block::default() };
    for a in &raw.attrs {
        let val = eval(&a.expr, ctx);
        if val.is_unknown() && RELEVANT_KEYS.contains(&a.key.as_str()) {
            notes.push((a.pos, unknown_note(&a.key, &val)));
        }
        b.attrs.insert(a.key.clone(), Attr { pos: a.pos, val, entries: a.entries.clone() });
    }
    for nb in &raw.blocks {
        b.blocks.push((nb.ident.clone(), eval_block(nb, &nb.ident, "", ctx, notes)));
    }
    b
}

fn first_unknown(v: &Val) -> Option<&str> {
    match v {
        Val::Unknown(r) => Some(r),
        Val::List(l) => l.iter().find_map(first_unknown),
        Val::Map(m) => m.values().find_map(first_unknown),
        _ => None,
    }
}

fn unknown_note(key: &str, v: &Val) -> String {
    format!(
        "`{key}` cannot be evaluated statically ({}); rules that need it were skipped",
        first_unknown(v).unwrap_or("unknown value")
    )
}

/// Evaluates a HCL2 template body (from `.pkr.hcl` or `.pkr.json`) into the model.
pub fn evaluate(root: &RawBlock, vars: &LoadedVars) -> Template {
    let mut t = Template::default();
    let base = base_context();

    // packer { required_plugins { amazon = … } }
    t.requires_amazon_plugin = root
        .blocks("packer")
        .flat_map(|p| p.blocks("required_plugins"))
        .any(|rp| rp.attrs.iter().any(|a| a.key == "amazon"));

    // Variables.
    let mut var_obj = hcl::Map::new();
    for v in root.blocks("variable") {
        let Some(name) = v.labels.first() else {
            continue;
        };
        let value = match vars.get(name) {
            Some(VarValue::Typed(val)) => Some(val.clone()),
            Some(VarValue::Cli(s)) => Some(cli_value(s, is_string_type(v.attr("type")), &base)),
            None => match v.attr("default") {
                Some(d) => match d.expr.evaluate(&base) {
                    Ok(val) => Some(val),
                    Err(e) => {
                        t.notes.push((d.pos, format!("default of variable `{name}` cannot be evaluated ({}); uses of var.{name} were skipped", short(e))));
                        None
                    }
                },
                None => {
                    t.notes.push((v.pos, format!("variable `{name}` has no default and no -var/-var-file value; uses of var.{name} were skipped")));
                    None
                }
            },
        };
        if let Some(val) = value {
            var_obj.insert(name.clone(), val);
        }
    }
    let mut ctx = base_context();
    ctx.declare_var("var", Value::Object(var_obj));

    // Locals, to a fixed point (they may reference each other in any order).
    let mut pending: Vec<(String, &RawAttr)> = Vec::new();
    for l in root.blocks("locals") {
        pending.extend(l.attrs.iter().map(|a| (a.key.clone(), a)));
    }
    for l in root.blocks("local") {
        if let (Some(name), Some(e)) = (l.labels.first(), l.attr("expression")) {
            pending.push((name.clone(), e));
        }
    }
    let mut locals = hcl::Map::new();
    loop {
        let mut lctx = ctx.clone();
        lctx.declare_var("local", Value::Object(locals.clone()));
        let before = pending.len();
        pending.retain(|(name, a)| match a.expr.evaluate(&lctx) {
            Ok(v) => {
                locals.insert(name.clone(), v);
                false
            }
            Err(_) => true,
        });
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    let lctx_final = {
        let mut c = ctx.clone();
        c.declare_var("local", Value::Object(locals.clone()));
        c
    };
    for (name, a) in &pending {
        if let Err(e) = a.expr.evaluate(&lctx_final) {
            t.notes.push((
                a.pos,
                format!(
                    "local `{name}` cannot be evaluated statically ({}); uses of local.{name} were skipped",
                    short(e)
                ),
            ));
        }
    }
    let ctx = lctx_final;

    // Sources.
    let sources: Vec<&RawBlock> = root.blocks("source").filter(|s| s.labels.len() == 2).collect();
    let find_source = |r: &str| -> Option<&RawBlock> {
        let r = r.strip_prefix("sources.").or_else(|| r.strip_prefix("source.")).unwrap_or(r);
        let (ty, name) = r.split_once('.')?;
        sources.iter().copied().find(|s| s.labels[0] == ty && s.labels[1] == name)
    };

    for b in root.blocks("build") {
        let mut build = Build::default();
        // (source block, override block, effective name)
        let mut refs: Vec<(&RawBlock, Option<&RawBlock>, String)> = Vec::new();
        if let Some(a) = b.attr("sources") {
            match eval(&a.expr, &ctx) {
                Val::List(items) => {
                    for i in items {
                        match i.as_str().and_then(&find_source) {
                            Some(s) => refs.push((s, None, s.labels[1].clone())),
                            None => t.notes.push((
                                a.pos,
                                format!(
                                    "build source {} is not a `source` block in this file; skipped",
                                    describe_ref(&i)
                                ),
                            )),
                        }
                    }
                }
                other => t.notes.push((
                    a.pos,
                    format!(
                        "`sources` is not a static list of strings ({}); skipped",
                        first_unknown(&other).unwrap_or("not a list")
                    ),
                )),
            }
        }
        for o in b.blocks("source") {
            let Some(r) = o.labels.first() else { continue };
            match find_source(r) {
                Some(s) => {
                    let name = o
                        .attr("name")
                        .and_then(|n| eval(&n.expr, &ctx).as_str().map(String::from))
                        .unwrap_or_else(|| s.labels[1].clone());
                    refs.push((s, Some(o), name));
                }
                None => t.notes.push((
                    o.pos,
                    format!("build source `{r}` is not a `source` block in this file; skipped"),
                )),
            }
        }
        for (s, over, name) in &refs {
            let ty = &s.labels[0];
            let mut sctx = ctx.clone();
            let mut so = hcl::Map::new();
            so.insert("name".to_string(), Value::String(name.clone()));
            so.insert("type".to_string(), Value::String(ty.clone()));
            sctx.declare_var("source", Value::Object(so));
            let mut merged = (*s).clone();
            if let Some(o) = over {
                for a in &o.attrs {
                    if a.key == "name" {
                        continue;
                    }
                    merged.attrs.retain(|x| x.key != a.key);
                    merged.attrs.push(a.clone());
                }
                let over_idents: Vec<&String> = o.blocks.iter().map(|nb| &nb.ident).collect();
                merged.blocks.retain(|nb| !over_idents.contains(&&nb.ident));
                merged.blocks.extend(o.blocks.iter().cloned());
            }
            let builder_ctx = if super::AMI_BUILDERS.contains(&ty.as_str()) { &sctx } else { &ctx };
            let mut notes = Vec::new();
            let blk = eval_block(&merged, ty, &format!("{ty}.{name}"), builder_ctx, &mut notes);
            if super::AMI_BUILDERS.contains(&ty.as_str()) {
                t.notes.extend(notes);
            }
            build.builders.push(blk);
        }
        // `source.*` in post-processors is only known when the build has one source.
        let mut pctx = ctx.clone();
        if let [(s, _, name)] = refs.as_slice() {
            let mut so = hcl::Map::new();
            so.insert("name".to_string(), Value::String(name.clone()));
            so.insert("type".to_string(), Value::String(s.labels[0].clone()));
            pctx.declare_var("source", Value::Object(so));
        }
        for nb in &b.blocks {
            match nb.ident.as_str() {
                "post-processor" => {
                    if let Some(p) = eval_pp(nb, &pctx, &mut t.notes) {
                        build.chains.push(vec![p]);
                    }
                }
                "post-processors" => {
                    let chain: Vec<Block> =
                        nb.blocks("post-processor").filter_map(|p| eval_pp(p, &pctx, &mut t.notes)).collect();
                    if !chain.is_empty() {
                        build.chains.push(chain);
                    }
                }
                _ => {}
            }
        }
        t.builds.push(build);
    }
    t
}

fn describe_ref(v: &Val) -> String {
    match v {
        Val::Str(s) => format!("`{s}`"),
        _ => "(not a string)".into(),
    }
}

fn eval_pp(raw: &RawBlock, ctx: &Context, notes: &mut Vec<(Pos, String)>) -> Option<Block> {
    let kind = raw.labels.first()?.clone();
    let mut local_notes = Vec::new();
    let b = eval_block(raw, &kind, "", ctx, &mut local_notes);
    if kind == "amikey" {
        notes.extend(local_notes);
    } else {
        notes.extend(local_notes.into_iter().filter(|(_, n)| n.starts_with("`keep_input_artifact`")));
    }
    Some(b)
}

#[cfg(test)]
mod function_tests {
    use super::*;

    fn eval_str(expr: &str) -> Result<Value, String> {
        let e: Expression = expr.parse().map_err(|e| format!("{e}"))?;
        e.evaluate(&base_context()).map_err(|e| e.to_string())
    }

    #[test]
    fn every_listed_function_is_declared() {
        for f in PURE_FUNCTIONS {
            // An undeclared function fails with "undefined function"; a declared one with a
            // bad argument fails differently (or succeeds).
            let err = eval_str(&format!("{f}()")).err().unwrap_or_default();
            assert!(!err.contains("undefined"), "{f}: {err}");
        }
        assert!(eval_str("timestamp()").is_err());
        assert!(eval_str("formatdate(\"YYYY\", \"2020-01-01T00:00:00Z\")").is_err());
    }

    #[test]
    fn pure_functions_evaluate_as_packer_does() {
        let cases: &[(&str, &str)] = &[
            ("lower(\"AlIaS/Ami\")", "\"alias/ami\""),
            ("upper(\"eu\")", "\"EU\""),
            ("concat([\"a\"], [\"b\", \"c\"])", "[\"a\",\"b\",\"c\"]"),
            ("merge({a = 1, b = 2}, {b = 3})", "{\"a\":1,\"b\":3}"),
            ("lookup({\"eu-west-1\" = \"alias/eu\"}, \"eu-west-1\", \"alias/x\")", "\"alias/eu\""),
            ("lookup({\"eu-west-1\" = \"alias/eu\"}, \"us-east-1\", \"alias/x\")", "\"alias/x\""),
            ("coalesce(\"\", \"alias/a\", \"alias/b\")", "\"alias/a\""),
            ("format(\"alias/%s-%d\", \"ami\", 2)", "\"alias/ami-2\""),
            ("join(\",\", [\"a\", \"b\"])", "\"a,b\""),
            ("split(\",\", \"eu-west-1,us-west-2\")", "[\"eu-west-1\",\"us-west-2\"]"),
            ("split(\",\", \"\")", "[\"\"]"),
            ("regex_replace(\"alias/ami_EU\", \"_([A-Z]+)$\", \"-$1\")", "\"alias/ami-EU\""),
            ("regex_replace(\"a.b.c\", \"[.]\", \"-\")", "\"a-b-c\""),
            ("replace(\"a.b.c\", \".\", \"-\")", "\"a-b-c\""),
            ("trimspace(\"  alias/a \\n\")", "\"alias/a\""),
            ("trimprefix(\"alias/ami\", \"alias/\")", "\"ami\""),
            ("trimsuffix(\"ami-eu\", \"-eu\")", "\"ami\""),
            ("element([\"a\", \"b\"], 3)", "\"b\""),
            ("contains([\"a\", \"b\"], \"b\")", "true"),
            ("length([\"a\", \"b\"])", "2"),
            ("length(\"é1\")", "2"),
            ("keys({b = 1, a = 2})", "[\"a\",\"b\"]"),
            ("values({b = 1, a = 2})", "[2,1]"),
            ("distinct([\"a\", \"b\", \"a\"])", "[\"a\",\"b\"]"),
            ("flatten([[\"a\"], [[\"b\"]], \"c\"])", "[\"a\",\"b\",\"c\"]"),
            ("compact([\"a\", \"\", \"b\"])", "[\"a\",\"b\"]"),
        ];
        for (expr, want) in cases {
            let got = eval_str(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            let got = serde_json::to_string(&got).unwrap_or_default();
            assert_eq!(&got, want, "{expr}");
        }
    }

    #[test]
    fn bad_arguments_are_errors_not_guesses() {
        for expr in [
            "lookup({a = 1}, \"b\")",
            "regex_replace(\"a\", \"\\\\p{Greek}\", \"x\")",
            "regex_replace(\"a\", \"(\", \"x\")",
            "element([], 0)",
            "split(\",\")",
            "format(\"%q\", \"a\")",
            "keys([\"a\"])",
        ] {
            assert!(eval_str(expr).is_err(), "{expr}: {:?}", eval_str(expr));
        }
    }
}
