//! Compiling: a JSON value parsed once, at config load, into the compiled tree; syntax errors
//! ([`TemplateError::Syntax`]) are found here, each with its place in the template.

use serde_json::{Map, Value};

use super::TemplateError;
use super::tree::{Node, Piece, Ref, Segment};
use super::{index_at, key_at};

fn syntax(at: &str, message: impl Into<String>) -> TemplateError {
    TemplateError::Syntax {
        at: at.to_owned(),
        message: message.into(),
    }
}

/// Whether an object key names a helper (`$name`, but not the escape `$$name`).
fn is_helper_key(key: &str) -> bool {
    key.starts_with('$') && !key.starts_with("$$")
}

pub(super) fn compile_node(value: &Value, at: &str) -> Result<Node, TemplateError> {
    match value {
        Value::String(text) => compile_string(text, at),
        Value::Array(items) => {
            let nodes = items
                .iter()
                .enumerate()
                .map(|(i, item)| compile_node(item, &index_at(at, i)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(fold_array(nodes))
        }
        Value::Object(map) => {
            let helpers: Vec<(&String, &Value)> =
                map.iter().filter(|(k, _)| is_helper_key(k)).collect();
            match helpers.as_slice() {
                [] => {
                    let fields = map
                        .iter()
                        .map(|(key, value)| {
                            let node = compile_node(value, &key_at(at, key))?;
                            let key = key.strip_prefix('$').unwrap_or(key);
                            Ok((key.to_owned(), node))
                        })
                        .collect::<Result<Vec<_>, TemplateError>>()?;
                    Ok(fold_object(fields))
                }
                [(helper, value)] if map.len() == 1 => compile_helper(helper, value, at),
                [(helper, _)] => {
                    let others: Vec<String> = map
                        .keys()
                        .filter(|k| k != helper)
                        .map(|k| format!("`{k}`"))
                        .collect();
                    Err(syntax(
                        at,
                        format!(
                            "helper `{helper}` shares its object with {}; a helper is an object with \
                             exactly one key (write `${helper}` for a literal key)",
                            others.join(", ")
                        ),
                    ))
                }
                several => {
                    let names: Vec<String> =
                        several.iter().map(|(k, _)| format!("`{k}`")).collect();
                    Err(syntax(
                        at,
                        format!(
                            "several helpers in one object ({}); a helper is an object with exactly \
                             one key",
                            names.join(", ")
                        ),
                    ))
                }
            }
        }
        other => Ok(Node::Literal(other.clone())),
    }
}

fn fold_array(nodes: Vec<Node>) -> Node {
    if nodes.iter().all(|n| matches!(n, Node::Literal(_))) {
        let values = nodes
            .into_iter()
            .filter_map(|n| match n {
                Node::Literal(v) => Some(v),
                _ => None,
            })
            .collect();
        Node::Literal(Value::Array(values))
    } else {
        Node::Array(nodes)
    }
}

fn fold_object(fields: Vec<(String, Node)>) -> Node {
    if fields.iter().all(|(_, n)| matches!(n, Node::Literal(_))) {
        let map = fields
            .into_iter()
            .filter_map(|(k, n)| match n {
                Node::Literal(v) => Some((k, v)),
                _ => None,
            })
            .collect();
        Node::Literal(Value::Object(map))
    } else {
        Node::Object(fields)
    }
}

fn compile_string(text: &str, at: &str) -> Result<Node, TemplateError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            if text[i..].starts_with("$${") {
                literal.push_str("${");
                i += 3;
            } else if text[i..].starts_with("${") {
                let (reference, end) = parse_reference(text, i, at)?;
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Ref(reference));
                i = end;
            } else {
                literal.push('$');
                i += 1;
            }
        } else {
            // `i` is on a char boundary (it only ever moves to a `$`, past ASCII, or to the end).
            let next = text[i..].find('$').map_or(text.len(), |n| i + n);
            literal.push_str(&text[i..next]);
            i = next;
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(match pieces.len() {
        0 => Node::Literal(Value::String(String::new())),
        1 => match pieces.pop() {
            Some(Piece::Ref(r)) => Node::Ref(r),
            Some(Piece::Text(t)) => Node::Literal(Value::String(t)),
            None => Node::Literal(Value::String(String::new())),
        },
        _ => Node::Text(pieces),
    })
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// Parses the reference starting at `start` (which holds `${`); returns it and the index just past
/// its closing `}`.
pub(super) fn parse_reference(
    text: &str,
    start: usize,
    at: &str,
) -> Result<(Ref, usize), TemplateError> {
    // For messages: the reference as far as it can be told (up to the next `}` or the end).
    let shown = || {
        let end = text[start..]
            .find('}')
            .map_or(text.len(), |n| start + n + 1);
        text[start..end].to_owned()
    };
    let unterminated = || {
        syntax(
            at,
            format!("unterminated reference `{}` (missing `}}`)", &text[start..]),
        )
    };
    let name_end = |from: usize| {
        text[from..]
            .char_indices()
            .find(|(_, c)| !is_name_char(*c))
            .map_or(text.len(), |(n, _)| from + n)
    };

    let mut pos = start + 2;
    let root_end = name_end(pos);
    let root = &text[pos..root_end];
    pos = root_end;
    if root.is_empty() {
        return Err(match text[pos..].chars().next() {
            None => unterminated(),
            Some('}') => syntax(at, "empty reference `${}`: expected a name like `${input}`"),
            Some(c) => syntax(
                at,
                format!(
                    "reference `{}` must start with a name (`input`, a step or an item), not `{c}`",
                    shown()
                ),
            ),
        });
    }

    let mut path = Vec::new();
    loop {
        let Some(c) = text[pos..].chars().next() else {
            return Err(unterminated());
        };
        match c {
            '}' => {
                pos += 1;
                break;
            }
            '.' => {
                let end = name_end(pos + 1);
                if end == pos + 1 {
                    return Err(if end == text.len() {
                        unterminated()
                    } else {
                        syntax(
                            at,
                            format!("reference `{}` has an empty field name after `.`", shown()),
                        )
                    });
                }
                path.push(Segment::Field(text[pos + 1..end].to_owned()));
                pos = end;
            }
            '[' => {
                let (segment, end) = parse_bracket(text, pos, at, &shown)?;
                path.push(segment);
                pos = end;
            }
            other => {
                return Err(syntax(
                    at,
                    format!(
                        "unexpected `{other}` in reference `{}` (expected `.field`, `[n]`, `[*]` or `}}`)",
                        shown()
                    ),
                ));
            }
        }
    }
    let reference = Ref {
        root: root.to_owned(),
        path,
        text: text[start..pos].to_owned(),
        at: at.to_owned(),
    };
    Ok((reference, pos))
}

/// Parses `[n]`, `[*]` or `["key"]` at `pos` (which holds `[`).
fn parse_bracket(
    text: &str,
    pos: usize,
    at: &str,
    shown: &dyn Fn() -> String,
) -> Result<(Segment, usize), TemplateError> {
    let rest = &text[pos + 1..];
    if let Some(after) = rest.strip_prefix("*]") {
        return Ok((Segment::Each, text.len() - after.len()));
    }
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut key = String::new();
        let mut chars = quoted.char_indices();
        while let Some((n, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => key.push(e),
                    _ => {
                        return Err(syntax(
                            at,
                            format!(
                                "reference `{}`: only `\\\"` and `\\\\` may be escaped in a quoted key",
                                shown()
                            ),
                        ));
                    }
                },
                '"' => {
                    let after = &quoted[n + 1..];
                    return match after.strip_prefix(']') {
                        Some(after) => Ok((Segment::Field(key), text.len() - after.len())),
                        None => Err(syntax(
                            at,
                            format!("reference `{}`: expected `]` after a quoted key", shown()),
                        )),
                    };
                }
                other => key.push(other),
            }
        }
        return Err(syntax(
            at,
            format!("unterminated quoted key in reference `{}`", shown()),
        ));
    }
    let close = rest.find(']');
    let inside = close.map_or(rest, |n| &rest[..n]);
    if let Some(n) = close
        && !inside.is_empty()
        && inside.bytes().all(|b| b.is_ascii_digit())
    {
        return match inside.parse::<usize>() {
            Ok(index) => Ok((Segment::Index(index), pos + 1 + n + 1)),
            Err(_) => Err(syntax(
                at,
                format!("reference `{}`: index `[{inside}]` is too large", shown()),
            )),
        };
    }
    let bracket = match close {
        Some(_) => format!("[{inside}]"),
        None => format!("[{inside}"),
    };
    Err(syntax(
        at,
        format!(
            "reference `{}`: `{bracket}` is not an index (expected `[n]` with n ≥ 0, `[*]` or `[\"key\"]`)",
            shown()
        ),
    ))
}

/// The argument object of `$zip`, `$join` or `$pick`, with unknown keys rejected.
fn helper_args<'v>(
    value: &'v Value,
    helper: &str,
    at: &str,
    allowed: &[&str],
) -> Result<&'v Map<String, Value>, TemplateError> {
    let expected = allowed
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let Value::Object(map) = value else {
        return Err(syntax(
            at,
            format!("`{helper}` takes an object with {expected}"),
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(syntax(
            &key_at(at, unknown),
            format!("unknown `{helper}` argument `{unknown}` (expected {expected})"),
        ));
    }
    Ok(map)
}

fn required<'v>(
    map: &'v Map<String, Value>,
    key: &str,
    helper: &str,
    at: &str,
) -> Result<&'v Value, TemplateError> {
    map.get(key)
        .ok_or_else(|| syntax(at, format!("`{helper}` needs `{key}`")))
}

fn field_name(value: &Value, key: &str, at: &str) -> Result<String, TemplateError> {
    match value {
        Value::String(name) if !name.is_empty() => Ok(name.clone()),
        _ => Err(syntax(
            &key_at(at, key),
            format!("`{key}` must be a field name (a non-empty string)"),
        )),
    }
}

fn compile_helper(helper: &str, value: &Value, at: &str) -> Result<Node, TemplateError> {
    let at = key_at(at, helper);
    let sub = |value: &Value, key: &str| -> Result<Box<Node>, TemplateError> {
        Ok(Box::new(compile_node(value, &key_at(&at, key))?))
    };
    match helper {
        "$concat" => {
            let Value::Array(items) = value else {
                return Err(syntax(&at, "`$concat` takes an array of templates"));
            };
            let parts = items
                .iter()
                .enumerate()
                .map(|(i, item)| compile_node(item, &index_at(&at, i)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Node::Concat { at, parts })
        }
        "$zip" => {
            let map = helper_args(value, helper, &at, &["items", "with", "as"])?;
            let items = sub(required(map, "items", helper, &at)?, "items")?;
            let with = sub(required(map, "with", helper, &at)?, "with")?;
            let field = field_name(required(map, "as", helper, &at)?, "as", &at)?;
            Ok(Node::Zip {
                at,
                items,
                with,
                field,
            })
        }
        "$join" => {
            let map = helper_args(value, helper, &at, &["left", "right", "on", "sum"])?;
            let left = sub(required(map, "left", helper, &at)?, "left")?;
            let right = sub(required(map, "right", helper, &at)?, "right")?;
            let on = field_name(required(map, "on", helper, &at)?, "on", &at)?;
            let sum = match map.get("sum") {
                None => Vec::new(),
                Some(Value::Array(fields)) => {
                    let mut names: Vec<String> = Vec::with_capacity(fields.len());
                    for (i, f) in fields.iter().enumerate() {
                        let name = field_name(f, &index_at("sum", i), &at)?;
                        let clash = if name == on {
                            Some("is the join key")
                        } else if name == "sources" {
                            Some("is reserved for the joined rows")
                        } else if names.contains(&name) {
                            Some("is listed twice")
                        } else {
                            None
                        };
                        if let Some(why) = clash {
                            return Err(syntax(
                                &index_at(&key_at(&at, "sum"), i),
                                format!("`{name}` {why}"),
                            ));
                        }
                        names.push(name);
                    }
                    names
                }
                Some(_) => {
                    return Err(syntax(
                        &key_at(&at, "sum"),
                        "`sum` must be an array of field names",
                    ));
                }
            };
            Ok(Node::Join {
                at,
                left,
                right,
                on,
                sum,
            })
        }
        "$pick" => {
            let map = helper_args(value, helper, &at, &["from", "where", "in"])?;
            let from = sub(required(map, "from", helper, &at)?, "from")?;
            let field = field_name(required(map, "where", helper, &at)?, "where", &at)?;
            let within = sub(required(map, "in", helper, &at)?, "in")?;
            Ok(Node::Pick {
                at,
                from,
                field,
                within,
            })
        }
        "$default" => match value {
            Value::Array(items) if items.len() == 2 => Ok(Node::Default {
                value: Box::new(compile_node(&items[0], &index_at(&at, 0))?),
                fallback: Box::new(compile_node(&items[1], &index_at(&at, 1))?),
            }),
            _ => Err(syntax(
                &at,
                "`$default` takes an array of two templates: `[value, fallback]`",
            )),
        },
        unknown => Err(syntax(
            &at,
            format!(
                "unknown helper `{unknown}` (expected `$concat`, `$zip`, `$join`, `$pick` or \
                 `$default`; write `${unknown}` for a literal key)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::template::fixtures::{compile, render_with};
    use crate::template::{Scope, Template, TemplateError};

    fn syntax_error(value: Value) -> (String, String) {
        match Template::compile(&value) {
            Err(TemplateError::Syntax { at, message }) => (at, message),
            other => panic!("expected a syntax error for {value}, got {other:?}"),
        }
    }

    // --- references ------------------------------------------------------------------------

    #[test]
    fn quoted_keys_reach_fields_that_are_not_names() {
        let value =
            json!({ "unit price": 3, "a.b": { "q\"k": 1, "back\\slash": 2 }, "{}": "braces" });
        let eval = |t: &str| render_with(json!(t), "row", &value);
        assert_eq!(eval(r#"${row["unit price"]}"#), json!(3));
        assert_eq!(eval(r#"${row["a.b"]["q\"k"]}"#), json!(1));
        assert_eq!(eval(r#"${row["a.b"]["back\\slash"]}"#), json!(2));
        assert_eq!(eval(r#"${row["{}"]}"#), json!("braces"));
        assert_eq!(eval(r#"price ${row["unit price"]}!"#), json!("price 3!"));
    }

    #[test]
    fn names_may_hold_letters_digits_underscores_and_dashes() {
        let value = json!({ "_rid": "r", "ship-to": { "zip2": "75001" }, "déjà": 1 });
        let eval = |t: &str| render_with(json!(t), "step-1_b", &value);
        assert_eq!(eval("${step-1_b._rid}"), json!("r"));
        assert_eq!(eval("${step-1_b.ship-to.zip2}"), json!("75001"));
        assert_eq!(eval("${step-1_b.déjà}"), json!(1));
    }

    #[test]
    fn syntax_errors_in_references_are_caught_at_compile_time() {
        let cases: &[(&str, &str)] = &[
            ("${input", "unterminated reference `${input` (missing `}`)"),
            (
                "Customer ${input.customerId",
                "unterminated reference `${input.customerId`",
            ),
            ("${", "unterminated"),
            ("${input.", "unterminated"),
            ("${input[0]", "unterminated"),
            ("${}", "empty reference `${}`"),
            ("${.x}", "must start with a name"),
            ("${[0]}", "must start with a name"),
            ("${a..b}", "empty field name after `.`"),
            ("${a.}", "empty field name after `.`"),
            ("${a[x]}", "`[x]` is not an index"),
            ("${a[-1]}", "`[-1]` is not an index"),
            ("${a[]}", "`[]` is not an index"),
            ("${a[1.5]}", "`[1.5]` is not an index"),
            ("${a[ 1]}", "`[ 1]` is not an index"),
            ("${a[1}", "`[1}` is not an index"),
            ("${a[99999999999999999999999]}", "is too large"),
            ("${ input }", "must start with a name"),
            ("${input x}", "unexpected ` ` in reference `${input x}`"),
            ("${a[\"k]}", "unterminated quoted key"),
            ("${a[\"k\"}", "expected `]` after a quoted key"),
            ("${a[\"\\n\"]}", "only `\\\"` and `\\\\` may be escaped"),
            ("ok ${a} then ${b", "unterminated reference `${b`"),
        ];
        for (text, expected) in cases {
            let (at, message) = syntax_error(json!({ "args": { "id": text } }));
            assert_eq!(at, "args.id", "{text}");
            assert!(
                message.contains(expected),
                "{text}: `{message}` should contain `{expected}`"
            );
        }
    }

    #[test]
    fn error_places_are_json_paths() {
        let (at, _) = syntax_error(json!({ "a": [1, { "b": "${" }] }));
        assert_eq!(at, "a[1].b");
        let (at, _) = syntax_error(json!(["${"]));
        assert_eq!(at, "[0]");
        let (at, _) = syntax_error(json!("${"));
        assert_eq!(at, "");
        let (at, _) =
            syntax_error(json!({ "c": { "$zip": { "items": [], "with": "${x[y]}", "as": "f" } } }));
        assert_eq!(at, "c.$zip.with");
    }

    // --- strings, arrays and objects -------------------------------------------------------

    #[test]
    fn dollar_dollar_brace_escapes_a_literal_reference() {
        let input = json!({ "x": 1 });
        let eval = |t: &str| render_with(json!(t), "input", &input);
        assert_eq!(eval("$${input.x}"), json!("${input.x}"));
        assert_eq!(eval("$${input.x} is ${input.x}"), json!("${input.x} is 1"));
        assert_eq!(eval("cost: $5, $$ and $"), json!("cost: $5, $$ and $"));
        assert_eq!(eval("a}b{c"), json!("a}b{c"));
        assert_eq!(eval(""), json!(""));
        let escaped = compile(json!("$${input.x}"));
        assert!(escaped.is_constant());
        assert!(escaped.references().is_empty());
    }

    #[test]
    fn objects_and_arrays_are_templates_recursively() {
        let input = json!({ "id": "C-1", "n": 2 });
        let got = render_with(
            json!({
                "customer": { "id": "${input.id}", "tags": ["vip", "${input.n}", { "deep": ["${input}"] }] },
                "fixed": { "a": [1, 2, { "b": null }] },
                "count": 3
            }),
            "input",
            &input,
        );
        assert_eq!(
            got,
            json!({
                "customer": { "id": "C-1", "tags": ["vip", 2, { "deep": [{ "id": "C-1", "n": 2 }] }] },
                "fixed": { "a": [1, 2, { "b": null }] },
                "count": 3
            })
        );
    }

    #[test]
    fn dollar_dollar_keys_are_literal_dollar_keys() {
        let t = compile(json!({ "$$schema": "http://x", "$$ref": "${v.r}", "a$b": 1 }));
        let v = json!({ "r": "#/defs" });
        assert_eq!(
            t.render(&Scope::new().with("v", &v)).expect("renders"),
            json!({ "$schema": "http://x", "$ref": "#/defs", "a$b": 1 })
        );
    }

    // --- helpers ---------------------------------------------------------------------------

    #[test]
    fn helper_objects_are_checked_at_compile_time() {
        let cases = [
            (
                json!({ "x": { "$foo": 1 } }),
                "x.$foo",
                "unknown helper `$foo`",
            ),
            (json!({ "$": 1 }), "$", "unknown helper `$`"),
            (
                json!({ "x": { "$concat": [], "y": 1 } }),
                "x",
                "helper `$concat` shares its object with `y`",
            ),
            (
                json!({ "$zip": {}, "$concat": [] }),
                "",
                "several helpers in one object",
            ),
            (
                json!({ "$concat": "${a}" }),
                "$concat",
                "`$concat` takes an array of templates",
            ),
            (
                json!({ "$concat": ["${a[x]}"] }),
                "$concat[0]",
                "is not an index",
            ),
            (
                json!({ "$zip": [] }),
                "$zip",
                "`$zip` takes an object with `items`, `with`, `as`",
            ),
            (
                json!({ "$zip": { "items": [], "with": [] } }),
                "$zip",
                "`$zip` needs `as`",
            ),
            (
                json!({ "$zip": { "items": [], "as": "f" } }),
                "$zip",
                "`$zip` needs `with`",
            ),
            (
                json!({ "$zip": { "items": [], "with": [], "as": "" } }),
                "$zip.as",
                "`as` must be a field name",
            ),
            (
                json!({ "$zip": { "items": [], "with": [], "as": 3 } }),
                "$zip.as",
                "`as` must be a field name",
            ),
            (
                json!({ "$zip": { "items": [], "with": [], "as": "f", "on": "x" } }),
                "$zip.on",
                "unknown `$zip` argument `on`",
            ),
            (
                json!({ "$join": { "left": [], "right": [] } }),
                "$join",
                "`$join` needs `on`",
            ),
            (
                json!({ "$join": { "left": [], "right": [], "on": "k", "sum": "v" } }),
                "$join.sum",
                "`sum` must be an array of field names",
            ),
            (
                json!({ "$join": { "left": [], "right": [], "on": "k", "sum": ["v", 1] } }),
                "$join.sum[1]",
                "`sum[1]` must be a field name",
            ),
            (
                json!({ "$join": { "left": [], "right": [], "on": "k", "sum": ["k"] } }),
                "$join.sum[0]",
                "`k` is the join key",
            ),
            (
                json!({ "$join": { "left": [], "right": [], "on": "k", "sum": ["sources"] } }),
                "$join.sum[0]",
                "reserved",
            ),
            (
                json!({ "$join": { "left": [], "right": [], "on": "k", "sum": ["v", "v"] } }),
                "$join.sum[1]",
                "listed twice",
            ),
            (
                json!({ "$pick": { "from": [], "in": [] } }),
                "$pick",
                "`$pick` needs `where`",
            ),
            (
                json!({ "$pick": { "from": [], "where": ["f"], "in": [] } }),
                "$pick.where",
                "must be a field name",
            ),
            (
                json!({ "$default": ["${a}"] }),
                "$default",
                "`$default` takes an array of two templates",
            ),
            (
                json!({ "$default": { "value": 1 } }),
                "$default",
                "`$default` takes an array of two templates",
            ),
            (
                json!({ "o": { "$default": ["${a}", { "$nope": 1 }] } }),
                "o.$default[1].$nope",
                "unknown helper `$nope`",
            ),
        ];
        for (template, at, expected) in cases {
            let (got_at, message) = syntax_error(template.clone());
            assert_eq!(got_at, at, "{template}");
            assert!(
                message.contains(expected),
                "{template}: `{message}` should contain `{expected}`"
            );
        }
    }

    // --- robustness ------------------------------------------------------------------------

    #[test]
    fn compiling_never_panics_on_odd_strings() {
        let odd = [
            "$",
            "$$",
            "$$$",
            "$$${",
            "${",
            "${$",
            "${{",
            "${}}",
            "}${",
            "${a}}",
            "${a{}",
            "${é}",
            "${日本.語}",
            "${a[",
            "${a[\"",
            "${a[\"\\",
            "${a[\"\\\"",
            "${a[*",
            "${a[*]",
            "${a[0]",
            "${a.[0]}",
            "${a[0].}",
            "${a\u{0}}",
            "💥${a}💥",
            "${a}$",
            "$${",
            "$${}",
            "${a.b c}",
            "${a\nb}",
        ];
        for text in odd {
            // Ok or a syntax error; never a panic.
            if let Ok(t) = Template::compile(&json!(text)) {
                let v = json!({ "a": 1 });
                let _ = t.render(&Scope::new().with("a", &v).with("é", &v).with("日本", &v));
            }
        }
        assert!(
            Template::compile(&json!("${a}}")).is_ok(),
            "a stray `}}` is text"
        );
        assert!(
            Template::compile(&json!("${input-}x")).is_ok(),
            "`-` is a name character"
        );
    }
}
