//! The subset of Packer's Go-template language amikey renders in JSON-template mode.
//!
//! In a JSON template Packer passes the post-processor block **un-interpolated**
//! (``"hello {{user `foo`}} {{build_name}}"`` arrives verbatim, docs/protocol.md §5); Go plugins
//! render it with the SDK's `interpolate` package. We support the functions that make sense in
//! a post-processor block — `user`, `env`, `build_name`, `build_type`, `timestamp` — with
//! backquoted or double-quoted arguments and `{{-`/`-}}` trim markers. Anything else
//! (`isotime`, `uuid`, `build`, `.Field`, pipelines, comments) is a clear error naming it.
//! Output is capped at [`MAX_RENDERED`] bytes per string, so `{{user `big`}}` repeated cannot
//! exhaust memory.

use std::collections::BTreeMap;

/// Largest rendered string.
pub const MAX_RENDERED: usize = 1024 * 1024;

/// The functions we render.
pub const SUPPORTED: &str = "user, env, build_name, build_type, timestamp";

/// What the functions read.
pub struct TemplateContext<'a> {
    /// `{{user `x`}}`.
    pub user_variables: &'a BTreeMap<String, String>,
    /// `{{build_name}}`.
    pub build_name: &'a str,
    /// `{{build_type}}`.
    pub build_type: &'a str,
    /// `{{timestamp}}`: Unix seconds, as Packer renders its init time.
    pub timestamp: &'a str,
    /// `{{env `X`}}`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("unclosed {{{{ in {0:?}")]
    Unclosed(String),
    /// A function we do not implement.
    #[error(
        "template function `{name}` is not supported by amikey in JSON templates (supported: {SUPPORTED}); use a literal value or an HCL2 template"
    )]
    Unsupported {
        /// The function (or expression) as written.
        name: String,
    },
    /// Wrong argument count or syntax.
    #[error("bad template call `{{{{{0}}}}}`: {1}")]
    BadCall(String, String),
    /// `{{user `x`}}` for an undefined variable.
    #[error("user variable `{0}` is not defined in the template's \"variables\"")]
    UndefinedUser(String),
    /// Output too large.
    #[error("rendered value exceeds {MAX_RENDERED} bytes")]
    TooLarge,
}

/// Renders one string.
pub fn render(input: &str, ctx: &TemplateContext<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(TemplateError::Unclosed(input.chars().take(80).collect()));
        };
        let mut action = &after[..end];
        rest = &after[end + 2..];
        if let Some(a) = action.strip_prefix("- ") {
            action = a;
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
        }
        if let Some(a) = action.strip_suffix(" -") {
            action = a;
            rest = rest.trim_start();
        }
        let value = call(action.trim(), ctx)?;
        out.push_str(&value);
        if out.len() > MAX_RENDERED {
            return Err(TemplateError::TooLarge);
        }
    }
    out.push_str(rest);
    if out.len() > MAX_RENDERED {
        return Err(TemplateError::TooLarge);
    }
    Ok(out)
}

/// Renders every string inside `v` (map keys are left alone).
pub fn render_value(
    v: &serde_json::Value,
    ctx: &TemplateContext<'_>,
) -> Result<serde_json::Value, TemplateError> {
    use serde_json::Value as J;
    Ok(match v {
        J::String(s) => J::String(render(s, ctx)?),
        J::Array(a) => J::Array(a.iter().map(|x| render_value(x, ctx)).collect::<Result<_, _>>()?),
        J::Object(o) => J::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), render_value(x, ctx)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

fn call(action: &str, ctx: &TemplateContext<'_>) -> Result<String, TemplateError> {
    if action.starts_with("/*") {
        return Err(TemplateError::Unsupported { name: "/* comment */".into() });
    }
    let name_end = action
        .find(|c: char| c.is_whitespace() || c == '`' || c == '"' || c == '|' || c == '(')
        .unwrap_or(action.len());
    let name = &action[..name_end];
    let args = parse_args(&action[name_end..]).map_err(|e| TemplateError::BadCall(action.into(), e))?;
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(TemplateError::BadCall(
                action.into(),
                format!("`{name}` takes {n} argument(s), got {}", args.len()),
            ))
        }
    };
    match name {
        "user" => {
            arity(1)?;
            ctx.user_variables
                .get(&args[0])
                .cloned()
                .ok_or_else(|| TemplateError::UndefinedUser(args[0].clone()))
        }
        "env" => {
            arity(1)?;
            Ok((ctx.env)(&args[0]).unwrap_or_default())
        }
        "build_name" => arity(0).map(|()| ctx.build_name.to_string()),
        "build_type" => arity(0).map(|()| ctx.build_type.to_string()),
        "timestamp" => arity(0).map(|()| ctx.timestamp.to_string()),
        "" => Err(TemplateError::Unsupported { name: action.chars().take(40).collect() }),
        other => Err(TemplateError::Unsupported { name: other.chars().take(40).collect() }),
    }
}

fn parse_args(s: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '`' => {
                chars.next();
                let mut a = String::new();
                loop {
                    match chars.next() {
                        Some('`') => break,
                        Some(c) => a.push(c),
                        None => return Err("unterminated `raw string`".into()),
                    }
                }
                args.push(a);
            }
            '"' => {
                chars.next();
                let mut a = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => a.push('\n'),
                            Some('t') => a.push('\t'),
                            Some(c) => a.push(c),
                            None => return Err("unterminated \"string\"".into()),
                        },
                        Some(c) => a.push(c),
                        None => return Err("unterminated \"string\"".into()),
                    }
                }
                args.push(a);
            }
            '|' => return Err("pipelines are not supported".into()),
            _ => return Err("arguments must be `quoted` or \"quoted\" strings".into()),
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ctx<T>(f: impl FnOnce(&TemplateContext<'_>) -> T) -> T {
        let vars: BTreeMap<String, String> = [("foo".to_string(), "bar".to_string())].into();
        let env = |k: &str| (k == "HOME_REGION").then(|| "eu-west-1".to_string());
        let ctx = TemplateContext {
            user_variables: &vars,
            build_name: "null",
            build_type: "amazon-ebs",
            timestamp: "1700000000",
            env: &env,
        };
        f(&ctx)
    }

    #[test]
    fn renders_the_captured_message() {
        // tests/fixtures/wire/json-template-session.txt: "hello {{user `foo`}} {{build_name}}".
        with_ctx(|c| {
            assert_eq!(render("hello {{user `foo`}} {{build_name}}", c).unwrap(), "hello bar null");
            assert_eq!(render("{{ env `HOME_REGION` }}/{{build_type}}", c).unwrap(), "eu-west-1/amazon-ebs");
            assert_eq!(render("a-{{timestamp}}", c).unwrap(), "a-1700000000");
            assert_eq!(render("x {{- user \"foo\" -}} y", c).unwrap(), "xbary");
            assert_eq!(render("{{env `NOPE`}}", c).unwrap(), "");
            assert_eq!(render("no templates", c).unwrap(), "no templates");
        });
    }

    #[test]
    fn other_functions_are_named_in_the_error() {
        with_ctx(|c| {
            for (t, name) in [
                ("{{isotime `2006`}}", "isotime"),
                ("{{uuid}}", "uuid"),
                ("{{ build `ID` }}", "build"),
                ("{{.Name}}", ".Name"),
            ] {
                let e = render(t, c).unwrap_err();
                assert_eq!(e, TemplateError::Unsupported { name: name.into() }, "{t}");
                assert!(e.to_string().contains(name));
            }
            assert!(matches!(render("{{user `nope`}}", c), Err(TemplateError::UndefinedUser(_))));
            assert!(matches!(render("{{user}}", c), Err(TemplateError::BadCall(..))));
            assert!(matches!(render("{{user `foo` | upper}}", c), Err(TemplateError::BadCall(..))));
            assert!(matches!(render("{{user `foo`", c), Err(TemplateError::Unclosed(_))));
        });
    }

    #[test]
    fn output_is_capped() {
        let big: BTreeMap<String, String> = [("x".to_string(), "y".repeat(600_000))].into();
        let env = |_: &str| None;
        let ctx = TemplateContext {
            user_variables: &big,
            build_name: "",
            build_type: "",
            timestamp: "",
            env: &env,
        };
        assert_eq!(render("{{user `x`}}{{user `x`}}", &ctx), Err(TemplateError::TooLarge));
    }

    #[test]
    fn renders_nested_values() {
        with_ctx(|c| {
            let v = serde_json::json!({"a": ["{{user `foo`}}", 3.0], "b": {"c": "{{build_name}}"}});
            assert_eq!(
                render_value(&v, c).unwrap(),
                serde_json::json!({"a": ["bar", 3.0], "b": {"c": "null"}})
            );
        });
    }
}
