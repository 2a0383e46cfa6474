//! A 2026-07-28 agent cannot be sent a request: it is asked through its call's result. When an
//! upstream (or a composite step) asks something while such an agent's call runs, the call is
//! held here, still running, and the agent gets `input_required` with the question and a signed
//! `requestState`; its retry carries the answers, which go to the waiting question, and the
//! same call goes on from where it stopped: nothing that already ran runs again.
//!
//! The held call lives in this process. The state names the process (a random instance id), so
//! a retry that lands on another instance gets an error saying so, not a call run twice.
//!
//! A 2026-07-28 upstream's own `input_required` on a pass-through call needs nothing held: the
//! agent gets its questions as they are, with a state that wraps the upstream's (signed, bound
//! to the tool, naming the server), and any instance with the same key resumes it.

// Sampling and roots are deprecated from 2026-07-28 on (SEP-2577), but still relayed.
#![allow(deprecated)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ErrorData,
    model::{
        ClientResult, CreateMessageResult, ElicitResult, InputRequest, InputRequiredResult,
        InputResponses, ListRootsResult, RequestStateCodec, SealOptions, ServerRequest,
    },
};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::error::CallError;

/// A question waiting for a request-scoped agent's answer.
#[derive(Debug)]
pub struct Question {
    /// The request as the upstream asked it.
    pub request: ServerRequest,
    /// Where the answer goes.
    pub answer: oneshot::Sender<Result<ClientResult, ErrorData>>,
}

/// Where a held call's questions are sent ([`super::Origin::questions`]).
pub type QuestionSender = mpsc::UnboundedSender<Question>;

/// What a held call ends with: a result, or a task the agent asked for.
pub type Outcome = Result<rmcp::model::CallToolResponse, CallError>;

/// Environment variable holding the key `requestState` is signed with (at least 32 bytes);
/// instances behind one load balancer share it. Without it each process makes its own.
pub const KEY_ENV: &str = "MCP_ORCHESTRATOR_STATE_KEY";

/// What a call's request comes to.
#[derive(Debug)]
pub enum Step {
    /// The call finished.
    Finished(Outcome),
    /// The call is held, waiting for the agent's answers.
    NeedsInput(InputRequiredResult),
}

/// One call held between an agent's requests.
#[derive(Debug)]
struct Held {
    task: JoinHandle<Outcome>,
    questions: mpsc::UnboundedReceiver<Question>,
    /// Unanswered questions, by the key the agent answers them under.
    pending: BTreeMap<String, Question>,
    next_key: u64,
    /// Cancels the call.
    ct: CancellationToken,
    /// The tool the call is of; a retry must name the same.
    tool: String,
    /// When the call is given up if the agent never comes back.
    expires: Instant,
}

impl Drop for Held {
    fn drop(&mut self) {
        // A held call nobody will resume must not run on.
        self.ct.cancel();
    }
}

/// The signed part of `requestState`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum State {
    /// A call held by an instance.
    Held {
        /// The instance holding the call.
        instance: String,
        /// The held call.
        id: u64,
    },
    /// An upstream's own `input_required`, to be answered by calling it again.
    Upstream {
        /// The upstream's name.
        server: String,
        /// Its `requestState`, as it gave it.
        state: Option<String>,
    },
}

/// What a retry's `requestState` resumes.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// The call this instance holds under this id.
    Held(u64),
    /// A call of `server`'s, answered by calling it again with its own `state`.
    Upstream {
        /// The upstream's name.
        server: String,
        /// Its `requestState`.
        state: Option<String>,
    },
}

/// Calls held for request-scoped agents, shared by every session.
#[derive(Debug)]
pub struct Suspensions {
    held: Mutex<HashMap<u64, Held>>,
    next_id: AtomicU64,
    codec: RequestStateCodec,
    instance: String,
    /// How long a held call waits for the agent (`userInputTimeoutMs`).
    limit: Duration,
    /// How many calls may be held at once (`maxHeldCalls`).
    max_held: usize,
    /// Where a refusal by `max_held` is counted.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// The config path named when [`Suspensions`] is full.
pub const MAX_HELD_SETTING: &str = "orchestrator.limits.maxHeldCalls";

/// Why a retry could not resume a call: an invalid-params error naming what was wrong.
fn refused(why: String) -> ErrorData {
    ErrorData::invalid_params(why, None)
}

impl Suspensions {
    /// Holds calls for at most `limit` between requests, signing their state with the key in
    /// [`KEY_ENV`] (or a fresh random one).
    pub fn new(
        limit: Duration,
        max_held: usize,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Self {
        use rand::Rng as _;
        let mut rng = rand::rng();
        let key = std::env::var(KEY_ENV)
            .ok()
            .filter(|k| k.len() >= RequestStateCodec::MIN_KEY_LENGTH)
            .map(String::into_bytes)
            .unwrap_or_else(|| (0..32).map(|_| rng.random::<u8>()).collect());
        let instance = format!("{:016x}", rng.random::<u64>());
        Self {
            held: Mutex::default(),
            next_id: AtomicU64::new(1),
            codec: RequestStateCodec::new_unchecked(key),
            instance,
            limit,
            max_held,
            metrics,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `task` (a call of `tool`, cancelled by `ct`, asking through `questions`) until it
    /// finishes or asks; `agent_ct` is the agent's current request.
    pub async fn start(
        &self,
        tool: &str,
        task: JoinHandle<Outcome>,
        questions: mpsc::UnboundedReceiver<Question>,
        ct: CancellationToken,
        agent_ct: &CancellationToken,
    ) -> Step {
        let held = Held {
            task,
            questions,
            pending: BTreeMap::new(),
            next_key: 1,
            ct,
            tool: tool.to_owned(),
            expires: Instant::now() + self.limit,
        };
        self.wait(held, agent_ct).await
    }

    /// What `state`, given back for `tool`, resumes; a state this orchestrator (or one with
    /// the same key) did not issue for that tool is refused.
    pub fn open(&self, tool: &str, state: &str) -> Result<Resume, ErrorData> {
        let state: State = self
            .codec
            .open_json_with(state, tool.as_bytes())
            .map_err(|e| {
                refused(format!(
                    "requestState is not one this orchestrator issued for tool `{tool}`: {e}"
                ))
            })?;
        match state {
            State::Held { instance, .. } if instance != self.instance => Err(refused(format!(
                "requestState resumes a call held by orchestrator instance {instance}, not this \
                 one ({}): a call waiting for input lives in the process that started it",
                self.instance
            ))),
            State::Held { id, .. } => Ok(Resume::Held(id)),
            State::Upstream { server, state } => Ok(Resume::Upstream { server, state }),
        }
    }

    /// A state for `tool` that resumes `server`'s `input_required` with its `state`.
    pub fn seal_upstream(&self, tool: &str, server: &str, state: Option<String>) -> String {
        self.seal_state(
            tool,
            &State::Upstream {
                server: server.to_owned(),
                state,
            },
        )
    }

    /// Resumes the held call `id` with the agent's `responses`.
    pub async fn resume(
        &self,
        id: u64,
        responses: Option<&InputResponses>,
        agent_ct: &CancellationToken,
    ) -> Result<Step, ErrorData> {
        let state_id = id;
        let mut held = self.table().remove(&state_id).ok_or_else(|| {
            refused(format!(
                "the call this requestState resumes is no longer held: it finished, was \
                 cancelled, or waited longer than {} ms (orchestrator.limits.userInputTimeoutMs)",
                self.limit.as_millis()
            ))
        })?;
        // Every pending question needs its answer, in the shape its kind requires, before any
        // is passed on: a retry with a wrong answer leaves the call held as it was.
        let mut answers = Vec::new();
        for (key, question) in &held.pending {
            let answer = responses.and_then(|r| r.get(key)).ok_or_else(|| {
                format!("inputResponses has no answer for `{key}`, which the call is waiting for")
            });
            let parsed = answer.and_then(|value| parse_answer(&question.request, value, key));
            match parsed {
                Ok(result) => answers.push((key.clone(), result)),
                Err(why) => {
                    self.table().insert(state_id, held);
                    return Err(refused(why));
                }
            }
        }
        for (key, result) in answers {
            if let Some(question) = held.pending.remove(&key) {
                let _ = question.answer.send(Ok(result));
            }
        }
        held.expires = Instant::now() + self.limit;
        Ok(self.wait(held, agent_ct).await)
    }

    /// Waits for the call to finish or ask; holds it again when it asks.
    async fn wait(&self, mut held: Held, agent_ct: &CancellationToken) -> Step {
        let question = tokio::select! {
            outcome = &mut held.task => {
                return Step::Finished(outcome.unwrap_or_else(|e| {
                    Err(CallError::Protocol {
                        server: "orchestrator".into(),
                        error: ErrorData::internal_error(
                            format!("the held call ended abnormally: {e}"),
                            None,
                        ),
                    })
                }));
            }
            Some(question) = held.questions.recv() => question,
            () = agent_ct.cancelled() => {
                held.ct.cancel();
                return Step::Finished(Err(CallError::Cancelled));
            }
        };
        self.add(&mut held, question);
        // Questions asked together (parallel steps) go to the agent together.
        tokio::task::yield_now().await;
        while let Ok(question) = held.questions.try_recv() {
            self.add(&mut held, question);
        }
        let requests = held
            .pending
            .iter()
            .filter_map(|(key, q)| Some((key.clone(), input_request(&q.request)?)))
            .collect();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sealed = self.seal(&held.tool, id);
        let mut table = self.table();
        let now = Instant::now();
        table.retain(|_, h| h.expires > now);
        if table.len() >= self.max_held {
            drop(table);
            // Dropping the held call cancels it; its questions fail with it.
            drop(held);
            self.metrics
                .limit_enforced(crate::metrics::LimitEvent::HeldCalls);
            return Step::Finished(Err(CallError::Protocol {
                server: "orchestrator".into(),
                error: ErrorData::new(
                    rmcp::model::ErrorCode(-32000),
                    format!(
                        "the call needs input, but {} calls are already waiting for theirs \
                         (limit: {MAX_HELD_SETTING}); try again later",
                        self.max_held
                    ),
                    Some(serde_json::json!({ "limit": MAX_HELD_SETTING, "max": self.max_held })),
                ),
            }));
        }
        table.insert(id, held);
        drop(table);
        Step::NeedsInput(InputRequiredResult::new(Some(requests), Some(sealed)))
    }

    fn add(&self, held: &mut Held, question: Question) {
        if input_request(&question.request).is_none() {
            let _ = question.answer.send(Err(ErrorData::invalid_request(
                "only elicitation, sampling and roots requests can be put to the agent",
                None,
            )));
            return;
        }
        let key = format!("q{}", held.next_key);
        held.next_key += 1;
        held.pending.insert(key, question);
    }

    fn seal(&self, tool: &str, id: u64) -> String {
        let state = State::Held {
            instance: self.instance.clone(),
            id,
        };
        self.seal_state(tool, &state)
    }

    fn seal_state(&self, tool: &str, state: &State) -> String {
        let payload = serde_json::to_vec(state).unwrap_or_default();
        self.codec.seal_with(
            &payload,
            &SealOptions::new()
                .associated_data(tool.as_bytes())
                .ttl(self.limit),
        )
    }
}

/// The question as an entry of `inputRequests`.
fn input_request(request: &ServerRequest) -> Option<InputRequest> {
    match request {
        ServerRequest::ElicitRequest(r) => Some(InputRequest::Elicitation(r.clone())),
        ServerRequest::CreateMessageRequest(r) => Some(InputRequest::CreateMessage(r.clone())),
        ServerRequest::ListRootsRequest(r) => Some(InputRequest::ListRoots(r.clone())),
        _ => None,
    }
}

/// The agent's answer to `request`, read as the result that request expects.
fn parse_answer(
    request: &ServerRequest,
    value: &serde_json::Value,
    key: &str,
) -> Result<ClientResult, String> {
    let bad = |kind: &str, e: serde_json::Error| {
        format!("inputResponses.{key} is not a valid {kind}: {e}")
    };
    match request {
        ServerRequest::ElicitRequest(_) => serde_json::from_value::<ElicitResult>(value.clone())
            .map(ClientResult::ElicitResult)
            .map_err(|e| bad("elicitation result", e)),
        ServerRequest::CreateMessageRequest(_) => {
            serde_json::from_value::<CreateMessageResult>(value.clone())
                .map(|r| ClientResult::CreateMessageResult(Box::new(r)))
                .map_err(|e| bad("sampling result", e))
        }
        ServerRequest::ListRootsRequest(_) => {
            serde_json::from_value::<ListRootsResult>(value.clone())
                .map(ClientResult::ListRootsResult)
                .map_err(|e| bad("roots result", e))
        }
        _ => Err(format!(
            "inputResponses.{key} answers nothing that can be asked"
        )),
    }
}
