//! The `query_items` filter and sort: a small JSON language translated into parameterised SQL.
//!
//! A filter is an object whose keys are field paths and whose values are either a scalar (equality)
//! or an object of operators:
//!
//! ```json
//! { "type": "purchase", "amount": { "$gte": 100, "$lt": 500 }, "device": { "$in": ["mobile", "tablet"] },
//!   "items.0": { "$exists": true } }
//! ```
//!
//! - Paths are dotted identifiers (`a.b.c`, each part `[A-Za-z_][A-Za-z0-9_]*`, at most
//!   [`MAX_PATH_PARTS`] parts); `id`, `_ts` and `_etag` address the system columns.
//! - Operators: `$eq`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte` (scalar), `$in` (non-empty array of
//!   scalars), `$exists` (boolean). Conditions are combined with AND.
//! - Comparisons are type-strict, as in Cosmos DB SQL: `{"n": 5}` does not match `"5"`, `true`
//!   does not match `1`, and ordering operators take a string or a number only. `$ne` matches a
//!   present field whose value differs (a missing field does not match).
//!
//! Nothing the caller sends becomes SQL text: field paths and values are bound as parameters, and
//! the SQL around them comes from fixed fragments chosen by operator and type.

use rusqlite::types::Value as SqlValue;
use serde_json::{Map, Number, Value};

/// Largest number of conditions in one filter.
pub const MAX_CONDITIONS: usize = 20;
/// Largest number of parts in a field path.
pub const MAX_PATH_PARTS: usize = 8;
/// Largest number of values in an `$in` list.
pub const MAX_IN_VALUES: usize = 100;
/// Longest string value compared.
pub const MAX_STRING_CHARS: usize = 4096;

/// What a condition reads: a system column or a path inside the document body.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The `id` column.
    Id,
    /// The `ts` column (`_ts`).
    Ts,
    /// The `etag` column (`_etag`).
    Etag,
    /// A JSON path into `body`, e.g. `$.items.0`.
    Json(String),
}

/// A comparable JSON scalar.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A string.
    Text(String),
    /// An integer.
    Int(i64),
    /// A non-integer number (or one too large for i64).
    Real(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `=`
    Eq,
    /// `<>` (present and different)
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
}

impl Cmp {
    fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "<>",
            Cmp::Gt => ">",
            Cmp::Gte => ">=",
            Cmp::Lt => "<",
            Cmp::Lte => "<=",
        }
    }
}

/// One condition's test.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Compare with a scalar.
    Compare(Cmp, Scalar),
    /// Equal to one of the values.
    In(Vec<Scalar>),
    /// Present (`true`) or absent (`false`).
    Exists(bool),
}

/// One field's test.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The path as the caller wrote it.
    pub field: String,
    /// What is read.
    pub target: Target,
    /// How it is tested.
    pub op: Op,
}

/// A parsed filter: conditions combined with AND, in a canonical order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    conditions: Vec<Condition>,
}

/// Collects bound parameters and hands out their placeholders.
#[derive(Debug, Default)]
pub struct Binder {
    params: Vec<SqlValue>,
}

impl Binder {
    /// Binds a value and returns its placeholder (`?N`).
    pub fn bind(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        format!("?{}", self.params.len())
    }

    /// The bound values, in placeholder order.
    pub fn into_params(self) -> Vec<SqlValue> {
        self.params
    }
}

/// Parses a dotted field path into its target.
pub fn parse_path(path: &str) -> Result<Target, String> {
    match path {
        "id" => return Ok(Target::Id),
        "_ts" => return Ok(Target::Ts),
        "_etag" => return Ok(Target::Etag),
        _ => {}
    }
    let parts: Vec<&str> = path.split('.').collect();
    if parts.len() > MAX_PATH_PARTS {
        return Err(format!(
            "field path `{path}` has more than {MAX_PATH_PARTS} parts"
        ));
    }
    for part in &parts {
        let mut chars = part.chars();
        let valid_start = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c.is_ascii_digit());
        let all_digits = !part.is_empty() && part.chars().all(|c| c.is_ascii_digit());
        let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        let starts_with_digit = part.starts_with(|c: char| c.is_ascii_digit());
        if !valid_start || !valid_rest || part.len() > 64 || (starts_with_digit && !all_digits) {
            return Err(format!(
                "field path `{path}` is not a dotted path of identifiers or array indexes (like `items.0.productId`)"
            ));
        }
    }
    if parts
        .first()
        .is_some_and(|p| p.starts_with(|c: char| c.is_ascii_digit()))
    {
        return Err(format!("field path `{path}` must start with a field name"));
    }
    let mut json = String::from("$");
    for part in parts {
        if part.chars().all(|c| c.is_ascii_digit()) {
            json.push('[');
            json.push_str(part);
            json.push(']');
        } else {
            json.push('.');
            json.push_str(part);
        }
    }
    Ok(Target::Json(json))
}

fn scalar(field: &str, value: &Value) -> Result<Scalar, String> {
    Ok(match value {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => number(n),
        Value::String(s) if s.chars().count() > MAX_STRING_CHARS => {
            return Err(format!(
                "the value for `{field}` is longer than {MAX_STRING_CHARS} characters"
            ));
        }
        Value::String(s) => Scalar::Text(s.clone()),
        Value::Array(_) | Value::Object(_) => {
            return Err(format!(
                "the value for `{field}` must be a string, number, boolean or null (compare nested fields with a dotted path)"
            ));
        }
    })
}

fn number(n: &Number) -> Scalar {
    match n.as_i64() {
        Some(i) => Scalar::Int(i),
        None => Scalar::Real(n.as_f64().unwrap_or(f64::NAN)),
    }
}

impl Filter {
    /// Parses a filter object; the error says what is wrong and where.
    pub fn parse(filter: &Map<String, Value>) -> Result<Self, String> {
        let mut conditions = Vec::new();
        for (field, value) in filter {
            if field.starts_with('$') {
                return Err(format!(
                    "`{field}` is an operator, not a field; write {{\"field\": {{\"{field}\": value}}}}"
                ));
            }
            let target = parse_path(field)?;
            match value {
                Value::Object(ops) => {
                    if ops.is_empty() {
                        return Err(format!("the operator object for `{field}` is empty"));
                    }
                    for (op, operand) in ops {
                        let op = parse_op(field, op, operand)?;
                        conditions.push(Condition {
                            field: field.clone(),
                            target: target.clone(),
                            op,
                        });
                    }
                }
                other => conditions.push(Condition {
                    field: field.clone(),
                    target: target.clone(),
                    op: Op::Compare(Cmp::Eq, scalar(field, other)?),
                }),
            }
        }
        if conditions.len() > MAX_CONDITIONS {
            return Err(format!(
                "the filter has {} conditions; at most {MAX_CONDITIONS} are allowed",
                conditions.len()
            ));
        }
        for c in &conditions {
            check_column_types(c)?;
        }
        // A canonical order, so the same filter always yields the same SQL and fingerprint,
        // whatever order the caller's JSON object listed its keys in.
        conditions.sort_by(|a, b| {
            a.field
                .cmp(&b.field)
                .then_with(|| format!("{:?}", a.op).cmp(&format!("{:?}", b.op)))
        });
        Ok(Self { conditions })
    }

    /// The conditions, in canonical order.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// The partition key value pinned by an equality on `pk_field`, if any: such a query can be
    /// routed to one partition, as the real service's query planner does.
    pub fn pinned_partition(&self, pk_field: &str) -> Option<&str> {
        let path = format!("$.{pk_field}");
        self.conditions
            .iter()
            .find_map(|c| match (&c.target, &c.op) {
                (Target::Json(p), Op::Compare(Cmp::Eq, Scalar::Text(v))) if *p == path => {
                    Some(v.as_str())
                }
                _ => None,
            })
    }

    /// Appends ` AND (...)` for each condition to `sql`, binding values through `binder`.
    pub fn push_sql(&self, sql: &mut String, binder: &mut Binder) {
        for c in &self.conditions {
            sql.push_str(" AND ");
            sql.push_str(&condition_sql(c, binder));
        }
    }

    /// A stable text form, used to tie continuation tokens to the query that issued them.
    pub fn canonical(&self) -> String {
        format!("{:?}", self.conditions)
    }
}

fn parse_op(field: &str, op: &str, operand: &Value) -> Result<Op, String> {
    let cmp = match op {
        "$eq" => Cmp::Eq,
        "$ne" => Cmp::Ne,
        "$gt" => Cmp::Gt,
        "$gte" => Cmp::Gte,
        "$lt" => Cmp::Lt,
        "$lte" => Cmp::Lte,
        "$in" => {
            let Value::Array(values) = operand else {
                return Err(format!("`$in` on `{field}` takes an array of values"));
            };
            if values.is_empty() || values.len() > MAX_IN_VALUES {
                return Err(format!(
                    "`$in` on `{field}` takes 1 to {MAX_IN_VALUES} values, got {}",
                    values.len()
                ));
            }
            return Ok(Op::In(
                values
                    .iter()
                    .map(|v| scalar(field, v))
                    .collect::<Result<_, _>>()?,
            ));
        }
        "$exists" => {
            let Value::Bool(b) = operand else {
                return Err(format!("`$exists` on `{field}` takes true or false"));
            };
            return Ok(Op::Exists(*b));
        }
        other => {
            return Err(format!(
                "unknown operator `{other}` on `{field}`; use $eq, $ne, $gt, $gte, $lt, $lte, $in or $exists"
            ));
        }
    };
    let value = scalar(field, operand)?;
    if matches!(cmp, Cmp::Gt | Cmp::Gte | Cmp::Lt | Cmp::Lte)
        && matches!(value, Scalar::Bool(_) | Scalar::Null)
    {
        return Err(format!(
            "`{op}` on `{field}` compares strings or numbers, not booleans or null"
        ));
    }
    if let Scalar::Real(r) = value
        && !r.is_finite()
    {
        return Err(format!("the value for `{field}` is not a finite number"));
    }
    Ok(Op::Compare(cmp, value))
}

/// System columns hold one type each; comparing them with another type is a mistake worth naming.
fn check_column_types(c: &Condition) -> Result<(), String> {
    let wants_text = matches!(c.target, Target::Id | Target::Etag);
    let wants_number = matches!(c.target, Target::Ts);
    if !wants_text && !wants_number {
        return Ok(());
    }
    let ok = |s: &Scalar| match s {
        Scalar::Text(_) => wants_text,
        Scalar::Int(_) | Scalar::Real(_) => wants_number,
        Scalar::Bool(_) | Scalar::Null => false,
    };
    let fine = match &c.op {
        Op::Compare(_, s) => ok(s),
        Op::In(values) => values.iter().all(ok),
        Op::Exists(_) => true,
    };
    if fine {
        Ok(())
    } else {
        Err(format!(
            "`{}` is a {}; compare it with {}",
            c.field,
            if wants_text { "string" } else { "number" },
            if wants_text { "strings" } else { "numbers" }
        ))
    }
}

fn scalar_param(s: &Scalar) -> SqlValue {
    match s {
        Scalar::Text(t) => SqlValue::Text(t.clone()),
        Scalar::Int(i) => SqlValue::Integer(*i),
        Scalar::Real(r) => SqlValue::Real(*r),
        Scalar::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Scalar::Null => SqlValue::Null,
    }
}

/// Equality (or another comparison) of a JSON path with a scalar, strict about JSON types.
fn json_compare(path: &str, cmp: Cmp, value: &Scalar, binder: &mut Binder) -> String {
    let eq = |path: &str, value: &Scalar, binder: &mut Binder| -> String {
        typed_compare(path, Cmp::Eq, value, binder)
    };
    match cmp {
        Cmp::Ne => {
            let present = format!("json_type(body, {path}) IS NOT NULL");
            format!("({present} AND NOT {})", eq(path, value, binder))
        }
        _ => typed_compare(path, cmp, value, binder),
    }
}

fn typed_compare(path: &str, cmp: Cmp, value: &Scalar, binder: &mut Binder) -> String {
    match value {
        Scalar::Text(_) => {
            let v = binder.bind(scalar_param(value));
            format!(
                "(json_type(body, {path}) = 'text' AND json_extract(body, {path}) {} {v})",
                cmp.sql()
            )
        }
        Scalar::Int(_) | Scalar::Real(_) => {
            let v = binder.bind(scalar_param(value));
            format!(
                "(json_type(body, {path}) IN ('integer', 'real') AND json_extract(body, {path}) {} {v})",
                cmp.sql()
            )
        }
        // Only equality reaches here for booleans and null (parse_op refuses ordering on them).
        Scalar::Bool(true) => format!("(json_type(body, {path}) = 'true')"),
        Scalar::Bool(false) => format!("(json_type(body, {path}) = 'false')"),
        Scalar::Null => format!("(json_type(body, {path}) = 'null')"),
    }
}

fn condition_sql(c: &Condition, binder: &mut Binder) -> String {
    match &c.target {
        Target::Json(path) => {
            let path = binder.bind(SqlValue::Text(path.clone()));
            match &c.op {
                Op::Compare(cmp, value) => json_compare(&path, *cmp, value, binder),
                Op::In(values) => {
                    let parts: Vec<String> = values
                        .iter()
                        .map(|v| typed_compare(&path, Cmp::Eq, v, binder))
                        .collect();
                    format!("({})", parts.join(" OR "))
                }
                Op::Exists(true) => format!("(json_type(body, {path}) IS NOT NULL)"),
                Op::Exists(false) => format!("(json_type(body, {path}) IS NULL)"),
            }
        }
        column => {
            let name = match column {
                Target::Id => "id",
                Target::Ts => "ts",
                _ => "etag",
            };
            match &c.op {
                Op::Compare(cmp, value) => {
                    let v = binder.bind(scalar_param(value));
                    format!("({name} {} {v})", cmp.sql())
                }
                Op::In(values) => {
                    let placeholders: Vec<String> = values
                        .iter()
                        .map(|v| binder.bind(scalar_param(v)))
                        .collect();
                    format!("({name} IN ({}))", placeholders.join(", "))
                }
                // System columns are always present.
                Op::Exists(true) => "(1)".into(),
                Op::Exists(false) => "(0)".into(),
            }
        }
    }
}

/// A validated sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// What is sorted on.
    pub target: Target,
    /// Largest first.
    pub descending: bool,
}

impl SortKey {
    /// Parses the field path of an `orderBy`.
    pub fn parse(field: &str, descending: bool) -> Result<Self, String> {
        Ok(Self {
            target: parse_path(field)?,
            descending,
        })
    }

    /// The `ORDER BY` expression (without the tie-breakers).
    pub fn sql(&self, binder: &mut Binder) -> String {
        let expr = match &self.target {
            Target::Id => "id".to_owned(),
            Target::Ts => "ts".to_owned(),
            Target::Etag => "etag".to_owned(),
            Target::Json(path) => {
                format!(
                    "json_extract(body, {})",
                    binder.bind(SqlValue::Text(path.clone()))
                )
            }
        };
        format!("{expr} {}", if self.descending { "DESC" } else { "ASC" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, params_from_iter};
    use serde_json::json;

    fn parse(v: Value) -> Result<Filter, String> {
        match v {
            Value::Object(m) => Filter::parse(&m),
            _ => panic!("not an object"),
        }
    }

    /// Runs a filter against a few documents in an in-memory table and returns matching ids.
    fn matching(filter: Value) -> Vec<String> {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch("CREATE TABLE docs (id TEXT, body TEXT, etag TEXT, ts INTEGER);")
            .expect("table");
        let docs = [
            (
                "a",
                json!({"n": 5, "s": "x", "b": true, "tags": ["p", "q"], "nested": {"k": 1}}),
            ),
            ("b", json!({"n": "5", "s": "y", "b": 1, "nested": {"k": 2}})),
            ("c", json!({"n": 10.5, "s": null, "b": false})),
            ("d", json!({"other": 1})),
        ];
        for (i, (id, body)) in docs.iter().enumerate() {
            conn.execute(
                "INSERT INTO docs VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![id, body.to_string(), format!("e{i}"), 100 + i as i64],
            )
            .expect("insert");
        }
        let filter = parse(filter).expect("valid filter");
        let mut sql = String::from("SELECT id FROM docs WHERE 1");
        let mut binder = Binder::default();
        filter.push_sql(&mut sql, &mut binder);
        sql.push_str(" ORDER BY id");
        let mut stmt = conn.prepare(&sql).expect("prepare");
        stmt.query_map(params_from_iter(binder.into_params()), |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn equality_is_type_strict() {
        assert_eq!(matching(json!({"n": 5})), ["a"]);
        assert_eq!(matching(json!({"n": "5"})), ["b"]);
        assert_eq!(matching(json!({"b": true})), ["a"]);
        assert_eq!(matching(json!({"b": 1})), ["b"]);
        assert_eq!(matching(json!({"s": null})), ["c"]);
    }

    #[test]
    fn operators_work() {
        assert_eq!(matching(json!({"n": {"$gt": 4}})), ["a", "c"]);
        assert_eq!(matching(json!({"n": {"$gte": 5, "$lt": 10}})), ["a"]);
        assert_eq!(matching(json!({"s": {"$in": ["x", "y"]}})), ["a", "b"]);
        assert_eq!(matching(json!({"s": {"$ne": "x"}})), ["b", "c"]);
        assert_eq!(matching(json!({"other": {"$exists": true}})), ["d"]);
        assert_eq!(matching(json!({"n": {"$exists": false}})), ["d"]);
        assert_eq!(matching(json!({"nested.k": 2})), ["b"]);
        assert_eq!(matching(json!({"tags.1": "q"})), ["a"]);
        assert_eq!(matching(json!({"id": {"$in": ["a", "d"]}})), ["a", "d"]);
        assert_eq!(matching(json!({"_ts": {"$gte": 102}})), ["c", "d"]);
        assert_eq!(matching(json!({"_etag": "e1"})), ["b"]);
    }

    #[test]
    fn hostile_input_stays_data() {
        // A value that would break out of a concatenated string literal is just a value here.
        assert!(matching(json!({"s": "x' OR '1'='1"})).is_empty());
        assert!(matching(json!({"s": "x\") OR 1=1 --"})).is_empty());
    }

    #[test]
    fn bad_filters_are_rejected_with_the_reason() {
        let cases = [
            (json!({"a; DROP TABLE docs": 1}), "dotted path"),
            (json!({"a'b": 1}), "dotted path"),
            (json!({"$or": []}), "operator, not a field"),
            (json!({"n": {"$regex": "x"}}), "unknown operator `$regex`"),
            (json!({"n": {"$gt": true}}), "strings or numbers"),
            (json!({"n": {"$in": []}}), "1 to 100"),
            (json!({"n": {"$in": "x"}}), "array"),
            (json!({"n": {"$exists": "yes"}}), "true or false"),
            (json!({"n": {}}), "empty"),
            (json!({"n": [1, 2]}), "string, number, boolean or null"),
            (json!({"n": {"k": 1}}), "unknown operator `k`"),
            (json!({"_ts": "yesterday"}), "`_ts` is a number"),
            (json!({"id": 5}), "`id` is a string"),
            (json!({"a.b.c.d.e.f.g.h.i": 1}), "more than 8 parts"),
            (json!({"0.a": 1}), "start with a field name"),
            (json!({"a..b": 1}), "dotted path"),
            (json!({"": 1}), "dotted path"),
        ];
        for (filter, expected) in cases {
            let err = parse(filter.clone()).expect_err(&filter.to_string());
            assert!(err.contains(expected), "{filter}: {err}");
        }
        let many: Map<String, Value> = (0..21).map(|i| (format!("f{i}"), json!(i))).collect();
        assert!(
            Filter::parse(&many)
                .expect_err("too many")
                .contains("at most 20")
        );
    }

    #[test]
    fn canonical_form_ignores_key_order_and_finds_the_partition() {
        let a = parse(json!({"userId": "CUST-0001", "type": "purchase"})).expect("a");
        let b = parse(json!({"type": "purchase", "userId": "CUST-0001"})).expect("b");
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.pinned_partition("userId"), Some("CUST-0001"));
        assert_eq!(a.pinned_partition("region"), None);
        let ne = parse(json!({"userId": {"$ne": "CUST-0001"}})).expect("ne");
        assert_eq!(ne.pinned_partition("userId"), None);
    }

    #[test]
    fn sort_keys_bind_their_path() {
        let mut binder = Binder::default();
        let key = SortKey::parse("timestamp", true).expect("key");
        assert_eq!(key.sql(&mut binder), "json_extract(body, ?1) DESC");
        assert_eq!(binder.into_params(), [SqlValue::Text("$.timestamp".into())]);
        assert!(SortKey::parse("x y", false).is_err());
        let mut binder = Binder::default();
        assert_eq!(
            SortKey::parse("_ts", false).expect("ts").sql(&mut binder),
            "ts ASC"
        );
    }
}
