//! Rendering: a compiled template evaluated against a [`Scope`]: references followed, text
//! interpolated, helpers applied (`$join` in its own file). The render errors
//! ([`TemplateError::Render`]) and what reads helper arguments are in `values`.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::join::render_join;
use super::tree::{Node, Piece, Ref, Segment};
use super::values::{Key, array_argument, render_error};
use super::{Scope, TemplateError, index_at, key_at};

impl Ref {
    pub(super) fn evaluate(&self, scope: &Scope) -> Result<Value, TemplateError> {
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

/// Follows `path` from `value`; missing data is `null`. See the template module doc for `[*]`.
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

impl Node {
    pub(super) fn render(&self, scope: &Scope) -> Result<Value, TemplateError> {
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::template::fixtures::{compile, customer_orders, render_error_of, render_with};
    use crate::template::{Scope, TemplateError};

    // --- references and their paths --------------------------------------------------------

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
}
