//! Templates and references: the small language composite tools are written in.
//!
//! A template is any JSON value. It is compiled once, when `mcp.json` is loaded ([`Template::compile`]),
//! and rendered for every call ([`Template::render`]) against a [`Scope`]: the values of the
//! composite's `input`, of the steps that already ran, and of `forEach` item variables. This module
//! is pure: no I/O, no clock, no async.
//!
//! # Syntax
//!
//! ## References
//! A **reference** is `${root.path}`.
//! - `root` names a value: `input` (the composite's arguments), a step name, or a `forEach` item
//!   variable. Names are letters, digits, `_` and `-`.
//! - `path` is any sequence of
//!   - `.field`: a field of an object (`${input.customerId}`);
//!   - `[n]`: element `n` (from 0) of an array (`${order.lines[0].productId}`);
//!   - `[*]`: every element of an array: the rest of the path is applied to each element
//!     (`${top.customers[*].customerId}` is the array of the customers' ids). Each further `[*]`
//!     flattens one level, so the result is always one flat array:
//!     `${orders.orders[*].lines[*].productId}` is the product ids of every line of every order;
//!   - `["any key"]`: a field whose name is not a plain name (`${row["unit price"]}`; `\"` and `\\`
//!     escape a quote and a backslash).
//! - No path is the whole value: `${behavior}`.
//!
//! Missing data is not an error, because JSON fields are often optional: a field that does not
//! exist, an index past the end, a field of a non-object or an index into a non-array all evaluate to
//! `null`. With `[*]`, an element where the rest of the path is missing gives `null` in its place
//! (so the result stays aligned with the array), and an element whose inner `[*]` finds no array
//! contributes nothing. A `[*]` on something that is not an array is `null`.
//!
//! Only an *unknown root* is an error: the configuration check lists every reference with
//! [`Template::references`] and rejects roots that name nothing.
//!
//! ## Strings
//! - A string that is **exactly one reference** (nothing before or after it, not even a space)
//!   evaluates to the referenced value, whatever its type: `"${input.limit}"` is the number `5` when
//!   `limit` is `5`, `"${orders}"` is the whole object.
//! - A string with references **embedded in text** interpolates them as text: strings bare, every
//!   other value as compact JSON (`null` included): `"Customer ${input.customerId}"` is
//!   `"Customer C-042"`, `"ids: ${x.ids}"` is `"ids: [1,2]"`.
//! - `$${` writes a literal `${`: `"$${input}"` is the text `${input}`. A `$` not followed by `{` is
//!   just a `$` (`"$5"`, `"$$"`). As in Terraform, a `$` right before a reference cannot be written:
//!   `$${` is always the escape.
//!
//! ## Arrays and objects
//! Arrays and objects are templates element by element and field by field; their keys are taken as
//! written. An object key starting with `$$` is a literal key starting with `$` (`"$$schema"` gives
//! `"$schema"`), because a key starting with a single `$` names a helper.
//!
//! ## Fusion helpers
//! An object with exactly one key starting with `$` is a helper. Helper arguments are templates, except
//! field names, which are written as plain strings. Wherever a helper expects an array, `null` (for
//! example a missing path) counts as the empty array (except `$zip`'s `with`, see below).
//!
//! - **Concatenation**: `{"$concat": [t1, t2, ...]}` is the arrays `t1`, `t2`, ... one after the other.
//!   ```json
//!   {"$concat": ["${sql.orders}", "${cosmos.orders}"]}
//!   ```
//! - **Enrichment**: `{"$zip": {"items": tA, "with": tB, "as": "field"}}` is `tA`'s items, each with
//!   `field` set to `tB`'s item at the same index. An item that is not an object becomes
//!   `{"value": item, "field": ...}`. The two arrays must have the same length, except that a
//!   `null` `tB` (the enriching step failed without fallback, or was skipped) gives every item
//!   `field: null`: a missing enrichment leaves the items as they are rather than failing.
//!   ```json
//!   {"$zip": {"items": "${top.customers}", "with": "${behavior}", "as": "behavior"}}
//!   ```
//! - **Aggregation**: `{"$join": {"left": tL, "right": tR, "on": "key", "sum": ["f1", "f2"]}}` is the
//!   full outer join of two arrays of objects on field `key` (a string or a number; `1` and `1.0` are
//!   the same key). For each key, in order of first appearance (left first), one object:
//!   `{"key": v, "f1": left.f1 + right.f1, ..., "sources": {"left": <left object or null>, "right":
//!   <right object or null>}}`. A missing or `null` field counts as 0. A key that appears in several
//!   rows of one side sums them all, and `sources` shows the first. Sums of integers stay integers;
//!   as soon as one input is a decimal the sum is a decimal, rounded to 2 places. `sum` may be
//!   omitted. Every row must be an object with a string or number `key`, and summed fields must be
//!   numbers when present.
//!   ```json
//!   {"$join": {"left": "${store.regions}", "right": "${online.regions}", "on": "region", "sum": ["revenue", "orders"]}}
//!   ```
//! - **Filter**: `{"$pick": {"from": tA, "where": "field", "in": tB}}` is the items of array `tA`
//!   whose `field` is one of the values of array `tB` (numbers compare by value).
//!   ```json
//!   {"$pick": {"from": "${stock.items}", "where": "productId", "in": "${orders.orders[*].lines[*].productId}"}}
//!   ```
//! - **Default**: `{"$default": [t, fallback]}` is `t`, or `fallback` when `t` is `null` or missing
//!   (`fallback` is only evaluated then).
//!   ```json
//!   {"$default": ["${behavior.segment}", "unknown"]}
//!   ```
//!
//! Helpers nest: any argument that is a template may itself be a helper.
//!
//! ## Errors
//! Found when the configuration is loaded ([`TemplateError::Syntax`]): an unterminated `${`, an empty
//! root or field name, a bad index (`[x]`, `[-1]`), an unknown helper (`$foo`), a helper sharing its
//! object with other keys, a helper with missing, unknown or mistyped arguments.
//! Found when rendering ([`TemplateError::Render`]): a helper given something that is not an array,
//! `$zip` arrays of different lengths, `$join` rows that are not objects or lack the key, summed
//! fields that are not numbers. Both name the place in the template where they happened, as a JSON
//! path relative to the template (`customers.$zip.items`); [`TemplateError::within`] prefixes it with
//! where the template sits in the configuration (`output.customers.$zip.items`).
//!
//! # Example
//! ```
//! use orchestrator::workflow::template::{Scope, Template};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let output = Template::compile(&json!({
//!     "customer": "${input.customerId}",
//!     "title": "Orders of ${input.customerId}",
//!     "productIds": "${orders.orders[*].lines[*].productId}",
//! }))?;
//! let input = json!({ "customerId": "C-1" });
//! let orders = json!({ "orders": [
//!     { "lines": [{ "productId": "P-1" }, { "productId": "P-2" }] },
//!     { "lines": [{ "productId": "P-3" }] },
//! ] });
//! let scope = Scope::new().with("input", &input).with("orders", &orders);
//! assert_eq!(
//!     output.render(&scope)?,
//!     json!({ "customer": "C-1", "title": "Orders of C-1", "productIds": ["P-1", "P-2", "P-3"] })
//! );
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// A compiled template: parsed once at config load, rendered per call.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// The compiled tree; subtrees without references or helpers are folded into literals.
    root: Node,
    /// Whether no reference appears anywhere, so the lead can render once and reuse the result.
    constant: bool,
}

/// Why a template could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Syntax problems, with the JSON path inside the template where they are (e.g. `customerId`,
    /// `customers.$zip.items`; empty for the template itself).
    #[error("{at}: {message}")]
    Syntax {
        /// Where in the template.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// Render-time problems (e.g. `$concat` of a non-array, `$zip` length mismatch).
    #[error("{at}: {message}")]
    Render {
        /// Where in the template.
        at: String,
        /// What is wrong.
        message: String,
    },
}

impl TemplateError {
    /// The JSON path inside the template where the problem is.
    pub fn at(&self) -> &str {
        match self {
            Self::Syntax { at, .. } | Self::Render { at, .. } => at,
        }
    }

    /// What is wrong, without the place.
    pub fn message(&self) -> &str {
        match self {
            Self::Syntax { message, .. } | Self::Render { message, .. } => message,
        }
    }

    /// The same error with its place prefixed by where the template sits, so that it names the full
    /// configuration path: `err.within("composites.insights.output")`.
    #[must_use]
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Self::Syntax { at, message } => Self::Syntax {
                at: join_path(prefix, &at),
                message,
            },
            Self::Render { at, message } => Self::Render {
                at: join_path(prefix, &at),
                message,
            },
        }
    }
}

/// Joins a JSON path prefix and a template-relative path (`args` + `customerId` → `args.customerId`,
/// `steps` + `[0]` → `steps[0]`, either side may be empty).
pub fn join_path(prefix: &str, at: &str) -> String {
    if prefix.is_empty() {
        at.to_owned()
    } else if at.is_empty() {
        prefix.to_owned()
    } else if at.starts_with('[') {
        format!("{prefix}{at}")
    } else {
        format!("{prefix}.{at}")
    }
}

/// One `${...}` found in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The name the reference starts with: `input`, a step, or a `forEach` item variable.
    pub root: String,
    /// Where in the template it is used (JSON path relative to the template, `""` for the template
    /// itself), for dependency analysis and error messages.
    pub at: String,
    /// The reference as written, `${...}` included.
    pub text: String,
}

/// Root name → value, for one rendering.
///
/// Holds borrowed values, so extending it for one `forEach` item is a clone of a short vector of
/// pointers: `scope.clone().with("customer", &item)`. A later binding of a name hides an earlier one.
#[derive(Debug, Clone, Default)]
pub struct Scope<'a> {
    /// Bindings in insertion order; looked up from the end so later ones win.
    roots: Vec<(&'a str, &'a Value)>,
}

impl<'a> Scope<'a> {
    /// An empty scope.
    pub fn new() -> Self {
        Self::default()
    }

    /// This scope with `root` bound to `value`.
    #[must_use]
    pub fn with(mut self, root: &'a str, value: &'a Value) -> Self {
        self.insert(root, value);
        self
    }

    /// Binds `root` to `value`, hiding any earlier binding of `root`.
    pub fn insert(&mut self, root: &'a str, value: &'a Value) {
        self.roots.push((root, value));
    }

    /// The value bound to `root`, if any.
    pub fn get(&self, root: &str) -> Option<&'a Value> {
        self.roots
            .iter()
            .rev()
            .find(|(name, _)| *name == root)
            .map(|(_, value)| *value)
    }

    /// The bound names, for error messages.
    fn names(&self) -> Vec<&'a str> {
        let mut names: Vec<&str> = self.roots.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Evaluates one reference written as text (`"${top.customers}"`), e.g. a `forEach` source.
///
/// The text must be exactly one reference. It is parsed on every call: to evaluate the same
/// reference many times, compile it once with [`Template::compile`] instead.
pub fn evaluate_reference(text: &str, scope: &Scope) -> Result<Value, TemplateError> {
    let not_one = || TemplateError::Syntax {
        at: String::new(),
        message: format!("expected exactly one reference like `${{step.field}}`, got `{text}`"),
    };
    if !text.starts_with("${") {
        return Err(not_one());
    }
    let (reference, end) = parse_reference(text, 0, "")?;
    if end != text.len() {
        return Err(not_one());
    }
    reference.evaluate(scope)
}

impl Template {
    /// Compiles a JSON value into a template, checking its syntax.
    pub fn compile(value: &Value) -> Result<Template, TemplateError> {
        let root = compile_node(value, "")?;
        let constant = !root.has_reference();
        Ok(Template { root, constant })
    }

    /// Every reference with the template-relative path where it is used, in document order, e.g.
    /// `[("input", "customerId"), ("orders", "customers.$zip.items")]`, for dependency analysis and
    /// "unknown reference" errors.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        self.root.collect_references(&mut out);
        out
    }

    /// Renders with the given root values.
    pub fn render(&self, scope: &Scope) -> Result<Value, TemplateError> {
        self.root.render(scope)
    }

    /// True when the template contains no reference (so it can be rendered once).
    pub fn is_constant(&self) -> bool {
        self.constant
    }
}

/// A compiled template node.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A value with no reference and no helper, escapes already resolved.
    Literal(Value),
    /// A string that is exactly one reference: evaluates to the referenced value.
    Ref(Ref),
    /// A string with references embedded in text.
    Text(Vec<Piece>),
    /// An array with at least one non-literal element.
    Array(Vec<Node>),
    /// An object with at least one non-literal field; keys already unescaped.
    Object(Vec<(String, Node)>),
    /// `$concat`.
    Concat {
        /// The helper's place (`x.$concat`), for render errors.
        at: String,
        /// The arrays to concatenate.
        parts: Vec<Node>,
    },
    /// `$zip`.
    Zip {
        /// The helper's place (`x.$zip`).
        at: String,
        /// The items to enrich.
        items: Box<Node>,
        /// The values to attach, one per item.
        with: Box<Node>,
        /// The field to attach them as.
        field: String,
    },
    /// `$join`.
    Join {
        /// The helper's place (`x.$join`).
        at: String,
        /// Left rows.
        left: Box<Node>,
        /// Right rows.
        right: Box<Node>,
        /// The key field.
        on: String,
        /// The fields to sum.
        sum: Vec<String>,
    },
    /// `$pick`.
    Pick {
        /// The helper's place (`x.$pick`).
        at: String,
        /// The items to filter.
        from: Box<Node>,
        /// The field to test.
        field: String,
        /// The accepted values.
        within: Box<Node>,
    },
    /// `$default`.
    Default {
        /// The preferred value.
        value: Box<Node>,
        /// Used when `value` is null.
        fallback: Box<Node>,
    },
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq)]
struct Ref {
    /// The root name.
    root: String,
    /// The path after the root, parsed once.
    path: Vec<Segment>,
    /// As written, for `references()` and error messages.
    text: String,
    /// Where in the template.
    at: String,
}

/// One step of a reference path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `.name` or `["name"]`.
    Field(String),
    /// `[n]`.
    Index(usize),
    /// `[*]`.
    Each,
}

/// A part of an interpolated string.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// Literal text, escapes resolved.
    Text(String),
    /// A reference whose value is inserted as text.
    Ref(Ref),
}

// ---------------------------------------------------------------------------------------------
// Compiling

fn syntax(at: &str, message: impl Into<String>) -> TemplateError {
    TemplateError::Syntax {
        at: at.to_owned(),
        message: message.into(),
    }
}

fn render_error(at: &str, message: impl Into<String>) -> TemplateError {
    TemplateError::Render {
        at: at.to_owned(),
        message: message.into(),
    }
}

fn key_at(at: &str, key: &str) -> String {
    join_path(at, key)
}

fn index_at(at: &str, index: usize) -> String {
    format!("{at}[{index}]")
}

/// Whether an object key names a helper (`$name`, but not the escape `$$name`).
fn is_helper_key(key: &str) -> bool {
    key.starts_with('$') && !key.starts_with("$$")
}

fn compile_node(value: &Value, at: &str) -> Result<Node, TemplateError> {
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
fn parse_reference(text: &str, start: usize, at: &str) -> Result<(Ref, usize), TemplateError> {
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

// ---------------------------------------------------------------------------------------------
// Inspecting

impl Node {
    fn has_reference(&self) -> bool {
        match self {
            Node::Literal(_) => false,
            Node::Ref(_) => true,
            Node::Text(pieces) => pieces.iter().any(|p| matches!(p, Piece::Ref(_))),
            Node::Array(nodes) | Node::Concat { parts: nodes, .. } => {
                nodes.iter().any(Node::has_reference)
            }
            Node::Object(fields) => fields.iter().any(|(_, n)| n.has_reference()),
            Node::Zip { items, with, .. } => items.has_reference() || with.has_reference(),
            Node::Join { left, right, .. } => left.has_reference() || right.has_reference(),
            Node::Pick { from, within, .. } => from.has_reference() || within.has_reference(),
            Node::Default { value, fallback } => value.has_reference() || fallback.has_reference(),
        }
    }

    fn collect_references(&self, out: &mut Vec<Reference>) {
        let mut push = |r: &Ref| {
            out.push(Reference {
                root: r.root.clone(),
                at: r.at.clone(),
                text: r.text.clone(),
            })
        };
        match self {
            Node::Literal(_) => {}
            Node::Ref(r) => push(r),
            Node::Text(pieces) => {
                for piece in pieces {
                    if let Piece::Ref(r) = piece {
                        push(r);
                    }
                }
            }
            Node::Array(nodes) | Node::Concat { parts: nodes, .. } => {
                for node in nodes {
                    node.collect_references(out);
                }
            }
            Node::Object(fields) => {
                for (_, node) in fields {
                    node.collect_references(out);
                }
            }
            Node::Zip {
                items: a, with: b, ..
            }
            | Node::Join {
                left: a, right: b, ..
            }
            | Node::Pick {
                from: a, within: b, ..
            }
            | Node::Default {
                value: a,
                fallback: b,
            } => {
                a.collect_references(out);
                b.collect_references(out);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

impl Ref {
    fn evaluate(&self, scope: &Scope) -> Result<Value, TemplateError> {
        let Some(value) = scope.get(&self.root) else {
            return Err(render_error(
                &self.at,
                format!(
                    "`{}`: nothing named `{}` is in scope (known: {})",
                    self.text,
                    self.root,
                    scope.names().join(", ")
                ),
            ));
        };
        Ok(evaluate_path(value, &self.path))
    }
}

/// Follows `path` from `value`; missing data is `null`. See the module doc for `[*]`.
fn evaluate_path(value: &Value, path: &[Segment]) -> Value {
    let mut current = value;
    for (i, segment) in path.iter().enumerate() {
        let next = match segment {
            Segment::Field(name) => match current {
                Value::Object(map) => map.get(name),
                _ => None,
            },
            Segment::Index(index) => match current {
                Value::Array(items) => items.get(*index),
                _ => None,
            },
            Segment::Each => {
                let Value::Array(items) = current else {
                    return Value::Null;
                };
                let rest = &path[i + 1..];
                let nested = rest.contains(&Segment::Each);
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let result = evaluate_path(item, rest);
                    if !nested {
                        out.push(result);
                    } else if let Value::Array(inner) = result {
                        // The inner `[*]`'s array: flatten it into ours. Anything else is `null`
                        // (the inner array is missing): that element contributes nothing.
                        out.extend(inner);
                    }
                }
                return Value::Array(out);
            }
        };
        match next {
            Some(next) => current = next,
            None => return Value::Null,
        }
    }
    current.clone()
}

/// What kind of JSON value this is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A helper's array argument: an array, or `null` as the empty array.
fn array_argument(value: Value, at: &str) -> Result<Vec<Value>, TemplateError> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(render_error(
            at,
            format!("expected an array, got {}", kind(&other)),
        )),
    }
}

/// A `$join`/`$pick` key: strings by content, numbers by value (`1` and `1.0` are equal).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Str(String),
    Int(i128),
    Float(u64),
}

impl Key {
    fn of(value: &Value) -> Option<Key> {
        match value {
            Value::String(s) => Some(Key::Str(s.clone())),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Some(Key::Int(i128::from(i)))
                } else if let Some(u) = n.as_u64() {
                    Some(Key::Int(i128::from(u)))
                } else {
                    let f = n.as_f64()?;
                    // Integral floats well inside i128 compare equal to the same integer.
                    if f.fract() == 0.0 && f.abs() < 1e30 {
                        Some(Key::Int(f as i128))
                    } else {
                        Some(Key::Float(f.to_bits()))
                    }
                }
            }
            _ => None,
        }
    }
}

/// A running `$join` sum: integers exactly, decimals as f64.
#[derive(Debug, Default, Clone, Copy)]
struct Sum {
    integers: i128,
    decimals: f64,
    any_decimal: bool,
}

impl Sum {
    fn add(&mut self, n: &Number) {
        if let Some(i) = n.as_i64() {
            self.integers = self.integers.saturating_add(i128::from(i));
        } else if let Some(u) = n.as_u64() {
            self.integers = self.integers.saturating_add(i128::from(u));
        } else if let Some(f) = n.as_f64() {
            self.decimals += f;
            self.any_decimal = true;
        }
    }

    fn total(self) -> Option<Value> {
        if !self.any_decimal {
            if let Ok(i) = i64::try_from(self.integers) {
                return Some(Value::from(i));
            }
            if let Ok(u) = u64::try_from(self.integers) {
                return Some(Value::from(u));
            }
        }
        let mut total = self.integers as f64 + self.decimals;
        if total.fract() != 0.0 {
            total = (total * 100.0).round() / 100.0;
        }
        Number::from_f64(total).map(Value::Number)
    }
}

/// One output row of `$join`.
#[derive(Debug)]
struct Group {
    key: Value,
    sums: Vec<Sum>,
    left: Option<Value>,
    right: Option<Value>,
}

impl Node {
    fn render(&self, scope: &Scope) -> Result<Value, TemplateError> {
        match self {
            Node::Literal(value) => Ok(value.clone()),
            Node::Ref(r) => r.evaluate(scope),
            Node::Text(pieces) => {
                let mut out = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => out.push_str(text),
                        Piece::Ref(r) => match r.evaluate(scope)? {
                            Value::String(s) => out.push_str(&s),
                            // `Value`'s Display is compact JSON; writing to a String cannot fail.
                            other => {
                                let _ = write!(out, "{other}");
                            }
                        },
                    }
                }
                Ok(Value::String(out))
            }
            Node::Array(nodes) => Ok(Value::Array(
                nodes
                    .iter()
                    .map(|n| n.render(scope))
                    .collect::<Result<_, _>>()?,
            )),
            Node::Object(fields) => {
                let mut map = Map::new();
                for (key, node) in fields {
                    map.insert(key.clone(), node.render(scope)?);
                }
                Ok(Value::Object(map))
            }
            Node::Concat { at, parts } => {
                let mut out = Vec::new();
                for (i, part) in parts.iter().enumerate() {
                    out.extend(array_argument(part.render(scope)?, &index_at(at, i))?);
                }
                Ok(Value::Array(out))
            }
            Node::Zip {
                at,
                items,
                with,
                field,
            } => {
                let items = array_argument(items.render(scope)?, &key_at(at, "items"))?;
                // A missing enrichment (its step failed or was skipped) leaves every item with
                // `null`: an optional source must not take the whole answer down.
                let with = match with.render(scope)? {
                    Value::Null => vec![Value::Null; items.len()],
                    with => array_argument(with, &key_at(at, "with"))?,
                };
                if items.len() != with.len() {
                    return Err(render_error(
                        at,
                        format!(
                            "`$zip` needs arrays of the same length: `items` has {}, `with` has {}",
                            items.len(),
                            with.len()
                        ),
                    ));
                }
                let zipped = items
                    .into_iter()
                    .zip(with)
                    .map(|(item, extra)| {
                        let mut object = match item {
                            Value::Object(map) => map,
                            other => {
                                let mut map = Map::new();
                                map.insert("value".to_owned(), other);
                                map
                            }
                        };
                        object.insert(field.clone(), extra);
                        Value::Object(object)
                    })
                    .collect();
                Ok(Value::Array(zipped))
            }
            Node::Join {
                at,
                left,
                right,
                on,
                sum,
            } => render_join(at, left.render(scope)?, right.render(scope)?, on, sum),
            Node::Pick {
                at,
                from,
                field,
                within,
            } => {
                let from = array_argument(from.render(scope)?, &key_at(at, "from"))?;
                let accepted = array_argument(within.render(scope)?, &key_at(at, "in"))?;
                let mut keys = HashSet::new();
                let mut others = Vec::new();
                for value in accepted {
                    match Key::of(&value) {
                        Some(key) => {
                            keys.insert(key);
                        }
                        None => others.push(value),
                    }
                }
                let picked = from
                    .into_iter()
                    .filter(|item| {
                        let value = match item {
                            Value::Object(map) => map.get(field).unwrap_or(&Value::Null),
                            _ => &Value::Null,
                        };
                        match Key::of(value) {
                            Some(key) => keys.contains(&key),
                            None => others.contains(value),
                        }
                    })
                    .collect();
                Ok(Value::Array(picked))
            }
            Node::Default { value, fallback } => match value.render(scope)? {
                Value::Null => fallback.render(scope),
                other => Ok(other),
            },
        }
    }
}

fn render_join(
    at: &str,
    left: Value,
    right: Value,
    on: &str,
    sum: &[String],
) -> Result<Value, TemplateError> {
    let mut groups: Vec<Group> = Vec::new();
    let mut by_key: HashMap<Key, usize> = HashMap::new();
    for (side, rows) in [("left", left), ("right", right)] {
        let side_at = key_at(at, side);
        for (i, row) in array_argument(rows, &side_at)?.into_iter().enumerate() {
            let Value::Object(object) = row else {
                return Err(render_error(
                    &side_at,
                    format!("{side}[{i}] is {}, not an object", kind(&row)),
                ));
            };
            let key_value = object.get(on).cloned().unwrap_or(Value::Null);
            let Some(key) = Key::of(&key_value) else {
                return Err(render_error(
                    &side_at,
                    format!(
                        "{side}[{i}].{on} is {}; rows are joined on a string or number",
                        kind(&key_value)
                    ),
                ));
            };
            let index = *by_key.entry(key).or_insert_with(|| {
                groups.push(Group {
                    key: key_value,
                    sums: vec![Sum::default(); sum.len()],
                    left: None,
                    right: None,
                });
                groups.len() - 1
            });
            let Some(group) = groups.get_mut(index) else {
                continue;
            };
            for (acc, field) in group.sums.iter_mut().zip(sum) {
                match object.get(field) {
                    None | Some(Value::Null) => {}
                    Some(Value::Number(n)) => acc.add(n),
                    Some(other) => {
                        return Err(render_error(
                            &side_at,
                            format!("{side}[{i}].{field} is {}, not a number", kind(other)),
                        ));
                    }
                }
            }
            let slot = if side == "left" {
                &mut group.left
            } else {
                &mut group.right
            };
            if slot.is_none() {
                *slot = Some(Value::Object(object));
            }
        }
    }
    let rows = groups
        .into_iter()
        .map(|group| {
            let mut row = Map::new();
            row.insert(on.to_owned(), group.key);
            for (field, acc) in sum.iter().zip(group.sums) {
                let total = acc
                    .total()
                    .ok_or_else(|| render_error(at, format!("the sum of `{field}` overflowed")))?;
                row.insert(field.clone(), total);
            }
            let mut sources = Map::new();
            sources.insert("left".to_owned(), group.left.unwrap_or(Value::Null));
            sources.insert("right".to_owned(), group.right.unwrap_or(Value::Null));
            row.insert("sources".to_owned(), Value::Object(sources));
            Ok(Value::Object(row))
        })
        .collect::<Result<Vec<_>, TemplateError>>()?;
    Ok(Value::Array(rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(value: Value) -> Template {
        Template::compile(&value).expect("template compiles")
    }

    fn syntax_error(value: Value) -> (String, String) {
        match Template::compile(&value) {
            Err(TemplateError::Syntax { at, message }) => (at, message),
            other => panic!("expected a syntax error for {value}, got {other:?}"),
        }
    }

    fn render_error_of(template: &Template, scope: &Scope) -> (String, String) {
        match template.render(scope) {
            Err(TemplateError::Render { at, message }) => (at, message),
            other => panic!("expected a render error, got {other:?}"),
        }
    }

    fn render_with(template: Value, root: &str, value: &Value) -> Value {
        compile(template)
            .render(&Scope::new().with(root, value))
            .expect("renders")
    }

    /// A customer's orders as the SQL server returns them (`get_customer_orders`).
    fn customer_orders() -> Value {
        json!({
            "customerId": "C-042",
            "totalOrders": 3,
            "count": 3,
            "orders": [
                {
                    "orderId": "O-1001", "customerId": "C-042", "status": "delivered",
                    "createdAt": "2026-01-03T10:00:00Z", "total": 59.97,
                    "lines": [
                        { "productId": "P-01", "productName": "Mug", "category": "kitchen",
                          "quantity": 2, "unitPrice": 9.99, "lineTotal": 19.98 },
                        { "productId": "P-07", "productName": "Kettle", "category": "kitchen",
                          "quantity": 1, "unitPrice": 39.99, "lineTotal": 39.99 }
                    ]
                },
                {
                    "orderId": "O-1002", "customerId": "C-042", "status": "processing",
                    "createdAt": "2026-02-11T08:30:00Z", "total": 12.5,
                    "lines": [
                        { "productId": "P-03", "productName": "Tea", "category": "grocery",
                          "quantity": 5, "unitPrice": 2.5, "lineTotal": 12.5 }
                    ]
                },
                {
                    "orderId": "O-1003", "customerId": "C-042", "status": "cancelled",
                    "createdAt": "2026-03-01T12:00:00Z", "total": 0,
                    "lines": []
                }
            ]
        })
    }

    // --- references and their paths -------------------------------------------------------

    #[test]
    fn an_exact_reference_keeps_the_referenced_type() {
        let input = json!({
            "n": 5, "f": 1.5, "s": "x", "b": false, "z": null,
            "o": { "a": [1, 2] }, "a": [{ "k": 1 }]
        });
        for (field, expected) in [
            ("n", json!(5)),
            ("f", json!(1.5)),
            ("s", json!("x")),
            ("b", json!(false)),
            ("z", Value::Null),
            ("o", json!({ "a": [1, 2] })),
            ("a", json!([{ "k": 1 }])),
        ] {
            let got = render_with(json!(format!("${{input.{field}}}")), "input", &input);
            assert_eq!(got, expected, "field {field}");
        }
        assert_eq!(render_with(json!("${input}"), "input", &input), input);
    }

    #[test]
    fn paths_follow_fields_and_indexes() {
        let order = customer_orders()["orders"][0].clone();
        let at = |t: &str| render_with(json!(t), "order", &order);
        assert_eq!(at("${order.lines[0].productId}"), json!("P-01"));
        assert_eq!(at("${order.lines[1].unitPrice}"), json!(39.99));
        assert_eq!(at("${order.lines[1]}"), order["lines"][1]);
        assert_eq!(at("${order.orderId}"), json!("O-1001"));
    }

    #[test]
    fn missing_data_is_null() {
        let value = json!({ "a": { "b": [1, 2] }, "s": "text", "n": 3 });
        for path in [
            "${v.nope}",
            "${v.a.nope.deeper}",
            "${v.a.b[2]}",
            "${v.a.b[99999999999]}",
            "${v.a[0]}",
            "${v.a.b.length}",
            "${v.s.x}",
            "${v.s[0]}",
            "${v.n.x}",
            "${v.n[*]}",
            "${v.a[*]}",
            "${v.nope[*].x}",
        ] {
            assert_eq!(render_with(json!(path), "v", &value), Value::Null, "{path}");
        }
    }

    #[test]
    fn star_maps_the_rest_of_the_path_and_flattens_nested_stars() {
        let orders = customer_orders();
        let eval = |t: &str| render_with(json!(t), "orders", &orders);
        assert_eq!(
            eval("${orders.orders[*].lines[*].productId}"),
            json!(["P-01", "P-07", "P-03"]),
            "the empty third order contributes nothing"
        );
        assert_eq!(
            eval("${orders.orders[*].orderId}"),
            json!(["O-1001", "O-1002", "O-1003"])
        );
        // One `[*]`: the arrays are kept, one per order.
        assert_eq!(
            eval("${orders.orders[*].lines[0].productId}"),
            json!(["P-01", "P-03", null]),
            "a missing value keeps its place"
        );
        assert_eq!(
            eval("${orders.orders[*].lines}").as_array().map(Vec::len),
            Some(3)
        );
        assert_eq!(
            eval("${orders.orders[*].lines[*].quantity}"),
            json!([2, 1, 5])
        );
        assert_eq!(
            eval("${orders.orders[*].discount}"),
            json!([null, null, null])
        );
    }

    #[test]
    fn star_over_arrays_of_arrays_and_missing_inner_arrays() {
        let value = json!({
            "matrix": [[1, 2], [3], [], "not an array", [[4]]],
            "groups": [
                { "items": [{ "tags": ["a", "b"] }, { "tags": ["c"] }] },
                { "items": "oops" },
                {},
                { "items": [{ "tags": [] }, {}] }
            ]
        });
        let eval = |t: &str| render_with(json!(t), "v", &value);
        assert_eq!(eval("${v.matrix[*][*]}"), json!([1, 2, 3, [4]]));
        assert_eq!(eval("${v.matrix[*]}"), value["matrix"]);
        assert_eq!(eval("${v.matrix[*][0]}"), json!([1, 3, null, null, [4]]));
        assert_eq!(
            eval("${v.groups[*].items[*].tags[*]}"),
            json!(["a", "b", "c"])
        );
        // Two stars: tags arrays kept, the items level flattened.
        assert_eq!(
            eval("${v.groups[*].items[*].tags}"),
            json!([["a", "b"], ["c"], [], null])
        );
    }

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

    // --- strings ---------------------------------------------------------------------------

    #[test]
    fn references_in_text_are_interpolated() {
        let input = json!({ "id": "C-042", "n": 7, "f": 2.5, "ids": [1, 2], "o": { "a": "b" }, "z": null, "t": true });
        let eval = |t: &str| render_with(json!(t), "input", &input);
        assert_eq!(eval("Customer ${input.id}"), json!("Customer C-042"));
        assert_eq!(
            eval("${input.id} has ${input.n} orders"),
            json!("C-042 has 7 orders")
        );
        assert_eq!(
            eval("${input.id}${input.n}"),
            json!("C-0427"),
            "adjacent references"
        );
        assert_eq!(eval("f=${input.f}"), json!("f=2.5"));
        assert_eq!(eval("ids: ${input.ids}"), json!("ids: [1,2]"));
        assert_eq!(eval("o: ${input.o}"), json!(r#"o: {"a":"b"}"#));
        assert_eq!(
            eval("z=${input.z}, missing=${input.nope}"),
            json!("z=null, missing=null")
        );
        assert_eq!(eval("t=${input.t}"), json!("t=true"));
        assert_eq!(eval("« ${input.id} »"), json!("« C-042 »"));
    }

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

    // --- arrays, objects, constants --------------------------------------------------------

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

    #[test]
    fn is_constant_tells_templates_without_references() {
        for constant in [
            json!(null),
            json!(1),
            json!("plain"),
            json!("$${not.a.ref}"),
            json!({ "a": [1, { "b": "c" }] }),
            json!({ "$concat": [[1], [2]] }),
            json!({ "$default": [null, "x"] }),
        ] {
            let t = compile(constant.clone());
            assert!(t.is_constant(), "{constant}");
            assert!(t.references().is_empty(), "{constant}");
            t.render(&Scope::new())
                .expect("a constant renders in an empty scope");
        }
        let folded = compile(json!({ "a": [1, { "b": "c" }], "$$k": "v" }));
        assert_eq!(
            folded.render(&Scope::new()).expect("renders"),
            json!({ "a": [1, { "b": "c" }], "$k": "v" })
        );
        for variable in [
            json!("${x}"),
            json!("a ${x} b"),
            json!([1, { "a": "${x.y}" }]),
            json!({ "$default": [null, "${x}"] }),
            json!({ "$pick": { "from": [], "where": "f", "in": "${x}" } }),
        ] {
            assert!(!compile(variable.clone()).is_constant(), "{variable}");
        }
        assert_eq!(
            compile(json!({ "$concat": [[1], [2]] }))
                .render(&Scope::new())
                .expect("renders"),
            json!([1, 2])
        );
    }

    // --- helpers ---------------------------------------------------------------------------

    #[test]
    fn concat_appends_arrays_and_treats_null_as_empty() {
        let v = json!({ "a": [1, 2], "b": [{ "x": 3 }], "n": null, "s": "str", "o": {} });
        let eval = |t: Value| compile(t).render(&Scope::new().with("v", &v));
        assert_eq!(
            eval(json!({ "$concat": ["${v.a}", "${v.b}", [4], "${v.n}", "${v.missing}"] }))
                .expect("renders"),
            json!([1, 2, { "x": 3 }, 4])
        );
        assert_eq!(eval(json!({ "$concat": [] })).expect("renders"), json!([]));
        let t = compile(json!({ "all": { "$concat": ["${v.a}", "${v.s}"] } }));
        let (at, message) = render_error_of(&t, &Scope::new().with("v", &v));
        assert_eq!(at, "all.$concat[1]");
        assert_eq!(message, "expected an array, got a string");
        let t = compile(json!({ "$concat": ["${v.o}"] }));
        let (at, message) = render_error_of(&t, &Scope::new().with("v", &v));
        assert_eq!(
            (at.as_str(), message.as_str()),
            ("$concat[0]", "expected an array, got an object")
        );
    }

    #[test]
    fn zip_enriches_items_with_the_values_at_the_same_index() {
        let top = json!({ "customers": [
            { "customerId": "C-1", "name": "Ada" },
            { "customerId": "C-2", "name": "Bob", "behavior": "stale" }
        ] });
        let behavior = json!([{ "segment": "loyal" }, { "segment": "new" }]);
        let scope = Scope::new().with("top", &top).with("behavior", &behavior);
        let t = compile(json!({ "customers": { "$zip": {
            "items": "${top.customers}", "with": "${behavior}", "as": "behavior"
        } } }));
        assert_eq!(
            t.render(&scope).expect("renders"),
            json!({ "customers": [
                { "customerId": "C-1", "name": "Ada", "behavior": { "segment": "loyal" } },
                { "customerId": "C-2", "name": "Bob", "behavior": { "segment": "new" } }
            ] })
        );
        // Non-object items are wrapped.
        let t = compile(json!({ "$zip": {
            "items": "${top.customers[*].customerId}", "with": "${behavior[*].segment}", "as": "segment"
        } }));
        assert_eq!(
            t.render(&scope).expect("renders"),
            json!([{ "value": "C-1", "segment": "loyal" }, { "value": "C-2", "segment": "new" }])
        );
        // Null on both sides is two empty arrays.
        let t = compile(json!({ "$zip": { "items": "${top.nope}", "with": null, "as": "x" } }));
        assert_eq!(t.render(&scope).expect("renders"), json!([]));
    }

    #[test]
    fn zip_pairs_every_item_with_null_when_the_enrichment_is_missing() {
        // `analysis` failed without fallback (or was skipped): its value is null.
        let top = json!({ "customers": [{ "id": 1 }, { "id": 2 }] });
        let scope = Scope::new()
            .with("top", &top)
            .with("analysis", &Value::Null);
        let t = compile(
            json!({ "$zip": { "items": "${top.customers}", "with": "${analysis}", "as": "b" } }),
        );
        assert_eq!(
            t.render(&scope)
                .expect("a missing enrichment is not an error"),
            json!([{ "id": 1, "b": null }, { "id": 2, "b": null }])
        );
        // A path that is missing inside a present value is null too.
        let t = compile(
            json!({ "$zip": { "items": "${top.customers}", "with": "${top.nope}", "as": "b" } }),
        );
        assert_eq!(
            t.render(&scope).expect("renders"),
            json!([{ "id": 1, "b": null }, { "id": 2, "b": null }])
        );
    }

    #[test]
    fn zip_rejects_arrays_of_different_lengths_and_non_arrays() {
        let top = json!({ "customers": [{ "id": 1 }, { "id": 2 }], "one": [1], "n": 4 });
        let scope = Scope::new().with("top", &top);
        let t = compile(
            json!({ "customers": { "$zip": { "items": "${top.customers}", "with": "${top.one}", "as": "b" } } }),
        );
        let (at, message) = render_error_of(&t, &scope);
        assert_eq!(at, "customers.$zip");
        assert_eq!(
            message,
            "`$zip` needs arrays of the same length: `items` has 2, `with` has 1"
        );
        let t = compile(json!({ "$zip": { "items": "${top.customers}", "with": [], "as": "b" } }));
        assert!(render_error_of(&t, &scope).1.contains("`with` has 0"));
        let t = compile(json!({ "$zip": { "items": "${top.n}", "with": [], "as": "b" } }));
        assert_eq!(
            render_error_of(&t, &scope),
            (
                "$zip.items".to_owned(),
                "expected an array, got a number".to_owned()
            )
        );
    }

    /// Sales by region: store sales from SQL, online sales from Cosmos.
    fn sales() -> (Value, Value) {
        let store = json!([
            { "region": "north", "revenue": 1200.5, "orders": 10 },
            { "region": "south", "revenue": 800, "orders": 4 },
            { "region": "west", "revenue": 0.1, "orders": 1 }
        ]);
        let online = json!([
            { "region": "south", "revenue": 199.75, "orders": 3 },
            { "region": "east", "revenue": 50, "orders": 2, "channel": "web" },
            { "region": "west", "revenue": 0.2 }
        ]);
        (store, online)
    }

    #[test]
    fn join_aggregates_two_lists_on_a_key() {
        let (store, online) = sales();
        let scope = Scope::new().with("store", &store).with("online", &online);
        let t = compile(json!({ "$join": {
            "left": "${store}", "right": "${online}", "on": "region", "sum": ["revenue", "orders"]
        } }));
        let got = t.render(&scope).expect("renders");
        assert_eq!(
            got,
            json!([
                { "region": "north", "revenue": 1200.5, "orders": 10,
                  "sources": { "left": store[0], "right": null } },
                { "region": "south", "revenue": 999.75, "orders": 7,
                  "sources": { "left": store[1], "right": online[0] } },
                { "region": "west", "revenue": 0.3, "orders": 1,
                  "sources": { "left": store[2], "right": online[2] } },
                { "region": "east", "revenue": 50, "orders": 2,
                  "sources": { "left": null, "right": online[1] } }
            ])
        );
        // Integer sums stay integers; decimal sums are decimals.
        assert!(got[0]["orders"].is_i64());
        assert!(got[3]["revenue"].is_i64());
        assert!(got[1]["revenue"].is_f64());
    }

    #[test]
    fn join_keys_compare_numbers_by_value_and_duplicates_are_summed() {
        let left = json!([{ "k": 1, "v": 1 }, { "k": "1", "v": 10 }, { "k": 1, "v": 100 }]);
        let right = json!([{ "k": 1.0, "v": 2.25 }, { "k": 2, "v": null }]);
        let scope = Scope::new().with("l", &left).with("r", &right);
        let t = compile(
            json!({ "$join": { "left": "${l}", "right": "${r}", "on": "k", "sum": ["v"] } }),
        );
        assert_eq!(
            t.render(&scope).expect("renders"),
            json!([
                { "k": 1, "v": 103.25, "sources": { "left": left[0], "right": right[0] } },
                { "k": "1", "v": 10, "sources": { "left": left[1], "right": null } },
                { "k": 2, "v": 0, "sources": { "left": null, "right": right[1] } }
            ])
        );
        // `sum` is optional; null lists are empty.
        let t = compile(json!({ "$join": { "left": "${l}", "right": "${nope.x}", "on": "k" } }));
        let scope = scope.with("nope", &Value::Null);
        let got = t.render(&scope).expect("renders");
        assert_eq!(got.as_array().map(Vec::len), Some(2));
        assert_eq!(
            got[0],
            json!({ "k": 1, "sources": { "left": left[0], "right": null } })
        );
    }

    #[test]
    fn join_rejects_rows_it_cannot_join() {
        let good = json!([{ "region": "north", "revenue": 1 }]);
        let cases = [
            (json!([1]), "left[0] is a number, not an object"),
            (
                json!([{ "revenue": 1 }]),
                "left[0].region is null; rows are joined on a string or number",
            ),
            (json!([{ "region": true }]), "left[0].region is a boolean"),
            (
                json!([{ "region": "n", "revenue": "12" }]),
                "left[0].revenue is a string, not a number",
            ),
            (json!({ "region": "n" }), "expected an array, got an object"),
        ];
        for (left, expected) in cases {
            let scope = Scope::new().with("l", &left).with("r", &good);
            let t = compile(json!({ "sales": { "$join": {
                "left": "${l}", "right": "${r}", "on": "region", "sum": ["revenue"]
            } } }));
            let (at, message) = render_error_of(&t, &scope);
            assert_eq!(at, "sales.$join.left", "{left}");
            assert!(message.contains(expected), "{left}: `{message}`");
        }
        let scope = Scope::new().with("l", &good).with("r", &good);
        let t = compile(
            json!({ "$join": { "left": "${l}", "right": [{ "region": 1, "revenue": [] }], "on": "region", "sum": ["revenue"] } }),
        );
        assert_eq!(
            render_error_of(&t, &scope),
            (
                "$join.right".to_owned(),
                "right[0].revenue is an array, not a number".to_owned()
            )
        );
    }

    #[test]
    fn join_sums_round_decimals_to_two_places() {
        let left =
            json!([{ "k": "a", "v": 0.1 }, { "k": "b", "v": 1.005 }, { "k": "c", "v": 2.5 }]);
        let right = json!([{ "k": "a", "v": 0.2 }, { "k": "b", "v": 1 }, { "k": "c", "v": 0.5 }]);
        let scope = Scope::new().with("l", &left).with("r", &right);
        let t = compile(
            json!({ "$join": { "left": "${l}", "right": "${r}", "on": "k", "sum": ["v"] } }),
        );
        let got = t.render(&scope).expect("renders");
        assert_eq!(got[0]["v"], json!(0.3));
        assert_eq!(got[1]["v"].as_f64(), Some(2.01));
        assert_eq!(
            got[2]["v"],
            json!(3.0),
            "a decimal input keeps the sum a decimal"
        );
    }

    #[test]
    fn pick_filters_items_by_a_field() {
        let stock = json!({ "items": [
            { "productId": "P-01", "inStock": 4 },
            { "productId": "P-02", "inStock": 0 },
            { "productId": "P-03", "inStock": 9 },
            { "sku": "no id" },
            "not an object"
        ] });
        let orders = customer_orders();
        let scope = Scope::new().with("stock", &stock).with("orders", &orders);
        let t = compile(json!({ "$pick": {
            "from": "${stock.items}", "where": "productId", "in": "${orders.orders[*].lines[*].productId}"
        } }));
        assert_eq!(
            t.render(&scope).expect("renders"),
            json!([{ "productId": "P-01", "inStock": 4 }, { "productId": "P-03", "inStock": 9 }])
        );
        let t = compile(
            json!({ "$pick": { "from": [{ "n": 1 }, { "n": 2.0 }, { "n": "1" }, { "n": 3 }], "where": "n", "in": [1.0, 2] } }),
        );
        assert_eq!(
            t.render(&scope).expect("renders"),
            json!([{ "n": 1 }, { "n": 2.0 }])
        );
        let t = compile(
            json!({ "$pick": { "from": [{ "n": true }, { "n": null }, {}], "where": "n", "in": [true] } }),
        );
        assert_eq!(t.render(&scope).expect("renders"), json!([{ "n": true }]));
        let t = compile(
            json!({ "$pick": { "from": "${stock.none}", "where": "n", "in": "${stock.none}" } }),
        );
        assert_eq!(t.render(&scope).expect("renders"), json!([]));
        let t = compile(
            json!({ "$pick": { "from": "${stock.items}", "where": "productId", "in": "P-01" } }),
        );
        assert_eq!(
            render_error_of(&t, &scope),
            (
                "$pick.in".to_owned(),
                "expected an array, got a string".to_owned()
            )
        );
    }

    #[test]
    fn default_replaces_null_and_missing_values_only() {
        let behavior = json!({ "segment": null, "score": 0, "flag": false, "name": "" });
        let scope = Scope::new().with("behavior", &behavior);
        let eval = |field: &str| {
            compile(json!({ "$default": [format!("${{behavior.{field}}}"), "unknown"] }))
                .render(&scope)
                .expect("renders")
        };
        assert_eq!(eval("segment"), json!("unknown"));
        assert_eq!(eval("missing"), json!("unknown"));
        assert_eq!(eval("score"), json!(0));
        assert_eq!(eval("flag"), json!(false));
        assert_eq!(eval("name"), json!(""));
        // The fallback is only evaluated when needed: here it names a root that is not bound.
        let t = compile(json!({ "$default": ["${behavior.score}", "${absent}"] }));
        assert_eq!(t.render(&scope).expect("renders"), json!(0));
        let t = compile(json!({ "$default": ["${behavior.segment}", "${absent}"] }));
        assert!(
            render_error_of(&t, &scope)
                .1
                .contains("nothing named `absent`")
        );
    }

    #[test]
    fn helpers_nest() {
        let orders = customer_orders();
        let stock = json!([
            { "productId": "P-01", "inStock": 4 },
            { "productId": "P-03", "inStock": 9 },
            { "productId": "P-99", "inStock": 1 }
        ]);
        let extra = json!({ "items": null });
        let scope = Scope::new()
            .with("orders", &orders)
            .with("stock", &stock)
            .with("extra", &extra);
        let t = compile(json!({
            "relevant": { "$concat": [
                { "$pick": { "from": "${stock}", "where": "productId", "in": "${orders.orders[*].lines[*].productId}" } },
                { "$default": ["${extra.items}", [{ "productId": "none" }]] }
            ] },
            "ids": { "$zip": {
                "items": { "$concat": ["${orders.orders[*].orderId}"] },
                "with": "${orders.orders[*].total}",
                "as": "total"
            } }
        }));
        assert_eq!(
            t.render(&scope).expect("renders"),
            json!({
                "relevant": [
                    { "productId": "P-01", "inStock": 4 },
                    { "productId": "P-03", "inStock": 9 },
                    { "productId": "none" }
                ],
                "ids": [
                    { "value": "O-1001", "total": 59.97 },
                    { "value": "O-1002", "total": 12.5 },
                    { "value": "O-1003", "total": 0 }
                ]
            })
        );
    }

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

    // --- references(), scope, evaluate_reference, errors -----------------------------------

    #[test]
    fn references_lists_every_root_with_its_place() {
        let t = compile(json!({
            "customerId": "${input.customerId}",
            "title": "Orders of ${input.customerId} (${orders.count})",
            "lines": [1, "${orders.orders[0].lines}"],
            "customers": { "$zip": { "items": "${top.customers}", "with": "${behavior}", "as": "behavior" } },
            "all": { "$concat": [[], "${a.x[*].y}"] },
            "segment": { "$default": ["${behavior.segment}", "$${literal}"] },
            "sales": { "$join": { "left": "${store}", "right": "${online}", "on": "region" } },
            "stock": { "$pick": { "from": "${stock.items}", "where": "id", "in": "${orders.ids}" } }
        }));
        let refs: Vec<(String, String, String)> = t
            .references()
            .into_iter()
            .map(|r| (r.root, r.at, r.text))
            .collect();
        let expect =
            |root: &str, at: &str, text: &str| (root.to_owned(), at.to_owned(), text.to_owned());
        // serde_json objects iterate in key order.
        assert_eq!(
            refs,
            vec![
                expect("a", "all.$concat[1]", "${a.x[*].y}"),
                expect("input", "customerId", "${input.customerId}"),
                expect("top", "customers.$zip.items", "${top.customers}"),
                expect("behavior", "customers.$zip.with", "${behavior}"),
                expect("orders", "lines[1]", "${orders.orders[0].lines}"),
                expect("store", "sales.$join.left", "${store}"),
                expect("online", "sales.$join.right", "${online}"),
                expect("behavior", "segment.$default[0]", "${behavior.segment}"),
                expect("stock", "stock.$pick.from", "${stock.items}"),
                expect("orders", "stock.$pick.in", "${orders.ids}"),
                expect("input", "title", "${input.customerId}"),
                expect("orders", "title", "${orders.count}"),
            ]
        );
        let root_refs = compile(json!("${whole}")).references();
        assert_eq!(
            root_refs,
            vec![Reference {
                root: "whole".into(),
                at: String::new(),
                text: "${whole}".into()
            }]
        );
    }

    #[test]
    fn unknown_roots_at_render_time_name_what_is_known() {
        let one = json!(1);
        let t = compile(json!({ "a": "${nope.x}" }));
        let scope = Scope::new().with("input", &one).with("orders", &one);
        let (at, message) = render_error_of(&t, &scope);
        assert_eq!(at, "a");
        assert_eq!(
            message,
            "`${nope.x}`: nothing named `nope` is in scope (known: input, orders)"
        );
    }

    #[test]
    fn scope_later_bindings_hide_earlier_ones() {
        let step = json!({ "id": "step" });
        let item = json!({ "id": "item" });
        let base = Scope::new().with("customer", &step);
        let t = compile(json!("${customer.id}"));
        assert_eq!(t.render(&base).expect("renders"), json!("step"));
        let per_item = base.clone().with("customer", &item);
        assert_eq!(t.render(&per_item).expect("renders"), json!("item"));
        assert_eq!(
            t.render(&base).expect("renders"),
            json!("step"),
            "the base is unchanged"
        );
        let mut scope = Scope::new();
        scope.insert("customer", &item);
        assert_eq!(scope.get("customer"), Some(&item));
        assert_eq!(scope.get("other"), None);
    }

    #[test]
    fn evaluate_reference_takes_exactly_one_reference() {
        let top = json!({ "customers": [{ "customerId": "C-1" }, { "customerId": "C-2" }] });
        let scope = Scope::new().with("top", &top);
        assert_eq!(
            evaluate_reference("${top.customers}", &scope).expect("evaluates"),
            top["customers"]
        );
        assert_eq!(
            evaluate_reference("${top.customers[*].customerId}", &scope).expect("evaluates"),
            json!(["C-1", "C-2"])
        );
        assert_eq!(
            evaluate_reference("${top.nope}", &scope).expect("evaluates"),
            Value::Null
        );
        for bad in [
            "top.customers",
            "${top} ",
            " ${top}",
            "${top}${top}",
            "",
            "$${top}",
        ] {
            let err = evaluate_reference(bad, &scope).expect_err(bad);
            assert!(
                err.message().contains("expected exactly one reference"),
                "{bad}: {err}"
            );
        }
        let err = evaluate_reference("${top[x]}", &scope).expect_err("bad index");
        assert!(err.message().contains("is not an index"));
        let err = evaluate_reference("${other}", &scope).expect_err("unknown root");
        assert!(matches!(err, TemplateError::Render { .. }));
    }

    #[test]
    fn errors_display_their_place_and_can_be_placed_in_the_config() {
        let err = Template::compile(
            &json!({ "customers": { "$zip": { "items": "${x", "with": [], "as": "f" } } }),
        )
        .expect_err("unterminated");
        assert_eq!(err.at(), "customers.$zip.items");
        let err = err.within("output");
        assert_eq!(
            err.to_string(),
            "output.customers.$zip.items: unterminated reference `${x` (missing `}`)"
        );
        assert_eq!(join_path("steps.orders.args", ""), "steps.orders.args");
        assert_eq!(join_path("output", "[0].a"), "output[0].a");
        assert_eq!(join_path("", "a"), "a");
    }

    #[test]
    fn the_customer_insights_example_renders() {
        let input = json!({ "customerId": "C-042" });
        let orders = customer_orders();
        let behavior = json!({ "segment": "loyal", "sessions": 12 });
        let inventory = json!({ "items": [{ "productId": "P-01", "inStock": 3 }] });
        let args = compile(json!({ "customerId": "${input.customerId}" }));
        let output = compile(json!({
            "customerId": "${input.customerId}",
            "orders": "${orders}",
            "behavior": "${behavior}",
            "inventory": "${inventory}"
        }));
        let scope = Scope::new()
            .with("input", &input)
            .with("orders", &orders)
            .with("behavior", &behavior)
            .with("inventory", &inventory);
        assert_eq!(
            args.render(&scope).expect("renders"),
            json!({ "customerId": "C-042" })
        );
        assert_eq!(
            output.render(&scope).expect("renders"),
            json!({ "customerId": "C-042", "orders": orders, "behavior": behavior, "inventory": inventory })
        );
    }

    // --- robustness ------------------------------------------------------------------------

    /// Values of every shape, nested and not.
    fn shapes() -> Vec<Value> {
        vec![
            Value::Null,
            json!(true),
            json!(0),
            json!(-1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
            json!(1e300),
            json!(""),
            json!("text ${not.parsed}"),
            json!([]),
            json!([null]),
            json!([[1, [2]], {}, "s"]),
            json!({}),
            json!({ "a": null, "b": [1, { "c": [] }] }),
            json!([{ "k": 1, "v": 1e308 }, { "k": 1, "v": 1e308 }, { "k": "x", "v": "s" }]),
            json!([{ "k": i64::MAX, "v": i64::MAX }, { "k": i64::MAX, "v": u64::MAX }]),
            customer_orders(),
            json!({ "customers": [{ "id": 1 }, 2, [3], null], "orders": { "orders": "no" } }),
        ]
    }

    #[test]
    fn rendering_never_panics_whatever_the_data() {
        let templates = [
            json!("${v}"),
            json!("${v.a.b[0].c}"),
            json!("${v[*]}"),
            json!("${v[*][*]}"),
            json!("${v[*].k}"),
            json!("${v.orders[*].lines[*].productId}"),
            json!("${v.customers[*].id} and ${v[0]}"),
            json!({ "$concat": ["${v}", "${v.b}", "${v[*]}"] }),
            json!({ "$zip": { "items": "${v}", "with": "${v[*].k}", "as": "k2" } }),
            json!({ "$zip": { "items": "${v}", "with": "${v}", "as": "value" } }),
            json!({ "$join": { "left": "${v}", "right": "${v}", "on": "k", "sum": ["v", "k2"] } }),
            json!({ "$join": { "left": "${v.orders}", "right": "${v}", "on": "orderId", "sum": ["total"] } }),
            json!({ "$pick": { "from": "${v}", "where": "k", "in": "${v[*].k}" } }),
            json!({ "$pick": { "from": "${v.customers}", "where": "id", "in": "${v}" } }),
            json!({ "$default": ["${v.a}", { "$concat": ["${v}"] }] }),
        ];
        for template in templates {
            let compiled = compile(template.clone());
            for value in shapes() {
                let scope = Scope::new().with("v", &value);
                match compiled.render(&scope) {
                    Ok(_) | Err(TemplateError::Render { .. }) => {}
                    Err(other) => panic!("{template} on {value}: {other:?}"),
                }
            }
        }
    }

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
