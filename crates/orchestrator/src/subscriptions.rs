//! Agents' resource subscriptions, held per agent session and URI.
//!
//! Sessions are told apart by a [`SessionId`] the front gives each handler, not by what the agent
//! says of itself: two agents with the same `clientInfo` are still two subscribers. A subscribe
//! is idempotent per session (one update per change, however often it subscribed), one agent's
//! unsubscribe leaves the others' alone, and the caller learns when a URI lost its last
//! subscriber, which is when the upstream subscription may go. A session holds at most
//! `orchestrator.limits.maxSubscriptionsPerClient` subscriptions.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use rmcp::{Peer, RoleServer};

/// The config path named in refusals.
pub const CONFIG_PATH: &str = "orchestrator.limits.maxSubscriptionsPerClient";

/// One agent session of this process, unique for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(u64);

impl SessionId {
    /// A fresh id, never handed out before by this process.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a subscribe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// The session was not subscribed to the URI before.
    New,
    /// The session was subscribed already; nothing changed.
    Already,
}

/// What an unsubscribe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The session was the URI's last subscriber: nobody needs the upstream subscription now.
    Last,
    /// Other sessions are still subscribed.
    OthersRemain,
    /// The session was not subscribed to the URI.
    NotSubscribed,
}

/// Refusal: the session already holds `limit` subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this client already holds {limit} resource subscriptions, the most allowed ({CONFIG_PATH}); \
     unsubscribe from one first"
)]
pub struct SubscriptionLimitReached {
    /// The cap.
    pub limit: usize,
}

impl SubscriptionLimitReached {
    /// The JSON-RPC error the agent receives: invalid request, with the limit in `data`.
    pub fn to_error_data(&self) -> rmcp::ErrorData {
        rmcp::ErrorData::invalid_request(
            self.to_string(),
            Some(serde_json::json!({
                "reason": "subscription_limit",
                "limit": self.limit,
                "setting": CONFIG_PATH,
            })),
        )
    }
}

/// Every session's subscriptions.
#[derive(Debug, Default)]
pub struct Subscriptions {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Exposed URI → the sessions subscribed to it, with the peer that hears its updates.
    by_uri: HashMap<String, HashMap<SessionId, Peer<RoleServer>>>,
    /// Session → the URIs it is subscribed to (for its count, and to forget it when it ends).
    by_session: HashMap<SessionId, HashSet<String>>,
}

impl State {
    /// Removes `session`'s subscription to `uri`; whether `uri` has no subscriber left.
    fn remove(&mut self, uri: &str, session: SessionId) -> Unsubscribed {
        let Some(sessions) = self.by_uri.get_mut(uri) else {
            return Unsubscribed::NotSubscribed;
        };
        if sessions.remove(&session).is_none() {
            return Unsubscribed::NotSubscribed;
        }
        if let Some(uris) = self.by_session.get_mut(&session) {
            uris.remove(uri);
            if uris.is_empty() {
                self.by_session.remove(&session);
            }
        }
        if sessions.is_empty() {
            self.by_uri.remove(uri);
            Unsubscribed::Last
        } else {
            Unsubscribed::OthersRemain
        }
    }
}

impl Subscriptions {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned map only means a panic mid-update; each entry in it is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes `session` (heard through `peer`) to `uri`, unless it holds `limit` already.
    pub fn subscribe(
        &self,
        uri: &str,
        session: SessionId,
        peer: Peer<RoleServer>,
        limit: usize,
    ) -> Result<Subscribed, SubscriptionLimitReached> {
        let mut state = self.state();
        let held = state.by_session.get(&session);
        if held.is_some_and(|uris| uris.contains(uri)) {
            return Ok(Subscribed::Already);
        }
        if held.map_or(0, HashSet::len) >= limit {
            return Err(SubscriptionLimitReached { limit });
        }
        state
            .by_session
            .entry(session)
            .or_default()
            .insert(uri.to_owned());
        state
            .by_uri
            .entry(uri.to_owned())
            .or_default()
            .insert(session, peer);
        Ok(Subscribed::New)
    }

    /// Removes `session`'s subscription to `uri`, and only that one.
    pub fn unsubscribe(&self, uri: &str, session: SessionId) -> Unsubscribed {
        self.state().remove(uri, session)
    }

    /// Forgets every subscription of a session that ended; returns the URIs it was the last
    /// subscriber of.
    pub fn end_session(&self, session: SessionId) -> Vec<String> {
        let mut state = self.state();
        let uris = state.by_session.remove(&session).unwrap_or_default();
        uris.into_iter()
            .filter(|uri| state.remove(uri, session) == Unsubscribed::Last)
            .collect()
    }

    /// Whether any session is subscribed to `uri`.
    pub fn is_subscribed(&self, uri: &str) -> bool {
        self.state().by_uri.contains_key(uri)
    }

    /// The peers to tell of an update of `uri`: one per subscribed session.
    pub fn subscribers(&self, uri: &str) -> Vec<Peer<RoleServer>> {
        self.state()
            .by_uri
            .get(uri)
            .map(|sessions| sessions.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Subscriptions `session` holds.
    pub fn held_by(&self, session: SessionId) -> usize {
        self.state()
            .by_session
            .get(&session)
            .map_or(0, HashSet::len)
    }
}
