//! A process's CPU time, from /proc: what `--server-pid` reports per operation.

/// User plus system CPU seconds of process `pid` so far, or `None` if it cannot be read.
pub fn seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat, ticks_per_second())
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line, in seconds. The command name
/// (field 2) may hold spaces and parentheses: fields are counted after its last `)`.
fn parse_stat(stat: &str, ticks: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / ticks)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_the_command_name() {
        let stat = "4242 (ld md) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_stat(stat, 100.0), Some(3.25));
        assert_eq!(parse_stat("4242 (ldmd) S 1", 100.0), None);
        assert!(seconds(std::process::id()).is_some());
    }
}
