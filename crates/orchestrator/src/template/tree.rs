//! The compiled form of a template: what `compile` builds and `inspect` and `render` walk.

use serde_json::Value;

/// A compiled template node.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    /// A value with no reference and no helper, escapes already resolved.
    Literal(Value),
    /// A string that is exactly one reference: evaluates to the referenced value.
    Ref(Ref),
    /// A string with references embedded in text.
    Text(Vec<Piece>),
    /// An array with at least one non-literal element.
    Array(Vec<Node>),
    /// An object with at least one non-literal field; keys already unescaped.
    Object(Vec<(String, Node)>),
    /// `$concat`.
    Concat {
        /// The helper's place (`x.$concat`), for render errors.
        at: String,
        /// The arrays to concatenate.
        parts: Vec<Node>,
    },
    /// `$zip`.
    Zip {
        /// The helper's place (`x.$zip`).
        at: String,
        /// The items to enrich.
        items: Box<Node>,
        /// The values to attach, one per item.
        with: Box<Node>,
        /// The field to attach them as.
        field: String,
    },
    /// `$join`.
    Join {
        /// The helper's place (`x.$join`).
        at: String,
        /// Left rows.
        left: Box<Node>,
        /// Right rows.
        right: Box<Node>,
        /// The key field.
        on: String,
        /// The fields to sum.
        sum: Vec<String>,
    },
    /// `$pick`.
    Pick {
        /// The helper's place (`x.$pick`).
        at: String,
        /// The items to filter.
        from: Box<Node>,
        /// The field to test.
        field: String,
        /// The accepted values.
        within: Box<Node>,
    },
    /// `$default`.
    Default {
        /// The preferred value.
        value: Box<Node>,
        /// Used when `value` is null.
        fallback: Box<Node>,
    },
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Ref {
    /// The root name.
    pub(super) root: String,
    /// The path after the root, parsed once.
    pub(super) path: Vec<Segment>,
    /// As written, for `references()` and error messages.
    pub(super) text: String,
    /// Where in the template.
    pub(super) at: String,
}

/// One step of a reference path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    /// `.name` or `["name"]`.
    Field(String),
    /// `[n]`.
    Index(usize),
    /// `[*]`.
    Each,
}

/// A part of an interpolated string.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Piece {
    /// Literal text, escapes resolved.
    Text(String),
    /// A reference whose value is inserted as text.
    Ref(Ref),
}
