//! Latency per operation in HDR histograms, and the rows (table and JSON) made from them.
//!
//! Values are microseconds with 3 significant digits (at most 0.1% off), from 1 µs to an hour;
//! a longer one is recorded as an hour. One such histogram is about 190 KiB, so all clients
//! share one set behind a lock rather than each keeping its own (thousands of clients would
//! need hundreds of MiB).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency kept as measured.
const LATENCY_MICROS_MAX: u64 = 3_600_000_000;

/// Every reply's latency and every failure, per operation. A scenario names its operations
/// once, in table order, and records by position in that list.
pub struct Latencies {
    operations: &'static [&'static str],
    histograms: Vec<Histogram<u64>>,
    errors: Vec<u64>,
}

/// One line of the table: an operation, or all of them.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    pub operation: &'static str,
    /// Operations done (failures included).
    pub count: u64,
    /// Operations that failed: a failure reply, a refused login.
    pub errors: u64,
    pub ops_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
}

impl Latencies {
    pub fn new(operations: &'static [&'static str]) -> Latencies {
        Latencies {
            operations,
            histograms: operations.iter().map(|_| histogram()).collect(),
            errors: vec![0; operations.len()],
        }
    }

    /// The operation at `index` of the scenario's list took `latency`.
    pub fn record(&mut self, operation: usize, latency: Duration, success: bool) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histograms[operation].saturating_record(micros.max(1));
        if !success {
            self.errors[operation] += 1;
        }
    }

    /// Operations and failures so far, all together.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.histograms.iter().map(Histogram::len).sum(),
            self.errors.iter().sum(),
        )
    }

    /// One row per operation in the scenario's order, then `total`; rates over `elapsed`.
    pub fn rows(&self, elapsed: Duration) -> Vec<Row> {
        let mut all = histogram();
        let mut rows = Vec::with_capacity(self.operations.len() + 1);
        for (index, name) in self.operations.iter().enumerate() {
            let h = &self.histograms[index];
            all.add(h).expect("histograms share their bounds");
            rows.push(row(name, h, self.errors[index], elapsed));
        }
        let (_, errors) = self.totals();
        rows.push(row("total", &all, errors, elapsed));
        rows
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, 3).expect("valid histogram bounds")
}

fn row(operation: &'static str, h: &Histogram<u64>, errors: u64, elapsed: Duration) -> Row {
    let ms = |micros: u64| micros as f64 / 1000.0;
    let seconds = elapsed.as_secs_f64();
    Row {
        operation,
        count: h.len(),
        errors,
        ops_per_second: if seconds > 0.0 {
            h.len() as f64 / seconds
        } else {
            0.0
        },
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p99_9_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// The rows as a fixed-width table on stdout.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<18} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "operation", "count", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for r in rows {
        println!(
            "{:<18} {:>9} {:>7} {:>9.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            r.operation,
            r.count,
            r.errors,
            r.ops_per_second,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p99_9_ms,
            r.max_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATIONS: &[&str] = &["add-domain", "set-vcpu", "set-memory", "remove-domain"];

    #[test]
    fn rows_give_per_operation_and_total_counts_errors_rates_and_quantiles() {
        let mut l = Latencies::new(OPERATIONS);
        // add-domain: 1..=1000 ms, every tenth a failure; set-vcpu: one 5 ms reply.
        for ms in 1..=1000u64 {
            l.record(0, Duration::from_millis(ms), ms % 10 != 0);
        }
        l.record(1, Duration::from_millis(5), true);
        assert_eq!(l.totals(), (1001, 100));
        let rows = l.rows(Duration::from_secs(2));
        let names: Vec<_> = rows.iter().map(|r| r.operation).collect();
        assert_eq!(
            names,
            [
                "add-domain",
                "set-vcpu",
                "set-memory",
                "remove-domain",
                "total"
            ]
        );
        let add = &rows[0];
        assert_eq!(
            (add.count, add.errors, add.ops_per_second),
            (1000, 100, 500.0)
        );
        // 3 significant digits: each quantile within 0.1% of the exact value.
        for (got, exact) in [
            (add.p50_ms, 500.0),
            (add.p90_ms, 900.0),
            (add.p99_ms, 990.0),
            (add.p99_9_ms, 999.0),
            (add.max_ms, 1000.0),
        ] {
            assert!((got - exact).abs() <= exact * 0.001, "{got} vs {exact}");
        }
        let empty = &rows[2];
        assert_eq!((empty.count, empty.errors, empty.max_ms), (0, 0, 0.0));
        let total = &rows[4];
        assert_eq!((total.count, total.errors), (1001, 100));
        assert!((total.ops_per_second - 500.5).abs() < 1e-9);
    }

    #[test]
    fn a_latency_past_the_bound_is_kept_at_the_bound() {
        let mut l = Latencies::new(OPERATIONS);
        l.record(3, Duration::from_secs(7200), true);
        l.record(3, Duration::ZERO, true);
        let row = &l.rows(Duration::from_secs(1))[3];
        assert_eq!(row.count, 2);
        assert!(
            (row.max_ms - 3_600_000.0).abs() <= 3_600.0,
            "{}",
            row.max_ms
        );
    }
}
