//! `ldm-load write`: clients that each hold one session and run a closed loop over domains of
//! their own (`load-<run>-<client>-<k>`): add-domain, set-vcpu, set-memory, remove-domain, again.
//! On ldmd every one of these is a durable write. A failure reply is counted, not fatal.
//!
//! A step is a whole cycle of four, so `--count` rounds up to whole cycles, and a client that
//! began a cycle finishes it: a run leaves no domain behind, and may last one cycle past
//! `--duration` (each reply bounded by `--timeout`). The writers of `events` are these clients,
//! telling the event hub what they sent.

use std::sync::Arc;

use clap::Args;

use crate::connect::Connect;
use crate::driver::{self, Client, Ctx, Drive, Phase, Workload};
use crate::durability::DurabilityArgs;
use crate::events::Hub;
use crate::ldm::{self, Action};
use crate::session::{Session, SessionError};

#[derive(Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(flatten)]
    pub drive: Drive,
    #[command(flatten)]
    pub durability: DurabilityArgs,
}

pub async fn write(args: WriteArgs) -> i32 {
    let watched = Some((&args.durability, Action::CYCLE_NAMES));
    driver::main_watched(Write { hub: None }, &args.connect, &args.drive, watched).await
}

/// The write cycle, on each client's own domains.
pub struct Write {
    /// Told of every write before it is sent (the events scenario).
    pub hub: Option<Arc<Hub>>,
}

impl Workload for Write {
    type Client = Writer;

    fn scenario(&self) -> &'static str {
        if self.hub.is_some() {
            "events"
        } else {
            "write"
        }
    }

    fn operations(&self) -> &'static [&'static str] {
        Action::CYCLE_NAMES
    }

    fn step_operations(&self) -> u64 {
        Action::CYCLE.len() as u64
    }

    fn client(&self, index: usize, session: Option<Session>) -> Writer {
        Writer {
            index,
            session: session.expect("a write client holds a session"),
            next: 0,
            hub: self.hub.clone(),
        }
    }
}

pub struct Writer {
    index: usize,
    session: Session,
    /// The `k` of the next domain, `load-<run>-<index>-<k>`.
    next: u64,
    hub: Option<Arc<Hub>>,
}

impl Client for Writer {
    async fn step(&mut self, ctx: &mut Ctx) -> Result<(), SessionError> {
        let domain = ldm::domain_name(self.index, self.next);
        self.next += 1;
        for (operation, action) in Action::CYCLE.into_iter().enumerate() {
            let document = action.document(Some(&domain));
            let hub = self.hub.as_deref();
            let outcome = ctx
                .request_seen(
                    &mut self.session,
                    operation,
                    &domain,
                    &document,
                    |start, phase| {
                        if let Some(hub) = hub {
                            hub.expect(
                                action.name(),
                                &domain,
                                start.sent,
                                phase == Phase::Measured,
                            );
                        }
                    },
                )
                .await?;
            if !outcome.success
                && let Some(hub) = hub
            {
                hub.cancel(action.name(), &domain);
            }
        }
        Ok(())
    }

    fn into_session(self) -> Option<Session> {
        Some(self.session)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use crate::Scenario;
    use crate::connect::Sources;
    use crate::testing::{Answers, Ldmd, block_on, parse, scenario};

    fn args(scenario: Scenario) -> WriteArgs {
        match scenario {
            Scenario::Write(args) => args,
            _ => panic!("not write"),
        }
    }

    fn run(ldmd: &Ldmd, flags: &[&str]) -> driver::Report {
        let args = args(scenario(ldmd, "write", flags));
        let workload = Arc::new(Write { hub: None });
        let one = Sources { count: 1 };
        let mut report = block_on(driver::run(workload, &args.connect, &args.drive, one)).unwrap();
        report.judge();
        report
    }

    fn counts(report: &driver::Report) -> Vec<(&str, u64, u64)> {
        report
            .operations
            .iter()
            .map(|r| (r.operation, r.count, r.errors))
            .collect()
    }

    #[test]
    fn flags_parse_and_bad_values_are_refused() {
        let args = args(
            parse(&[
                "write",
                "--clients",
                "100",
                "--duration",
                "10s",
                "--count",
                "5000",
                "--target",
                "127.0.0.1:7000",
                "--user",
                "load",
                "--password",
                "pw",
                "--insecure",
                "--json",
                "out.json",
                "--rate",
                "2500",
                "--ramp-up",
                "2s",
            ])
            .unwrap(),
        );
        let drive = &args.drive;
        assert_eq!(drive.clients, 100);
        assert_eq!(drive.duration, Some(Duration::from_secs(10)));
        assert_eq!(drive.count, Some(5000));
        assert_eq!(drive.rate, Some(2500.0));
        assert_eq!(drive.ramp_up, Duration::from_secs(2));
        assert_eq!(args.connect.target.port(), 7000);
        assert_eq!(args.connect.user.as_deref(), Some("load"));
        assert!(args.connect.insecure);
        let defaults = args_of(&["write"]);
        let d = &defaults.drive;
        assert_eq!(
            (d.clients, d.duration, d.count, d.rate, d.ramp_up),
            (10, None, None, None, Duration::ZERO)
        );
        for bad in [
            &["--clients", "0"][..],
            &["--count", "0"],
            &["--duration", "10x"],
            &["--duration", "0s"],
            &["--rate", "0"],
            &["--ramp-up", "-1s"],
            &["--concurrency", "0"],
        ] {
            let argv: Vec<&str> = std::iter::once("write")
                .chain(bad.iter().copied())
                .collect();
            assert!(parse(&argv).is_err(), "{bad:?}");
        }
    }

    fn args_of(argv: &[&str]) -> WriteArgs {
        args(parse(argv).unwrap())
    }

    #[test]
    fn count_bound_stops_after_whole_cycles_and_leaves_no_domain_behind() {
        // --count 22 rounds up to 24: six cycles over three clients, all durable and successful
        // on the real registry, and every domain removed again.
        let ldmd = Ldmd::start(Answers::Registry);
        let report = run(&ldmd, &["--clients", "3", "--count", "22"]);
        assert_eq!((report.sessions_open, report.session_errors), (3, 0));
        assert_eq!(
            counts(&report),
            [
                ("add-domain", 6, 0),
                ("set-vcpu", 6, 0),
                ("set-memory", 6, 0),
                ("remove-domain", 6, 0),
                ("total", 24, 0)
            ]
        );
        let total = &report.operations[4];
        assert!(total.p50_ms > 0.0 && total.p50_ms <= total.p99_ms && total.p99_ms <= total.max_ms);
        assert_eq!(
            (report.mode, report.exit_code()),
            ("closed", 0),
            "{:?}",
            report.problems
        );
        assert_eq!(ldmd.domains(), ["primary"]);
    }

    #[test]
    fn failure_replies_are_counted_per_operation_and_fail_the_run() {
        let ldmd = Ldmd::start(Answers::Refusals);
        let report = run(&ldmd, &["--clients", "2", "--count", "8"]);
        assert_eq!(counts(&report)[4], ("total", 8, 8));
        assert_eq!(report.failures, 8);
        let failure = report.first_failure.as_deref().unwrap();
        assert!(
            failure.contains(" load-") && failure.contains("is not supported by this ldmd"),
            "{failure}"
        );
        assert_eq!(report.exit_code(), 1);
        assert!(
            report.problems[0].starts_with("8 operations failed"),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn duration_bound_stops_by_itself() {
        let ldmd = Ldmd::start(Answers::Registry);
        let report = run(&ldmd, &["--clients", "2", "--duration", "300ms"]);
        assert_eq!(report.session_errors, 0);
        assert!(
            (0.3..5.0).contains(&report.seconds),
            "ran {} s",
            report.seconds
        );
        let total = &report.operations[4];
        assert!(
            total.count > 0 && total.count.is_multiple_of(4),
            "{}",
            total.count
        );
        assert_eq!(ldmd.domains(), ["primary"]);
    }

    #[test]
    fn ramp_up_work_is_warm_up_and_left_out_of_the_count() {
        // Two clients, the second starting 300 ms in: the first's cycles until then are warm-up.
        let ldmd = Ldmd::start(Answers::Registry);
        let report = run(
            &ldmd,
            &["--clients", "2", "--ramp-up", "300ms", "--count", "16"],
        );
        assert!(report.warm_up_operations > 0, "{report:?}");
        assert_eq!(report.warm_up_operations % 4, 0);
        assert_eq!(counts(&report)[4], ("total", 16, 0));
        assert_eq!(ldmd.domains(), ["primary"]);
    }

    #[test]
    fn open_loop_sends_at_the_asked_rate() {
        // 200 requests a second for 500 ms from two clients: a schedule of about 100 requests,
        // sent in whole cycles. On a busy machine the server may fall behind: the requests it
        // missed are then counted, not lost, and the run says so in its exit status.
        let ldmd = Ldmd::start(Answers::Registry);
        let report = run(
            &ldmd,
            &["--clients", "2", "--rate", "200", "--duration", "500ms"],
        );
        assert_eq!((report.mode, report.rate), ("open", Some(200.0)));
        let total = &report.operations[4];
        let scheduled = total.count + report.missed;
        assert!(
            (80..=112).contains(&scheduled),
            "{} + {}",
            total.count,
            report.missed
        );
        assert!(total.count.is_multiple_of(4));
        assert_eq!((report.failures, report.session_errors), (0, 0));
        let fell_behind = usize::from(report.missed > 0);
        assert_eq!(report.problems.len(), fell_behind, "{:?}", report.problems);
        assert_eq!(report.exit_code(), i32::from(report.missed > 0));
        assert_eq!(ldmd.domains(), ["primary"]);
    }
}
