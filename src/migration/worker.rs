//! The shell of a migration on the source: one thread per migration that reaches the target
//! over an authenticated XMPP/TLS session (the client code `ldm` uses, every wait bounded) and
//! reports back to the registry, which alone decides (see [`super::source`]).
//!
//! ```text
//!  connect (operator's user) ─▶ check  (dry run: report, done)
//!                            └▶ reserve ─▶ transfer chunk 0..n (paced) ─▶ report complete
//!  then, one command at a time, each sent only after the registry's commit:
//!    commit   ─▶ outcome, or "no outcome" (then the registry asks for resolve)
//!    resolve  ─▶ as the resolver (user ldmd-migration-<id>, the token), until the target
//!                answers committed or aborted; backoff doubling to resolve_backoff_max
//!    forget   ─▶ the same way, until acknowledged
//! ```
//!
//! The registry thread never waits for this one: commands go through a channel, reports come
//! back as messages. A worker ends when the registry drops its channel (the migration is over
//! here, or the daemon stops).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::MigrationId;
use super::plan::{Contact, Plan, WorkerReport};
use super::source::Send;
use super::wire::{self, Answer, Message, Offer, Request};
use crate::client::{ClientError, Endpoint, Login, Session, Target};

/// `[migration]`: how the worker reaches and waits for targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Where `trust/` is: every `*.pem` there is a pinned peer certificate.
    pub state_dir: PathBuf,
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints of trusted peer certificates.
    pub fingerprints: Vec<Vec<u8>>,
    /// Reaching the target: connect, STARTTLS, TLS, login.
    pub connect_timeout: Duration,
    /// Each request but commit.
    pub reply_timeout: Duration,
    /// The wait for commit's answer, after which the requester is told the outcome is in doubt.
    pub commit_timeout: Duration,
    /// The resolver's longest wait between attempts.
    pub resolve_backoff_max: Duration,
    /// Modelled time to move one GiB of a running domain's memory (0: no pacing).
    pub seconds_per_gib: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            state_dir: PathBuf::from(crate::config::DEFAULT_STATE_DIR),
            ca_file: None,
            fingerprints: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(30),
            commit_timeout: Duration::from_secs(10),
            resolve_backoff_max: Duration::from_secs(5),
            seconds_per_gib: 0.5,
        }
    }
}

/// The first wait between resolver attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// Attempts of a courtesy resolve (freeing the target early after an abort); the target's idle
/// timer frees it anyway.
const COURTESY_ATTEMPTS: u32 = 3;

/// What the registry tells a worker.
pub enum Command {
    Send {
        contact: Contact,
        send: Send,
        settle: bool,
    },
}

/// Where reports go: the registry actor's mailbox.
pub type Reports = tokio::sync::mpsc::UnboundedSender<(MigrationId, WorkerReport)>;

/// A running worker: dropping it tells the thread to end once it has done what it was asked.
pub struct Worker {
    commands: Sender<Command>,
}

impl Worker {
    /// Hands `command` to the worker; gives it back if the worker has ended.
    pub fn command(&self, command: Command) -> Result<(), Command> {
        self.commands.send(command).map_err(|e| e.0)
    }
}

/// Starts the worker of a new migration.
pub fn start(plan: Plan, settings: Arc<Settings>, reports: Reports) -> std::io::Result<Worker> {
    spawn(plan.id, Some(plan), settings, reports)
}

/// Starts a worker for a migration whose worker is gone (after a restart): it only sends what
/// it is told.
pub fn contact(
    id: MigrationId,
    settings: Arc<Settings>,
    reports: Reports,
) -> std::io::Result<Worker> {
    spawn(id, None, settings, reports)
}

fn spawn(
    id: MigrationId,
    plan: Option<Plan>,
    settings: Arc<Settings>,
    reports: Reports,
) -> std::io::Result<Worker> {
    let (commands, inbox) = channel();
    std::thread::Builder::new()
        .name(format!("ldmd-migrate-{}", &id.to_string()[..8]))
        .spawn(move || {
            let mut worker = Thread {
                id,
                settings,
                reports,
                inbox,
                session: None,
                commit: None,
            };
            if let Some(plan) = plan {
                worker.drive(plan);
            }
            worker.serve();
        })?;
    Ok(Worker { commands })
}

struct Thread {
    id: MigrationId,
    settings: Arc<Settings>,
    reports: Reports,
    inbox: Receiver<Command>,
    /// The operator's session with the target, kept from reserve to commit.
    session: Option<Session>,
    /// What commit says: chunks sent and their digest.
    commit: Option<(u32, [u8; 32])>,
}

impl Thread {
    fn report(&self, report: WorkerReport) {
        let _ = self.reports.send((self.id, report));
    }

    /// Check, or reserve and transfer, on the operator's session.
    fn drive(&mut self, plan: Plan) {
        let login = Login {
            user: plan.user.clone(),
            password: Zeroizing::new(plan.password.0.as_str().to_owned()),
        };
        let mut session = match self.connect(&plan.host, plan.port, login) {
            Ok(session) => session,
            Err(e) => {
                let why = describe(&e, &plan.host);
                return self.report(if plan.dry_run {
                    WorkerReport::Checked(Err(why))
                } else {
                    WorkerReport::Failed(why)
                });
            }
        };
        let offer = Offer {
            source_daemon: plan.source_daemon,
            definition: plan.definition.clone(),
            force: plan.force,
        };
        let message = |request| Message {
            id: plan.id,
            domain: plan.target_domain.clone(),
            request,
        };
        if plan.dry_run {
            let answer = ask(&mut session, &message(Request::Check(offer)), &plan.host);
            session.close();
            return self.report(WorkerReport::Checked(match answer {
                Ok(Answer::Success { warnings, .. }) => Ok(warnings),
                Ok(Answer::Failure(reasons)) => Err(reasons.join("; ")),
                Err(why) => Err(why),
            }));
        }
        let reserved = ask(&mut session, &message(Request::Reserve(offer)), &plan.host);
        crate::fault::kill_point("migration.source.sent_reserve");
        let token = match reserved {
            Ok(Answer::Success {
                token: Some(token),
                warnings,
                ..
            }) => {
                self.report(WorkerReport::Reserved {
                    token: token.clone(),
                    warnings,
                });
                token
            }
            Ok(Answer::Success { token: None, .. }) => {
                return self.report(WorkerReport::Failed(format!(
                    "{} reserved without a token",
                    plan.host
                )));
            }
            Ok(Answer::Failure(reasons)) => {
                return self.report(WorkerReport::Failed(reasons.join("; ")));
            }
            Err(why) => return self.report(WorkerReport::Failed(why)),
        };
        // The modelled runtime state, paced like the guest's memory would be.
        let total = Duration::from_secs_f64(
            (plan.memory_bytes as f64 / (1u64 << 30) as f64)
                * self.settings.seconds_per_gib.max(0.0),
        );
        let pace = total
            .checked_div(plan.chunks.max(1))
            .unwrap_or(Duration::ZERO);
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut reported = Instant::now();
        for seq in 0..plan.chunks {
            let started = Instant::now();
            let chunk = wire::modelled_chunk(plan.id, seq);
            wire::chunk_digest_update(&mut digest, seq, &chunk);
            let request = Request::Transfer {
                token: token.clone(),
                seq,
                chunks: plan.chunks,
                chunk,
            };
            match ask(&mut session, &message(request), &plan.host) {
                Ok(Answer::Success { .. }) => {}
                Ok(Answer::Failure(reasons)) => {
                    return self.report(WorkerReport::Failed(reasons.join("; ")));
                }
                Err(why) => return self.report(WorkerReport::Failed(why)),
            }
            crate::fault::kill_point("migration.source.sent_transfer");
            if self.stopped() {
                return;
            }
            let sent = seq.saturating_add(1);
            // A progress event at most every 100 ms, and the last one always.
            if reported.elapsed() >= Duration::from_millis(100) || sent == plan.chunks {
                self.report(WorkerReport::Progress {
                    sent,
                    chunks: plan.chunks,
                });
                reported = Instant::now();
            }
            // A cancel (or shutdown) stops the transfer between chunks.
            if let Some(wait) = pace.checked_sub(started.elapsed())
                && self.wait_or_stopped(wait)
            {
                return;
            }
        }
        let mut finished = [0u8; 32];
        finished.copy_from_slice(digest.finish().as_ref());
        self.commit = Some((plan.chunks, finished));
        self.session = Some(session);
        self.report(WorkerReport::TransferComplete);
    }

    /// Whether the registry abandoned the migration meanwhile (a cancel): it dropped the
    /// channel, or sent a courtesy resolve, done here before stopping.
    fn stopped(&mut self) -> bool {
        match self.inbox.try_recv() {
            Err(std::sync::mpsc::TryRecvError::Empty) => false,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => true,
            Ok(command) => {
                self.execute(command);
                true
            }
        }
    }

    /// Sleeps `wait`, unless the registry is gone; true if it is.
    fn wait_or_stopped(&mut self, wait: Duration) -> bool {
        match self.inbox.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
            // A command before the transfer ended: the registry abandoned the migration (a
            // courtesy resolve). Do it, then stop.
            Ok(command) => {
                self.execute(command);
                true
            }
        }
    }

    /// Commands, one at a time, until the registry drops the channel.
    fn serve(mut self) {
        while let Ok(command) = self.inbox.recv() {
            self.execute(command);
        }
        if let Some(session) = self.session.take() {
            session.close();
        }
    }

    fn execute(&mut self, command: Command) {
        let Command::Send {
            contact,
            send,
            settle,
        } = command;
        match send {
            Send::Commit => self.commit(&contact),
            Send::Resolve => self.settle(&contact, Send::Resolve, settle),
            Send::Forget => self.settle(&contact, Send::Forget, settle),
        }
    }

    /// Commit, on the operator's session (a resolver may not commit): one try. No definitive
    /// answer within `commit_timeout` leaves the outcome to resolve.
    fn commit(&mut self, contact: &Contact) {
        let (Some(mut session), Some((chunks, digest))) = (self.session.take(), self.commit) else {
            return self.report(WorkerReport::NoOutcome(format!(
                "the session with {} was gone before the commit",
                contact.host
            )));
        };
        let message = Message {
            id: contact.id,
            domain: contact.target_domain.clone(),
            request: Request::Commit {
                token: contact.token.clone(),
                chunks,
                digest,
            },
        };
        session.set_reply_timeout(self.settings.commit_timeout);
        let answer = ask(&mut session, &message, &contact.host);
        crate::fault::kill_point("migration.source.sent_commit");
        self.report(match answer {
            Ok(Answer::Success {
                outcome: Some(outcome),
                ..
            }) => {
                session.close();
                WorkerReport::Outcome(outcome)
            }
            Ok(Answer::Success { outcome: None, .. }) => WorkerReport::NoOutcome(format!(
                "{} answered the commit without an outcome",
                contact.host
            )),
            Ok(Answer::Failure(reasons)) => WorkerReport::NoOutcome(format!(
                "{} refused the commit ({})",
                contact.host,
                reasons.join("; ")
            )),
            Err(why) => {
                WorkerReport::NoOutcome(format!("the link failed after the handoff ({why})"))
            }
        });
    }

    /// Resolve or forget as the resolver, until the target answers for good (with `settle`),
    /// or for a few tries (a courtesy).
    fn settle(&mut self, contact: &Contact, send: Send, settle: bool) {
        let mut backoff = BACKOFF_FIRST;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            match self.try_settle(contact, send) {
                Some(report) => {
                    if settle {
                        self.report(report);
                    }
                    return;
                }
                None if !settle && attempt >= COURTESY_ATTEMPTS => return,
                None => {}
            }
            // The registry gone means the daemon stops: the restart takes over.
            match self.inbox.recv_timeout(backoff) {
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
                // A newer command supersedes this one (a cancel's resolve while resolving).
                Ok(Command::Send { .. }) => {}
            }
            backoff = backoff
                .saturating_mul(2)
                .min(self.settings.resolve_backoff_max);
        }
    }

    fn try_settle(&mut self, contact: &Contact, send: Send) -> Option<WorkerReport> {
        let login = Login {
            user: contact.id.resolver_user(),
            password: Zeroizing::new(contact.token.to_hex()),
        };
        let mut session = match self.connect(&contact.host, contact.port, login) {
            Ok(session) => session,
            Err(e) => {
                tracing::debug!(migration = %contact.id, error = %e, "cannot reach the target to settle");
                return None;
            }
        };
        let token = contact.token.clone();
        let request = match send {
            Send::Forget => Request::Forget { token },
            Send::Resolve | Send::Commit => Request::Resolve { token },
        };
        let message = Message {
            id: contact.id,
            domain: contact.target_domain.clone(),
            request,
        };
        let answer = ask(&mut session, &message, &contact.host);
        crate::fault::kill_point(match send {
            Send::Forget => "migration.source.sent_forget",
            Send::Resolve | Send::Commit => "migration.source.sent_resolve",
        });
        session.close();
        match (send, answer) {
            (Send::Forget, Ok(Answer::Success { .. })) => Some(WorkerReport::Forgotten),
            (
                _,
                Ok(Answer::Success {
                    outcome: Some(outcome),
                    ..
                }),
            ) => Some(WorkerReport::Outcome(outcome)),
            (_, Ok(answer)) => {
                tracing::debug!(migration = %contact.id, ?answer, "no outcome from the target yet");
                None
            }
            (_, Err(why)) => {
                tracing::debug!(migration = %contact.id, error = %why, "no answer from the target");
                None
            }
        }
    }

    fn connect(&self, host: &str, port: u16, login: Login) -> Result<Session, ClientError> {
        let trust = super::trust::peer_trust(&self.settings)?;
        // The stream's `to`, as `ldm` writes it: the host name, or localhost for an address.
        let domain = if host.parse::<std::net::IpAddr>().is_ok() {
            "localhost".to_owned()
        } else {
            host.to_owned()
        };
        Session::connect(&Target {
            endpoint: Endpoint::Tcp {
                host: host.to_owned(),
                port,
            },
            domain: Some(domain),
            trust,
            login: Some(login),
            connect_timeout: self.settings.connect_timeout,
            reply_timeout: self.settings.reply_timeout,
        })
    }
}

/// Sends `message` and reads the target's answer; `Err` says why there is none.
fn ask(session: &mut Session, message: &Message, host: &str) -> Result<Answer, String> {
    let mut xml = Vec::new();
    crate::ldm::write::write_request(&mut xml, &message.to_document());
    match session.request(&xml) {
        Ok((_, reply)) => {
            let answer = Answer::from_reply(message.action(), &reply);
            if !answer.speaks_migration() {
                return Ok(Answer::Failure(vec![format!(
                    "the ldmd at {host} does not speak migration protocol {}",
                    super::PROTOCOL_VERSION
                )]));
            }
            Ok(answer)
        }
        Err(e) => Err(describe(&e, host)),
    }
}

/// A client error, in the words of a migration's refusal.
fn describe(error: &ClientError, host: &str) -> String {
    match error {
        ClientError::Auth { user, .. } => {
            format!("{host} refused the login of {user} (wrong user name or password)")
        }
        ClientError::Tls { reason, .. } => format!("TLS with {host} failed: {reason}"),
        ClientError::Setup(reason) => reason.clone(),
        other => other.to_string(),
    }
}
