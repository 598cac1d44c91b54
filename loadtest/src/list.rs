//! `ldm-load list`: `list-domain` of every domain, on held sessions. A pure read: on ldmd it
//! commits nothing and waits at most for the registry's batch in progress. Its cost grows with
//! the domains the registry holds (a fresh one holds `primary` only).

use clap::Args;

use crate::connect::Connect;
use crate::driver::{self, Client, Ctx, Drive, Workload};
use crate::ldm::Action;
use crate::session::{Session, SessionError};

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(flatten)]
    pub drive: Drive,
}

pub async fn list(args: ListArgs) -> i32 {
    driver::main(List, &args.connect, &args.drive).await
}

pub struct List;

impl Workload for List {
    type Client = Lister;

    fn scenario(&self) -> &'static str {
        "list"
    }

    fn operations(&self) -> &'static [&'static str] {
        &["list-domain"]
    }

    fn client(&self, _index: usize, session: Option<Session>) -> Lister {
        Lister {
            session: session.expect("a list client holds a session"),
            document: Action::ListDomain.document(None),
        }
    }
}

pub struct Lister {
    session: Session,
    document: String,
}

impl Client for Lister {
    async fn step(&mut self, ctx: &mut Ctx) -> Result<(), SessionError> {
        ctx.request(&mut self.session, 0, "(all)", &self.document)
            .await?;
        Ok(())
    }

    fn into_session(self) -> Option<Session> {
        Some(self.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::Scenario;
    use crate::testing::{Answers, Ldmd, block_on, scenario};

    #[test]
    fn list_reads_every_domain_and_the_json_report_has_its_rows() {
        // Through the binary's own path: the exit status, and --json with the run's settings.
        let ldmd = Ldmd::start(Answers::Registry);
        let json = ldmd.dir.path().join("list.json");
        let json_flag = json.display().to_string();
        let Scenario::List(args) = scenario(
            &ldmd,
            "list",
            &["--clients", "2", "--count", "10", "--json", &json_flag],
        ) else {
            panic!("not list")
        };
        assert_eq!(block_on(list(args)), 0);
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["scenario"], "list");
        assert_eq!(report["mode"], "closed");
        assert_eq!(report["clients"], 2);
        assert_eq!(report["count"], 10);
        assert_eq!(report["session_errors"], 0);
        assert_eq!(report["problems"], serde_json::json!([]));
        let rows = report["operations"].as_array().unwrap();
        let names: Vec<_> = rows
            .iter()
            .map(|r| r["operation"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["list-domain", "total"]);
        assert_eq!(rows[0]["count"], 10);
        assert_eq!(rows[0]["errors"], 0);
        for field in [
            "ops_per_second",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p99_9_ms",
            "max_ms",
        ] {
            assert!(rows[1][field].as_f64().unwrap() > 0.0, "{field}");
        }
    }

    #[test]
    fn a_bad_argument_exits_2_before_anything_runs() {
        // No --ca and no --insecure: nothing to verify the server with.
        let args =
            crate::testing::parse(&["list", "--target", "127.0.0.1:9", "--count", "1"]).unwrap();
        let Scenario::List(args) = args else {
            panic!("not list")
        };
        assert_eq!(block_on(list(args)), 2);
    }
}
