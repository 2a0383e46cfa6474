//! Relays a stdio upstream's stderr into the orchestrator's log, one line per log record tagged
//! with the server, within [`StderrLimits`]:
//!
//! - a line longer than `max_line_bytes` is cut (at a character boundary) and ends with
//!   `… [N bytes cut]`; the rest of it is read and thrown away, never buffered, so a child that
//!   writes megabytes without a newline costs no memory;
//! - at most `lines_per_second` lines per upstream are logged in each one-second window; the rest
//!   are dropped and counted, and one `N lines of <server> stderr dropped` warning per window says
//!   so (as soon as the window ends, even if the child has gone quiet).

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    time::{Duration, Instant},
};

use super::StderrLimits;

/// Length of one rate window.
const WINDOW: Duration = Duration::from_secs(1);

/// The config path named in the "dropped" warning.
pub const CONFIG_PATH: &str = "orchestrator.limits.upstreamStderrLinesPerSecond";

/// What the relay hands to its sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayed {
    /// A line to log (cut if it was too long).
    Line(String),
    /// Lines dropped in a window that has ended.
    Dropped(u64),
}

/// Splits bytes into lines of at most `max` bytes, holding no more than that.
#[derive(Debug)]
pub struct LineSplitter {
    /// Longest line kept.
    max: usize,
    /// The current line so far, at most `max` bytes.
    buf: Vec<u8>,
    /// Bytes of the current line thrown away past `max`.
    cut: usize,
}

impl LineSplitter {
    /// A splitter keeping at most `max` bytes of each line.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
            cut: 0,
        }
    }

    /// Takes `bytes`, handing each line they complete to `emit`.
    pub fn feed(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(String)) {
        while !bytes.is_empty() {
            let (part, rest, ended) = match memchr::memchr(b'\n', bytes) {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = self.max - self.buf.len();
            if part.len() > room {
                self.buf.extend_from_slice(&part[..room]);
                self.cut += part.len() - room;
            } else {
                self.buf.extend_from_slice(part);
            }
            if ended {
                emit(self.take_line());
            }
            bytes = rest;
        }
    }

    /// The last line, when the stream ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty() || self.cut > 0).then(|| self.take_line())
    }

    fn take_line(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.buf);
        let mut cut = std::mem::take(&mut self.cut);
        if cut > 0 {
            // The cut may have split a character: leave its first bytes out too.
            if let Err(e) = std::str::from_utf8(&bytes)
                && e.error_len().is_none()
            {
                cut += bytes.len() - e.valid_up_to();
                bytes.truncate(e.valid_up_to());
            }
        } else if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if cut > 0 {
            line.push_str(&format!("… [{cut} bytes cut]"));
        }
        line
    }
}

/// Lines allowed per one-second window; counts what it refuses.
#[derive(Debug)]
pub struct LineBudget {
    /// Lines allowed per window.
    per_window: u32,
    /// When the current window began (at its first line).
    window_start: Option<Instant>,
    /// Lines let through in the current window.
    admitted: u32,
    /// Lines refused in the current window.
    dropped: u64,
}

impl LineBudget {
    /// A budget of `per_second` lines per window.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_window: per_second,
            window_start: None,
            admitted: 0,
            dropped: 0,
        }
    }

    /// Starts a new window if the current one is over at `now`; returns how many lines the
    /// ended window dropped, when any.
    pub fn roll(&mut self, now: Instant) -> Option<u64> {
        match self.window_start {
            Some(start) if now < start + WINDOW => None,
            _ => {
                self.window_start = Some(now);
                self.admitted = 0;
                self.take_dropped()
            }
        }
    }

    /// Whether the next line is logged, counting it either way (call [`LineBudget::roll`] first).
    pub fn admit(&mut self) -> bool {
        if self.admitted < self.per_window {
            self.admitted += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// When the current window ends, if it has dropped lines to report.
    pub fn report_due(&self) -> Option<Instant> {
        self.window_start
            .filter(|_| self.dropped > 0)
            .map(|start| start + WINDOW)
    }

    /// The lines dropped so far in this window, resetting the count.
    pub fn take_dropped(&mut self) -> Option<u64> {
        let n = std::mem::take(&mut self.dropped);
        (n > 0).then_some(n)
    }
}

/// Logs `line` if the budget allows, after reporting a window that just ended.
fn offer(line: String, budget: &mut LineBudget, sink: &mut impl FnMut(Relayed)) {
    if let Some(n) = budget.roll(Instant::now()) {
        sink(Relayed::Dropped(n));
    }
    if budget.admit() {
        sink(Relayed::Line(line));
    }
}

/// Reads `reader` to its end, handing lines and drop counts to `sink` within `limits`.
pub async fn relay<R: AsyncRead + Unpin>(
    reader: R,
    limits: StderrLimits,
    mut sink: impl FnMut(Relayed),
) {
    let mut reader = BufReader::new(reader);
    let mut splitter = LineSplitter::new(limits.max_line_bytes);
    let mut budget = LineBudget::new(limits.lines_per_second);
    loop {
        let due = budget.report_due();
        // `fill_buf` is cancel-safe: when the report fires first, no byte has been read.
        let chunk = tokio::select! {
            chunk = reader.fill_buf() => chunk,
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                if let Some(n) = budget.roll(Instant::now()) {
                    sink(Relayed::Dropped(n));
                }
                continue;
            }
        };
        let mut lines = Vec::new();
        let consumed = match chunk {
            Ok(bytes) if !bytes.is_empty() => {
                splitter.feed(bytes, &mut |line| lines.push(line));
                bytes.len()
            }
            // EOF, or the pipe failed: the child is gone either way.
            _ => break,
        };
        reader.consume(consumed);
        for line in lines {
            offer(line, &mut budget, &mut sink);
        }
    }
    if let Some(line) = splitter.finish() {
        offer(line, &mut budget, &mut sink);
    }
    if let Some(n) = budget.take_dropped() {
        sink(Relayed::Dropped(n));
    }
}

/// Relays `server`'s stderr into the log (target `upstream`, field `server`) on a task of its
/// own, until the child closes it.
pub fn spawn_relay<R>(server: String, stderr: R, limits: StderrLimits)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        relay(stderr, limits, |relayed| match relayed {
            Relayed::Line(line) => tracing::info!(target: "upstream", server = %server, "{line}"),
            Relayed::Dropped(n) => tracing::warn!(
                target: "upstream",
                server = %server,
                dropped = n,
                "{n} lines of {server} stderr dropped (over {} lines/s, {CONFIG_PATH})",
                limits.lines_per_second
            ),
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut |l| out.push(l));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn lines_are_split_across_chunks_and_crlf_is_trimmed() {
        assert_eq!(
            split(100, &[b"one\r\ntw", b"o\n", b"\nthree"]),
            ["one", "two", "", "three"]
        );
    }

    #[test]
    fn a_long_line_is_cut_with_a_marker_and_never_buffered_whole() {
        let long = vec![b'x'; 10_000];
        let mut s = LineSplitter::new(100);
        let mut out = Vec::new();
        for chunk in long.chunks(999) {
            s.feed(chunk, &mut |l| out.push(l));
            assert!(s.buf.len() <= 100, "holds at most the kept part");
        }
        s.feed(b"\nnext\n", &mut |l| out.push(l));
        assert_eq!(out[0], format!("{}… [9900 bytes cut]", "x".repeat(100)));
        assert_eq!(out[1], "next");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // 'é' is two bytes: 101 bytes of them would end mid-character at 100.
        let line = format!("a{}\n", "é".repeat(60));
        let out = split(100, &[line.as_bytes()]);
        assert_eq!(out[0], format!("a{}… [22 bytes cut]", "é".repeat(49)));
    }

    #[test]
    fn the_budget_admits_per_window_and_reports_what_it_dropped() {
        let t0 = Instant::now();
        let mut b = LineBudget::new(3);
        let mut admitted = 0;
        for _ in 0..5 {
            assert_eq!(b.roll(t0), None);
            admitted += usize::from(b.admit());
        }
        assert_eq!(admitted, 3);
        assert_eq!(b.report_due(), Some(t0 + WINDOW));
        assert_eq!(b.roll(t0 + Duration::from_millis(999)), None, "same window");
        assert_eq!(b.roll(t0 + WINDOW), Some(2), "the window ended");
        assert_eq!(b.report_due(), None, "nothing dropped in the new one");
        assert!(b.admit());
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_capped_and_the_drop_is_reported_when_the_window_ends() -> anyhow::Result<()>
    {
        let (mut writer, reader) = tokio::io::duplex(64 * 1024);
        let limits = StderrLimits {
            lines_per_second: 200,
            max_line_bytes: 100,
        };
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = out.clone();
        let relay = tokio::spawn(relay(reader, limits, move |r| {
            sink.lock().expect("lock").push((Instant::now(), r))
        }));
        let t0 = Instant::now();
        for i in 0..1_000 {
            writer.write_all(format!("line {i}\n").as_bytes()).await?;
        }
        // Quiet for a while: the report must not wait for the next line.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        writer.write_all(b"after the flood\n").await?;
        drop(writer);
        relay.await?;
        let out = out.lock().expect("lock").clone();
        let lines: Vec<_> = out
            .iter()
            .filter_map(|(_, r)| match r {
                Relayed::Line(l) => Some(l.as_str()),
                Relayed::Dropped(_) => None,
            })
            .collect();
        assert_eq!(lines.len(), 201, "200 in the first window, then one");
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[199], "line 199");
        assert_eq!(lines[200], "after the flood");
        let reports: Vec<_> = out
            .iter()
            .filter_map(|(at, r)| match r {
                Relayed::Dropped(n) => Some((*at, *n)),
                Relayed::Line(_) => None,
            })
            .collect();
        assert_eq!(
            reports,
            [(t0 + WINDOW, 800)],
            "one report, when the window ended"
        );
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn drops_still_pending_at_the_end_are_reported() {
        let input: Vec<u8> = (0..10)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let mut out = Vec::new();
        relay(
            &input[..],
            StderrLimits {
                lines_per_second: 4,
                max_line_bytes: 100,
            },
            |r| out.push(r),
        )
        .await;
        let expected: Vec<Relayed> = (0..4)
            .map(|i| Relayed::Line(i.to_string()))
            .chain([Relayed::Dropped(6)])
            .collect();
        assert_eq!(out, expected);
    }
}
