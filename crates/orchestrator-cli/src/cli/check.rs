//! `mcp-orchestrator check`: validates the configuration and prints its servers (connects to
//! nothing).

use std::path::Path;

use orchestrator::config::{Config, Transport};

use crate::output::table;

/// Prints the configuration's servers; exit code 1 when it is invalid.
pub fn run(path: &Path) -> anyhow::Result<i32> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: invalid configuration\n  {e}", path.display());
            return Ok(1);
        }
    };
    out!("{}: valid", path.display());
    let mut t = table(&["server", "transport", "tool prefix", "target"]);
    for s in &config.servers {
        let target = match &s.transport {
            Transport::Stdio { command, args, .. } => {
                config.redact(&format!("{command} {}", args.join(" ")))
            }
            Transport::Http { url, .. } => config.redact(url),
        };
        let prefix = if s.prefix.is_empty() {
            "(none)".to_owned()
        } else {
            format!("{}{}", s.prefix, config.separator)
        };
        t.add_row([s.name.clone(), s.transport.kind().into(), prefix, target]);
    }
    for d in &config.disabled {
        t.add_row([d.clone(), "disabled".into(), String::new(), String::new()]);
    }
    out!("{t}");
    out!("HTTP front: {}", config.listen);
    Ok(0)
}
