//! `ldm-load`: a load generator for ldmd (and, for the XMPP scenarios `login` and `ping`, any
//! XMPP server).
//!
//! ```text
//! ldm-load idle --target 127.0.0.1:6482 --domain localhost --user alice --insecure \
//!               --sessions 10000 --pid $(pidof ldmd)
//! ldm-load write --target 127.0.0.1:6482 --insecure --clients 100 --duration 10s
//! ldm-load mixed --user alice --ca cert.pem --clients 1000 --rate 5000 --ramp-up 5s
//! ```
//! The password comes from `--password` or the `LDM_PASSWORD` environment variable. Every run
//! is bounded (session count and hold time, or duration and operation count) and stops by
//! itself. Exit status: 0 when all went well, 1 when sessions failed or ended early or
//! operations failed (the report says which), 2 for bad arguments.

mod connect;
mod cpu;
mod driver;
mod durability;
mod events;
mod idle;
mod latency;
mod ldm;
mod list;
mod login;
mod mixed;
mod ping;
mod progress;
mod rss;
mod session;
mod stanza;
#[cfg(test)]
mod testing;
mod write;

use std::path::Path;

use clap::{Parser, Subcommand};
use serde::Serialize;

use events::EventsArgs;
use idle::IdleArgs;
use list::ListArgs;
use login::LoginArgs;
use mixed::MixedArgs;
use ping::PingArgs;
use write::WriteArgs;

#[derive(Parser)]
#[command(
    name = "ldm-load",
    version,
    about = "Load generator for ldmd and other XMPP servers"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Session establishment: open a full session (TCP, STARTTLS, SASL, bind), close it, again.
    Login(LoginArgs),
    /// XEP-0199 pings on held sessions (any XMPP server).
    Ping(PingArgs),
    /// list-domain of every domain.
    List(ListArgs),
    /// A read-mostly mix of LDM actions, each client on domains of its own.
    Mixed(MixedArgs),
    /// Durable writes: add-domain, set-vcpu, set-memory, remove-domain on each client's own
    /// domains.
    Write(WriteArgs),
    /// Subscribers registered for every event, writers making changes; delivery latency.
    Events(EventsArgs),
    /// Hold N authenticated sessions idle and report the server's resident memory per session.
    Idle(IdleArgs),
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
            Scenario::Login(args) => login::login(args).await,
            Scenario::Ping(args) => ping::ping(args).await,
            Scenario::List(args) => list::list(args).await,
            Scenario::Mixed(args) => mixed::mixed(args).await,
            Scenario::Write(args) => write::write(args).await,
            Scenario::Events(args) => events::events(args).await,
            Scenario::Idle(args) => idle::idle(args).await,
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

/// The soft limit on open descriptors (after [`raise_file_limit`]); unlimited if unknown.
fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        u64::MAX
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
