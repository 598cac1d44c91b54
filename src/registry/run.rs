//! Answering one document: its cmds in order, each data object on its own, pausing while an
//! object waits for a long operation (§2.1, §6).
//!
//! A [`Run`] only ever appends to its answer, so it can be put back to where it stood when a
//! batch began ([`Run::checkpoint`], [`Run::rewind`]): when a batch's commit fails, the actor
//! rewinds every run the batch touched and answers them again against the last committed
//! state, with the batch's writes refused.
//!
//! Every answer is bounded: at most `cmds_per_document_max` cmds and `data_per_document_max`
//! objects are judged, and the objects a listing fills in stop at the reply's room (its share
//! of `reply_bytes_max`, and of what its connection's own share of unwritten replies and then
//! `reply_bytes_in_flight_max` leave); an object past it fails with a message instead of
//! growing the reply.

use crate::ldm::action::Action;
use crate::ldm::document::{CmdResponse, Data, DataResponse, Document, Response, Role, Status};
use crate::ldm::event::{EventMask, SubscriptionChange};
use crate::limits::Limit;
use crate::registry::state::{Applied, Outcome, Registry};

/// What a failed object's answer adds to a reply beyond its echoed request: the response
/// elements and a one-line reason (a name of at most 256 characters in it).
const FAILURE_BYTES_MAX: usize = 512;

/// A document being answered; it waits while one of its objects runs a long operation.
#[derive(Debug)]
pub struct Run {
    pub document: Document,
    pub role: Role,
    at: Position,
    cmds: Vec<CmdResponse>,
    /// Why the document is refused as a whole (too many cmds or objects), decided at its start.
    refusal: Option<String>,
    /// Where the run stood when the batch in progress first touched it.
    checkpoint: Option<Checkpoint>,
}

/// Where a run stands, all but its answer so far.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Position {
    cmd: usize,
    /// The action of cmd `cmd`, once it has been checked; `None` while the cmd is refused.
    action: Option<Action>,
    data: usize,
    subscription: SubscriptionChange,
    /// Bytes of objects a listing filled in, so far.
    filled_bytes: usize,
    /// The part of `filled_bytes` taken from the room all connections share (the rest came
    /// from the connection's own share).
    filled_shared_bytes: usize,
    /// A listing of this document already found the reply full: later ones fail at once,
    /// without being built.
    reply_full: bool,
}

/// A run's position and the length of its answer, to go back to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Checkpoint {
    at: Position,
    cmds: usize,
    /// Objects answered in the last cmd response.
    last_cmd_data: usize,
    /// The run was waiting for this long operation when the checkpoint was taken.
    pub waiting_for: Option<u64>,
}

/// Where a [`Run`] stands after [`Registry::advance`].
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// Answered: take the answer with [`Run::into_response`].
    Done,
    /// Waiting for the long operation with this id.
    Waiting(u64),
}

impl Run {
    /// Marks where the run stands, unless the batch in progress already did
    /// (`waiting_for`: the long operation it is waiting for, if any).
    pub fn checkpoint(&mut self, waiting_for: Option<u64>) {
        if self.checkpoint.is_none() {
            self.checkpoint = Some(Checkpoint {
                at: self.at,
                cmds: self.cmds.len(),
                last_cmd_data: self.cmds.last().map_or(0, |c| c.data.len()),
                waiting_for,
            });
        }
    }

    /// Forgets the checkpoint: the batch that took it is durable.
    pub fn settle(&mut self) {
        self.checkpoint = None;
    }

    /// Goes back to the checkpoint; returns it (`None`: the batch never touched this run).
    pub fn rewind(&mut self) -> Option<Checkpoint> {
        let checkpoint = self.checkpoint.take()?;
        self.at = checkpoint.at;
        self.cmds.truncate(checkpoint.cmds);
        if let Some(last) = self.cmds.last_mut() {
            last.data.truncate(checkpoint.last_cmd_data);
        }
        Some(checkpoint)
    }

    /// The answer, once [`Registry::advance`] said [`Progress::Done`]; and the subscription
    /// change the document made, if any.
    pub fn into_response(self) -> (Response, Option<SubscriptionChange>) {
        let subscription = self.at.subscription;
        let malformed = self.document.malformed.clone().or(self.refusal);
        let cmds = if malformed.is_some() {
            Vec::new()
        } else {
            self.cmds
        };
        let response = Response {
            version: self.document.version,
            cmds,
            malformed,
        };
        (response, (!subscription.is_empty()).then_some(subscription))
    }

    /// Bytes of the objects listings filled in, to count against the bytes of replies in flight.
    pub fn filled_bytes(&self) -> usize {
        self.at.filled_bytes
    }

    /// Of [`Run::filled_bytes`], those counted in the replies in flight all connections share.
    pub fn filled_shared_bytes(&self) -> usize {
        self.at.filled_shared_bytes
    }

    /// Whether the batch in progress touched this run (it has a checkpoint to go back to).
    pub fn is_touched(&self) -> bool {
        self.checkpoint.is_some()
    }
}

impl Registry {
    pub fn begin(document: Document, role: Role) -> Run {
        Run {
            document,
            role,
            at: Position {
                cmd: 0,
                action: None,
                data: 0,
                subscription: SubscriptionChange::default(),
                filled_bytes: 0,
                filled_shared_bytes: 0,
                reply_full: false,
            },
            cmds: Vec::new(),
            refusal: None,
            checkpoint: None,
        }
    }

    /// Answers `run` from where it stands until it is done or waits for a long operation.
    pub fn advance(&mut self, run: &mut Run, now: u64) -> Progress {
        if run.document.malformed.is_some() {
            return Progress::Done;
        }
        if run.at.cmd == 0 && run.cmds.is_empty() && run.refusal.is_none() {
            run.refusal = self.oversized(&run.document);
        }
        if run.refusal.is_some() {
            return Progress::Done;
        }
        while let Some(cmd) = run.document.cmds.get(run.at.cmd) {
            if run.at.data == 0 && run.cmds.len() == run.at.cmd {
                let checked = match (&cmd.malformed, &cmd.action) {
                    (Some(reason), _) => Err(reason.clone()),
                    (None, None) => Err("The cmd has no action".into()),
                    (None, Some(name)) => name
                        .authorize(run.role)
                        .and_then(|()| crate::registry::actions::check_action(name)),
                };
                run.at.action = checked.as_ref().ok().copied();
                run.cmds.push(CmdResponse {
                    action: cmd.action.clone(),
                    options: cmd.options.clone(),
                    data: Vec::new(),
                    failure: checked.err(),
                });
                if let Some((subscribe, mask)) = run.at.action.and_then(Action::registration) {
                    run.at.subscription = run.at.subscription.then(registration(subscribe, mask));
                }
            }
            let Some(action) = run.at.action else {
                // Refused as a whole: the cmd-level resp_msg says why, and no object is judged.
                run.at.cmd = run.at.cmd.saturating_add(1);
                continue;
            };
            let objects = run
                .document
                .cmds
                .iter()
                .fold(0usize, |n, c| n.saturating_add(c.data.len()));
            while let Some(data) = cmd.data.get(run.at.data) {
                let outcome = match &self.writes_refused {
                    Some(reason) if action.role() == Role::Write => Err(reason.clone()),
                    _ if action.is_list()
                        && (run.at.reply_full
                            || (self.replies_full && self.connection_room == 0)) =>
                    {
                        Err(self.full_reply_message(run.at.reply_full))
                    }
                    _ => crate::registry::actions::apply(self, action, cmd, data, now),
                };
                match outcome {
                    Ok(Applied {
                        waiting: Some(operation),
                        ..
                    }) => return Progress::Waiting(operation),
                    outcome => {
                        let outcome = self.within_reply_room(&mut run.at, objects, outcome);
                        let response = data_response(data, outcome);
                        if let Some(answer) = run.cmds.last_mut() {
                            answer.data.push(response);
                        }
                        run.at.data = run.at.data.saturating_add(1);
                    }
                }
            }
            run.at.cmd = run.at.cmd.saturating_add(1);
            run.at.data = 0;
        }
        Progress::Done
    }

    /// Records the answer of the object `run` waited for, so that `advance` goes on after it.
    pub fn resume(run: &mut Run, outcome: Outcome) {
        let Some(data) = run
            .document
            .cmds
            .get(run.at.cmd)
            .and_then(|cmd| cmd.data.get(run.at.data))
        else {
            return;
        };
        let response = data_response(data, outcome);
        if let Some(answer) = run.cmds.last_mut() {
            answer.data.push(response);
        }
        run.at.data = run.at.data.saturating_add(1);
    }

    /// Why `document` is refused as a whole for its size, if it is.
    fn oversized(&mut self, document: &Document) -> Option<String> {
        let limits = self.settings.limits.clone();
        let cmds = document.cmds.len();
        let objects = document
            .cmds
            .iter()
            .fold(0usize, |n, c| n.saturating_add(c.data.len()));
        let (limit, message) = if cmds > limits.cmds_per_document_max {
            (
                Limit::CmdsPerDocument,
                format!(
                    "The document has {cmds} cmd elements; limits.cmds_per_document_max allows {}: send fewer per document",
                    limits.cmds_per_document_max
                ),
            )
        } else if objects > limits.data_per_document_max {
            (
                Limit::DataPerDocument,
                format!(
                    "The document has {objects} data elements; limits.data_per_document_max allows {}: send fewer per document",
                    limits.data_per_document_max
                ),
            )
        } else {
            return None;
        };
        self.limit_hit(limit);
        Some(message)
    }

    /// Keeps a listing's answer only if the reply has room for it: its share of
    /// `reply_bytes_max`, less what a request's echo may take, and room among the unwritten
    /// replies: its connection's own share first, then what all replies in flight share.
    fn within_reply_room(
        &mut self,
        at: &mut Position,
        objects: usize,
        outcome: Outcome,
    ) -> Outcome {
        let Ok(Applied {
            data: Some(filled), ..
        }) = &outcome
        else {
            return outcome;
        };
        let limits = self.settings.limits.clone();
        // The echoes of the request and the failures' reasons are bounded by the request's
        // size and its object count; what listings fill in gets the rest.
        let echoes = limits
            .stanza_bytes_max
            .saturating_add(objects.saturating_mul(FAILURE_BYTES_MAX));
        let reply_room = limits
            .reply_bytes_max
            .saturating_sub(echoes)
            .saturating_sub(at.filled_bytes);
        let size = crate::ldm::write::data_len(filled, &mut self.scratch);
        if size > reply_room {
            self.limit_hit(Limit::ReplyBytes);
            at.reply_full = true;
            return Err(self.full_reply_message(true));
        }
        // The connection's own share first; the rest from the room all replies share.
        let own = size.min(self.connection_room);
        let shared = size.saturating_sub(own);
        if shared > self.reply_room {
            self.limit_hit(Limit::ReplyBytesInFlight);
            self.replies_full = true;
            return Err(self.full_reply_message(false));
        }
        at.filled_bytes = at.filled_bytes.saturating_add(size);
        at.filled_shared_bytes = at.filled_shared_bytes.saturating_add(shared);
        self.connection_room = self.connection_room.saturating_sub(own);
        self.reply_room = self.reply_room.saturating_sub(shared);
        outcome
    }

    /// Why a listing is not answered: this reply is full, or all replies in flight are.
    fn full_reply_message(&self, this_reply: bool) -> String {
        if this_reply {
            format!(
                "The answer would be larger than limits.reply_bytes_max ({} bytes): name fewer objects, or fewer per document",
                self.settings.limits.reply_bytes_max
            )
        } else {
            "ldmd is holding too many large answers that clients have not read yet (limits.reply_bytes_in_flight_max): try again".into()
        }
    }
}

fn registration(subscribe: bool, mask: EventMask) -> SubscriptionChange {
    if subscribe {
        SubscriptionChange {
            subscribe: mask,
            unsubscribe: EventMask::NONE,
        }
    } else {
        SubscriptionChange {
            subscribe: EventMask::NONE,
            unsubscribe: mask,
        }
    }
}

fn data_response(request: &Data, outcome: Outcome) -> DataResponse {
    match outcome {
        Ok(applied) => DataResponse {
            data: applied.data.unwrap_or_else(|| request.clone()),
            status: Status::Success,
            messages: Vec::new(),
            warning: applied.warning,
        },
        Err(reason) => DataResponse {
            data: request.clone(),
            status: Status::Failure,
            messages: vec![reason],
            warning: None,
        },
    }
}
