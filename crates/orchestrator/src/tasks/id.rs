//! Task ids as agents see them: `<server>.<sealed upstream id>`.
//!
//! All agents share one connection to each upstream, so to the upstream every task belongs to
//! the orchestrator. The exposed id must therefore say which upstream owns the task, and must
//! not let an agent reach a task it was never given: one it guessed (servers that number their
//! tasks `1`, `2`, ...) or one of another server with the server part changed. So the upstream's
//! id is sealed with an HMAC over the server's name ([`RequestStateCodec`], with associated data
//! `task:<server>`), under a key drawn at start and never shown: an id this orchestrator did not
//! issue, or one changed in any character, does not open. The seal signs and does not hide: the
//! upstream's id is base64url-readable inside it.
//!
//! The server's name comes first, in the clear, so an id routes without trying every key, and
//! operators can read whose task it is; server names hold only A-Z a-z 0-9 `_` `-`, so the first
//! `.` ends it. Every character is one an HTTP header may carry, as 2026-07-28 requires of the
//! `Mcp-Name` header that repeats the id of `tasks/get`, `tasks/update` and `tasks/cancel`.
//!
//! The key is derived from `MCP_ORCHESTRATOR_STATE_KEY` when it is set (as `requestState`'s is),
//! so instances behind one load balancer open each other's ids (useful when they share an HTTP
//! upstream). Without it each process draws its own, and after a restart the old ids no longer
//! open (a stdio upstream's tasks are gone with its process by then anyway).

use rmcp::model::{RequestStateCodec, SealOptions};

use crate::ask::suspend::KEY_ENV;

/// What separates the server's name from the sealed id.
const SEPARATOR: char = '.';

/// Why an exposed task id leads nowhere. Each message names the id, as the agent sent it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskIdError {
    /// Not of the form `<server>.<sealed id>`.
    #[error(
        "unknown task `{id}`: the orchestrator's task ids read `<server>.<sealed id>`, as a \
         task-augmented tools/call returned them"
    )]
    Malformed {
        /// The id as sent.
        id: String,
    },
    /// The server it names is not one of the orchestrator's.
    #[error("unknown task `{id}`: there is no server `{server}`")]
    UnknownServer {
        /// The id as sent.
        id: String,
        /// The server it names.
        server: String,
    },
    /// The seal does not open: changed, made up, or issued before a restart.
    #[error(
        "unknown task `{id}`: not a task id this orchestrator issued for server `{server}` \
         (changed, made up, or from before a restart)"
    )]
    NotIssued {
        /// The id as sent.
        id: String,
        /// The server it names.
        server: String,
    },
}

/// Seals upstream task ids into exposed ones, and opens them again.
#[derive(Debug, Clone)]
pub struct TaskIds {
    /// Keyed with random bytes of its own: no other value this process seals (an MRTR request
    /// state, say) can pass for a task id, whatever the format shares.
    codec: RequestStateCodec,
}

impl Default for TaskIds {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskIds {
    /// A codec keyed from [`KEY_ENV`] when it holds a usable key, else from fresh random bytes.
    pub fn new() -> Self {
        let shared = std::env::var(KEY_ENV)
            .ok()
            .filter(|k| k.len() >= RequestStateCodec::MIN_KEY_LENGTH);
        match shared {
            Some(secret) => Self::derived_from(secret.as_bytes()),
            None => {
                let key: [u8; RequestStateCodec::MIN_KEY_LENGTH] = rand::random();
                Self {
                    codec: RequestStateCodec::new_unchecked(key.to_vec()),
                }
            }
        }
    }

    /// A codec whose key is derived from `secret`: the secret's HMAC over a label of this use
    /// (a seal without expiry is the same every time), so the key that signs `requestState` is
    /// never the one that seals task ids.
    fn derived_from(secret: &[u8]) -> Self {
        let key = RequestStateCodec::new_unchecked(secret.to_vec()).seal_with(
            b"mcp-orchestrator task ids",
            &SealOptions::new().associated_data(b"key derivation"),
        );
        Self {
            codec: RequestStateCodec::new_unchecked(key.into_bytes()),
        }
    }

    /// The id an agent sees for `server`'s task `upstream_id`.
    pub fn expose(&self, server: &str, upstream_id: &str) -> String {
        let sealed = self.codec.seal_with(
            upstream_id.as_bytes(),
            &SealOptions::new().associated_data(associated(server).as_bytes()),
        );
        format!("{server}{SEPARATOR}{sealed}")
    }

    /// The server's name and its own task id behind an exposed id, if this orchestrator issued
    /// it; `known` says whether a server of that name is configured.
    pub fn resolve<'a>(
        &self,
        exposed: &'a str,
        known: impl Fn(&str) -> bool,
    ) -> Result<(&'a str, String), TaskIdError> {
        let (server, sealed) = exposed
            .split_once(SEPARATOR)
            .filter(|(server, sealed)| !server.is_empty() && !sealed.is_empty())
            .ok_or_else(|| TaskIdError::Malformed {
                id: exposed.to_owned(),
            })?;
        if !known(server) {
            return Err(TaskIdError::UnknownServer {
                id: exposed.to_owned(),
                server: server.to_owned(),
            });
        }
        let not_issued = || TaskIdError::NotIssued {
            id: exposed.to_owned(),
            server: server.to_owned(),
        };
        let opened = self
            .codec
            .open_with(sealed, associated(server).as_bytes())
            .map_err(|e| {
                // One answer for every way a seal fails; the detail is for the log.
                tracing::debug!(task_id = exposed, error = %e, "task id refused");
                not_issued()
            })?;
        let upstream_id = String::from_utf8(opened).map_err(|_| not_issued())?;
        Ok((server, upstream_id))
    }
}

/// What a seal is bound to: the server, under a label of its own.
fn associated(server: &str) -> String {
    format!("task:{server}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(server: &str) -> bool {
        matches!(server, "sql" | "rest")
    }

    #[test]
    fn an_id_maps_there_and_back() {
        let ids = TaskIds::new();
        let exposed = ids.expose("sql", "7c1f-task.with.dots");
        assert!(exposed.starts_with("sql."), "{exposed}");
        assert_eq!(
            ids.resolve(&exposed, known),
            Ok(("sql", "7c1f-task.with.dots".to_owned()))
        );
    }

    #[test]
    fn an_exposed_id_is_header_safe_whatever_the_upstream_id() {
        let ids = TaskIds::new();
        let exposed = ids.expose("sql", "täsk id\n\"1\"");
        assert!(exposed.bytes().all(|b| b.is_ascii_graphic()), "{exposed:?}");
        assert_eq!(
            ids.resolve(&exposed, known).map(|r| r.1).as_deref(),
            Ok("täsk id\n\"1\"")
        );
    }

    #[test]
    fn another_servers_name_does_not_open_the_seal() {
        let ids = TaskIds::new();
        let exposed = ids.expose("sql", "1");
        let moved = exposed.replacen("sql.", "rest.", 1);
        assert_eq!(
            ids.resolve(&moved, known),
            Err(TaskIdError::NotIssued {
                id: moved.clone(),
                server: "rest".into()
            })
        );
    }

    #[test]
    fn a_changed_character_or_another_process_id_is_refused() {
        let ids = TaskIds::new();
        let exposed = ids.expose("sql", "1");
        // Every position of the sealed part, changed one at a time.
        for i in "sql.".len()..exposed.len() {
            let mut changed = exposed.clone().into_bytes();
            changed[i] = if changed[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(changed).expect("ascii");
            assert!(
                matches!(
                    ids.resolve(&changed, known),
                    Err(TaskIdError::NotIssued { .. })
                ),
                "{changed} opened"
            );
        }
        let other = TaskIds::new().expose("sql", "1");
        assert!(matches!(
            ids.resolve(&other, known),
            Err(TaskIdError::NotIssued { .. })
        ));
    }

    #[test]
    fn instances_sharing_a_secret_open_each_others_ids_and_no_one_elses() {
        let secret = b"a-secret-of-32-bytes-or-more-for-all-instances";
        let (a, b) = (TaskIds::derived_from(secret), TaskIds::derived_from(secret));
        let exposed = a.expose("sql", "t-1");
        assert_eq!(b.resolve(&exposed, known), Ok(("sql", "t-1".to_owned())));
        let other = TaskIds::derived_from(b"another-secret-of-32-bytes-or-more-here");
        assert!(matches!(
            other.resolve(&exposed, known),
            Err(TaskIdError::NotIssued { .. })
        ));
        // The secret itself (the requestState key) does not open them.
        let raw = TaskIds {
            codec: RequestStateCodec::new_unchecked(secret.to_vec()),
        };
        assert!(matches!(
            raw.resolve(&exposed, known),
            Err(TaskIdError::NotIssued { .. })
        ));
    }

    #[test]
    fn malformed_and_unknown_server_ids_name_the_id() {
        let ids = TaskIds::new();
        for bad in ["", "no-separator", ".sealed", "sql."] {
            let e = ids.resolve(bad, known).expect_err(bad);
            assert_eq!(e, TaskIdError::Malformed { id: bad.into() });
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
        let e = ids
            .resolve("cosmos.rs1.x.y", known)
            .expect_err("unknown server");
        assert_eq!(
            e.to_string(),
            "unknown task `cosmos.rs1.x.y`: there is no server `cosmos`"
        );
    }
}
