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
use crate::{context::CallContext, error::CallError};

type Script =
    dyn Fn(&ClientRequest) -> BoxFuture<'static, Result<ServerResult, CallError>> + Send + Sync;

/// A fake upstream connection answering from a script.
pub struct Scripted {
    offer: Arc<Offer>,
    connected: AtomicBool,
    since: DateTime<Utc>,
    script: Box<Script>,
    received: Mutex<Vec<String>>,
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
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.method().to_owned());
        (self.script)(&request)
    }
}
