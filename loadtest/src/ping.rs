//! `ldm-load ping`: XEP-0199 pings on held sessions, `<iq type='get'><ping
//! xmlns='urn:xmpp:ping'/></iq>` to the server's domain, each answered by an iq `result`. Only
//! XMPP is involved, so this runs against any XMPP server (`--domain`, `--user`, `--password`,
//! `--insecure`). An iq `error` answer is a failed ping, not fatal.

use clap::Args;

use crate::connect::Connect;
use crate::driver::{self, Client, Ctx, Drive, Workload};
use crate::ldm::Outcome;
use crate::session::{Session, SessionError};

#[derive(Args)]
pub struct PingArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(flatten)]
    pub drive: Drive,
}

pub async fn ping(args: PingArgs) -> i32 {
    driver::main(Ping, &args.connect, &args.drive).await
}

pub struct Ping;

impl Workload for Ping {
    type Client = Pinger;

    fn scenario(&self) -> &'static str {
        "ping"
    }

    fn operations(&self) -> &'static [&'static str] {
        &["ping"]
    }

    fn client(&self, _index: usize, session: Option<Session>) -> Pinger {
        Pinger {
            session: session.expect("a ping client holds a session"),
            sent: 0,
        }
    }
}

pub struct Pinger {
    session: Session,
    /// Pings sent, for their ids.
    sent: u64,
}

impl Client for Pinger {
    async fn step(&mut self, ctx: &mut Ctx) -> Result<(), SessionError> {
        let id = format!("ping{}", self.sent);
        self.sent += 1;
        let start = ctx.begin(Some(&mut self.session)).await;
        let result = tokio::time::timeout(ctx.timeout(), self.session.ping(&id))
            .await
            .map_err(|_| {
                SessionError(format!(
                    "client {}: no answer to ping {id} within {:?}",
                    ctx.index(),
                    ctx.timeout()
                ))
            })?
            .map_err(|e| SessionError(format!("client {}: {e}", ctx.index())))?;
        let outcome = Outcome {
            success: result,
            message: (!result).then(|| "the answer was an iq error".to_owned()),
        };
        ctx.end(0, start, &outcome, &id);
        Ok(())
    }

    fn into_session(self) -> Option<Session> {
        Some(self.session)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    use crate::Scenario;
    use crate::testing::{Answers, Ldmd, block_on, scenario};

    #[test]
    fn every_ping_is_answered_on_sessions_from_spread_sources() {
        // Three sessions from 127.0.0.1, .2 and .3; twelve pings in all.
        let ldmd = Ldmd::start(Answers::Refusals);
        let Scenario::Ping(args) = scenario(
            &ldmd,
            "ping",
            &["--clients", "3", "--count", "12", "--source-ips", "3"],
        ) else {
            panic!("not ping")
        };
        let sources = args.connect.sources(3);
        assert_eq!(sources.count, 3);
        let mut report = block_on(driver::run(
            Arc::new(Ping),
            &args.connect,
            &args.drive,
            sources,
        ))
        .unwrap();
        report.judge();
        assert_eq!((report.sessions_open, report.session_errors), (3, 0));
        let rows: Vec<_> = report
            .operations
            .iter()
            .map(|r| (r.operation, r.count, r.errors))
            .collect();
        assert_eq!(rows, [("ping", 12, 0), ("total", 12, 0)]);
        assert_eq!(report.exit_code(), 0, "{:?}", report.problems);
    }
}
