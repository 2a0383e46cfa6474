//! The call mix: which tool the n-th request calls with which arguments, and how its answer is
//! classified (success, which failure, or an answer that belongs to another request).

use serde_json::{Value, json};

/// One kind of call in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `sql__get_customer`: pass-through to the healthy server.
    SqlCustomer,
    /// `sql__get_top_customers`: pass-through to the healthy server, a heavier query.
    SqlTop,
    /// `rest__check_inventory`: pass-through to the server that is killed.
    RestInventory,
    /// `cosmos__get_user_behavior`: pass-through to the flaky server.
    CosmosBehavior,
    /// `customer_insights`: composite over all three servers (SQL critical).
    CustomerInsights,
    /// `order_details`: composite, SQL first, then REST steps that read its answer.
    OrderDetails,
}

/// Every kind, with its share of the calls in percent.
pub const MIX: [(Kind, u64); 6] = [
    (Kind::SqlCustomer, 25),
    (Kind::SqlTop, 10),
    (Kind::RestInventory, 15),
    (Kind::CosmosBehavior, 20),
    (Kind::CustomerInsights, 20),
    (Kind::OrderDetails, 10),
];

impl Kind {
    /// The exposed tool name.
    pub fn tool(self) -> &'static str {
        match self {
            Kind::SqlCustomer => "sql__get_customer",
            Kind::SqlTop => "sql__get_top_customers",
            Kind::RestInventory => "rest__check_inventory",
            Kind::CosmosBehavior => "cosmos__get_user_behavior",
            Kind::CustomerInsights => "customer_insights",
            Kind::OrderDetails => "order_details",
        }
    }

    /// The server of a pass-through call; `None` for a composite.
    pub fn server(self) -> Option<&'static str> {
        match self {
            Kind::SqlCustomer | Kind::SqlTop => Some("sql"),
            Kind::RestInventory => Some("rest"),
            Kind::CosmosBehavior => Some("cosmos"),
            Kind::CustomerInsights | Kind::OrderDetails => None,
        }
    }
}

/// What a successful answer must say, so an answer to another request is caught.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// `structuredContent` at this JSON pointer equals this string.
    Field(&'static str, String),
    /// `structuredContent.customers` has this many entries.
    Customers(usize),
}

/// One request of the mix.
#[derive(Debug, Clone)]
pub struct Call {
    /// What it calls.
    pub kind: Kind,
    /// Its arguments.
    pub args: Value,
    /// What its answer must contain.
    pub expect: Expect,
}

/// A 64-bit mix of `x` (splitmix64), so the sequence of calls is spread but reproducible.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The `n`-th call of the run seeded with `seed`.
pub fn call(n: u64, seed: u64) -> Call {
    let r = mix64(seed ^ mix64(n));
    let mut pick = r % 100;
    let mut kind = Kind::SqlCustomer;
    for (k, share) in MIX {
        if pick < share {
            kind = k;
            break;
        }
        pick -= share;
    }
    let v = r >> 8;
    let customer = format!("CUST-{:04}", 1 + v % 200);
    match kind {
        Kind::SqlCustomer => Call {
            kind,
            args: json!({ "customerId": customer }),
            expect: Expect::Field("/customerId", customer),
        },
        Kind::SqlTop => {
            let limit = 1 + (v % 10) as usize;
            Call {
                kind,
                args: json!({ "limit": limit }),
                expect: Expect::Customers(limit),
            }
        }
        Kind::RestInventory => {
            let product = format!("PROD-{:03}", 1 + v % 50);
            Call {
                kind,
                args: json!({ "productId": product }),
                expect: Expect::Field("/items/0/productId", product),
            }
        }
        Kind::CosmosBehavior => Call {
            kind,
            args: json!({ "userId": customer }),
            expect: Expect::Field("/userId", customer),
        },
        Kind::CustomerInsights => Call {
            kind,
            args: json!({ "customerId": customer }),
            expect: Expect::Field("/customerId", customer),
        },
        Kind::OrderDetails => {
            let order = format!("ORD-{:05}", 1 + v % 2000);
            Call {
                kind,
                args: json!({ "orderId": order }),
                expect: Expect::Field("/order/orderId", order),
            }
        }
    }
}

/// How one answer ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `ok`, or the failure: `rpc_error <code>`, or `<errorKind>[/<reason>][/injected]` for a
    /// tool error, or `mismatch` for a success that answers another request.
    pub label: String,
    /// The error's text, kept as an example for the report.
    pub detail: Option<String>,
    /// A composite's steps as `(step, outcome)` from `_meta.sources`.
    pub steps: Vec<(String, String)>,
}

impl Outcome {
    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        self.label == "ok"
    }
}

/// Classifies the JSON-RPC response `msg` to `call`.
pub fn classify(call: &Call, msg: &Value) -> Outcome {
    let short = |s: &str| s.chars().take(300).collect::<String>();
    if let Some(error) = msg.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        return Outcome {
            label: format!("rpc_error {code}"),
            detail: error.get("message").and_then(Value::as_str).map(short),
            steps: Vec::new(),
        };
    }
    let result = msg.get("result").unwrap_or(&Value::Null);
    let steps = result
        .pointer("/_meta/sources")
        .and_then(Value::as_array)
        .map(|sources| {
            sources
                .iter()
                .map(|s| {
                    let field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("?");
                    (field("step").to_owned(), field("outcome").to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let text = result
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .map(short);
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        let meta = result.get("_meta").unwrap_or(&Value::Null);
        let mut label = meta
            .get("errorKind")
            .and_then(Value::as_str)
            .unwrap_or("no_error_kind")
            .to_owned();
        if let Some(reason) = meta.get("reason").and_then(Value::as_str) {
            label = format!("{label}/{reason}");
        }
        if meta.get("injected").and_then(Value::as_bool) == Some(true) {
            label.push_str("/injected");
        }
        return Outcome {
            label,
            detail: text,
            steps,
        };
    }
    let content = result.get("structuredContent").unwrap_or(&Value::Null);
    let matches = match &call.expect {
        Expect::Field(pointer, want) => {
            content.pointer(pointer).and_then(Value::as_str) == Some(want)
        }
        Expect::Customers(n) => content
            .get("customers")
            .and_then(Value::as_array)
            .is_some_and(|c| c.len() == *n),
    };
    if matches {
        Outcome {
            label: "ok".to_owned(),
            detail: None,
            steps,
        }
    } else {
        Outcome {
            label: "mismatch".to_owned(),
            detail: Some(format!(
                "expected {:?}, got {}",
                call.expect,
                short(&content.to_string())
            )),
            steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_every_kind_in_about_its_share() {
        let n = 20_000u64;
        let mut counts = std::collections::BTreeMap::new();
        for i in 1..=n {
            *counts.entry(call(i, 7).kind).or_insert(0u64) += 1;
        }
        for (kind, share) in MIX {
            let got = counts.get(&kind).copied().unwrap_or(0) as f64 / n as f64 * 100.0;
            assert!(
                (got - share as f64).abs() < 1.5,
                "{kind:?}: {got:.1}% vs {share}%"
            );
        }
        assert_eq!(MIX.iter().map(|(_, s)| s).sum::<u64>(), 100);
    }

    #[test]
    fn answers_are_classified() {
        let c = Call {
            kind: Kind::SqlCustomer,
            args: json!({ "customerId": "CUST-0001" }),
            expect: Expect::Field("/customerId", "CUST-0001".into()),
        };
        let ok = json!({ "result": { "structuredContent": { "customerId": "CUST-0001" } } });
        assert!(classify(&c, &ok).is_ok());
        let other = json!({ "result": { "structuredContent": { "customerId": "CUST-0002" } } });
        assert_eq!(classify(&c, &other).label, "mismatch");
        let injected = json!({ "result": { "isError": true, "content": [{ "type": "text", "text": "boom" }],
            "_meta": { "errorKind": "unavailable", "injected": true } } });
        assert_eq!(classify(&c, &injected).label, "unavailable/injected");
        let down = json!({ "result": { "isError": true,
            "_meta": { "errorKind": "unavailable", "reason": "not_connected" } } });
        assert_eq!(classify(&c, &down).label, "unavailable/not_connected");
        let rpc = json!({ "error": { "code": -32602, "message": "unknown tool" } });
        assert_eq!(classify(&c, &rpc).label, "rpc_error -32602");
    }
}
