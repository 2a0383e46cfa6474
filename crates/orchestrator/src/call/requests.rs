//! The requests other than `tools/call` that reach an upstream, each through
//! [`UpstreamCalls::request`] and so through the server's policy stack; `resources/read`
//! through the result cache first, as far as the upstream's cache hint allows.

use rmcp::model::{
    ClientRequest, CompleteRequest, CompleteRequestParams, CompleteResult, GetPromptRequest,
    GetPromptRequestParams, GetPromptResult, ReadResourceRequest, ReadResourceRequestParams,
    ReadResourceResult, ServerResult,
};

use serde_json::Value;

use super::upstream::UpstreamCalls;
use crate::{cache::ResultCache, context::CallContext, error::CallError, policy::Op};

/// The method a stored read is counted under.
const READ: &str = "resources/read";

/// Where a `resources/read` may be answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The cache, when an earlier read the upstream marked public and fresh is stored; else the
    /// upstream (and the answer is stored if its hint allows).
    CacheOrUpstream,
    /// The upstream, and nothing stored: an agent is subscribed to the resource, so the upstream
    /// tells of its changes, and a read after an update must not meet the copy before it.
    Upstream,
}

impl UpstreamCalls {
    /// `resources/read` of upstream `server`'s own `uri`. From the cache as `from` allows: an
    /// answer is kept only when the upstream marked it public with a positive `ttlMs`, for that
    /// long and at most the `long` tier; a hit carries what is left of the TTL and
    /// `_meta.cached: true`. Counted in the cache figures under `<server>.resources/read`.
    pub async fn read_resource(
        &self,
        server: usize,
        uri: &str,
        from: ReadFrom,
        cx: &CallContext,
    ) -> Result<ReadResourceResult, CallError> {
        let read = async {
            let request = ClientRequest::ReadResourceRequest(ReadResourceRequest::new(
                ReadResourceRequestParams::new(uri.to_owned()),
            ));
            let op = Op {
                method: "resources/read",
                target: uri,
            };
            self.request(server, op, request, cx, |r| match r {
                ServerResult::ReadResourceResult(r) => Ok(r),
                other => Err(Box::new(other)),
            })
            .await
        };
        if from == ReadFrom::Upstream {
            return read.await;
        }
        let name = self.upstreams()[server].name();
        let key = ResultCache::read_key(name, uri);
        let ttl = self.config().cache.settings.long;
        let tags = vec![format!("server:{name}")];
        let (result, lookup) = self.cache().get_or_load(key, ttl, tags, read).await;
        self.metrics()
            .cache_lookup(&format!("{name}.{READ}"), lookup);
        let mut result = std::sync::Arc::unwrap_or_clone(result?);
        if lookup == crate::cache::Lookup::Hit {
            result
                .meta
                .get_or_insert_with(Default::default)
                .insert("cached".into(), Value::Bool(true));
        }
        Ok(result)
    }

    /// Drops the stored reads of upstream `server`'s own `uri` (an agent subscribed to it: from
    /// now on the upstream tells of its changes, and reads go to it).
    pub async fn forget_reads(&self, server: usize, uri: &str) {
        self.cache()
            .invalidate_key(&ResultCache::read_key(self.upstreams()[server].name(), uri))
            .await;
    }

    /// `prompts/get` of upstream `server`'s own prompt `name`, with the agent's arguments.
    pub async fn get_prompt(
        &self,
        server: usize,
        mut params: GetPromptRequestParams,
        name: &str,
        cx: &CallContext,
    ) -> Result<GetPromptResult, CallError> {
        params.name = name.to_owned();
        let request = ClientRequest::GetPromptRequest(GetPromptRequest::new(params));
        let op = Op {
            method: "prompts/get",
            target: name,
        };
        self.request(server, op, request, cx, |r| match r {
            ServerResult::GetPromptResult(r) => Ok(r),
            other => Err(Box::new(other)),
        })
        .await
    }

    /// `completion/complete` on upstream `server` (its reference already in the server's names).
    pub async fn complete(
        &self,
        server: usize,
        params: CompleteRequestParams,
        cx: &CallContext,
    ) -> Result<CompleteResult, CallError> {
        let request = ClientRequest::CompleteRequest(CompleteRequest::new(params));
        let op = Op {
            method: "completion/complete",
            target: "",
        };
        self.request(server, op, request, cx, |r| match r {
            ServerResult::CompleteResult(r) => Ok(r),
            other => Err(Box::new(other)),
        })
        .await
    }

    /// `resources/subscribe` (or `unsubscribe`, when `on` is false) of upstream `server`'s own
    /// `uri`.
    // resources/subscribe exists on 2025-11-25; a 2026-07-28 upstream link turns it into its
    // listen stream's filter (see `upstream::listen`).
    #[allow(deprecated)]
    pub async fn subscribe(
        &self,
        server: usize,
        uri: &str,
        on: bool,
        cx: &CallContext,
    ) -> Result<(), CallError> {
        let (method, request) = if on {
            (
                "resources/subscribe",
                ClientRequest::SubscribeRequest(rmcp::model::SubscribeRequest::new(
                    rmcp::model::SubscribeRequestParams::new(uri.to_owned()),
                )),
            )
        } else {
            (
                "resources/unsubscribe",
                ClientRequest::UnsubscribeRequest(rmcp::model::UnsubscribeRequest::new(
                    rmcp::model::UnsubscribeRequestParams::new(uri.to_owned()),
                )),
            )
        };
        let op = Op {
            method,
            target: uri,
        };
        self.request(server, op, request, cx, |_| Ok(())).await
    }

    /// `logging/setLevel` of upstream `server`: asks it for messages at `level` and above.
    // Logging is deprecated from 2026-07-28 on; 2025-11-25 servers still take setLevel.
    #[allow(deprecated)]
    pub async fn set_level(
        &self,
        server: usize,
        level: rmcp::model::LoggingLevel,
        cx: &CallContext,
    ) -> Result<(), CallError> {
        let request = ClientRequest::SetLevelRequest(rmcp::model::SetLevelRequest::new(
            rmcp::model::SetLevelRequestParams::new(level),
        ));
        let op = Op {
            method: "logging/setLevel",
            target: "",
        };
        self.request(server, op, request, cx, |_| Ok(())).await
    }
}
