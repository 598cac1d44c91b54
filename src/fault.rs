//! Named fault points, for tests that must prove what happens when the disk, a thread or the
//! process fails at a given instant.
//!
//! Compiled in only with the cargo feature `fault-points` (tests build with it; releases do
//! not): without it, [`point`] is a constant `None` and the optimizer removes every call site.
//! A test arms points through the environment of the daemon it starts:
//!
//! ```text
//! LDMD_FAULTS="store.commit=eio*3;registry.commit=panic@2"
//!              ^point       ^what ^times  ^hits to let pass first
//! ```
//!
//! `what` is `eio`, `enospc` (the call fails with that error), `panic`, `kill` (the process
//! sends itself SIGKILL: a `kill -9` at exactly that instant), `pause` or `hold`. Without `*times` the
//! point fires on every hit after the skipped ones. The points, and where they are:
//!
//! | point | where | what it proves |
//! |---|---|---|
//! | `store.commit` | the registry's durable write of a batch | a failed commit refuses that batch's writes, reads go on, the store is retried |
//! | `store.open` | reopening the store after a failure | retries back off and never end the daemon |
//! | `registry.commit` | the registry thread, before it writes a batch | a panic ends the process; nothing acknowledged is lost |
//! | `migration.source.preparing`, `.reserved`, `.prepared`, `.in_doubt`, `.done`, `.resumed`, `.forgotten` | right after the source's commit of that transition | `kill`: the restart rules of the source |
//! | `migration.source.sent_reserve`, `.sent_transfer`, `.sent_commit`, `.sent_resolve`, `.sent_forget` | the source's worker, right after that message's answer | `kill`, or `pause` to cut the link at that step |
//! | `migration.target.reserved`, `.committed`, `.released`, `.forgotten` | right after the target's commit of that transition, before its answer | `kill`: the restart rules of the target |
//! | `migration.target.answered` | each answer of the target to a migration message, once written (count them with `@`) | `kill` after the answer left |
//!
//! `kill` sends the process SIGKILL; `pause` holds the thread 1.5 s after printing
//! `ldmd: fault point NAME: pausing` on stderr; `hold` holds it until the file named by
//! `LDMD_FAULT_RELEASE` exists, after printing `ldmd: fault point NAME: holding` (and then the
//! point passes).

use std::io;

/// What an armed point does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fail with `EIO`.
    Eio,
    /// Fail with `ENOSPC`.
    Enospc,
    /// Panic on the spot.
    Panic,
    /// The process sends itself SIGKILL: a `kill -9` at exactly this instant.
    Kill,
    /// The thread sleeps a second and a half, after saying so on stderr: a window for a test
    /// to cut the link at exactly this step.
    Pause,
    /// The thread waits, after saying so on stderr, until the file named by
    /// `LDMD_FAULT_RELEASE` exists: a test holds it exactly as long as it needs, with no
    /// timing in the test. The point then passes (an I/O point succeeds).
    Hold,
}

impl Fault {
    /// The I/O error this fault stands for, or a panic for [`Fault::Panic`].
    pub fn io_error(self, point: &str) -> io::Error {
        match self {
            Fault::Eio => io::Error::from_raw_os_error(libc::EIO),
            Fault::Enospc => io::Error::from_raw_os_error(libc::ENOSPC),
            Fault::Panic => panic!("fault point {point} fired"),
            Fault::Kill => kill(point),
            Fault::Pause => {
                pause(point);
                io::Error::other(format!("fault point {point} paused"))
            }
            Fault::Hold => unreachable!("a hold passes: io_point does not ask for its error"),
        }
    }
}

/// Waits until the file `LDMD_FAULT_RELEASE` names exists (at most ten minutes, so that a test
/// that dies never leaves a daemon held forever).
fn hold(point: &str) {
    let release = std::env::var_os("LDMD_FAULT_RELEASE");
    eprintln!("ldmd: fault point {point}: holding");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while let Some(path) = &release
        && !std::path::Path::new(path).exists()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    eprintln!("ldmd: fault point {point}: released");
}

/// How long a `pause` fault holds its thread.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(1500);

fn pause(point: &str) {
    eprintln!("ldmd: fault point {point}: pausing");
    std::thread::sleep(PAUSE);
}

/// Ends the process with SIGKILL, as `kill -9` would, saying where on stderr first.
fn kill(point: &str) -> ! {
    eprintln!("ldmd: fault point {point}: SIGKILL");
    // SAFETY: raise has no preconditions; SIGKILL cannot be caught, so it does not return.
    unsafe { libc::raise(libc::SIGKILL) };
    std::process::abort()
}

/// A point where a test may kill the daemon (`point=kill`) or hold it a moment
/// (`point=pause`); any other fault armed here panics.
pub fn kill_point(name: &str) {
    if let Some(fault) = point(name) {
        match fault {
            Fault::Kill => kill(name),
            Fault::Pause => pause(name),
            Fault::Hold => hold(name),
            other => panic!("fault point {name} fired ({other:?})"),
        }
    }
}

/// Whether the point `name` fires now (always `None` without the `fault-points` feature).
#[cfg(not(feature = "fault-points"))]
#[inline(always)]
pub fn point(_name: &str) -> Option<Fault> {
    None
}

/// Fails with the armed I/O error, or panics, when the point `name` fires.
pub fn io_point(name: &str) -> io::Result<()> {
    match point(name) {
        Some(Fault::Hold) => {
            hold(name);
            Ok(())
        }
        Some(fault) => Err(fault.io_error(name)),
        None => Ok(()),
    }
}

#[cfg(feature = "fault-points")]
pub use armed::point;

#[cfg(feature = "fault-points")]
mod armed {
    use std::sync::{Mutex, OnceLock};

    use super::Fault;

    /// The environment variable that arms points.
    const VARIABLE: &str = "LDMD_FAULTS";

    struct Armed {
        name: String,
        fault: Fault,
        /// Hits still to let pass.
        skip: u64,
        /// Times still to fire; `None`: every time.
        times: Option<u64>,
    }

    fn table() -> &'static Mutex<Vec<Armed>> {
        static TABLE: OnceLock<Mutex<Vec<Armed>>> = OnceLock::new();
        TABLE.get_or_init(|| {
            let spec = std::env::var(VARIABLE).unwrap_or_default();
            let armed = parse(&spec).unwrap_or_else(|e| panic!("{VARIABLE}: {e}"));
            Mutex::new(armed)
        })
    }

    pub fn point(name: &str) -> Option<Fault> {
        let mut table = table().lock().unwrap_or_else(|e| e.into_inner());
        let armed = table.iter_mut().find(|a| a.name == name)?;
        if armed.skip > 0 {
            armed.skip -= 1;
            return None;
        }
        match &mut armed.times {
            Some(0) => None,
            Some(times) => {
                *times -= 1;
                Some(armed.fault)
            }
            None => Some(armed.fault),
        }
    }

    fn parse(spec: &str) -> Result<Vec<Armed>, String> {
        let mut armed = Vec::new();
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, rest) = entry
                .split_once('=')
                .ok_or_else(|| format!("'{entry}' is not point=fault"))?;
            let (rest, skip) = match rest.split_once('@') {
                Some((rest, skip)) => (
                    rest,
                    skip.parse().map_err(|_| format!("bad @ in '{entry}'"))?,
                ),
                None => (rest, 0),
            };
            let (what, times) = match rest.split_once('*') {
                Some((what, times)) => (
                    what,
                    Some(times.parse().map_err(|_| format!("bad * in '{entry}'"))?),
                ),
                None => (rest, None),
            };
            let fault = match what {
                "eio" => Fault::Eio,
                "enospc" => Fault::Enospc,
                "panic" => Fault::Panic,
                "kill" => Fault::Kill,
                "pause" => Fault::Pause,
                "hold" => Fault::Hold,
                other => return Err(format!("unknown fault '{other}'")),
            };
            armed.push(Armed {
                name: name.to_owned(),
                fault,
                skip,
                times,
            });
        }
        Ok(armed)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn specs_parse_with_skip_and_times() {
            let armed = parse("store.commit=eio*3@2; registry.commit=panic").unwrap();
            assert_eq!(armed.len(), 2);
            assert_eq!(
                (armed[0].fault, armed[0].skip, armed[0].times),
                (Fault::Eio, 2, Some(3))
            );
            assert_eq!((armed[1].fault, armed[1].times), (Fault::Panic, None));
            assert!(parse("x=boom").is_err());
            assert!(parse("x").is_err());
        }
    }
}
