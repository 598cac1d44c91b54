//! Answering one document: its cmds in order, each data object on its own, pausing while an
//! object waits for a long operation (§2.1, §6).

use crate::ldm::action::Action;
use crate::ldm::document::{CmdResponse, Data, DataResponse, Document, Response, Role, Status};
use crate::ldm::event::{EventMask, SubscriptionChange};
use crate::registry::state::{Applied, Outcome, Registry};

/// A document being answered; it waits while one of its objects runs a long operation.
#[derive(Debug)]
pub struct Run {
    pub document: Document,
    pub role: Role,
    cmds: Vec<CmdResponse>,
    cmd: usize,
    /// The action of cmd `cmd`, once it has been checked; `None` while the cmd is refused.
    action: Option<Action>,
    data: usize,
    subscription: SubscriptionChange,
}

/// Where a [`Run`] stands.
#[derive(Debug, PartialEq)]
pub enum Progress {
    Done(Response, Option<SubscriptionChange>),
    /// Waiting for the long operation with this id.
    Waiting(u64),
}

impl Registry {
    pub fn begin(document: Document, role: Role) -> Run {
        Run {
            document,
            role,
            cmds: Vec::new(),
            cmd: 0,
            action: None,
            data: 0,
            subscription: SubscriptionChange::default(),
        }
    }

    /// Answers `run` from where it stands until it is done or waits for a long operation.
    pub fn advance(&mut self, run: &mut Run, now: u64) -> Progress {
        if let Some(reason) = &run.document.malformed {
            return Progress::Done(
                Response {
                    version: run.document.version.clone(),
                    cmds: Vec::new(),
                    malformed: Some(reason.clone()),
                },
                None,
            );
        }
        while run.cmd < run.document.cmds.len() {
            let cmd = &run.document.cmds[run.cmd];
            if run.data == 0 && run.cmds.len() == run.cmd {
                let checked = match (&cmd.malformed, &cmd.action) {
                    (Some(reason), _) => Err(reason.clone()),
                    (None, None) => Err("The cmd has no action".into()),
                    (None, Some(name)) => name
                        .authorize(run.role)
                        .and_then(|()| crate::registry::actions::check_action(name)),
                };
                run.action = checked.as_ref().ok().copied();
                run.cmds.push(CmdResponse {
                    action: cmd.action.clone(),
                    options: cmd.options.clone(),
                    data: Vec::new(),
                    failure: checked.err(),
                });
                if let Some((subscribe, mask)) = run.action.and_then(Action::registration) {
                    run.subscription = run.subscription.then(registration(subscribe, mask));
                }
            }
            let Some(action) = run.action else {
                // Refused as a whole: the cmd-level resp_msg says why, and no object is judged.
                run.cmd += 1;
                continue;
            };
            while run.data < cmd.data.len() {
                let data = &cmd.data[run.data];
                let outcome = crate::registry::actions::apply(self, action, cmd, data, now);
                match outcome {
                    Ok(Applied {
                        waiting: Some(operation),
                        ..
                    }) => return Progress::Waiting(operation),
                    outcome => {
                        let response = data_response(data, outcome);
                        run.cmds[run.cmd].data.push(response);
                        run.data += 1;
                    }
                }
            }
            run.cmd += 1;
            run.data = 0;
        }
        let response = Response {
            version: run.document.version.clone(),
            cmds: std::mem::take(&mut run.cmds),
            malformed: None,
        };
        let subscription = (!run.subscription.is_empty()).then_some(run.subscription);
        Progress::Done(response, subscription)
    }

    /// Records the answer of the object `run` waited for, so that `advance` goes on after it.
    pub fn resume(run: &mut Run, outcome: Outcome) {
        let data = &run.document.cmds[run.cmd].data[run.data];
        let response = data_response(data, outcome);
        run.cmds[run.cmd].data.push(response);
        run.data += 1;
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
