//! The requests other than `tools/call` that reach an upstream, each through
//! [`UpstreamCalls::request`] and so through the server's policy stack.

use rmcp::model::{
    ClientRequest, CompleteRequest, CompleteRequestParams, CompleteResult, GetPromptRequest,
    GetPromptRequestParams, GetPromptResult, ReadResourceRequest, ReadResourceRequestParams,
    ReadResourceResult, ServerResult,
};

use super::upstream::UpstreamCalls;
use crate::{context::CallContext, error::CallError, policy::Op};

impl UpstreamCalls {
    /// `resources/read` of upstream `server`'s own `uri`.
    pub async fn read_resource(
        &self,
        server: usize,
        uri: &str,
        cx: &CallContext,
    ) -> Result<ReadResourceResult, CallError> {
        let request = ClientRequest::ReadResourceRequest(ReadResourceRequest::new(
            ReadResourceRequestParams::new(uri.to_owned()),
        ));
        let op = Op {
            method: "resources/read",
            target: uri,
        };
        self.request(server, op, request, cx, |r| match r {
            ServerResult::ReadResourceResult(r) => Some(r),
            _ => None,
        })
        .await
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
            ServerResult::GetPromptResult(r) => Some(r),
            _ => None,
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
            ServerResult::CompleteResult(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// `resources/subscribe` (or `unsubscribe`, when `on` is false) of upstream `server`'s own
    /// `uri`.
    // Upstreams are reached over 2025-11-25, where resources/subscribe is the way to subscribe.
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
        self.request(server, op, request, cx, |_| Some(())).await
    }
}
