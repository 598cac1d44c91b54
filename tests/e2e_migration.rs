//! Migration between two real daemons (issue 11): a source and a target on loopback, each with
//! its own state directory and port 0, the target with `tcp_loopback_is_local = false` so that
//! SASL is really used, and a test-owned TCP proxy between them for link faults. The source
//! trusts the target's certificate through `ldmd trust add`, as an operator would.

mod support;

#[path = "e2e_migration/harness.rs"]
mod harness;

#[path = "e2e_migration/cli.rs"]
mod cli;
#[path = "e2e_migration/flows.rs"]
mod flows;
#[path = "e2e_migration/measure.rs"]
mod measure;
#[cfg(feature = "fault-points")]
#[path = "e2e_migration/recovery.rs"]
mod recovery;
#[path = "e2e_migration/refusals.rs"]
mod refusals;
