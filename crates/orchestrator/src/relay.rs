//! Carries notifications between upstreams and agents: progress by token, list changes, resource
//! updates.
//!
//! Each upstream request gets a progress token of rmcp's choosing; the relay remembers which
//! agent (and which of the agent's tokens) it stands for, so an upstream's progress reaches the
//! agent that asked, under the agent's own token.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Instant,
};

use rmcp::{
    Peer, RoleServer,
    model::{ProgressNotificationParam, ProgressToken},
};

use crate::subscriptions::Subscriptions;

/// Where one upstream progress token leads.
#[derive(Debug, Clone)]
struct ProgressRoute {
    agent: Peer<RoleServer>,
    token: ProgressToken,
    /// Which registration made it (a reconnected upstream starts its tokens over, so a key can
    /// come back while the previous route with that key is still in its grace period).
    id: u64,
    /// When the route closes: `None` while its call runs, [`PROGRESS_GRACE`] after it ended.
    closes: Option<Instant>,
}

type ProgressKey = (String, ProgressToken);

/// Progress routes, and the routes of finished calls in the order they close.
#[derive(Debug, Default)]
struct ProgressRoutes {
    routes: HashMap<ProgressKey, ProgressRoute>,
    closing: VecDeque<(Instant, ProgressKey, u64)>,
    next_id: u64,
}

impl ProgressRoutes {
    /// Removes the routes whose grace period is over. Every call gets the same grace, so
    /// `closing` is in closing order and this stops at the first route still open.
    fn purge(&mut self, now: Instant) {
        while self
            .closing
            .front()
            .is_some_and(|(closes, ..)| *closes <= now)
        {
            let Some((_, key, id)) = self.closing.pop_front() else {
                break;
            };
            if self.routes.get(&key).is_some_and(|r| r.id == id) {
                self.routes.remove(&key);
            }
        }
    }
}

/// Shared by the frontend and every upstream's client handler.
#[derive(Debug, Default)]
pub struct Relay {
    progress: Mutex<ProgressRoutes>,
    agents: Mutex<Vec<Peer<RoleServer>>>,
    /// Agents' resource subscriptions, by session and exposed URI.
    subscriptions: Subscriptions,
    /// The agent request behind each upstream request in flight, where its questions go.
    origins: crate::ask::Origins,
    /// The log level each agent session asked for.
    log_levels: crate::agent_logs::AgentLevels,
    /// List changes, for 2026-07-28 agents, who hear of them through `subscriptions/listen`
    /// rather than as session notifications.
    changes: ListChanges,
    /// Progress notifications read from a stdio upstream and not yet passed on, by route key.
    arrivals: Mutex<HashMap<ProgressKey, u64>>,
    /// Woken whenever a counted notification was passed on (or found no route).
    passed: tokio::sync::Notify,
}

/// Which list changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListChange {
    /// `notifications/tools/list_changed`.
    Tools,
    /// `notifications/resources/list_changed`.
    Resources,
    /// `notifications/prompts/list_changed`.
    Prompts,
}

/// A broadcast of list changes; a listener that falls behind is told every list changed.
#[derive(Debug)]
struct ListChanges(tokio::sync::broadcast::Sender<ListChange>);

impl Default for ListChanges {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(64).0)
    }
}

/// Closes a progress route when the call it belongs to ends, however it ends.
#[derive(Debug)]
pub struct ProgressRegistration {
    relay: Arc<Relay>,
    key: ProgressKey,
    id: u64,
}

/// How long a finished call's progress route stays open. An upstream's last progress
/// notification is sent before its result, but the two are handled concurrently here, so the
/// result can win the race; the route must outlive it briefly for that notification to arrive.
const PROGRESS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl Drop for ProgressRegistration {
    /// Starts the route's grace period. Closed routes are removed by later registrations, call
    /// ends and progress lookups, and never used past their closing time: no task or timer per
    /// call (a sleeping task per call cost the runtime about one extra wake-up per call).
    fn drop(&mut self) {
        let mut progress = self
            .relay
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        progress.purge(now);
        let closes = now + PROGRESS_GRACE;
        if let Some(route) = progress.routes.get_mut(&self.key)
            && route.id == self.id
        {
            route.closes = Some(closes);
            progress
                .closing
                .push_back((closes, self.key.clone(), self.id));
        }
    }
}

impl Relay {
    /// Routes `server`'s progress under `upstream_token` to `agent` as `agent_token`.
    pub fn register_progress(
        self: &Arc<Self>,
        server: &str,
        upstream_token: ProgressToken,
        agent: Peer<RoleServer>,
        agent_token: ProgressToken,
    ) -> ProgressRegistration {
        let key = (server.to_owned(), upstream_token);
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.purge(Instant::now());
        let id = progress.next_id;
        progress.next_id += 1;
        progress.routes.insert(
            key.clone(),
            ProgressRoute {
                agent,
                token: agent_token,
                id,
                closes: None,
            },
        );
        drop(progress);
        ProgressRegistration {
            relay: self.clone(),
            key,
            id,
        }
    }

    /// Counts a progress notification as read from `server`, in the order of its stream, before
    /// it is handed on for handling. rmcp handles each notification in a task of its own, so the
    /// answer read after it can reach its caller first; [`Relay::progress_settled`] lets the call
    /// wait for the notifications read before its answer.
    pub fn progress_arrived(&self, server: &str, token: &ProgressToken) {
        *self
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((server.to_owned(), token.clone()))
            .or_default() += 1;
    }

    /// Waits (at most `within`) until every progress notification counted for `server`'s
    /// `token` has been passed on, so a call's last progress reaches the agent before its result.
    pub async fn progress_settled(
        &self,
        server: &str,
        token: &ProgressToken,
        within: std::time::Duration,
    ) {
        let key = (server.to_owned(), token.clone());
        let settled = async {
            loop {
                // Created before the check, so a notification passed on between the two wakes us.
                let passed = self.passed.notified();
                if !self
                    .arrivals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&key)
                {
                    return;
                }
                passed.await;
            }
        };
        if tokio::time::timeout(within, settled).await.is_err() {
            tracing::debug!(server, "progress still being passed on when the call ended");
        }
    }

    /// Notes that one counted notification of `key` was handled.
    fn progress_passed(&self, key: &ProgressKey) {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = arrivals.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                arrivals.remove(key);
            }
            drop(arrivals);
            self.passed.notify_waiters();
        }
    }

    /// Passes an upstream's progress notification to the agent waiting for it, if any.
    pub async fn forward_progress(&self, server: &str, params: ProgressNotificationParam) {
        let key = (server.to_owned(), params.progress_token.clone());
        self.pass_progress(server, params).await;
        self.progress_passed(&key);
    }

    async fn pass_progress(&self, server: &str, mut params: ProgressNotificationParam) {
        let route = {
            let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            progress.purge(now);
            progress
                .routes
                .get(&(server.to_owned(), params.progress_token.clone()))
                .filter(|r| r.closes.is_none_or(|closes| closes > now))
                .cloned()
        };
        if let Some(route) = route {
            params.progress_token = route.token;
            if let Err(e) = route.agent.notify_progress(params).await {
                tracing::debug!(server, error = %e, "agent gone before progress could be passed on");
            }
        }
    }

    /// Remembers an agent so it hears about catalog changes.
    pub fn add_agent(&self, agent: Peer<RoleServer>) {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.retain(|a| !a.is_transport_closed());
        agents.push(agent);
    }

    /// Tells every connected agent that the tool list changed.
    pub async fn tools_changed(&self) {
        let _ = self.changes.0.send(ListChange::Tools);
        for agent in self.live_agents() {
            if let Err(e) = agent.notify_tool_list_changed().await {
                tracing::debug!(error = %e, "could not tell an agent that tools changed");
            }
        }
    }

    /// Tells every connected agent that the resource list changed.
    pub async fn resources_changed(&self) {
        let _ = self.changes.0.send(ListChange::Resources);
        for agent in self.live_agents() {
            let _ = agent.notify_resource_list_changed().await;
        }
    }

    /// Tells every connected agent that the prompt list changed.
    pub async fn prompts_changed(&self) {
        let _ = self.changes.0.send(ListChange::Prompts);
        for agent in self.live_agents() {
            let _ = agent.notify_prompt_list_changed().await;
        }
    }

    /// List changes from now on (for a `subscriptions/listen` stream).
    pub fn list_changes(&self) -> tokio::sync::broadcast::Receiver<ListChange> {
        self.changes.0.subscribe()
    }

    /// Agents' resource subscriptions: the front subscribes and unsubscribes sessions here.
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// The agent request behind each upstream request in flight.
    pub fn origins(&self) -> &crate::ask::Origins {
        &self.origins
    }

    /// The log level each agent session asked for.
    pub fn log_levels(&self) -> &crate::agent_logs::AgentLevels {
        &self.log_levels
    }

    /// Passes `server`'s log message to every agent that asked for its level.
    #[allow(deprecated)] // Logging: deprecated from 2026-07-28 on, used by 2025-11-25 peers.
    pub async fn log_message(
        &self,
        server: &str,
        message: rmcp::model::LoggingMessageNotificationParam,
    ) {
        let recipients = self.log_levels.recipients(message.level);
        if recipients.is_empty() {
            return;
        }
        let message = crate::agent_logs::tagged(server, message);
        for agent in recipients {
            if let Err(e) = agent.notify_logging_message(message.clone()).await {
                tracing::debug!(error = %e, "could not pass a log message to an agent");
            }
        }
    }

    /// Passes an upstream's resource update to the agents subscribed to it, once per session.
    pub async fn resource_updated(&self, server: &str, uri: &str) {
        self.exposed_resource_updated(&crate::naming::expose_uri(server, uri))
            .await;
    }

    /// Passes an update of the resource agents know as `exposed` to the agents subscribed to it.
    pub async fn exposed_resource_updated(&self, exposed: &str) {
        let exposed = exposed.to_owned();
        for agent in self.subscriptions.subscribers(&exposed) {
            if agent.is_transport_closed() {
                continue;
            }
            let _ = agent
                .notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                    exposed.clone(),
                ))
                .await;
        }
    }

    fn live_agents(&self) -> Vec<Peer<RoleServer>> {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.retain(|a| !a.is_transport_closed());
        agents.clone()
    }
}

#[cfg(test)]
mod tests {
    use rmcp::{
        ClientHandler, RoleClient, ServerHandler, ServiceExt,
        model::{NumberOrString, ResourceUpdatedNotificationParam},
        service::{NotificationContext, RunningService},
    };
    use tokio::sync::mpsc;

    use super::*;
    use crate::subscriptions::{SessionId, Subscribed, SubscriptionLimitReached, Unsubscribed};

    /// The orchestrator's side of an agent session; it answers nothing of its own here.
    struct Front;
    impl ServerHandler for Front {}

    /// What the agent hears.
    #[derive(Debug)]
    enum Heard {
        Progress(ProgressNotificationParam),
        Updated(String),
    }

    /// An agent that notes every progress and resource update it hears.
    #[derive(Clone)]
    struct Agent(mpsc::UnboundedSender<Heard>);

    impl ClientHandler for Agent {
        async fn on_progress(
            &self,
            params: ProgressNotificationParam,
            _context: NotificationContext<RoleClient>,
        ) {
            let _ = self.0.send(Heard::Progress(params));
        }

        async fn on_resource_updated(
            &self,
            params: ResourceUpdatedNotificationParam,
            _context: NotificationContext<RoleClient>,
        ) {
            let _ = self.0.send(Heard::Updated(params.uri));
        }
    }

    type Session = (
        RunningService<RoleServer, Front>,
        RunningService<RoleClient, Agent>,
        mpsc::UnboundedReceiver<Heard>,
    );

    /// An agent session over an in-memory pipe: no process, no socket.
    async fn session() -> Session {
        let (front, agent) = tokio::io::duplex(64 * 1024);
        let (heard, hearing) = mpsc::unbounded_channel();
        let (front, agent) = tokio::join!(Front.serve(front), Agent(heard).serve(agent));
        (
            front.expect("the front's handshake"),
            agent.expect("the agent's handshake"),
            hearing,
        )
    }

    fn token(n: i64) -> ProgressToken {
        ProgressToken(NumberOrString::Number(n))
    }

    async fn next(hearing: &mut mpsc::UnboundedReceiver<Heard>) -> Heard {
        tokio::time::timeout(std::time::Duration::from_secs(5), hearing.recv())
            .await
            .expect("the agent heard something")
            .expect("the session is open")
    }

    #[tokio::test]
    async fn an_upstreams_progress_reaches_the_agent_that_asked_under_the_agents_own_token() {
        let relay = Arc::new(Relay::default());
        let (front, _agent, mut hearing) = session().await;
        let agent_token = ProgressToken(NumberOrString::String("agent-call-1".into()));
        let _call = relay.register_progress("sql", token(7), front.peer().clone(), agent_token);
        // Another server's token 7 belongs to another call: not this agent's.
        relay
            .forward_progress("cosmos", ProgressNotificationParam::new(token(7), 9.0))
            .await;
        relay
            .forward_progress(
                "sql",
                ProgressNotificationParam::new(token(7), 1.0).with_total(2.0),
            )
            .await;
        match next(&mut hearing).await {
            Heard::Progress(p) => {
                assert_eq!(
                    p.progress_token.0,
                    NumberOrString::String("agent-call-1".into())
                );
                assert_eq!((p.progress, p.total), (1.0, Some(2.0)));
            }
            other => panic!("expected progress, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn progress_for_no_call_in_flight_goes_nowhere() {
        let relay = Arc::new(Relay::default());
        let (front, _agent, mut hearing) = session().await;
        relay
            .forward_progress("sql", ProgressNotificationParam::new(token(1), 1.0))
            .await;
        // A later, routed notification is the first thing the agent hears.
        let _call = relay.register_progress("sql", token(2), front.peer().clone(), token(20));
        relay
            .forward_progress("sql", ProgressNotificationParam::new(token(2), 5.0))
            .await;
        match next(&mut hearing).await {
            Heard::Progress(p) => assert_eq!((p.progress_token, p.progress), (token(20), 5.0)),
            other => panic!("expected progress, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_resource_update_reaches_its_subscribers_under_the_exposed_uri() {
        let relay = Arc::new(Relay::default());
        let (front, _agent, mut hearing) = session().await;
        let exposed = crate::naming::expose_uri("docs", "file:///a.txt");
        let subscribed =
            relay
                .subscriptions()
                .subscribe(&exposed, SessionId::next(), front.peer().clone(), 10);
        assert_eq!(subscribed, Ok(Subscribed::New));
        relay.resource_updated("other", "file:///a.txt").await;
        relay.resource_updated("docs", "file:///a.txt").await;
        match next(&mut hearing).await {
            Heard::Updated(uri) => assert_eq!(uri, "docs+file:///a.txt"),
            other => panic!("expected an update, got {other:?}"),
        }
    }

    /// Updates heard until a marker update of `docs+file:///end` (sent last) arrives.
    async fn updates_until_the_end_marker(
        hearing: &mut mpsc::UnboundedReceiver<Heard>,
    ) -> Vec<String> {
        let mut heard = Vec::new();
        loop {
            match next(hearing).await {
                Heard::Updated(uri) if uri == "docs+file:///end" => return heard,
                Heard::Updated(uri) => heard.push(uri),
                other => panic!("expected an update, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_session_subscribing_many_times_hears_each_change_once() {
        let relay = Arc::new(Relay::default());
        let (front, _agent, mut hearing) = session().await;
        let me = SessionId::next();
        let subs = relay.subscriptions();
        assert_eq!(
            subs.subscribe("docs+file:///a.txt", me, front.peer().clone(), 10),
            Ok(Subscribed::New)
        );
        for _ in 0..500 {
            assert_eq!(
                subs.subscribe("docs+file:///a.txt", me, front.peer().clone(), 10),
                Ok(Subscribed::Already)
            );
        }
        assert_eq!(subs.held_by(me), 1);
        let _ = subs.subscribe("docs+file:///end", me, front.peer().clone(), 10);
        relay.resource_updated("docs", "file:///a.txt").await;
        relay.resource_updated("docs", "file:///end").await;
        assert_eq!(
            updates_until_the_end_marker(&mut hearing).await,
            ["docs+file:///a.txt"]
        );
    }

    #[tokio::test]
    async fn one_agents_unsubscribe_leaves_another_agents_subscription_alone() {
        let relay = Arc::new(Relay::default());
        // Two sessions whose agents present the same clientInfo (rmcp's default).
        let (front_a, _agent_a, mut hearing_a) = session().await;
        let (front_b, _agent_b, mut hearing_b) = session().await;
        assert_eq!(front_a.peer().peer_info(), front_b.peer().peer_info());
        let (a, b) = (SessionId::next(), SessionId::next());
        let subs = relay.subscriptions();
        let uri = "docs+file:///a.txt";
        assert_eq!(
            subs.subscribe(uri, a, front_a.peer().clone(), 10),
            Ok(Subscribed::New)
        );
        assert_eq!(
            subs.subscribe(uri, b, front_b.peer().clone(), 10),
            Ok(Subscribed::New)
        );
        assert_eq!(subs.unsubscribe(uri, a), Unsubscribed::OthersRemain);
        assert_eq!(subs.unsubscribe(uri, a), Unsubscribed::NotSubscribed);
        for (session, front) in [(a, &front_a), (b, &front_b)] {
            let _ = subs.subscribe("docs+file:///end", session, front.peer().clone(), 10);
        }
        relay.resource_updated("docs", "file:///a.txt").await;
        relay.resource_updated("docs", "file:///end").await;
        assert_eq!(
            updates_until_the_end_marker(&mut hearing_a).await,
            Vec::<String>::new()
        );
        assert_eq!(updates_until_the_end_marker(&mut hearing_b).await, [uri]);
        // The last subscriber leaving is what lets the upstream subscription go.
        assert_eq!(subs.unsubscribe(uri, b), Unsubscribed::Last);
        assert!(!subs.is_subscribed(uri));
    }

    #[tokio::test]
    async fn a_session_holds_at_most_its_limit_and_an_ended_session_lets_go_of_all() {
        let relay = Arc::new(Relay::default());
        let (front, _agent, _hearing) = session().await;
        let (me, other) = (SessionId::next(), SessionId::next());
        let subs = relay.subscriptions();
        for i in 0..3 {
            let uri = format!("docs+file:///{i}");
            assert_eq!(
                subs.subscribe(&uri, me, front.peer().clone(), 3),
                Ok(Subscribed::New)
            );
        }
        let refused = subs
            .subscribe("docs+file:///3", me, front.peer().clone(), 3)
            .expect_err("a fourth subscription");
        assert_eq!(refused, SubscriptionLimitReached { limit: 3 });
        let error = refused.to_error_data();
        assert!(
            error.message.contains("3")
                && error.message.contains(crate::subscriptions::CONFIG_PATH),
            "{}",
            error.message
        );
        // Subscribing again to one held is no new subscription, so it is not refused.
        assert_eq!(
            subs.subscribe("docs+file:///0", me, front.peer().clone(), 3),
            Ok(Subscribed::Already)
        );
        // Another session has its own count.
        assert_eq!(
            subs.subscribe("docs+file:///0", other, front.peer().clone(), 3),
            Ok(Subscribed::New)
        );
        let mut orphaned = subs.end_session(me);
        orphaned.sort();
        assert_eq!(orphaned, ["docs+file:///1", "docs+file:///2"]);
        assert_eq!(subs.held_by(me), 0);
        assert!(subs.is_subscribed("docs+file:///0"));
    }
}
