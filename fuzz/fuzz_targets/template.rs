//! The workflow template engine: compile a template and render it against a scope, both from the
//! input, which is `TEMPLATE\nSCOPE`:
//! - `TEMPLATE` is compiled twice: as one string template (so the reference syntax is fuzzed
//!   without JSON escaping in the way) and, when it parses, as a JSON template (helpers, nesting);
//! - `SCOPE` is JSON: an object binds each key as a root (`input`, step names...), anything else
//!   is bound as `input`. Two fixed roots are always there too, so references resolve.
//!
//! Every outcome is a value or a `TemplateError`, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator::template::{Scope, Template, evaluate_reference};
use serde_json::{Value, json};

fn exercise(template: &Template, scope: &Scope) {
    let _ = template.references();
    let _ = template.is_constant();
    match template.render(scope) {
        Ok(value) => {
            let _ = value.to_string();
        }
        Err(e) => {
            let _ = e.clone().within("output").to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (head, tail) = text.split_once('\n').unwrap_or((text, ""));
    let bound: Value = serde_json::from_str(tail).unwrap_or(Value::Null);
    let rows = json!([
        { "k": "a", "v": 1, "w": 2.5, "lines": [{ "productId": "P-1" }] },
        { "k": 1, "v": -3, "w": null, "lines": [] },
        { "k": 1.0, "v": 9007199254740993u64, "lines": "no" },
    ]);
    let other = json!({ "orders": rows, "count": 3, "ids": ["a", 1, null], "x y": { "\"": 1 } });
    let mut scope = Scope::new().with("rows", &rows).with("other", &other);
    match &bound {
        Value::Object(map) => {
            for (root, value) in map {
                scope.insert(root, value);
            }
        }
        value => scope.insert("input", value),
    }

    if let Ok(template) = Template::compile(&Value::String(head.to_owned())) {
        exercise(&template, &scope);
    }
    if let Ok(value) = serde_json::from_str::<Value>(head)
        && let Ok(template) = Template::compile(&value)
    {
        exercise(&template, &scope);
    }
    let _ = evaluate_reference(head, &scope);
});
