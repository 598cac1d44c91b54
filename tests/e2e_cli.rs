//! The `ldm` binary against a real daemon (issue 5): a full domain lifecycle with its printed
//! table, parseable lines and JSON; resource, SP configuration and listing commands each
//! followed by the listing that shows their effect; refusals with the daemon's `resp_msg` on
//! stderr and exit status 1; usage errors (2), among them text XML cannot carry; no daemon
//! (3, one line); remote login over TCP with `--ca`, a wrong password (4) and a wrong pin or
//! CA (5); the trust rule of the Unix socket (2 for a directory others can write, 5 for a
//! foreign certificate); flags over the environment; a daemon that never answers (5 within
//! `--connect-timeout`); `ldm xml -`; `ldm events --count N` fed by other `ldm` invocations,
//! and exit 5 when the stream ends first; a closed stdout. Every `ldm` run, and every wait on
//! its output, is bounded in time and the process killed if it overruns.

mod support;

// The tests, by concept; beside this file rather than as test targets of their own.
#[path = "e2e_cli/commands.rs"]
mod commands;
#[path = "e2e_cli/connection.rs"]
mod connection;
#[path = "e2e_cli/events.rs"]
mod events;
#[path = "e2e_cli/oracle_shapes.rs"]
mod oracle_shapes;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::*;

const LDM: &str = env!("CARGO_BIN_EXE_ldm");
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// An `ldm` command with a clean environment (no inherited socket or password).
fn ldm_command(args: &[&str]) -> Command {
    let mut command = Command::new(LDM);
    command
        .args(args)
        .env_remove("LDMD_SOCKET")
        .env_remove("LDM_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` at most `RUN_LIMIT`, killing it if it overruns, and collects its output.
fn finish(mut child: Child, stdin: Option<&str>) -> Output {
    let mut input = child.stdin.take().expect("piped stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    // The caller may have taken stdout (to close it) or stderr (to wait for a line on it).
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_end(&mut text);
        }
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_end(&mut text);
        }
        text
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ldm ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The first line `child` writes on stderr, waited for at most `RUN_LIMIT` (the child is
/// killed if none comes); the returned thread collects the rest of stderr.
fn first_stderr_line(child: &mut Child) -> (String, JoinHandle<String>) {
    let stderr = child.stderr.take().expect("piped stderr");
    let (sender, receiver) = mpsc::channel();
    let rest = std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = sender.send(line);
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        rest
    });
    match receiver.recv_timeout(RUN_LIMIT) {
        Ok(line) => (line, rest),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ldm wrote no line on stderr within {RUN_LIMIT:?}");
        }
    }
}

fn run_with(mut command: Command, stdin: Option<&str>) -> Output {
    finish(command.spawn().unwrap(), stdin)
}

/// Runs `ldm --socket <daemon's socket> ARGS`.
fn ldm(daemon: &Daemon, args: &[&str]) -> Output {
    let socket = daemon.socket.to_str().unwrap().to_owned();
    let mut full = vec!["--socket", &socket];
    full.extend_from_slice(args);
    run_with(ldm_command(&full), None)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "ldm failed ({:?}): {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[track_caller]
fn exits(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

/// The table row of `domain` in `ldm list` output.
fn row<'t>(table: &'t str, domain: &str) -> &'t str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(domain))
        .unwrap_or_else(|| panic!("no {domain} in\n{table}"))
}
