//! What a driven run reports: on stdout a summary, the table and a verdict; in `--json` the same
//! numbers with the run's settings.

use serde::Serialize;

use crate::latency::{self, Row};

/// One run of a request/reply scenario.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    /// `closed` or `open` (with `--rate`).
    pub mode: &'static str,
    /// Requests a second asked for, in the open loop.
    pub rate: Option<f64>,
    pub clients: usize,
    pub ramp_up_seconds: f64,
    /// The bounds asked for (`--duration`, `--count`).
    pub duration_seconds: Option<f64>,
    pub count: Option<u64>,
    pub sessions_open: usize,
    /// Sessions that did not open, or ended early (closed, stream error, no reply in time).
    pub session_errors: usize,
    pub first_session_error: Option<String>,
    /// The measured window: from the end of the ramp-up to the last measured reply, or to the
    /// deadline if that came later. Every rate in the table is over this.
    pub seconds: f64,
    /// Operations begun during the ramp-up: done, not in the table.
    pub warm_up_operations: u64,
    /// Open loop: measured requests sent more than 1 ms after their intended start.
    pub late: u64,
    /// Open loop: requests due before the deadline that were never sent (the client was still
    /// behind when the run ended).
    pub missed: u64,
    /// Failed operations everywhere: in the table, in the warm-up and in the cleanup.
    pub failures: u64,
    /// The first failure: its operation, object and reason.
    pub first_failure: Option<String>,
    /// Operations after the bound that put the server back as it was (unmeasured).
    pub cleanup_operations: u64,
    /// One row per operation, then `total`.
    pub operations: Vec<Row>,
    /// The server's CPU time over the measured window (`--server-pid`), cleanup included.
    pub server_cpu_seconds: Option<f64>,
    /// Commits and the disk's own pace (`--metrics-url`, `--disk-probe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<crate::durability::Durability>,
    /// Why the exit status is 1; empty when the run went well.
    pub problems: Vec<String>,
}

impl Report {
    /// Fills in `problems` from the counts (a scenario may add its own after).
    pub fn judge(&mut self) {
        if self.session_errors > 0 {
            self.problems.push(format!(
                "{} sessions failed to open or ended early (first: {})",
                self.session_errors,
                self.first_session_error.as_deref().unwrap_or("?")
            ));
        }
        if self.failures > 0 {
            self.problems.push(format!(
                "{} operations failed (first: {})",
                self.failures,
                self.first_failure.as_deref().unwrap_or("?")
            ));
        }
        if self.missed > 0 {
            self.problems.push(format!(
                "{} requests of the open-loop schedule were never sent: the server fell behind the asked rate",
                self.missed
            ));
        }
    }

    /// 0 when the run went well, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.problems.is_empty() { 0 } else { 1 }
    }

    /// The summary above the table.
    pub fn print_summary(&self) {
        println!(
            "scenario        {}: {} loop, {} clients",
            self.scenario, self.mode, self.clients
        );
        if self.session_errors > 0 || self.sessions_open > 0 {
            println!(
                "sessions        {} open, {} failed or ended early",
                self.sessions_open, self.session_errors
            );
        }
        if let Some(e) = &self.first_session_error {
            println!("first session error  {e}");
        }
        if self.ramp_up_seconds > 0.0 {
            println!(
                "measured        {:.2} s, from the end of the {:.2} s ramp-up to the last reply \
                 ({} warm-up operations left out)",
                self.seconds, self.ramp_up_seconds, self.warm_up_operations
            );
        } else {
            println!(
                "measured        {:.2} s, from the first request to the last reply",
                self.seconds
            );
        }
        if let Some(cpu) = self.server_cpu_seconds {
            let operations = self.operations.last().map_or(0, |r| r.count);
            let per_operation = if operations > 0 {
                format!("{:.3} ms", cpu * 1e3 / operations as f64)
            } else {
                "-".to_owned()
            };
            println!("server CPU      {cpu:.2} s over the window: {per_operation} per operation");
        }
        if let Some(rate) = self.rate {
            let total = self.operations.last().map_or(0.0, |r| r.ops_per_second);
            println!(
                "open loop       {rate:.1}/s asked, {total:.1}/s done; {} late (> 1 ms behind \
                 schedule), {} missed (still due at the deadline)",
                self.late, self.missed
            );
        }
        if self.cleanup_operations > 0 {
            println!(
                "cleanup         {} operations after the bound (not in the table)",
                self.cleanup_operations
            );
        }
        if let Some(f) = &self.first_failure {
            println!("first failure   {f}");
        }
        println!();
    }

    /// The verdict below the table.
    pub fn print_verdict(&self) {
        println!();
        if self.problems.is_empty() {
            println!("result          ok");
        } else {
            println!("result          FAILED");
            for problem in &self.problems {
                println!("  {problem}");
            }
        }
    }

    /// Summary, table, verdict.
    pub fn print(&self) {
        self.print_summary();
        latency::print_table(&self.operations);
        if let Some(durability) = &self.durability {
            println!();
            for line in durability.lines() {
                println!("{line}");
            }
        }
        self.print_verdict();
    }
}
