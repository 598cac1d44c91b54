//! Which I/O runtime the I/O threads run on, chosen once at start.
//!
//! Both runtimes are a tokio current-thread runtime with a `LocalSet`, and both drive the same
//! connection actors, router, pools and limits: readiness, timers and channels come from tokio
//! in either. They differ only in how a connection's writes and the TCP accepts are carried
//! out (see [`super::shell`]): by io_uring (tokio-uring), or by non-blocking system calls when
//! epoll says the socket is ready.
//!
//! io_uring is often unavailable: container runtimes' default seccomp profiles refuse
//! `io_uring_setup`, the `kernel.io_uring_disabled` sysctl turns it off, and older kernels lack
//! operations. So `auto` sets up a ring and checks every operation ldmd submits before choosing
//! it, and otherwise falls back to epoll, saying why.

use std::fmt;
use std::future::Future;
use std::io;

use serde::Deserialize;

/// The `runtime` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeChoice {
    /// io_uring when the probe finds everything ldmd needs, epoll otherwise.
    #[default]
    Auto,
    /// io_uring or a start-up error.
    IoUring,
    Epoll,
}

impl RuntimeChoice {
    /// Parses a `--runtime` value.
    pub fn parse(text: &str) -> Result<RuntimeChoice, String> {
        match text {
            "auto" => Ok(RuntimeChoice::Auto),
            "io_uring" => Ok(RuntimeChoice::IoUring),
            "epoll" => Ok(RuntimeChoice::Epoll),
            _ => Err(format!(
                "unknown runtime {text:?}: expected auto, io_uring or epoll"
            )),
        }
    }
}

/// The runtime the I/O threads run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    IoUring,
    Epoll,
}

impl Runtime {
    /// The name used in the configuration, the logs and `ldmd_runtime_info`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::IoUring => "io_uring",
            Runtime::Epoll => "epoll",
        }
    }

    /// Builds this thread's runtime. `run` is called inside it to make the thread's main
    /// future; its tasks are spawned with `tokio::task::spawn_local`.
    pub fn build(self) -> io::Result<ThreadRuntime> {
        match self {
            Runtime::IoUring => {
                let runtime =
                    tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES))?;
                Ok(ThreadRuntime::IoUring(runtime))
            }
            Runtime::Epoll => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(ThreadRuntime::Epoll(runtime, tokio::task::LocalSet::new()))
            }
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One I/O thread's runtime, built before the thread reports itself started.
pub enum ThreadRuntime {
    IoUring(tokio_uring::Runtime),
    Epoll(tokio::runtime::Runtime, tokio::task::LocalSet),
}

impl ThreadRuntime {
    /// Runs `future` to completion on this thread.
    pub fn block_on<F: Future>(self, future: F) -> F::Output {
        match self {
            ThreadRuntime::IoUring(runtime) => runtime.block_on(future),
            ThreadRuntime::Epoll(runtime, local) => local.block_on(&runtime, future),
        }
    }
}

/// Submission queue entries per I/O thread (tokio-uring's default; the probe uses the same).
const RING_ENTRIES: u32 = 256;

/// Why the runtime asked for cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("io_uring cannot be used: {0}")]
pub struct Unavailable(pub String);

impl From<Runtime> for RuntimeChoice {
    fn from(runtime: Runtime) -> RuntimeChoice {
        match runtime {
            Runtime::IoUring => RuntimeChoice::IoUring,
            Runtime::Epoll => RuntimeChoice::Epoll,
        }
    }
}

/// The runtime `choice` resolves to here; when `auto` falls back, one warning says why.
pub fn resolve(choice: RuntimeChoice) -> Result<Runtime, Unavailable> {
    let (runtime, fallback) = choose(choice)?;
    if let Some(why) = fallback {
        tracing::warn!("{why}; using epoll instead");
    }
    Ok(runtime)
}

/// The runtime `choice` resolves to here, and, when `auto` fell back, why.
pub fn choose(choice: RuntimeChoice) -> Result<(Runtime, Option<Unavailable>), Unavailable> {
    match choice {
        RuntimeChoice::Epoll => Ok((Runtime::Epoll, None)),
        RuntimeChoice::IoUring => probe_io_uring().map(|()| (Runtime::IoUring, None)),
        RuntimeChoice::Auto => match probe_io_uring() {
            Ok(()) => Ok((Runtime::IoUring, None)),
            Err(why) => Ok((Runtime::Epoll, Some(why))),
        },
    }
}

/// Sets up a ring as the I/O threads will, checks that the kernel supports every operation
/// tokio-uring submits for ldmd (accept, write, and the cancellation of an abandoned write at
/// shutdown), and carries one write through it end to end, so that a ring that can be set up
/// but not entered (a filter on `io_uring_enter`) is caught here too.
pub fn probe_io_uring() -> Result<(), Unavailable> {
    use io_uring::{IoUring, Probe, opcode, types};

    let mut ring = IoUring::new(RING_ENTRIES).map_err(|e| Unavailable(setup_refused(&e)))?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        Unavailable(format!(
            "the kernel cannot list its io_uring operations: {e}"
        ))
    })?;
    let needed = [
        ("accept", opcode::Accept::CODE),
        ("write", opcode::Write::CODE),
        ("async cancel", opcode::AsyncCancel::CODE),
    ];
    for (name, code) in needed {
        if !probe.is_supported(code) {
            return Err(Unavailable(format!(
                "the kernel's io_uring lacks the {name} operation"
            )));
        }
    }

    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Unavailable(format!("probe socket pair: {e}")))?;
    let message = b"ldmd";
    let write = opcode::Write::new(
        types::Fd(std::os::fd::AsRawFd::as_raw_fd(&ours)),
        message.as_ptr(),
        message.len() as u32,
    )
    .build()
    .user_data(1);
    // SAFETY: `message` and `ours` outlive the operation: we wait for its completion below,
    // and an error return leaves nothing submitted (the ring is dropped before them).
    unsafe { ring.submission().push(&write) }
        .map_err(|_| Unavailable("the probe's submission queue is full".to_owned()))?;
    ring.submit_and_wait(1)
        .map_err(|e| Unavailable(format!("io_uring_enter: {e}")))?;
    let written = ring.completion().next().map(|c| c.result());
    drop(ring);
    if written != Some(message.len() as i32) {
        return Err(Unavailable(format!(
            "a write through io_uring did not complete (result {written:?})"
        )));
    }
    let mut echoed = [0u8; 4];
    std::io::Read::read_exact(&mut &theirs, &mut echoed)
        .map_err(|e| Unavailable(format!("probe read: {e}")))?;
    if &echoed != message {
        return Err(Unavailable(
            "a write through io_uring wrote other bytes".to_owned(),
        ));
    }
    Ok(())
}

/// Names the likely cause of a refused `io_uring_setup`.
fn setup_refused(error: &io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&v| v != 0);
    match (error.raw_os_error(), sysctl) {
        (Some(libc::EPERM), Some(value)) => {
            format!("io_uring_setup: {error} (kernel.io_uring_disabled = {value})")
        }
        (Some(libc::EPERM), None) => format!(
            "io_uring_setup: {error} (refused by a seccomp filter or security module; \
             container runtimes' default profiles refuse it)"
        ),
        (Some(libc::ENOSYS), _) => format!(
            "io_uring_setup: {error} (the kernel has no io_uring, or a seccomp filter hides it)"
        ),
        _ => format!("io_uring_setup: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_epoll_needs_no_probe() {
        assert_eq!(RuntimeChoice::parse("auto"), Ok(RuntimeChoice::Auto));
        assert_eq!(RuntimeChoice::parse("io_uring"), Ok(RuntimeChoice::IoUring));
        assert_eq!(RuntimeChoice::parse("epoll"), Ok(RuntimeChoice::Epoll));
        assert!(
            RuntimeChoice::parse("uring")
                .unwrap_err()
                .contains("auto, io_uring or epoll")
        );
        assert_eq!(choose(RuntimeChoice::Epoll).unwrap().0, Runtime::Epoll);
    }
}
