//! `ldm-load login`: each client opens a full session (TCP, STARTTLS, TLS handshake, SASL PLAIN,
//! bind), closes it, and opens the next. A login's latency runs from the start of the TCP
//! connection to the bind's answer; the close that follows is not timed. Throughput is the
//! session establishment rate. A refused or failed login is counted as a failed `login`, not
//! fatal. With `--no-resumption` every TLS handshake is a full one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Args;

use crate::connect::{Connect, Sources};
use crate::driver::{self, Client, Ctx, Drive, Workload};
use crate::ldm::Outcome;
use crate::session::{Session, SessionError, Target};

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(flatten)]
    pub drive: Drive,
}

pub async fn login(args: LoginArgs) -> i32 {
    match Login::new(&args.connect, &args.drive) {
        Ok(workload) => driver::main(workload, &args.connect, &args.drive).await,
        Err(e) => {
            eprintln!("ldm-load: {e}");
            2
        }
    }
}

pub struct Login {
    target: Target,
    sources: Sources,
    /// Logins so far, all clients together: each takes the next source address.
    logins: Arc<AtomicUsize>,
}

impl Login {
    pub fn new(connect: &Connect, drive: &Drive) -> Result<Login, String> {
        Ok(Login {
            target: connect.target()?,
            sources: connect.sources(drive.clients as usize),
            logins: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl Workload for Login {
    type Client = LoginClient;

    fn scenario(&self) -> &'static str {
        "login"
    }

    fn operations(&self) -> &'static [&'static str] {
        &["login"]
    }

    fn holds_sessions(&self) -> bool {
        false
    }

    fn client(&self, _index: usize, _session: Option<Session>) -> LoginClient {
        LoginClient {
            target: self.target.clone(),
            sources: self.sources,
            logins: self.logins.clone(),
        }
    }
}

pub struct LoginClient {
    target: Target,
    sources: Sources,
    logins: Arc<AtomicUsize>,
}

impl Client for LoginClient {
    async fn step(&mut self, ctx: &mut Ctx) -> Result<(), SessionError> {
        self.target.source = self
            .sources
            .addr(self.logins.fetch_add(1, Ordering::Relaxed));
        let start = ctx.begin(None).await;
        // Bounded by --timeout inside.
        let opened = Session::open(&self.target).await;
        let outcome = match &opened {
            Ok(_) => Outcome {
                success: true,
                message: None,
            },
            Err(e) => Outcome {
                success: false,
                message: Some(e.to_string()),
            },
        };
        let user = self.target.user.as_deref().unwrap_or("(local peer)");
        ctx.end(0, start, &outcome, user);
        if let Ok(session) = opened {
            session.close().await;
        }
        Ok(())
    }

    fn into_session(self) -> Option<Session> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::Scenario;
    use crate::testing::{Answers, Ldmd, block_on, scenario};

    fn run(ldmd: &Ldmd, flags: &[&str]) -> driver::Report {
        run_with(ldmd, flags, |_| {})
    }

    fn run_with(
        ldmd: &Ldmd,
        flags: &[&str],
        change: impl FnOnce(&mut LoginArgs),
    ) -> driver::Report {
        let Scenario::Login(mut args) = scenario(ldmd, "login", flags) else {
            panic!("not login")
        };
        change(&mut args);
        let workload = Arc::new(Login::new(&args.connect, &args.drive).unwrap());
        let sources = args.connect.sources(1);
        let mut report =
            block_on(driver::run(workload, &args.connect, &args.drive, sources)).unwrap();
        report.judge();
        report
    }

    #[test]
    fn each_login_is_a_full_session_counted_once() {
        // Five logins from two clients, full handshakes, from three source addresses.
        let ldmd = Ldmd::start(Answers::Refusals);
        let report = run(
            &ldmd,
            &[
                "--clients",
                "2",
                "--count",
                "5",
                "--no-resumption",
                "--source-ips",
                "3",
            ],
        );
        let rows: Vec<_> = report
            .operations
            .iter()
            .map(|r| (r.operation, r.count, r.errors))
            .collect();
        assert_eq!(rows, [("login", 5, 0), ("total", 5, 0)]);
        assert_eq!(report.sessions_open, 0, "login holds no session");
        assert_eq!(report.exit_code(), 0, "{:?}", report.problems);
        assert!(report.operations[0].p50_ms > 0.0);
    }

    #[test]
    fn a_refused_login_is_a_failed_operation() {
        let ldmd = Ldmd::start(Answers::Refusals);
        let report = run_with(&ldmd, &["--clients", "1", "--count", "2"], |args| {
            args.connect.password = "wrong".into();
        });
        assert_eq!(
            (report.operations[0].count, report.operations[0].errors),
            (2, 2)
        );
        let failure = report.first_failure.as_deref().unwrap();
        assert!(
            failure.starts_with("login load: authentication failed"),
            "{failure}"
        );
        assert_eq!(report.exit_code(), 1);
    }
}
