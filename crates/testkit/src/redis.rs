//! A throwaway `redis-server` on a free 127.0.0.1 port, for the shared cache tests.
//!
//! A missing `redis-server` fails the test with a message saying how to install it: CI installs
//! it, so a skip would hide a broken CI image.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// How long a started server has to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server` (no persistence), killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let mut server = Self { port, child: None };
        server.spawn()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on (the same across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (an outage: every connection drops, the data is gone).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing redis-server")?;
            child.wait().context("waiting for redis-server")?;
        }
        Ok(())
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "redis-server is not installed, and the shared cache tests need it \
                 (Debian/Ubuntu: `apt-get install redis-server`)"
            ),
            Err(e) => return Err(e).context("starting redis-server"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if ping(addr).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("checking redis-server")?
            {
                bail!(
                    "redis-server exited at start ({status}); port {} taken?",
                    self.port
                );
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One PING in the inline protocol; `Ok` when the answer is `+PONG`.
fn ping(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer)?;
    if &answer == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other("not PONG"))
    }
}
