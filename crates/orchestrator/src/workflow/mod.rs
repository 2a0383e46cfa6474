//! Composite tools: declared in mcp.json, checked at load, run as a plan across the servers.
//!
//! - [`definition`]: the config types and their load-time checks (references, cycles).
//! - [`executor`]: runs a checked workflow, steps in parallel where the data allows.
//! - [`step`]: one step: its call, what it produced, its line in `_meta.sources`.
//! - [`saga`]: what a composite whose steps write does when one fails: settle, undo, recover.
//!
//! Arguments, `forEach` sources and outputs are written in the [template language](crate::template).

pub mod definition;
pub mod executor;
pub mod saga;
pub mod step;

pub use definition::{CompositeConfig, Workflow};
