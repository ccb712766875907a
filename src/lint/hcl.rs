//! HCL2 front end: parses `.pkr.hcl` with hcl-edit (for spans), evaluates what is static with
//! hcl-rs, and builds the [`Template`] model. `.pkr.json` files reach the same evaluator through
//! [`RawBlock`], built by [`super::json`].
//!
//! Evaluated: `var.*` (defaults, `-var`, var files), `local.*` / `local` blocks (to a fixed
//! point), `source.name` / `source.type` when a build has one source, string interpolation,
//! for-expressions, index traversals, conditionals and `lower`, `upper`, `concat`, `merge`,
//! `join`, `format` (`%s`, `%d`, `%v`), `coalesce`. Anything else (`timestamp()`, `env()`,
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

fn base_context() -> Context<'static> {
    let mut ctx = Context::new();
    let any = || FuncDef::builder().variadic_param(ParamType::Any);
    ctx.declare_func("lower", any().build(f_lower));
    ctx.declare_func("upper", any().build(f_upper));
    ctx.declare_func("concat", any().build(f_concat));
    ctx.declare_func("merge", any().build(f_merge));
    ctx.declare_func("join", any().build(f_join));
    ctx.declare_func("coalesce", any().build(f_coalesce));
    ctx.declare_func("format", any().build(f_format));
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
