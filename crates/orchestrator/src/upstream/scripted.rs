//! A scripted [`Link`] for unit tests of the call path: no process, no socket. Each request is
//! answered by the script the test gives, and every request received is noted, so a test can
//! show what reached the upstream and what did not.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rmcp::model::{ClientRequest, ServerResult};

use super::{Link, Offer};
use crate::{context::CallContext, error::CallError, policy::breaker::Breaker};

type Script =
    dyn Fn(&ClientRequest) -> BoxFuture<'static, Result<ServerResult, CallError>> + Send + Sync;

/// A fake upstream connection answering from a script.
pub struct Scripted {
    offer: Arc<Offer>,
    connected: AtomicBool,
    since: DateTime<Utc>,
    script: Box<Script>,
    received: Mutex<Vec<String>>,
    /// Told when the connection is lost or restored, as the real supervisor tells it.
    breaker: Mutex<Option<Arc<Breaker>>>,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripted")
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Scripted {
    /// A connected link offering `offer`, answering each request with `script`.
    pub fn new(
        offer: Offer,
        script: impl Fn(&ClientRequest) -> BoxFuture<'static, Result<ServerResult, CallError>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            offer: Arc::new(offer),
            connected: AtomicBool::new(true),
            since: Utc::now(),
            script: Box::new(script),
            received: Mutex::new(Vec::new()),
            breaker: Mutex::new(None),
        }
    }

    /// Tells `breaker` of connection changes from now on.
    pub fn watched_by(&self, breaker: Arc<Breaker>) {
        *self.breaker.lock().unwrap_or_else(|e| e.into_inner()) = Some(breaker);
    }

    /// The connection ends, as when the server process is killed: requests fail as not connected.
    pub fn lose_connection(&self) {
        self.connected.store(false, Ordering::SeqCst);
        if let Some(b) = self
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            b.connection_lost("connection closed");
        }
    }

    /// The connection is back (initialized and listed again).
    pub fn restore_connection(&self) {
        self.connected.store(true, Ordering::SeqCst);
        if let Some(b) = self
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            b.connection_restored();
        }
    }

    /// The method of every request that reached this link, in order.
    pub fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Link for Scripted {
    fn offer(&self) -> Arc<Offer> {
        self.offer.clone()
    }

    fn connected_since(&self) -> Option<DateTime<Utc>> {
        self.connected.load(Ordering::SeqCst).then_some(self.since)
    }

    fn send<'a>(
        &'a self,
        request: ClientRequest,
        _cx: &'a CallContext,
    ) -> BoxFuture<'a, Result<ServerResult, CallError>> {
        if !self.connected.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(CallError::NotConnected {
                    server: "scripted".into(),
                    last_error: Some("connection closed".into()),
                })
            });
        }
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.method().to_owned());
        (self.script)(&request)
    }
}
