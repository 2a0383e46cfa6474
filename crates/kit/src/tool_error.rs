//! The error convention shared by every server and read by the orchestrator.
//!
//! A failed tool call is a *tool* result with `isError: true`, a human message as text content, and
//! `_meta` carrying `errorKind`, `retryable` and (where known) `retryAfterMs`. Callers decide whether
//! to retry from these fields alone, never by parsing messages.

use rmcp::{
    ErrorData,
    handler::server::tool::IntoCallToolResult,
    model::{CallToolResponse, CallToolResult, ContentBlock, JsonObject, MetaObject},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `_meta` key naming the error class.
pub const META_ERROR_KIND: &str = "errorKind";
/// `_meta` key saying whether repeating the same call may succeed.
pub const META_RETRYABLE: &str = "retryable";
/// `_meta` key with the server's hint for how long to wait before repeating.
pub const META_RETRY_AFTER_MS: &str = "retryAfterMs";

/// The class of a failed tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The arguments were understood but not acceptable (a write in a read-only query, say).
    Invalid,
    /// An id named in the arguments does not exist.
    NotFound,
    /// The call conflicts with the current state (a stale etag, say).
    Conflict,
    /// The server is over its budget; try again after `retryAfterMs`.
    Throttled,
    /// The server or one of its dependencies is down or failed transiently.
    Unavailable,
    /// A bug or an unexpected state on the server.
    Internal,
}

impl ErrorKind {
    /// The wire name used in `_meta.errorKind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether an error of this kind is worth repeating when nothing else is known.
    pub fn retryable_by_default(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Unavailable)
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "invalid" => ErrorKind::Invalid,
            "not_found" => ErrorKind::NotFound,
            "conflict" => ErrorKind::Conflict,
            "throttled" => ErrorKind::Throttled,
            "unavailable" => ErrorKind::Unavailable,
            "internal" => ErrorKind::Internal,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool-level failure, rendered as `isError: true` with the convention's `_meta`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ToolError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// What went wrong, for a human; names the offending id or field.
    pub message: String,
    /// Whether the same call may succeed if repeated.
    pub retryable: bool,
    /// How long the server asks the caller to wait before repeating.
    pub retry_after_ms: Option<u64>,
    /// Further `_meta` entries a server wants to report (a request charge, say).
    pub extra_meta: JsonObject,
}

impl ToolError {
    /// An error of `kind` with that kind's default retryability.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable: kind.retryable_by_default(),
            retry_after_ms: None,
            extra_meta: JsonObject::new(),
        }
    }

    /// Arguments understood but not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    /// A named id does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// Over budget: retryable after `retry_after_ms`.
    pub fn throttled(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self::new(ErrorKind::Throttled, message).with_retry_after_ms(retry_after_ms)
    }

    /// Down or failing transiently: retryable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// A bug or unexpected state: not retryable.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Sets the wait hint.
    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// Overrides the kind's default retryability.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Adds an extra `_meta` entry.
    pub fn with_meta(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extra_meta.insert(key.into(), value);
        self
    }

    /// The `_meta` object this error travels with.
    pub fn meta(&self) -> MetaObject {
        let mut meta = self.extra_meta.clone();
        meta.insert(META_ERROR_KIND.into(), Value::from(self.kind.as_str()));
        meta.insert(META_RETRYABLE.into(), Value::from(self.retryable));
        if let Some(ms) = self.retry_after_ms {
            meta.insert(META_RETRY_AFTER_MS.into(), Value::from(ms));
        }
        MetaObject(meta)
    }

    /// Renders the error as a tool result.
    pub fn to_call_tool_result(&self) -> CallToolResult {
        let mut result = CallToolResult::error(vec![ContentBlock::text(self.message.clone())]);
        result.meta = Some(self.meta());
        result
    }

    /// Reads the convention back from a tool result; `None` when the result is not an error.
    ///
    /// An error result without the convention's `_meta` (from a server outside this workspace)
    /// is read as `internal` and not retryable: nothing says repeating it is safe.
    pub fn from_call_tool_result(result: &CallToolResult) -> Option<Self> {
        if result.is_error != Some(true) {
            return None;
        }
        let message = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect::<Vec<_>>()
            .join("\n");
        let meta = result.meta.as_ref().map(|m| &m.0);
        let kind = meta
            .and_then(|m| m.get(META_ERROR_KIND))
            .and_then(Value::as_str)
            .and_then(ErrorKind::parse)
            .unwrap_or(ErrorKind::Internal);
        let retryable = meta
            .and_then(|m| m.get(META_RETRYABLE))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let retry_after_ms = meta
            .and_then(|m| m.get(META_RETRY_AFTER_MS))
            .and_then(Value::as_u64);
        let mut extra_meta = meta.cloned().unwrap_or_default();
        for key in [META_ERROR_KIND, META_RETRYABLE, META_RETRY_AFTER_MS] {
            extra_meta.remove(key);
        }
        Some(Self {
            kind,
            message,
            retryable,
            retry_after_ms,
            extra_meta,
        })
    }
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        Ok(self.to_call_tool_result().into())
    }
}

/// What a tool function returns on failure: a tool error, or an argument that breaks the tool's
/// input schema.
///
/// Both become tool results with `isError: true` (the MCP specification, since 2025-11-25, asks for
/// input validation errors as tool errors so that a model can correct its call); an argument error
/// is `invalid`, not retryable, and names the argument in its message and in `_meta.field`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolFailure {
    /// A tool-level failure under the error convention.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// An argument that violates the input schema (a range, say, that JSON Schema types miss).
    #[error("invalid argument `{field}`: {message}")]
    InvalidParams {
        /// The argument's name as the caller spelled it (camelCase).
        field: String,
        /// What was expected.
        message: String,
    },
}

impl ToolFailure {
    /// An argument that violates the input schema.
    pub fn invalid_params(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidParams {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl IntoCallToolResult for ToolFailure {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        match self {
            ToolFailure::Tool(e) => e.into_call_tool_result(),
            ToolFailure::InvalidParams { field, message } => {
                ToolError::invalid_argument(&field, &message).into_call_tool_result()
            }
        }
    }
}

/// `_meta` key naming the offending argument of an `invalid` error, when one is known.
pub const META_FIELD: &str = "field";

/// How rmcp words a tool argument that does not deserialize (it reports it as a tool error, as
/// the MCP specification asks since 2025-11-25, so a model can correct itself).
const RMCP_ARGUMENT_ERROR_PREFIX: &str = "failed to deserialize parameters:";

impl ToolError {
    /// An argument that breaks the tool's input schema: `invalid`, not retryable, with the
    /// argument's name in the message and in `_meta.field`.
    pub fn invalid_argument(field: &str, message: &str) -> Self {
        Self::invalid(format!("invalid argument `{field}`: {message}"))
            .with_meta(META_FIELD, Value::from(field))
    }

    /// Gives rmcp's own argument-deserialization errors the convention's `_meta` and names the
    /// argument: from the tool's input schema when it is known (exact location), else from
    /// serde's wording (which names only missing and unknown fields).
    pub fn normalize_argument_error(
        result: &mut CallToolResult,
        input_schema: Option<&JsonObject>,
        arguments: Option<&JsonObject>,
    ) {
        if result.is_error != Some(true)
            || result
                .meta
                .as_ref()
                .is_some_and(|m| m.contains_key(META_ERROR_KIND))
        {
            return;
        }
        let Some(text) = result
            .content
            .first()
            .and_then(|c| c.as_text())
            .map(|t| t.text.clone())
        else {
            return;
        };
        let Some(detail) = text.strip_prefix(RMCP_ARGUMENT_ERROR_PREFIX) else {
            return;
        };
        let detail = detail.trim();
        let from_schema = input_schema.and_then(|schema| {
            let args = Value::Object(arguments.cloned().unwrap_or_default());
            crate::arguments::first_violation(schema, &args)
        });
        let serde_field = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| detail.split_once(p))
            .and_then(|(_, rest)| rest.split('`').next())
            .filter(|f| !f.is_empty());
        let mut err = match (from_schema, serde_field) {
            (Some((field, message)), _) => ToolError::invalid_argument(&field, &message),
            (None, Some(field)) => ToolError::invalid_argument(field, detail),
            (None, None) => ToolError::invalid(format!("invalid arguments: {detail}")),
        };
        err.extra_meta
            .extend(result.meta.take().map(|m| m.0).unwrap_or_default());
        *result = err.to_call_tool_result();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trips_through_a_tool_result() {
        let err = ToolError::throttled("over budget", 250).with_meta("requestCharge", 3.5.into());
        let result = err.to_call_tool_result();
        assert_eq!(result.is_error, Some(true));
        let wire = serde_json::to_value(&result).expect("serializes");
        assert_eq!(wire["_meta"]["errorKind"], "throttled");
        assert_eq!(wire["_meta"]["retryable"], true);
        assert_eq!(wire["_meta"]["retryAfterMs"], 250);
        assert_eq!(ToolError::from_call_tool_result(&result), Some(err));
    }

    #[test]
    fn foreign_error_without_meta_is_internal_and_not_retryable() {
        let result = CallToolResult::error(vec![ContentBlock::text("boom")]);
        let err = ToolError::from_call_tool_result(&result).expect("is an error");
        assert_eq!(err.kind, ErrorKind::Internal);
        assert!(!err.retryable);
        assert_eq!(err.message, "boom");
    }

    #[test]
    fn rmcp_argument_errors_get_the_convention() {
        let mut result = CallToolResult::error(vec![ContentBlock::text(
            "failed to deserialize parameters: missing field `customerId`",
        )]);
        ToolError::normalize_argument_error(&mut result, None, None);
        let err = ToolError::from_call_tool_result(&result).expect("error");
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert!(!err.retryable);
        assert!(err.message.contains("customerId"));
        assert_eq!(
            err.extra_meta.get(META_FIELD),
            Some(&Value::from("customerId"))
        );
    }

    #[test]
    fn invalid_params_failures_are_invalid_tool_errors_naming_the_field() {
        let response = ToolFailure::invalid_params("limit", "must be 1-200")
            .into_call_tool_result()
            .expect("a tool result, not a protocol error");
        let CallToolResponse::Complete(result) = response else {
            panic!("complete result expected");
        };
        let err = ToolError::from_call_tool_result(&result).expect("error");
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert_eq!(err.extra_meta.get(META_FIELD), Some(&Value::from("limit")));
    }

    #[test]
    fn success_is_not_an_error() {
        let result = CallToolResult::success(vec![ContentBlock::text("ok")]);
        assert_eq!(ToolError::from_call_tool_result(&result), None);
    }
}
