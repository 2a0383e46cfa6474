//! Which agent request each upstream request in flight was made for.
//!
//! Over streamable HTTP a question should ride the response stream of the request that caused it,
//! and rmcp marks it with that request's id ([`InboundStreamOrigin`]): the match is exact. Over
//! stdio the wire says nothing (SEP-2260 defines no field), and a 2025-11-25 server may also ask on
//! its standalone HTTP stream (the TypeScript SDK does); then the question belongs to the calls in
//! flight on that upstream: when they are all one agent session's, that session gets it; when
//! several sessions have calls there, nobody can tell whose it is, and the upstream is told so
//! rather than the question going to the wrong person. (rmcp itself refuses an unassociated
//! question from a 2026-07-28 server before it gets here.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use rmcp::{model::RequestId, service::InboundStreamOrigin};
use tokio::sync::Notify;

use super::Origin;

/// How long a question waits for the registration of the request it belongs to: the upstream
/// can only ask after it read the request, but the registration is made just after the request
/// was handed to the transport, so on a busy machine it may come a moment late.
const REGISTRATION_GRACE: Duration = Duration::from_millis(500);

/// Why a question has no agent to go to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoOrigin {
    /// The request it names is not (or no longer) in flight.
    #[error("the call this request belongs to is no longer in flight")]
    Finished,
    /// Nothing is in flight on the upstream.
    #[error(
        "no call is in flight on this connection: the orchestrator only relays questions to the \
         agent whose call caused them"
    )]
    NoCall,
    /// Calls of several agent sessions are in flight and the transport cannot say whose it is.
    #[error(
        "calls of {sessions} agent sessions are in flight on this connection and the request \
         does not say which one it belongs to (ask on the response stream of the call, or over \
         a transport that can)"
    )]
    Ambiguous {
        /// How many sessions have calls in flight.
        sessions: usize,
    },
}

#[derive(Debug)]
struct Entry {
    /// Registration order, so the newest of a session's calls is used over stdio.
    seq: u64,
    origin: Arc<Origin>,
}

#[derive(Debug, Default)]
struct Table {
    /// By server name, then by the upstream request's id.
    by_server: HashMap<String, HashMap<RequestId, Entry>>,
    next_seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    table: Mutex<Table>,
    registered: Notify,
}

/// The registry, shared by the call path (which registers) and every upstream's client handler
/// (which looks up).
#[derive(Debug, Clone, Default)]
pub struct Origins(Arc<Inner>);

/// Keeps an upstream request's origin registered while the request is in flight.
#[derive(Debug)]
pub struct Registration {
    origins: Origins,
    server: String,
    upstream: RequestId,
    seq: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut table = self.origins.table();
        if let Some(requests) = table.by_server.get_mut(&self.server) {
            if requests
                .get(&self.upstream)
                .is_some_and(|e| e.seq == self.seq)
            {
                requests.remove(&self.upstream);
            }
            if requests.is_empty() {
                table.by_server.remove(&self.server);
            }
        }
    }
}

impl Origins {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `server`'s request `upstream` was made for `origin`, until the returned
    /// registration is dropped.
    pub fn register(&self, server: &str, upstream: RequestId, origin: Arc<Origin>) -> Registration {
        let mut table = self.table();
        let seq = table.next_seq;
        table.next_seq += 1;
        let requests = match table.by_server.get_mut(server) {
            Some(requests) => requests,
            None => table.by_server.entry(server.to_owned()).or_default(),
        };
        requests.insert(upstream.clone(), Entry { seq, origin });
        drop(table);
        self.0.registered.notify_waiters();
        Registration {
            origins: self.clone(),
            server: server.to_owned(),
            upstream,
            seq,
        }
    }

    /// The origin of a request `server` sent us, told by the stream it came on (`None`: a
    /// transport that cannot say, such as stdio; `Unassociated`: the standalone stream).
    pub async fn find(
        &self,
        server: &str,
        stream: Option<&InboundStreamOrigin>,
    ) -> Result<Arc<Origin>, NoOrigin> {
        match stream {
            Some(InboundStreamOrigin::OutboundRequest(id)) => {
                let deadline = tokio::time::Instant::now() + REGISTRATION_GRACE;
                loop {
                    let registered = self.0.registered.notified();
                    if let Some(origin) = self.exact(server, id) {
                        return Ok(origin);
                    }
                    if tokio::time::timeout_at(deadline, registered).await.is_err() {
                        return Err(NoOrigin::Finished);
                    }
                }
            }
            Some(InboundStreamOrigin::Unassociated) | None => {
                let deadline = tokio::time::Instant::now() + REGISTRATION_GRACE;
                loop {
                    let registered = self.0.registered.notified();
                    match self.only_session(server) {
                        Err(NoOrigin::NoCall) => {}
                        found => return found,
                    }
                    if tokio::time::timeout_at(deadline, registered).await.is_err() {
                        return Err(NoOrigin::NoCall);
                    }
                }
            }
        }
    }

    fn exact(&self, server: &str, id: &RequestId) -> Option<Arc<Origin>> {
        let table = self.table();
        Some(table.by_server.get(server)?.get(id)?.origin.clone())
    }

    /// The newest call of the one session with calls in flight on `server`.
    fn only_session(&self, server: &str) -> Result<Arc<Origin>, NoOrigin> {
        let table = self.table();
        let entries = table.by_server.get(server).ok_or(NoOrigin::NoCall)?;
        let newest = entries
            .values()
            .max_by_key(|e| e.seq)
            .ok_or(NoOrigin::NoCall)?;
        let session = newest.origin.session;
        let others: std::collections::HashSet<_> = entries
            .values()
            .map(|e| e.origin.session)
            .filter(|s| *s != session)
            .collect();
        if others.is_empty() {
            Ok(newest.origin.clone())
        } else {
            Err(NoOrigin::Ambiguous {
                sessions: others.len() + 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use rmcp::{RoleServer, ServerHandler, ServiceExt, service::RunningService};

    use super::*;
    use crate::{ask::UserWait, subscriptions::SessionId};

    struct Front;
    impl ServerHandler for Front {}

    /// An agent session over an in-memory pipe, and its agent (kept alive with it).
    async fn agent() -> (
        RunningService<RoleServer, Front>,
        RunningService<rmcp::RoleClient, ()>,
    ) {
        let (front, agent) = tokio::io::duplex(64 * 1024);
        let (front, agent) = tokio::join!(Front.serve(front), ().serve(agent));
        (front.expect("front"), agent.expect("agent"))
    }

    fn of(front: &RunningService<RoleServer, Front>, session: SessionId) -> Arc<Origin> {
        Arc::new(Origin {
            agent: front.peer().clone(),
            request: RequestId::Number(1),
            session,
            capabilities: None,
            protocol: None,
            wait: UserWait::default(),
            ct: Default::default(),
            questions: None,
        })
    }

    #[tokio::test]
    async fn a_question_on_a_calls_stream_goes_to_that_call() {
        let (front, _agent) = agent().await;
        let (a, b) = (SessionId::next(), SessionId::next());
        let origins = Origins::default();
        let _one = origins.register("sql", RequestId::Number(7), of(&front, a));
        let _two = origins.register("sql", RequestId::Number(8), of(&front, b));
        let stream = InboundStreamOrigin::OutboundRequest(RequestId::Number(8));
        let found = origins.find("sql", Some(&stream)).await.expect("found");
        assert_eq!(found.session, b);
    }

    #[tokio::test]
    async fn without_a_stream_only_one_sessions_calls_can_be_told() {
        let (front, _agent) = agent().await;
        let (a, b) = (SessionId::next(), SessionId::next());
        let origins = Origins::default();
        assert_eq!(
            origins.find("sql", None).await.err(),
            Some(NoOrigin::NoCall)
        );
        let one = origins.register("sql", RequestId::Number(1), of(&front, a));
        let _two = origins.register("sql", RequestId::Number(2), of(&front, a));
        assert_eq!(
            origins
                .find("sql", None)
                .await
                .expect("one session")
                .session,
            a
        );
        let three = origins.register("sql", RequestId::Number(3), of(&front, b));
        assert_eq!(
            origins
                .find("sql", Some(&InboundStreamOrigin::Unassociated))
                .await
                .err(),
            Some(NoOrigin::Ambiguous { sessions: 2 })
        );
        // Another server's calls do not count.
        assert_eq!(
            origins.find("rest", None).await.err(),
            Some(NoOrigin::NoCall)
        );
        drop(three);
        drop(one);
        assert_eq!(
            origins.find("sql", None).await.expect("a's again").session,
            a
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_question_for_a_finished_call_is_refused() {
        let (front, _agent) = agent().await;
        let origins = Origins::default();
        drop(origins.register("sql", RequestId::Number(1), of(&front, SessionId::next())));
        let stream = InboundStreamOrigin::OutboundRequest(RequestId::Number(1));
        assert_eq!(
            origins.find("sql", Some(&stream)).await.err(),
            Some(NoOrigin::Finished)
        );
    }
}
