//! Composite tools: declared in mcp.json, checked at load, run as a plan across the servers.
//!
//! - [`template`]: the reference and template language (`${step.path}`, fusion helpers).
//! - [`definition`]: the config types and their load-time checks (references, cycles).
//! - [`executor`]: runs a checked workflow, steps in parallel where the data allows.

pub mod definition;
pub mod executor;
pub mod template;

pub use definition::{CompositeConfig, Workflow};
