//! The orchestrator's own `orchestrator://status`, read with `resources/read` on the soak's
//! connection: every 100 ms during the run (when each server was connected again, how its
//! breaker moved) and once at the end (the breaker's counts).
//!
//! A server's status carries `connected`, `connectedSince` (RFC 3339, set when the orchestrator
//! has connected and listed the server's tools) and `policy.breaker` with `state`, `opens` and
//! `transitions` (counts; `crates/orchestrator/src/policy/breaker.rs`). The breaker keeps a list
//! of its last transitions with their times, but status does not carry it today: the soak
//! records the readings where the state or the counts changed, which places each transition
//! within one reading (about 100 ms). Should status carry the list (an array of objects with
//! `from`, `to` and `at` under `policy.breaker`), its transitions are used as well.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use serde_json::{Value, json};

use crate::{rpc::Conn, setup::SERVERS, watch::round};

/// The status resource.
pub const STATUS_URI: &str = "orchestrator://status";

/// How often the sampler reads it.
pub const EVERY: Duration = Duration::from_millis(100);

/// How long one reading may take before it counts as missed.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the status once: the JSON in the resource's text.
pub async fn read(conn: &Conn) -> anyhow::Result<Value> {
    let result = conn
        .request("resources/read", json!({ "uri": STATUS_URI }), READ_TIMEOUT)
        .await?;
    let text = result
        .pointer("/contents/0/text")
        .and_then(Value::as_str)
        .context("status without a text content")?;
    serde_json::from_str(text).context("status text is not JSON")
}

/// Seconds from `began` to the RFC 3339 time `at` (negative when before).
pub fn offset_of(at: &str, began: SystemTime) -> Option<f64> {
    let t = SystemTime::from(chrono::DateTime::parse_from_rfc3339(at).ok()?);
    Some(match t.duration_since(began) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    })
}

/// A reading in which a breaker's state or counts differed from the reading before.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPoint {
    /// Seconds since the calls began.
    pub at: f64,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Times it opened since the orchestrator started.
    pub opens: u64,
    /// Transitions of any kind since the orchestrator started.
    pub transitions: u64,
}

/// One transition from the breaker's own list.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Seconds since the calls began.
    pub at: f64,
    /// State before.
    pub from: String,
    /// State after.
    pub to: String,
    /// Why, in the breaker's words.
    pub reason: String,
}

/// What the readings showed of one server.
#[derive(Debug, Clone, Default)]
pub struct ServerTrace {
    /// When the orchestrator (re)connected it: each distinct `connectedSince`, in seconds since
    /// the calls began (negative: before), ascending.
    pub connections: Vec<f64>,
    /// Readings where `connected` changed: (seconds since the calls began, connected).
    pub connected: Vec<(f64, bool)>,
    /// Readings where the breaker's state or counts changed; the first reading is always one.
    pub breaker: Vec<BreakerPoint>,
    /// Transitions from the breaker's own list, when status carries one, oldest first.
    pub transitions: Vec<Transition>,
    /// `connectedSince` values and transitions already counted (keys as read).
    seen: BTreeSet<String>,
}

/// What the readings showed.
#[derive(Debug, Default)]
pub struct Trace {
    /// Readings answered.
    pub readings: u64,
    /// Readings that failed or took longer than 5 s.
    pub missed: u64,
    /// By server name.
    pub servers: BTreeMap<String, ServerTrace>,
}

impl Trace {
    /// Adds a reading taken `at` seconds into the run; `began` is the wall-clock time the
    /// calls began, to place `connectedSince` and transition times.
    pub fn add(&mut self, at: f64, status: &Value, began: SystemTime) {
        self.readings += 1;
        for s in status
            .get("servers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = s.get("name").and_then(Value::as_str) else {
                continue;
            };
            let t = self.servers.entry(name.to_owned()).or_default();
            if let Some(since) = s.get("connectedSince").and_then(Value::as_str)
                && t.seen.insert(format!("since {since}"))
                && let Some(o) = offset_of(since, began)
            {
                let i = t.connections.partition_point(|x| *x < o);
                t.connections.insert(i, o);
            }
            let connected = s.get("connected").and_then(Value::as_bool) == Some(true);
            if t.connected.last().is_none_or(|(_, c)| *c != connected) {
                t.connected.push((at, connected));
            }
            let breaker = s.pointer("/policy/breaker").unwrap_or(&Value::Null);
            let count = |k: &str| breaker.get(k).and_then(Value::as_u64).unwrap_or(0);
            let point = BreakerPoint {
                at,
                state: breaker
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
                opens: count("opens"),
                transitions: count("transitions"),
            };
            let changed = t.breaker.last().is_none_or(|p| {
                p.state != point.state
                    || p.opens != point.opens
                    || p.transitions != point.transitions
            });
            if changed {
                t.breaker.push(point);
            }
            for tr in transition_list(breaker) {
                let field = |k: &str| tr.get(k).and_then(Value::as_str).unwrap_or("?");
                let key = format!(
                    "transition {} {} {}",
                    field("at"),
                    field("from"),
                    field("to")
                );
                if !t.seen.insert(key) {
                    continue;
                }
                let Some(o) = offset_of(field("at"), began) else {
                    continue;
                };
                let i = t.transitions.partition_point(|x| x.at <= o);
                t.transitions.insert(
                    i,
                    Transition {
                        at: o,
                        from: field("from").to_owned(),
                        to: field("to").to_owned(),
                        reason: field("reason").to_owned(),
                    },
                );
            }
        }
    }
}

/// The breaker's list of transitions in its status, if it carries one: the first array of
/// objects with `from`, `to` and `at`.
fn transition_list(breaker: &Value) -> &[Value] {
    let is_transition = |v: &Value| ["from", "to", "at"].iter().all(|k| v.get(k).is_some());
    breaker
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .filter_map(Value::as_array)
        .find(|items| items.first().is_some_and(is_transition))
        .map_or(&[], Vec::as_slice)
}

/// Reads the status every [`EVERY`] into `trace` until the task is dropped or the connection
/// ends. A reading is placed at the middle of its round trip.
pub async fn sample(
    conn: Arc<Conn>,
    began: Instant,
    began_wall: SystemTime,
    trace: Arc<Mutex<Trace>>,
) {
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !conn.ended() {
        ticker.tick().await;
        let asked = began.elapsed();
        let reading = read(&conn).await;
        let at = (asked + began.elapsed()).as_secs_f64() / 2.0;
        let mut t = trace.lock().unwrap_or_else(|e| e.into_inner());
        match reading {
            Ok(status) => t.add(at, &status, began_wall),
            Err(_) => t.missed += 1,
        }
    }
}

/// Each server's breaker at the end (`orchestrator://status` read once the calls were done)
/// and as the readings saw it move.
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    /// By server: (state, opens, transitions) at the end, if the final reading had them.
    pub end: BTreeMap<String, (String, u64, u64)>,
    /// Whether the final reading failed (then `end` is empty).
    pub end_error: Option<String>,
}

impl Breakers {
    /// From the final reading.
    pub fn of(status: &anyhow::Result<Value>) -> Self {
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                return Self {
                    end: BTreeMap::new(),
                    end_error: Some(format!("{e:#}")),
                };
            }
        };
        let end = status
            .get("servers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let name = s.get("name")?.as_str()?.to_owned();
                let b = s.pointer("/policy/breaker")?;
                let count = |k: &str| b.get(k).and_then(Value::as_u64).unwrap_or(0);
                let state = b.get("state")?.as_str()?.to_owned();
                Some((name, (state, count("opens"), count("transitions"))))
            })
            .collect();
        Self {
            end,
            end_error: None,
        }
    }
}

/// Change points of one breaker kept in the JSON report (a flapping breaker changes at most
/// ten times a second, as read).
const MAX_POINTS: usize = 2_000;

/// Change points of one breaker printed in the text report.
const TEXT_POINTS: usize = 8;

impl Breakers {
    /// Each server's breaker at the end and as `trace` saw it move, as JSON.
    pub fn to_json(&self, trace: &Trace) -> Value {
        let servers: serde_json::Map<String, Value> = SERVERS
            .iter()
            .map(|(name, _)| {
                let end = self.end.get(*name);
                let t = trace.servers.get(*name);
                let v = json!({
                    "state": end.map(|e| &e.0),
                    "opens": end.map(|e| e.1),
                    "transitions": end.map(|e| e.2),
                    "changes": t.map(|t| t.breaker.iter().take(MAX_POINTS).map(BreakerPoint::to_json).collect::<Vec<_>>()),
                    "changesLeftOff": t.map_or(0, |t| t.breaker.len().saturating_sub(MAX_POINTS)),
                    "transitionList": t.map(|t| t.transitions.iter().map(Transition::to_json).collect::<Vec<_>>()),
                    "connectedSecs": t.map(|t| t.connections.iter().map(|x| round(*x, 3)).collect::<Vec<_>>()),
                    "connectedChanges": t.map(|t| t.connected.iter().map(|(at, c)| json!([round(*at, 2), c])).collect::<Vec<_>>()),
                });
                ((*name).to_owned(), v)
            })
            .collect();
        json!({
            "source": "orchestrator://status at the end; changes: the readings (every 100 ms) where the state or counts changed",
            "readings": trace.readings,
            "missedReadings": trace.missed,
            "endError": self.end_error,
            "servers": servers,
        })
    }

    /// The same as text, appended to `o`.
    pub fn to_text(&self, trace: &Trace, o: &mut String) {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "breakers (orchestrator://status at the end; moves as read every 100 ms: {} readings, {} missed):",
            trace.readings, trace.missed
        );
        if let Some(e) = &self.end_error {
            let _ = writeln!(o, "  the final status read failed: {e}");
        }
        for (name, _) in SERVERS {
            let end = match self.end.get(name) {
                Some((state, opens, transitions)) => {
                    format!("{state} at the end; opens {opens}, transitions {transitions}")
                }
                None => "?".to_owned(),
            };
            let moves = trace.servers.get(name).map_or(String::new(), |t| {
                let shown: Vec<String> = t
                    .breaker
                    .iter()
                    .skip(1)
                    .take(TEXT_POINTS)
                    .map(|p| format!("+{:.1} s {} ({} opens)", p.at, p.state, p.opens))
                    .collect();
                let more = t.breaker.len().saturating_sub(1 + TEXT_POINTS);
                match (shown.is_empty(), more) {
                    (true, _) => String::new(),
                    (false, 0) => format!("; seen: {}", shown.join(", ")),
                    (false, n) => format!("; seen: {}, and {n} more changes", shown.join(", ")),
                }
            });
            let _ = writeln!(o, "  {name:<7} {end}{moves}");
        }
    }
}

impl BreakerPoint {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "atSecs": round(self.at, 2),
            "state": self.state,
            "opens": self.opens,
            "transitions": self.transitions,
        })
    }
}

impl Transition {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "atSecs": round(self.at, 3),
            "from": self.from,
            "to": self.to,
            "reason": self.reason,
        })
    }
}

/// How a breaker moved around an outage `[span.from, span.to)`, from the readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AroundOutage {
    /// The readings that changed, from the last one before the outage to the first one after
    /// the return that shows it closed.
    pub points: Vec<BreakerPoint>,
    /// Seconds from the kill to the first reading showing that it had opened.
    pub open_after_down: Option<f64>,
    /// Times it opened between the kill and the return (a failed probe opens it again).
    pub opens_during: u64,
    /// Seconds from the return to the first reading showing it closed.
    pub closed_after_back: Option<f64>,
    /// Times it opened after the return before that reading: probes that failed although the
    /// server was back.
    pub opens_after_back: Option<u64>,
}

impl AroundOutage {
    /// From the change points of one breaker (ascending) and the outage.
    pub fn of(points: &[BreakerPoint], span: crate::goodput::Span) -> Self {
        let before = points.iter().rev().find(|p| p.at < span.from);
        let base_opens = before.map_or(0, |p| p.opens);
        let open_after_down = points
            .iter()
            .find(|p| p.at >= span.from && p.opens > base_opens)
            .map(|p| p.at - span.from);
        let at_back = points.iter().rev().find(|p| p.at < span.to);
        let opens_during = at_back.map_or(0, |p| p.opens.saturating_sub(base_opens));
        let closed = points
            .iter()
            .find(|p| p.at >= span.to && p.state == "closed");
        let closed_after_back = closed.map(|p| p.at - span.to);
        let opens_after_back = closed.map(|p| {
            p.opens
                .saturating_sub(at_back.map_or(base_opens, |b| b.opens))
        });
        let until = closed.map_or(f64::INFINITY, |p| p.at);
        let start = before.map_or(f64::NEG_INFINITY, |p| p.at);
        Self {
            points: points
                .iter()
                .filter(|p| p.at >= start && p.at <= until)
                .cloned()
                .collect(),
            open_after_down,
            opens_during,
            closed_after_back,
            opens_after_back,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(since: &str, connected: bool, state: &str, opens: u64, transitions: u64) -> Value {
        json!({ "servers": [{
            "name": "rest", "connected": connected, "connectedSince": since,
            "policy": { "breaker": { "state": state, "opens": opens, "transitions": transitions } }
        }]})
    }

    #[test]
    fn readings_keep_connections_and_breaker_changes_only() {
        let began = SystemTime::from(
            chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:10Z").expect("a time"),
        );
        let mut t = Trace::default();
        t.add(
            0.1,
            &status("2026-01-01T00:00:09.5Z", true, "closed", 0, 0),
            began,
        );
        t.add(
            0.2,
            &status("2026-01-01T00:00:09.5Z", true, "closed", 0, 0),
            began,
        );
        t.add(
            0.3,
            &status("2026-01-01T00:00:09.5Z", false, "open", 1, 1),
            began,
        );
        t.add(
            1.4,
            &status("2026-01-01T00:00:11.25Z", true, "closed", 1, 3),
            began,
        );
        let rest = &t.servers["rest"];
        assert_eq!(rest.connections, vec![-0.5, 1.25]);
        assert_eq!(rest.connected, vec![(0.1, true), (0.3, false), (1.4, true)]);
        let states: Vec<(&str, u64)> = rest
            .breaker
            .iter()
            .map(|p| (p.state.as_str(), p.transitions))
            .collect();
        assert_eq!(states, vec![("closed", 0), ("open", 1), ("closed", 3)]);
        assert!(rest.transitions.is_empty());
    }

    fn point(at: f64, state: &str, opens: u64) -> BreakerPoint {
        BreakerPoint {
            at,
            state: state.to_owned(),
            opens,
            transitions: 0,
        }
    }

    #[test]
    fn the_breaker_around_an_outage_is_read_from_its_change_points() {
        let outage = crate::goodput::Span {
            from: 5.0,
            to: 15.0,
        };
        let points = [
            point(0.0, "closed", 2),
            point(1.0, "open", 3),
            point(2.0, "closed", 3),
            point(5.3, "open", 4),
            point(10.4, "half_open", 4),
            point(10.5, "open", 5),
            point(15.1, "half_open", 5),
            point(15.2, "open", 6),
            point(15.6, "closed", 6),
            point(20.0, "open", 7),
        ];
        let a = AroundOutage::of(&points, outage);
        assert_eq!(a.points.first(), Some(&points[2]));
        assert_eq!(a.points.last(), Some(&points[8]));
        assert!((a.open_after_down.expect("opened") - 0.3).abs() < 1e-9);
        assert_eq!(a.opens_during, 2);
        assert!((a.closed_after_back.expect("closed") - 0.6).abs() < 1e-9);
        assert_eq!(a.opens_after_back, Some(1));

        // Never closed again within the readings.
        let a = AroundOutage::of(&points[..8], outage);
        assert_eq!((a.closed_after_back, a.opens_after_back), (None, None));
        assert_eq!(a.points.len(), 6);
    }

    #[test]
    fn a_transition_list_in_status_is_merged_across_readings() {
        let began = SystemTime::from(
            chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("a time"),
        );
        let with = |list: Value| {
            json!({ "servers": [{ "name": "cosmos", "policy": { "breaker": {
                "state": "closed", "opens": 1, "transitions": 2, "recent": list } } }] })
        };
        let open =
            json!({ "from": "closed", "to": "open", "at": "2026-01-01T00:00:01Z", "reason": "r" });
        let half = json!({ "from": "open", "to": "half_open", "at": "2026-01-01T00:00:02Z", "reason": "p" });
        let mut t = Trace::default();
        t.add(1.5, &with(json!([open])), began);
        t.add(2.5, &with(json!([open, half])), began);
        let got: Vec<(f64, &str)> = t.servers["cosmos"]
            .transitions
            .iter()
            .map(|x| (x.at, x.to.as_str()))
            .collect();
        assert_eq!(got, vec![(1.0, "open"), (2.0, "half_open")]);
    }
}
