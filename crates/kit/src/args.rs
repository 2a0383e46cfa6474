//! The command-line flags every server in this workspace accepts.

use crate::{faults::FaultArgs, serve::ServeArgs, telemetry::LogFormat};

/// Transport, security, log and fault flags, flattened into each server's own `clap` parser.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Transport and HTTP security flags.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Log line format on stderr.
    #[arg(long, value_enum, env = "MCP_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Fault injection flags.
    #[command(flatten)]
    pub faults: FaultArgs,
}
