//! `${env:VAR}` expansion in every string of the configuration.
//!
//! Expansion happens on the raw JSON before it is typed, so it works in any field (commands,
//! arguments, URLs, headers, env values). Values that came from the environment are collected so
//! they can be kept out of logs and status.

use serde_json::Value;

/// A reference to an unset variable, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: environment variable `{var}` is not set")]
pub struct MissingVar {
    /// JSON path of the string holding the reference.
    pub path: String,
    /// The variable's name.
    pub var: String,
}

/// Expands references in place; returns the values that were substituted (to redact later).
pub fn expand(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, MissingVar> {
    let mut secrets = Vec::new();
    walk(value, String::new(), lookup, &mut secrets)?;
    Ok(secrets)
}

fn walk(
    value: &mut Value,
    path: String,
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
) -> Result<(), MissingVar> {
    match value {
        Value::String(s) if s.contains("${env:") => {
            *s = expand_str(s, &path, lookup, secrets)?;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), lookup, secrets)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(v, child, lookup, secrets)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(
    s: &str,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
) -> Result<String, MissingVar> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let Some(end) = after.find('}') else {
            // An unterminated reference is kept literally: it is not a reference.
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let var = &after[..end];
        let value = lookup(var).ok_or_else(|| MissingVar {
            path: path.to_owned(),
            var: var.to_owned(),
        })?;
        if !value.is_empty() {
            secrets.push(value.clone());
        }
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("t0k".into()),
            "HOST" => Some("127.0.0.1".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_anywhere_and_collects_the_values() {
        let mut v = json!({ "a": { "headers": { "Authorization": "Bearer ${env:TOKEN}" } },
                            "b": ["http://${env:HOST}:1/${env:HOST}"] });
        let secrets = expand(&mut v, &env).expect("expands");
        assert_eq!(v["a"]["headers"]["Authorization"], "Bearer t0k");
        assert_eq!(v["b"][0], "http://127.0.0.1:1/127.0.0.1");
        assert!(secrets.contains(&"t0k".to_owned()));
    }

    #[test]
    fn a_missing_variable_names_its_path() {
        let mut v = json!({ "mcpServers": { "x": { "args": ["ok", "${env:NOPE}"] } } });
        let err = expand(&mut v, &env).expect_err("missing");
        assert_eq!(err.path, "mcpServers.x.args[1]");
        assert_eq!(err.var, "NOPE");
    }
}
