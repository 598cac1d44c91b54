//! Metric names, help texts and handles, resolved once and kept (an increment through a kept
//! handle costs about 16 ns; through the macro each time about 130 ns).
//!
//! Names follow Prometheus conventions: `ldmd_` prefix, base units (seconds, bytes), `_total`
//! for counters. Every label takes values from a fixed set (an unknown LDM action is `other`),
//! so no peer can grow the number of series. The exporter must be installed (see
//! [`install_exporter`]) before [`get`] is first called, or the handles are no-ops.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, describe_counter, describe_gauge, describe_histogram, gauge,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::ldm::{Action, ActionName, Status};
use crate::limits::Limit;
use crate::registry::model::MemDrEnd;
use crate::xmpp::error::{SaslFailure, StreamErrorCondition};

/// Request latency buckets: 50 µs to 60 s. Reads answer in tens of microseconds; durable writes
/// wait for an fsync (milliseconds); a memory DR is answered when the guest is done (seconds).
const LATENCY_BUCKETS: [f64; 19] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];
/// TLS handshake buckets: 100 µs to 1 s. A full handshake costs the server about 0.1 ms of CPU;
/// the measured time also holds the client's round trips and its own CPU time.
const HANDSHAKE_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Commit buckets: an fsync on local storage takes 0.1 to 10 ms.
const COMMIT_BUCKETS: [f64; 22] = [
    0.00005, 0.000075, 0.0001, 0.000125, 0.00015, 0.000175, 0.0002, 0.00025, 0.0003, 0.0004,
    0.0005, 0.00075, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.5, 2.0,
];
/// Requests per registry batch: powers of two up to the batch limit (256).
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Migration buckets (duration and downtime): 10 ms to 1 h. The protocol itself takes tens of
/// milliseconds; moving a large running domain at the modelled pace takes minutes.
const MIGRATION_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
/// How a migration ended, for `ldmd_migration_operations_total{outcome}`.
pub const MIGRATION_OUTCOMES: [&str; 5] = [
    "committed",
    "aborted",
    "cancelled",
    "in_doubt",
    "forced_recovery",
];
/// The one action label of every message between daemons (`migrate-check`, `-reserve`, ...).
pub const INTERNAL_LABEL: &str = "migrate-internal";
/// Which side of a migration this daemon was.
const MIGRATION_ROLES: [&str; 2] = ["source", "target"];
/// How often the process metrics (resident memory, CPU, descriptors) are read from /proc.
const PROCESS_REFRESH: Duration = Duration::from_secs(1);

/// Where a connection is in its life, for `ldmd_connections_open{phase}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepted; stream header, STARTTLS or the TLS handshake under way.
    Negotiating,
    /// TLS established, not yet authenticated.
    Secured,
    /// SASL done, or a local peer with a role.
    Authenticated,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Negotiating, Phase::Secured, Phase::Authenticated];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Negotiating => "negotiating",
            Phase::Secured => "secured",
            Phase::Authenticated => "authenticated",
        }
    }
}

/// Handles for one LDM action label.
struct ActionMetrics {
    action: &'static str,
    /// Commands answered, by status (success, failure).
    commands: [Counter; 2],
    /// Documents whose first command is this action: receipt to the reply's last byte written.
    /// Resolved at the action's first document, not up front: a histogram is 22 series, and
    /// most of the 60 actions are rare.
    request_seconds: OnceLock<Histogram>,
}

pub struct Metrics {
    pub accepted_tcp: Counter,
    pub accepted_unix: Counter,
    /// By transport (tcp, unix), then phase.
    open: [[Gauge; 3]; 2],
    pub tls_established: Counter,
    pub tls_failed: Counter,
    pub tls_handshake_seconds: Histogram,
    pub sasl_success: Counter,
    sasl_failures: Vec<(SaslFailure, Counter)>,
    stream_errors: Vec<(StreamErrorCondition, Counter)>,
    limit_hits: Vec<(Limit, Counter)>,
    pub documents_received: Counter,
    /// Documents answered, by status (success, failure).
    documents: [Counter; 2],
    /// One entry per [`Action`], in [`Action::ALL`] order, then `other`.
    actions: Vec<ActionMetrics>,
    pub registry_mailbox_depth: Gauge,
    pub registry_batch_size: Histogram,
    pub registry_commit_seconds: Histogram,
    /// Commits the store refused (a full disk, an I/O error): their batch's writes were refused.
    pub registry_commit_failures: Counter,
    /// Commits that wrote the journal's records to the database (see `registry::store`).
    pub registry_checkpoints: Counter,
    /// Documents of list actions answered on an I/O thread from its replica.
    pub replica_reads: Counter,
    /// 1 while the store takes changes, 0 while writes are refused because it cannot.
    pub registry_store_writable: Gauge,
    pub registry_domains: Gauge,
    /// Counted by the registry, once per committed change, however many streams receive it.
    pub events_published: Counter,
    pub events_delivered: Counter,
    pub event_subscribers_dropped: Counter,
    memdr: Vec<(MemDrEnd, Counter)>,
    pub memdr_in_progress: Gauge,
    /// By role, then outcome ([`MIGRATION_OUTCOMES`] order).
    migration_operations: [[Counter; 5]; 2],
    migration_in_progress: [Gauge; 2],
    migration_records: [Gauge; 2],
    migration_in_doubt: Gauge,
    migration_duration: [Histogram; 2],
    migration_downtime: Histogram,
    pub pool_buffers_capacity: Gauge,
    pub pool_buffers_free: Gauge,
    pub pool_buffers_in_use: Gauge,
    pub pool_exhausted: Counter,
}

impl Metrics {
    /// Says which runtime the I/O threads run on (`ldmd_runtime_info`, chosen once at start).
    pub fn runtime(&self, runtime: crate::server::runtime::Runtime) {
        gauge!("ldmd_runtime_info", "runtime" => runtime.name()).set(1.0);
    }

    pub fn connections_open(&self, unix: bool, phase: Phase) -> &Gauge {
        &self.open[usize::from(unix)][phase as usize]
    }

    pub fn sasl_failure(&self, failure: SaslFailure) -> &Counter {
        labelled(&self.sasl_failures, failure)
    }

    pub fn stream_error(&self, condition: StreamErrorCondition) -> &Counter {
        labelled(&self.stream_errors, condition)
    }

    pub fn limit_hit(&self, limit: Limit) -> &Counter {
        labelled(&self.limit_hits, limit)
    }

    pub fn memdr(&self, outcome: MemDrEnd) -> &Counter {
        labelled(&self.memdr, outcome)
    }

    /// A migration ended here as `role` (source, target) with `outcome` (one of
    /// [`MIGRATION_OUTCOMES`]; anything else is not counted).
    pub fn migration_ended(&self, role: &str, outcome: &str) {
        let role = usize::from(role == "target");
        if let (Some(counters), Some(index)) = (
            self.migration_operations.get(role),
            MIGRATION_OUTCOMES.iter().position(|o| *o == outcome),
        ) && let Some(counter) = counters.get(index)
        {
            counter.increment(1);
        }
    }

    pub fn migration_duration(&self, role: &str, took: Duration) {
        self.migration_duration[usize::from(role == "target")].record(took.as_secs_f64());
    }

    pub fn migration_downtime(&self, took: Duration) {
        self.migration_downtime.record(took.as_secs_f64());
    }

    /// Migrations holding a domain here, by role; those in doubt; and every migration record
    /// kept, by role (finished ones wait for the other side's word to be forgotten).
    pub fn migrations_in_progress(
        &self,
        holding: [usize; 2],
        in_doubt: usize,
        records: [usize; 2],
    ) {
        for (gauge, count) in self.migration_in_progress.iter().zip(holding) {
            gauge.set(count as f64);
        }
        for (gauge, count) in self.migration_records.iter().zip(records) {
            gauge.set(count as f64);
        }
        self.migration_in_doubt.set(in_doubt as f64);
    }

    /// The label index of `action`: a known action, or `other` (missing, unknown, hostile).
    /// The messages between daemons during a migration share one label, `migrate-internal`.
    pub fn action(&self, action: Option<&ActionName>) -> usize {
        match action.and_then(ActionName::known) {
            Some(action) if action.is_internal() => Action::MigrateCheck as usize,
            Some(action) => action as usize,
            None => Action::COUNT,
        }
    }

    /// One answered document: its status, and each of its commands by action and status.
    pub fn answered(&self, response: &crate::ldm::Response) {
        self.documents[status_index(response.status())].increment(1);
        for cmd in &response.cmds {
            let action = self.action(cmd.action.as_ref());
            self.actions[action].commands[status_index(cmd.status())].increment(1);
        }
    }

    /// A document labelled `action` (see [`Metrics::action`]) took `latency` from receipt to
    /// the last byte of its reply handed to the socket.
    pub fn request_latency(&self, action: usize, latency: Duration) {
        let entry = &self.actions[action];
        let histogram = entry.request_seconds.get_or_init(
            || metrics::histogram!("ldmd_request_duration_seconds", "action" => entry.action),
        );
        histogram.record(latency.as_secs_f64());
    }
}

/// The handle kept for `key` (every key of a label's fixed set has one).
fn labelled<K: PartialEq>(table: &[(K, Counter)], key: K) -> &Counter {
    &table
        .iter()
        .find(|(k, _)| *k == key)
        .expect("every label value has a handle")
        .1
}

fn status_index(status: Status) -> usize {
    match status {
        Status::Success => 0,
        Status::Failure => 1,
    }
}

/// The process's metric handles.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        describe();
        let transports = ["tcp", "unix"];
        // Label values are the wire names; the index of an action is its position in ALL.
        let actions: Vec<&'static str> = Action::ALL
            .iter()
            .map(|a| if a.is_internal() { INTERNAL_LABEL } else { a.as_str() })
            .chain(["other"])
            .collect();
        Metrics {
            accepted_tcp: metrics::counter!("ldmd_connections_accepted_total", "transport" => "tcp"),
            accepted_unix: metrics::counter!("ldmd_connections_accepted_total", "transport" => "unix"),
            open: transports.map(|transport| {
                Phase::ALL.map(|phase| {
                    gauge!("ldmd_connections_open", "transport" => transport, "phase" => phase.as_str())
                })
            }),
            tls_established: metrics::counter!("ldmd_tls_handshakes_total", "result" => "established"),
            tls_failed: metrics::counter!("ldmd_tls_handshakes_total", "result" => "failed"),
            tls_handshake_seconds: metrics::histogram!("ldmd_tls_handshake_duration_seconds"),
            sasl_success: metrics::counter!("ldmd_sasl_authentications_total", "result" => "success"),
            sasl_failures: SaslFailure::ALL
                .iter()
                .map(|f| (*f, metrics::counter!("ldmd_sasl_authentications_total", "result" => f.as_str())))
                .collect(),
            stream_errors: StreamErrorCondition::ALL
                .iter()
                .map(|c| (*c, metrics::counter!("ldmd_stream_errors_total", "condition" => c.as_str())))
                .collect(),
            limit_hits: Limit::ALL
                .iter()
                .map(|l| (*l, metrics::counter!("ldmd_limit_hits_total", "limit" => l.key())))
                .collect(),
            documents_received: metrics::counter!("ldmd_documents_received_total"),
            documents: [Status::Success, Status::Failure]
                .map(|s| metrics::counter!("ldmd_documents_total", "status" => s.as_str())),
            actions: actions
                .iter()
                .map(|&action| ActionMetrics {
                    action,
                    commands: [Status::Success, Status::Failure].map(|s| {
                        metrics::counter!("ldmd_commands_total", "action" => action, "status" => s.as_str())
                    }),
                    request_seconds: OnceLock::new(),
                })
                .collect(),
            registry_mailbox_depth: gauge!("ldmd_registry_mailbox_depth"),
            registry_batch_size: metrics::histogram!("ldmd_registry_batch_size"),
            registry_commit_seconds: metrics::histogram!("ldmd_registry_commit_duration_seconds"),
            registry_commit_failures: metrics::counter!("ldmd_registry_commit_failures_total"),
            registry_checkpoints: metrics::counter!("ldmd_registry_checkpoints_total"),
            replica_reads: metrics::counter!("ldmd_replica_reads_total"),
            registry_store_writable: {
                let writable = gauge!("ldmd_registry_store_writable");
                writable.set(1.0);
                writable
            },
            registry_domains: gauge!("ldmd_registry_domains"),
            events_published: metrics::counter!("ldmd_events_published_total"),
            events_delivered: metrics::counter!("ldmd_events_delivered_total"),
            event_subscribers_dropped: metrics::counter!("ldmd_event_subscribers_dropped_total"),
            memdr: MemDrEnd::ALL
                .iter()
                .map(|o| (*o, metrics::counter!("ldmd_memdr_operations_total", "outcome" => o.as_str())))
                .collect(),
            memdr_in_progress: gauge!("ldmd_memdr_in_progress"),
            migration_operations: MIGRATION_ROLES.map(|role| {
                MIGRATION_OUTCOMES.map(|outcome| {
                    metrics::counter!("ldmd_migration_operations_total", "role" => role, "outcome" => outcome)
                })
            }),
            migration_in_progress: MIGRATION_ROLES
                .map(|role| gauge!("ldmd_migration_in_progress", "role" => role)),
            migration_records: MIGRATION_ROLES
                .map(|role| gauge!("ldmd_migration_records", "role" => role)),
            migration_in_doubt: gauge!("ldmd_migration_in_doubt"),
            migration_duration: MIGRATION_ROLES.map(|role| {
                metrics::histogram!("ldmd_migration_duration_seconds", "role" => role)
            }),
            migration_downtime: metrics::histogram!("ldmd_migration_downtime_seconds"),
            pool_buffers_capacity: gauge!("ldmd_buffer_pool_capacity_buffers"),
            pool_buffers_free: gauge!("ldmd_buffer_pool_free_buffers"),
            pool_buffers_in_use: gauge!("ldmd_buffer_pool_in_use_buffers"),
            pool_exhausted: metrics::counter!("ldmd_buffer_pool_exhausted_total"),
        }
    })
}

/// The help text of every metric (the exporter prints it as `# HELP`).
fn describe() {
    gauge!("ldmd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    describe_gauge!(
        "ldmd_build_info",
        "Always 1; the version label says which ldmd is running."
    );
    describe_gauge!(
        "ldmd_runtime_info",
        "Always 1; the runtime label says what the I/O threads run on (io_uring or epoll)."
    );
    describe_counter!(
        "ldmd_connections_accepted_total",
        "Connections accepted, by transport (tcp, unix), refused ones included."
    );
    describe_gauge!(
        "ldmd_connections_open",
        "Connections open now, by transport and phase (negotiating, secured, authenticated)."
    );
    describe_counter!(
        "ldmd_tls_handshakes_total",
        "TLS handshakes, by result (established, failed)."
    );
    describe_histogram!(
        "ldmd_tls_handshake_duration_seconds",
        metrics::Unit::Seconds,
        "TLS handshakes that succeeded: the ClientHello's arrival to the handshake's end."
    );
    describe_counter!(
        "ldmd_sasl_authentications_total",
        "SASL PLAIN outcomes, by result (success or the failure condition)."
    );
    describe_counter!(
        "ldmd_stream_errors_total",
        "Stream errors sent, by RFC 6120 condition."
    );
    describe_counter!(
        "ldmd_limit_hits_total",
        "Times a configured limit fired, by config key."
    );
    describe_counter!(
        "ldmd_documents_received_total",
        "LDM documents received and handed to the registry."
    );
    describe_counter!(
        "ldmd_documents_total",
        "LDM documents answered, by status (success, failure)."
    );
    describe_counter!(
        "ldmd_commands_total",
        "LDM commands answered, by action and status; an unknown action is counted as other."
    );
    describe_histogram!(
        "ldmd_request_duration_seconds",
        metrics::Unit::Seconds,
        "LDM documents, by their first command's action: receipt of the document to the last byte of its reply handed to the socket."
    );
    describe_gauge!(
        "ldmd_registry_mailbox_depth",
        "Requests waiting for the registry actor when it last took a batch."
    );
    describe_histogram!(
        "ldmd_registry_batch_size",
        metrics::Unit::Count,
        "Requests applied by the registry per batch (one durable commit each)."
    );
    describe_histogram!(
        "ldmd_registry_commit_duration_seconds",
        metrics::Unit::Seconds,
        "Durable registry commits of batches that changed something: the store's write and fsync of the serialized records."
    );
    describe_counter!(
        "ldmd_replica_reads_total",
        "LDM documents of list actions answered on an I/O thread from its replica of the last committed state, without waiting for the registry thread."
    );
    describe_counter!(
        "ldmd_registry_checkpoints_total",
        "Registry commits that wrote the journal's records to the database and started the journal again (the rest were one journal frame each)."
    );
    describe_gauge!(
        "ldmd_registry_domains",
        "Domains in the registry, the control domain included."
    );
    describe_counter!(
        "ldmd_registry_commit_failures_total",
        "Registry commits the store refused (full disk, I/O error); their writes were refused, nothing acknowledged."
    );
    describe_gauge!(
        "ldmd_registry_store_writable",
        "1 while the registry store takes changes; 0 while writes are refused and reads served because it cannot."
    );
    describe_counter!(
        "ldmd_events_published_total",
        "LDM events committed by the registry and offered to subscribers."
    );
    describe_counter!(
        "ldmd_events_delivered_total",
        "LDM events written to a subscribed stream."
    );
    describe_counter!(
        "ldmd_event_subscribers_dropped_total",
        "Subscribed streams ended for falling too far behind on events (event_queue_max)."
    );
    describe_counter!(
        "ldmd_memdr_operations_total",
        "Memory dynamic reconfigurations ended, by outcome (completed, partial, cancelled, refused, rolled_back)."
    );
    describe_gauge!(
        "ldmd_memdr_in_progress",
        "Memory dynamic reconfigurations under way."
    );
    describe_counter!(
        "ldmd_migration_operations_total",
        "Domain migrations ended here, by role (source, target) and outcome (committed, aborted, cancelled, in_doubt: the requester was told the outcome is in doubt, forced_recovery: restored on the source by the operator)."
    );
    describe_gauge!(
        "ldmd_migration_in_progress",
        "Migrations holding a domain here now, by role (source: locked, target: receiving)."
    );
    describe_gauge!(
        "ldmd_migration_records",
        "Migration records kept in the store, by role: those holding a domain, and finished ones until the other side acknowledges (the source's Done until forget, the target's tombstone)."
    );
    describe_gauge!(
        "ldmd_migration_in_doubt",
        "Outgoing migrations whose outcome is in doubt (flag e): the resolver keeps asking the target."
    );
    describe_histogram!(
        "ldmd_migration_duration_seconds",
        metrics::Unit::Seconds,
        "Migrations from their start to their end here, by role."
    );
    describe_histogram!(
        "ldmd_migration_downtime_seconds",
        metrics::Unit::Seconds,
        "Committed migrations: from the source stopping the domain to the target's commit answer."
    );
    describe_gauge!(
        "ldmd_buffer_pool_capacity_buffers",
        "Idle buffers the I/O threads' pools may keep, all threads."
    );
    describe_gauge!(
        "ldmd_buffer_pool_free_buffers",
        "Pooled read/write buffers idle, all I/O threads."
    );
    describe_gauge!(
        "ldmd_buffer_pool_in_use_buffers",
        "Pooled buffers lent to connections, all I/O threads."
    );
    describe_counter!(
        "ldmd_buffer_pool_exhausted_total",
        "Times a pool was empty and a buffer was allocated."
    );
}

/// Installs the Prometheus exporter on `addr` (its own thread), before any I/O runtime starts,
/// and a thread that reads the process metrics (`process_resident_memory_bytes`, CPU time,
/// open descriptors…) from /proc every second.
pub fn install_exporter(addr: SocketAddr) -> Result<(), String> {
    let buckets: [(&str, &[f64]); 6] = [
        ("ldmd_request_duration_seconds", &LATENCY_BUCKETS),
        ("ldmd_tls_handshake_duration_seconds", &HANDSHAKE_BUCKETS),
        ("ldmd_registry_commit_duration_seconds", &COMMIT_BUCKETS),
        ("ldmd_registry_batch_size", &BATCH_BUCKETS),
        ("ldmd_migration_duration_seconds", &MIGRATION_BUCKETS),
        ("ldmd_migration_downtime_seconds", &MIGRATION_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for (name, values) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), values)
            .expect("bucket lists are not empty");
    }
    builder
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let collector = metrics_process::Collector::default();
    collector.describe();
    collector.collect();
    std::thread::Builder::new()
        .name("ldmd-process-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(PROCESS_REFRESH);
                collector.collect();
            }
        })
        .map_err(|e| format!("cannot start the process metrics thread: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_labels_are_a_fixed_set_with_other_for_anything_else() {
        let metrics = get();
        let other = metrics.action(None);
        assert_eq!(metrics.actions[other].action, "other");
        for known in Action::ALL {
            let index = metrics.action(Some(&ActionName::Known(known)));
            assert_ne!(index, other, "{known}");
            let label = if known.is_internal() {
                INTERNAL_LABEL
            } else {
                known.as_str()
            };
            assert_eq!(metrics.actions[index].action, label);
            let parsed = ActionName::parse(known.as_str());
            assert_eq!(metrics.action(Some(&parsed)), index, "{known}");
        }
        for hostile in [
            "",
            "other",
            "list-domain ",
            "LIST-DOMAIN",
            &"x".repeat(10_000),
        ] {
            let name = ActionName::parse(hostile);
            assert_eq!(metrics.action(Some(&name)), other, "{hostile:.20}");
        }
        assert_eq!(metrics.actions.len(), Action::COUNT + 1);
        assert_eq!(
            Action::COUNT,
            65,
            "59 actions of §3 and 6 internal messages"
        );
    }
}
