//! `$join`: the full outer join of two arrays of objects on a key, summing the listed fields.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use super::values::{Key, array_argument, kind, render_error};
use super::{TemplateError, key_at};

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

pub(super) fn render_join(
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
    use serde_json::{Value, json};

    use crate::template::Scope;
    use crate::template::fixtures::{compile, render_error_of};

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
}
