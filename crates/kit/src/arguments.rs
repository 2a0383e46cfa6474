//! Names the argument that broke a tool's input schema, from the schema itself.
//!
//! rmcp reports an argument that does not deserialize with serde's wording, which names a field
//! only when it is missing or unknown ("invalid type: integer `7`, expected a string" says nothing
//! of where). On that (rare) path we validate the arguments against the tool's JSON Schema, whose
//! errors carry the exact location, and report `lines[0].quantity: 0 is less than 1`.

use jsonschema::error::ValidationErrorKind;
use rmcp::model::JsonObject;
use serde_json::Value;

/// The first schema violation of `arguments`: the argument's path and what is wrong with it.
///
/// `None` when the schema cannot be compiled or the arguments satisfy it.
pub fn first_violation(schema: &JsonObject, arguments: &Value) -> Option<(String, String)> {
    let schema = Value::Object(schema.clone());
    let validator = jsonschema::validator_for(&schema).ok()?;
    violation(&validator, arguments)
}

/// [`first_violation`] with a schema compiled once (for callers that check every call).
pub fn violation(validator: &jsonschema::Validator, arguments: &Value) -> Option<(String, String)> {
    let error = validator.iter_errors(arguments).next()?;
    let mut field = dotted(error.instance_path().as_str());
    let child = match error.kind() {
        ValidationErrorKind::Required { property } => property.as_str().map(str::to_owned),
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected.first().cloned(),
        _ => None,
    };
    if let Some(child) = child {
        field = if field.is_empty() {
            child
        } else {
            format!("{field}.{child}")
        };
    }
    if field.is_empty() {
        field = "arguments".to_owned();
    }
    Some((field, error.to_string()))
}

/// `/lines/0/quantity` → `lines[0].quantity`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.chars().all(|c| c.is_ascii_digit()) && !segment.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> JsonObject {
        match json!({
            "type": "object",
            "properties": {
                "customerId": { "type": "string" },
                "lines": { "type": "array", "items": {
                    "type": "object",
                    "properties": { "quantity": { "type": "integer", "minimum": 1 } },
                    "required": ["quantity"]
                } }
            },
            "required": ["customerId"],
            "additionalProperties": false
        }) {
            Value::Object(m) => m,
            _ => JsonObject::new(),
        }
    }

    #[test]
    fn names_the_argument_at_any_depth() {
        let s = schema();
        assert_eq!(
            first_violation(&s, &json!({})).map(|v| v.0).as_deref(),
            Some("customerId")
        );
        assert_eq!(
            first_violation(&s, &json!({ "customerId": 7 }))
                .map(|v| v.0)
                .as_deref(),
            Some("customerId")
        );
        assert_eq!(
            first_violation(
                &s,
                &json!({ "customerId": "c", "lines": [{ "quantity": 0 }] })
            )
            .map(|v| v.0)
            .as_deref(),
            Some("lines[0].quantity")
        );
        assert_eq!(
            first_violation(&s, &json!({ "customerId": "c", "bogus": 1 }))
                .map(|v| v.0)
                .as_deref(),
            Some("bogus")
        );
        assert_eq!(first_violation(&s, &json!({ "customerId": "c" })), None);
    }
}
