//! What the template tests share: compiling, rendering and render errors in one call each, and a
//! customer's orders as the SQL server returns them.

use serde_json::{Value, json};

use super::{Scope, Template, TemplateError};

pub(super) fn compile(value: Value) -> Template {
    Template::compile(&value).expect("template compiles")
}

pub(super) fn render_error_of(template: &Template, scope: &Scope) -> (String, String) {
    match template.render(scope) {
        Err(TemplateError::Render { at, message }) => (at, message),
        other => panic!("expected a render error, got {other:?}"),
    }
}

pub(super) fn render_with(template: Value, root: &str, value: &Value) -> Value {
    compile(template)
        .render(&Scope::new().with(root, value))
        .expect("renders")
}

/// A customer's orders as the SQL server returns them (`get_customer_orders`).
pub(super) fn customer_orders() -> Value {
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
