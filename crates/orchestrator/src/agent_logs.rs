//! Upstream log messages reach the agents that asked for them (`logging/setLevel`), at the level
//! each asked for, tagged with the server they came from; the orchestrator's own log keeps them
//! too. Upstreams are asked for the most verbose level any agent wants, and each agent gets only
//! what is at or above its own.
//!
//! Only 2025-11-25 sessions hear them: a 2026-07-28 agent has no session for a notification to
//! arrive on outside its requests (logging is deprecated there, SEP-2577).

// Logging is deprecated from 2026-07-28 on, but 2025-11-25 agents and servers still use it.
#![allow(deprecated)]

use std::{collections::HashMap, sync::Mutex};

use rmcp::{
    Peer, RoleServer,
    model::{LoggingLevel, LoggingMessageNotificationParam},
};

use crate::subscriptions::SessionId;

/// Severity order, least severe first (rmcp's enum has no ordering of its own).
pub fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// The level each agent session asked for.
#[derive(Debug, Default)]
pub struct AgentLevels {
    sessions: Mutex<HashMap<SessionId, (Peer<RoleServer>, LoggingLevel)>>,
}

impl AgentLevels {
    fn table(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SessionId, (Peer<RoleServer>, LoggingLevel)>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `session`'s level; returns the most verbose level any session now wants.
    pub fn set(
        &self,
        session: SessionId,
        agent: Peer<RoleServer>,
        level: LoggingLevel,
    ) -> LoggingLevel {
        let mut table = self.table();
        table.retain(|_, (peer, _)| !peer.is_transport_closed());
        table.insert(session, (agent, level));
        most_verbose(&table).unwrap_or(level)
    }

    /// Forgets a session that ended.
    pub fn end_session(&self, session: SessionId) {
        self.table().remove(&session);
    }

    /// The most verbose level any session wants, if any asked.
    pub fn wanted(&self) -> Option<LoggingLevel> {
        most_verbose(&self.table())
    }

    /// The agents that want a message of `level`.
    pub fn recipients(&self, level: LoggingLevel) -> Vec<Peer<RoleServer>> {
        self.table()
            .values()
            .filter(|(peer, wanted)| rank(level) >= rank(*wanted) && !peer.is_transport_closed())
            .map(|(peer, _)| peer.clone())
            .collect()
    }
}

fn most_verbose(
    table: &HashMap<SessionId, (Peer<RoleServer>, LoggingLevel)>,
) -> Option<LoggingLevel> {
    table
        .values()
        .map(|(_, level)| *level)
        .min_by_key(|level| rank(*level))
}

/// `message` from `server`, as agents get it: its logger named after the server
/// (`sql`, or `sql/<logger>` when the server named one).
pub fn tagged(
    server: &str,
    mut message: LoggingMessageNotificationParam,
) -> LoggingMessageNotificationParam {
    message.logger = Some(match message.logger.take() {
        Some(logger) if !logger.is_empty() => format!("{server}/{logger}"),
        _ => server.to_owned(),
    });
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_rank_by_severity() {
        let all = [
            LoggingLevel::Debug,
            LoggingLevel::Info,
            LoggingLevel::Notice,
            LoggingLevel::Warning,
            LoggingLevel::Error,
            LoggingLevel::Critical,
            LoggingLevel::Alert,
            LoggingLevel::Emergency,
        ];
        assert!(all.windows(2).all(|w| rank(w[0]) < rank(w[1])));
    }

    #[test]
    fn messages_are_tagged_with_their_server() {
        let plain = LoggingMessageNotificationParam::new(LoggingLevel::Info, "x".into());
        assert_eq!(tagged("sql", plain.clone()).logger.as_deref(), Some("sql"));
        let named = plain.with_logger("db");
        assert_eq!(tagged("sql", named).logger.as_deref(), Some("sql/db"));
    }
}
