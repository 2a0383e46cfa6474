//! Read-only SQL for agents, enforced by the engine rather than by inspecting the text.
//!
//! Three locks, each enough on its own for most writes, together closing the gaps of each other:
//! the connection is opened `SQLITE_OPEN_READ_ONLY`; `PRAGMA query_only` refuses any write the
//! engine would make; and an authorizer denies, at prepare time, everything that is not reading
//! tables (writes, DDL, `ATTACH`/`DETACH`, `PRAGMA`, transactions, `load_extension`). A progress
//! handler interrupts a query that runs past its time limit, and rows and result bytes are capped:
//! reading stops at the first value that takes the result over its byte cap, so one call never
//! holds more than the cap (plus the one row SQLite holds) in memory.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rusqlite::{
    Connection, ErrorCode,
    hooks::{AuthAction, AuthContext, Authorization},
    limits::Limit,
    types::{Value as SqlValue, ValueRef},
};
use serde_json::Value;

use crate::db::open_read_only;

/// SQLite virtual-machine steps between deadline checks: small enough to stop within a few
/// milliseconds of the limit, large enough to cost nothing measurable.
const PROGRESS_STEPS: i32 = 1_000;

/// A read-only connection with its guards installed.
pub struct ReadOnlyConn {
    conn: Connection,
    guard: Arc<Guard>,
}

impl std::fmt::Debug for ReadOnlyConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyConn").finish_non_exhaustive()
    }
}

/// State shared with the SQLite callbacks of one connection.
#[derive(Debug, Default)]
struct Guard {
    /// When the running statement must stop; `None` when no limit applies.
    deadline: Mutex<Option<Instant>>,
    /// What the authorizer refused last, to name it in the error.
    denied: Mutex<Option<String>>,
}

/// Why an agent's query was refused or failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueryError {
    /// The statement tries to do something other than read.
    #[error("the query tool is read-only: {0} is not allowed")]
    NotReadOnly(String),
    /// More or fewer parameters than the statement's placeholders.
    #[error("the statement has {expected} parameter(s) but {given} were given")]
    ParamCount {
        /// Placeholders in the statement.
        expected: usize,
        /// Values in `params`.
        given: usize,
    },
    /// The statement ran past the time limit and was interrupted.
    #[error("the query ran longer than {0} ms and was interrupted")]
    TimedOut(u64),
    /// The rows read so far already take more than the byte cap; reading stopped there.
    #[error(
        "the query result is larger than the limit of {limit} bytes (stopped after {rows} \
         row(s)); select fewer columns or rows, or add LIMIT"
    )]
    TooLarge {
        /// The cap on the result's rows, as JSON bytes.
        limit: usize,
        /// Whole rows read before the cap was passed.
        rows: usize,
    },
    /// SQLite rejected the statement; the message is the engine's.
    #[error("{0}")]
    Sql(String),
}

/// How much one agent query may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryBudget {
    /// Rows returned at most; more are left out and `truncated` is set.
    pub max_rows: usize,
    /// Size of the rows as JSON, at most; more fails the query with [`QueryError::TooLarge`].
    pub max_bytes: usize,
    /// Time after which the statement is interrupted in the engine.
    pub time_limit: Duration,
}

impl Default for QueryBudget {
    /// The server's flag defaults: 1,000 rows, 1 MiB, 5 s.
    fn default() -> Self {
        Self {
            max_rows: 1_000,
            max_bytes: 1024 * 1024,
            time_limit: Duration::from_secs(5),
        }
    }
}

/// Columns and rows of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutput {
    /// Column names in order.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
    /// Whether rows beyond the row limit were left out.
    pub truncated: bool,
}

impl ReadOnlyConn {
    /// Opens `path` read-only with every guard in place.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let mut conn = open_read_only(path)?;
        conn.busy_timeout(kit::sqlite::BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA query_only = ON;")?;
        // No other database can be attached, whatever the authorizer says.
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, 100_000)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, 10_000_000)?;
        let guard = Arc::new(Guard::default());
        let auth_guard = guard.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            authorize(&auth_guard, &ctx)
        }))?;
        let progress_guard = guard.clone();
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(move || {
                let deadline = *progress_guard
                    .deadline
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                deadline.is_some_and(|d| Instant::now() >= d)
            }),
        )?;
        Ok(Self { conn, guard })
    }

    /// The connection, for the server's own reads.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs one agent-supplied statement with positional `params`.
    pub fn query(
        &self,
        sql: &str,
        params: &[Value],
        budget: QueryBudget,
    ) -> Result<QueryOutput, QueryError> {
        let time_limit = budget.time_limit;
        *self.guard.denied.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self
            .guard
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + time_limit);
        let outcome = self.query_inner(sql, params, budget);
        *self
            .guard
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        outcome.map_err(|e| self.classify(e, time_limit))
    }

    fn query_inner(
        &self,
        sql: &str,
        params: &[Value],
        budget: QueryBudget,
    ) -> Result<QueryOutput, Failure> {
        let mut stmt = self.conn.prepare(sql)?;
        if !stmt.readonly() {
            return Err(Failure::Query(QueryError::NotReadOnly(
                "a statement that writes".into(),
            )));
        }
        let expected = stmt.parameter_count();
        if expected != params.len() {
            return Err(Failure::Query(QueryError::ParamCount {
                expected,
                given: params.len(),
            }));
        }
        for (i, value) in params.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, json_to_sql(value))?;
        }
        let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
        let mut rows_out = Vec::new();
        let mut truncated = false;
        let mut rows = stmt.raw_query();
        // The rows' size as JSON so far: `[` and `]` around the rows, `,` between them.
        let mut bytes = 2usize;
        while let Some(row) = rows.next()? {
            if rows_out.len() == budget.max_rows {
                truncated = true;
                break;
            }
            let too_large = || {
                Failure::Query(QueryError::TooLarge {
                    limit: budget.max_bytes,
                    rows: rows_out.len(),
                })
            };
            bytes += 2 + usize::from(!rows_out.is_empty());
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                let value = row.get_ref(i)?;
                // A value that cannot fit is refused before it is copied out of SQLite.
                if bytes.saturating_add(least_json_len(value)) > budget.max_bytes {
                    return Err(too_large());
                }
                let value = sql_to_json(value);
                bytes += kit::json_size::serialized_len(&value) + usize::from(i > 0);
                if bytes > budget.max_bytes {
                    return Err(too_large());
                }
                values.push(value);
            }
            rows_out.push(values);
        }
        Ok(QueryOutput {
            columns,
            rows: rows_out,
            truncated,
        })
    }

    fn classify(&self, failure: Failure, time_limit: Duration) -> QueryError {
        let e = match failure {
            Failure::Query(q) => return q,
            Failure::Sqlite(e) => e,
        };
        if let Some(what) = self
            .guard
            .denied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return QueryError::NotReadOnly(what);
        }
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::OperationInterrupted => {
                QueryError::TimedOut(time_limit.as_millis() as u64)
            }
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == ErrorCode::ReadOnly
                    || f.code == ErrorCode::AuthorizationForStatementDenied =>
            {
                QueryError::NotReadOnly("a statement that writes".into())
            }
            rusqlite::Error::MultipleStatement => QueryError::Sql(
                "only one statement per call is allowed (remove the text after the first `;`)"
                    .into(),
            ),
            rusqlite::Error::SqliteFailure(_, Some(msg)) => QueryError::Sql(msg.clone()),
            other => QueryError::Sql(other.to_string()),
        }
    }
}

enum Failure {
    Query(QueryError),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sqlite(e)
    }
}

/// Allows reading and nothing else; remembers what it refused.
fn authorize(guard: &Guard, ctx: &AuthContext<'_>) -> Authorization {
    let refused = match &ctx.action {
        AuthAction::Select | AuthAction::Read { .. } | AuthAction::Recursive => {
            return Authorization::Allow;
        }
        AuthAction::Function { function_name } => {
            let name = function_name.to_ascii_lowercase();
            if matches!(
                name.as_str(),
                "load_extension" | "readfile" | "writefile" | "fts3_tokenizer"
            ) {
                format!("the function {name}()")
            } else {
                return Authorization::Allow;
            }
        }
        AuthAction::Attach { .. } => "ATTACH".to_owned(),
        AuthAction::Detach { .. } => "DETACH".to_owned(),
        AuthAction::Pragma { pragma_name, .. } => format!("PRAGMA {pragma_name}"),
        AuthAction::Insert { table_name } => format!("INSERT into {table_name}"),
        AuthAction::Update { table_name, .. } => format!("UPDATE of {table_name}"),
        AuthAction::Delete { table_name } => format!("DELETE from {table_name}"),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            "transaction control".to_owned()
        }
        AuthAction::DropTable { table_name } | AuthAction::DropTempTable { table_name } => {
            format!("DROP TABLE {table_name}")
        }
        other => format!("{other:?}")
            .split([' ', '{'])
            .next()
            .unwrap_or("this statement")
            .to_owned(),
    };
    *guard.denied.lock().unwrap_or_else(|e| e.into_inner()) = Some(refused);
    Authorization::Deny
}

/// The fewest bytes `value` can take as JSON (a string is at least its text and two quotes).
fn least_json_len(value: ValueRef<'_>) -> usize {
    match value {
        ValueRef::Text(t) => t.len() + 2,
        ValueRef::Blob(b) => 2 * b.len() + 2,
        ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => 1,
    }
}

fn json_to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

fn sql_to_json(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::from(
            b.iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;
    use serde_json::json;

    fn budget(max_rows: usize, time_limit: Duration) -> QueryBudget {
        QueryBudget {
            max_rows,
            max_bytes: 1024 * 1024,
            time_limit,
        }
    }

    fn run(db: &Database, sql: &str) -> Result<QueryOutput, QueryError> {
        db.reader()
            .query(sql, &[], budget(100, Duration::from_secs(2)))
    }

    fn assert_refused(db: &Database, sql: &str) {
        match run(db, sql) {
            Err(QueryError::NotReadOnly(_)) => {}
            other => panic!("{sql}: expected a read-only refusal, got {other:?}"),
        }
    }

    #[test]
    fn writes_ddl_attach_and_pragmas_are_refused_by_the_engine() {
        let db = Database::open(":memory:").expect("open");
        for sql in [
            "INSERT INTO customers (id, name, email, region, segment, created_at) VALUES ('x','x','x','x','x','x')",
            "UPDATE customers SET name = 'x'",
            "DELETE FROM orders",
            "DROP TABLE customers",
            "CREATE TABLE t (a)",
            "ATTACH DATABASE '/tmp/other.db' AS other",
            "PRAGMA query_only = OFF",
            "PRAGMA journal_mode = DELETE",
            "PRAGMA table_info(customers)",
            "SELECT load_extension('/tmp/evil')",
            "BEGIN",
            "WITH x AS (SELECT 1) DELETE FROM orders",
        ] {
            assert_refused(&db, sql);
        }
        let count = run(&db, "SELECT COUNT(*) AS n FROM orders").expect("select works");
        assert_eq!(count.rows[0][0], json!(retail_seed::ORDER_COUNT));
    }

    #[test]
    fn select_returns_columns_rows_and_honours_params_and_row_limit() {
        let db = Database::open(":memory:").expect("open");
        let out = db
            .reader()
            .query(
                "SELECT id, region FROM customers WHERE id = ?1",
                &[json!("CUST-0001")],
                budget(10, Duration::from_secs(2)),
            )
            .expect("query");
        assert_eq!(out.columns, ["id", "region"]);
        assert_eq!(out.rows[0][0], json!("CUST-0001"));
        let capped = db
            .reader()
            .query(
                "SELECT id FROM orders",
                &[],
                budget(5, Duration::from_secs(2)),
            )
            .expect("query");
        assert_eq!(capped.rows.len(), 5);
        assert!(capped.truncated);
    }

    #[test]
    fn broken_sql_gets_the_engine_message_and_wrong_param_count_is_named() {
        let db = Database::open(":memory:").expect("open");
        match run(&db, "SELEC * FROM customers") {
            Err(QueryError::Sql(msg)) => assert!(msg.contains("syntax error"), "{msg}"),
            other => panic!("expected a syntax error, got {other:?}"),
        }
        match run(&db, "SELECT * FROM no_such_table") {
            Err(QueryError::Sql(msg)) => assert!(msg.contains("no_such_table"), "{msg}"),
            other => panic!("expected no such table, got {other:?}"),
        }
        assert_eq!(
            run(&db, "SELECT ?1"),
            Err(QueryError::ParamCount {
                expected: 1,
                given: 0
            })
        );
    }

    #[test]
    fn a_runaway_query_is_interrupted_at_the_time_limit() {
        let db = Database::open(":memory:").expect("open");
        let sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n";
        let out = db
            .reader()
            .query(sql, &[], budget(10, Duration::from_millis(50)));
        assert_eq!(out, Err(QueryError::TimedOut(50)));
        // The connection is usable afterwards.
        assert!(run(&db, "SELECT 1").is_ok());
    }

    #[test]
    fn reading_stops_at_the_first_value_past_the_byte_cap() {
        let db = Database::open(":memory:").expect("open");
        let limit = 4096;
        let capped = |sql: &str| {
            db.reader().query(
                sql,
                &[],
                QueryBudget {
                    max_bytes: limit,
                    ..budget(1_000, Duration::from_secs(2))
                },
            )
        };
        // Every order id is 11 bytes as JSON; 2,000 of them are far over 4 KiB.
        match capped("SELECT id FROM orders ORDER BY id") {
            Err(QueryError::TooLarge { limit: l, rows }) => {
                assert_eq!(l, limit);
                // `["ORD-00001"]` and a comma: 14 bytes a row, 2 for the outer brackets.
                assert_eq!(rows, (limit - 2) / 14);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // One value bigger than the cap is refused before it is copied.
        assert!(matches!(
            capped("SELECT printf('%.*c', 100000, 'x')"),
            Err(QueryError::TooLarge { rows: 0, .. })
        ));
        // A result just under the cap passes whole, and its JSON fits the cap.
        let rows = (limit - 2) / 14;
        let out = capped(&format!("SELECT id FROM orders ORDER BY id LIMIT {rows}"))
            .expect("under the cap");
        assert_eq!(out.rows.len(), rows);
        let json = serde_json::to_vec(&out.rows).expect("serializes");
        assert!(json.len() <= limit, "{} bytes", json.len());
        assert_eq!(
            kit::json_size::serialized_len(&serde_json::json!(out.rows)),
            json.len()
        );
    }
}
