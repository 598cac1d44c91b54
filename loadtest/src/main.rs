//! `ldm-load`: a load generator for ldmd (and, for the XMPP scenarios, any XMPP server).
//!
//! ```text
//! ldm-load idle --target 127.0.0.1:6482 --domain localhost --user alice --insecure \
//!               --sessions 10000 --pid $(pidof ldmd)
//! ldm-load write --target 127.0.0.1:6482 --insecure --clients 100 --duration 10s
//! ```
//! The password comes from `--password` or the `LDM_PASSWORD` environment variable. Every run
//! is bounded (session count, hold time, duration or operation count) and stops by itself.

mod connect;
mod driver;
mod idle;
mod latency;
mod ldm;
mod session;
mod write;

use std::path::Path;

use clap::{Parser, Subcommand};
use serde::Serialize;

use idle::IdleArgs;
use write::WriteArgs;

#[derive(Parser)]
#[command(
    name = "ldm-load",
    about = "Load generator for ldmd and other XMPP servers"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Hold N authenticated sessions idle and report the server's resident memory per session.
    Idle(IdleArgs),
    /// Durable writes in a closed loop per client (add-domain, set-vcpu, set-memory,
    /// remove-domain on its own domains); latency per action.
    Write(WriteArgs),
}

fn main() {
    raise_file_limit();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = runtime.block_on(async {
        match cli.scenario {
            Scenario::Idle(args) => idle::idle(args).await,
            Scenario::Write(args) => write::write(args).await,
        }
    });
    std::process::exit(code);
}

/// Writes a report as JSON when `--json FILE` was given; a failure to write is said, not fatal.
fn write_json(path: Option<&Path>, report: &impl Serialize) {
    if let Some(path) = path
        && let Err(e) = std::fs::write(path, serde_json::to_string_pretty(report).expect("json"))
    {
        eprintln!("ldm-load: {}: {e}", path.display());
    }
}

/// Many sessions need many descriptors: raise the soft limit to the hard one.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
