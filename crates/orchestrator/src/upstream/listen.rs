//! A 2026-07-28 server tells of changes only on a `subscriptions/listen` stream the client opens:
//! its list changes and the updates of the resources named in the stream's filter. This keeps
//! one such stream open per connection, with the resources agents are subscribed to, and opens it
//! again when that set changes: `resources/subscribe` and `resources/unsubscribe` to such a
//! server change the set instead of going out (it would answer them `-32601`).

use std::{collections::BTreeSet, sync::Mutex};

use rmcp::{
    Peer, RoleClient,
    model::{ProtocolVersion, ServerNotification, SubscriptionFilter},
};
use tokio::sync::Notify;

/// What a listen stream said.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// A list (tools, resources, prompts) changed.
    List,
    /// The resource with this (upstream) URI changed.
    Updated(String),
}

/// The upstream resources agents are subscribed to, for the listen filter.
#[derive(Debug, Default)]
pub struct Watched {
    uris: Mutex<BTreeSet<String>>,
    changed: Notify,
}

impl Watched {
    /// Adds or removes `uri`; the stream is opened again with the new set.
    pub fn set(&self, uri: &str, on: bool) {
        let mut uris = self.uris.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if on {
            uris.insert(uri.to_owned())
        } else {
            uris.remove(uri)
        };
        drop(uris);
        if changed {
            self.changed.notify_one();
        }
    }

    fn filter(&self) -> SubscriptionFilter {
        let uris = self.uris.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let builder = SubscriptionFilter::builder()
            .tools_list_changed()
            .prompts_list_changed()
            .resources_list_changed();
        if uris.is_empty() {
            builder.build()
        } else {
            builder.resource_subscriptions(uris).build()
        }
    }
}

/// Whether `peer` speaks an era where changes come only through `subscriptions/listen`.
pub fn is_modern(peer: &Peer<RoleClient>) -> bool {
    peer.peer_info()
        .is_some_and(|info| info.protocol_version >= ProtocolVersion::V_2026_07_28)
}

/// Keeps a listen stream open on `peer` for as long as the connection lasts, telling `on_change`
/// what it hears. Returns only if the server cannot listen (it is then polled through its lists'
/// cache hints alone), with why.
pub async fn listen(
    peer: &Peer<RoleClient>,
    watched: &Watched,
    on_change: impl Fn(Change),
) -> String {
    loop {
        let mut subscription = match peer.listen(watched.filter()).await {
            Ok(subscription) => subscription,
            Err(e) => return format!("subscriptions/listen failed: {e}"),
        };
        // Changes made while the stream was closed are not lost: lists are listed again.
        on_change(Change::List);
        loop {
            tokio::select! {
                next = subscription.next() => match next {
                    Ok(Some(notification)) => {
                        if let Some(change) = change_of(notification) {
                            on_change(change);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return format!("the listen stream failed: {e}"),
                },
                () = watched.changed.notified() => break,
            }
        }
    }
}

fn change_of(notification: ServerNotification) -> Option<Change> {
    match notification {
        ServerNotification::ToolListChangedNotification(_)
        | ServerNotification::ResourceListChangedNotification(_)
        | ServerNotification::PromptListChangedNotification(_) => Some(Change::List),
        ServerNotification::ResourceUpdatedNotification(n) => Some(Change::Updated(n.params.uri)),
        _ => None,
    }
}
