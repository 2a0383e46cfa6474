//! What rendering and the helpers share: the render error, reading helper arguments, the
//! kinds of JSON values named in messages, and the keys `$join` and `$pick` compare by.

use serde_json::Value;

use super::TemplateError;

/// A render error at `at` (a JSON path within the template).
pub(super) fn render_error(at: &str, message: impl Into<String>) -> TemplateError {
    TemplateError::Render {
        at: at.to_owned(),
        message: message.into(),
    }
}

/// What kind of JSON value this is, for messages (`a string`, `an array`, ...).
pub fn kind(value: &Value) -> &'static str {
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
pub(super) fn array_argument(value: Value, at: &str) -> Result<Vec<Value>, TemplateError> {
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
pub(super) enum Key {
    Str(String),
    Int(i128),
    Float(u64),
}

impl Key {
    pub(super) fn of(value: &Value) -> Option<Key> {
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
