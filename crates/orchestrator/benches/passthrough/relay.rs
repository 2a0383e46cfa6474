//! The byte relay: this bench binary re-run as the least any proxy process can add.

use std::path::Path;

use anyhow::Context;

use crate::endpoint::Endpoint;

/// The flag that makes this binary a relay instead of a bench.
pub const FLAG: &str = "--byte-relay";

/// Connects to `server args...` (the SQL server) through this binary re-run as a byte relay.
pub async fn connect(server: &Path, server_bin: &str, args: &[String]) -> anyhow::Result<Endpoint> {
    let me = std::env::current_exe()?;
    let mut relay_args = vec![FLAG.to_owned(), server.display().to_string()];
    relay_args.extend(args.iter().cloned());
    Endpoint::stdio("byte relay", "relay", "", &me, &relay_args)
        .await?
        .adopt("sql", server_bin)
        .await
}

/// Starts `command`, copies each line from its own stdin to the child's and each line back, with
/// blocking reads on two threads and no parsing. Measuring it beside the orchestrator separates
/// the cost of the two extra pipe hops (writes, wake-ups, context switches on a small machine)
/// from the orchestrator's own work.
pub fn main(command: &[String]) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let (program, args) = command.split_first().context("relay: no command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("relay: starting {program}"))?;
    let mut to_child = child.stdin.take().context("relay: child stdin")?;
    let from_child = child.stdout.take().context("relay: child stdout")?;
    let back = std::thread::spawn(move || -> std::io::Result<()> {
        let mut reader = BufReader::new(from_child);
        let mut out = std::io::stdout().lock();
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line)? > 0 {
            out.write_all(&line)?;
            out.flush()?;
            line.clear();
        }
        Ok(())
    });
    let mut input = std::io::stdin().lock();
    let mut line = Vec::new();
    while input.read_until(b'\n', &mut line)? > 0 {
        to_child.write_all(&line)?;
        to_child.flush()?;
        line.clear();
    }
    drop(to_child);
    let _ = child.wait();
    let _ = back.join();
    Ok(())
}
