//! Templates and references: the small language composite tools are written in.
//!
//! A template is any JSON value. It is compiled once, when `mcp.json` is loaded ([`Template::compile`]),
//! and rendered for every call ([`Template::render`]) against a [`Scope`]: the values of the
//! composite's `input`, of the steps that already ran, and of `forEach` item variables. Cache tags
//! (`orchestrator.cache`) are templates too, over the call's `args`. This module is pure: no I/O, no
//! clock, no async.
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
//! use orchestrator::template::{Scope, Template};
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
//!
//! # Layout
//! - this file: the public face ([`Template`], [`Scope`], [`Reference`], [`TemplateError`],
//!   [`evaluate_reference`]), each delegating to the parts below.
//! - `compile`: a JSON value parsed into the compiled tree; syntax errors are found there.
//! - `tree`: the compiled tree that the other parts build or walk.
//! - `inspect`: what a compiled template says without rendering (references, constancy).
//! - `render`: a compiled template rendered against a [`Scope`]; `$concat`, `$zip`, `$pick` and
//!   `$default` run here.
//! - `join`: the `$join` aggregation, the one helper big enough for its own file.
//! - `values`: what rendering and the helpers share (render errors, array arguments, keys).

mod compile;
#[cfg(test)]
mod fixtures;
mod inspect;
mod join;
mod render;
mod tree;
mod values;

pub use values::kind as kind_of;

use serde_json::Value;

use tree::Node;

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

/// The place of field `key` inside the place `at` (`a` + `b` → `a.b`).
fn key_at(at: &str, key: &str) -> String {
    join_path(at, key)
}

/// The place of element `index` inside the place `at` (`a` + `1` → `a[1]`).
fn index_at(at: &str, index: usize) -> String {
    format!("{at}[{index}]")
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
    let (reference, end) = compile::parse_reference(text, 0, "")?;
    if end != text.len() {
        return Err(not_one());
    }
    reference.evaluate(scope)
}

impl Template {
    /// Compiles a JSON value into a template, checking its syntax.
    pub fn compile(value: &Value) -> Result<Template, TemplateError> {
        let root = compile::compile_node(value, "")?;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::fixtures::{compile, customer_orders};
    use super::*;

    // --- scope, evaluate_reference, errors -------------------------------------------------

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
}
