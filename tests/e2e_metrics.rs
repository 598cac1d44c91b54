//! /metrics: exact counter movements under load, output that the Prometheus parser accepts,
//! and the limits, stream errors and SASL outcomes counted.

mod support;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use support::*;

/// One scrape, parsed by the Prometheus project's Python parser (`tests/interop/prom_parse.py`,
/// which also checks every histogram's buckets); panics if the text is not valid.
struct Exposition {
    samples: HashMap<String, f64>,
    help: HashMap<String, String>,
}

impl Exposition {
    fn parse(body: &str) -> Exposition {
        let script = format!("{}/tests/interop/prom_parse.py", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("the test venv's python3: {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{body}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let samples = json["samples"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
            .collect();
        let help = json["help"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        Exposition { samples, help }
    }

    /// A sample by its exposition key (labels sorted by name); absent is 0, as for a counter
    /// that has not moved yet.
    fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }
}

/// A one-domain document of `action` on `domain`.
fn on_domain(action: &str, domain: &str) -> String {
    format!(
        r#"<LDM_interface version="1.3"><cmd><action>{action}</action><data version="3.0"><Envelope><References/><Content xsi:type="ovf:VirtualSystem_Type" id="{domain}"><Section xsi:type="ovf:ResourceAllocationSection_type"><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType></Item></Section></Content></Envelope></data></cmd></LDM_interface>"#
    )
}

const CLIENTS: usize = 4;
const ROUNDS: usize = 25;

#[test]
fn counters_move_by_exactly_the_requests_sent_and_the_output_parses() {
    let daemon =
        Daemon::start_with_metrics("tcp_loopback_is_local = false", &[("load", "write", "pw")]);
    let before = Exposition::parse(&daemon.scrape());

    // Each client, per round: a read, a write, the same write again (refused: the domain
    // exists), a removal, and an action nobody knows (counted as `other`).
    let logged_in = Arc::new(Barrier::new(CLIENTS + 1));
    let checked = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = daemon.tcp();
            let (logged_in, checked) = (logged_in.clone(), checked.clone());
            std::thread::spawn(move || {
                client.secure();
                client.login("load", "pw");
                logged_in.wait();
                checked.wait();
                for round in 0..ROUNDS {
                    let name = format!("m-{c}-{round}");
                    let expect = [
                        (list_domain().to_owned(), "success"),
                        (on_domain("add-domain", &name), "success"),
                        (on_domain("add-domain", &name), "failure"),
                        (on_domain("remove-domain", &name), "success"),
                        (on_domain("frobnicate-domain", &name), "failure"),
                    ];
                    // Pipelined in one write: replies come back in order, each timed from
                    // its own document's receipt.
                    let all: String = expect.iter().map(|(d, _)| d.as_str()).collect();
                    client.send(&all);
                    for (document, status) in expect {
                        let reply = client.read_until("</LDM_interface>");
                        assert_eq!(document_status(&reply).0, status, "{document}\n{reply}");
                    }
                }
            })
        })
        .collect();

    // Everyone is logged in and idle: each connection is counted once, as authenticated. One
    // more has only sent its header, and another only set up TLS.
    logged_in.wait();
    let mut negotiating = daemon.tcp();
    negotiating.send(HEADER);
    negotiating.read_until("</stream:features>");
    let mut secured = daemon.tcp();
    secured.secure();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let idle = Exposition::parse(&daemon.scrape());
    let open = |e: &Exposition, phase: &str| {
        e.get(&format!(
            "ldmd_connections_open{{phase=\"{phase}\",transport=\"tcp\"}}"
        ))
    };
    assert_eq!(open(&idle, "authenticated"), CLIENTS as f64);
    assert_eq!(open(&idle, "negotiating"), 1.0);
    assert_eq!(open(&idle, "secured"), 1.0);
    drop((negotiating, secured));
    checked.wait();

    // Scrapes while the load runs parse too.
    let done = Arc::new(AtomicBool::new(false));
    let scraper = {
        let done = done.clone();
        let addr = daemon.metrics.unwrap();
        std::thread::spawn(move || {
            let mut scrapes = 0;
            while !done.load(Ordering::Acquire) {
                Exposition::parse(&scrape(addr));
                scrapes += 1;
            }
            scrapes
        })
    };
    for client in clients {
        client.join().unwrap();
    }
    done.store(true, Ordering::Release);
    assert!(scraper.join().unwrap() >= 1);

    std::thread::sleep(std::time::Duration::from_millis(200));
    let after = Exposition::parse(&daemon.scrape());
    let delta = |key: &str| after.get(key) - before.get(key);
    let per_kind = (CLIENTS * ROUNDS) as f64;
    let documents = 5.0 * per_kind;
    assert_eq!(delta("ldmd_documents_received_total"), documents);
    assert_eq!(
        delta("ldmd_documents_total{status=\"success\"}"),
        3.0 * per_kind
    );
    assert_eq!(
        delta("ldmd_documents_total{status=\"failure\"}"),
        2.0 * per_kind
    );
    for (action, status, count) in [
        ("list-domain", "success", per_kind),
        ("add-domain", "success", per_kind),
        ("add-domain", "failure", per_kind),
        ("remove-domain", "success", per_kind),
        ("other", "failure", per_kind),
        ("remove-domain", "failure", 0.0),
    ] {
        let key = format!("ldmd_commands_total{{action=\"{action}\",status=\"{status}\"}}");
        assert!(after.samples.contains_key(&key), "{key} is exposed");
        assert_eq!(delta(&key), count, "{key}");
    }
    for (action, count) in [
        ("list-domain", per_kind),
        ("add-domain", 2.0 * per_kind),
        ("remove-domain", per_kind),
        ("other", per_kind),
    ] {
        let key = format!("ldmd_request_duration_seconds_count{{action=\"{action}\"}}");
        assert_eq!(delta(&key), count, "{key}");
        let le = format!("ldmd_request_duration_seconds_bucket{{action=\"{action}\",le=\"+Inf\"}}");
        assert_eq!(delta(&le), count, "{le}");
        let sum = delta(&format!(
            "ldmd_request_duration_seconds_sum{{action=\"{action}\"}}"
        ));
        assert!(sum > 0.0 && sum < count * 10.0, "{action}: {sum} s in all");
    }
    // Every document went through exactly one registry batch, but the reads that an I/O
    // thread answered from its replica of the committed state (only list-domain can be).
    let replica_reads = delta("ldmd_replica_reads_total");
    assert!(replica_reads <= per_kind, "{replica_reads}");
    assert_eq!(
        delta("ldmd_registry_batch_size_sum") + replica_reads,
        documents
    );
    // Each successful add and remove commits (batches may merge them) and publishes one event.
    let commits = delta("ldmd_registry_commit_duration_seconds_count");
    assert!(commits >= 1.0 && commits <= 2.0 * per_kind, "{commits}");
    assert_eq!(delta("ldmd_events_published_total"), 2.0 * per_kind);
    assert_eq!(
        after.get("ldmd_registry_domains"),
        1.0,
        "only primary is left"
    );

    // The sessions themselves.
    assert_eq!(
        delta("ldmd_connections_accepted_total{transport=\"tcp\"}"),
        CLIENTS as f64 + 2.0
    );
    assert_eq!(
        delta("ldmd_sasl_authentications_total{result=\"success\"}"),
        CLIENTS as f64
    );
    assert_eq!(
        delta("ldmd_tls_handshakes_total{result=\"established\"}"),
        CLIENTS as f64 + 1.0
    );
    assert_eq!(
        delta("ldmd_tls_handshake_duration_seconds_count"),
        CLIENTS as f64 + 1.0
    );
    for phase in ["negotiating", "secured", "authenticated"] {
        assert_eq!(open(&after, phase), 0.0, "{phase}: every client has gone");
    }

    // The process, and the help text of every ldmd family.
    assert!(after.get("process_resident_memory_bytes") > 1e6);
    assert_eq!(
        after.get(&format!(
            "ldmd_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    for (family, help) in &after.help {
        if family.starts_with("ldmd_") {
            assert!(help.len() > 10, "{family} has help text: {help:?}");
        }
    }
}

#[test]
fn limit_hits_stream_errors_and_sasl_outcomes_are_counted() {
    let config = "tcp_loopback_is_local = false\n[limits]\nstanza_bytes_max = 2048\nsasl_attempts_max = 2\nrequests_in_flight_max = 2";
    let daemon = Daemon::start_with_metrics(config, &[("alice", "write", "pw")]);

    // One stanza over the size limit.
    let mut client = daemon.tcp();
    client.secure();
    client.login("alice", "pw");
    client.send(&format!(
        "<message><body>{}</body></message>",
        "x".repeat(4096)
    ));
    client.read_to_close();

    // Six documents in one write with room for two in flight: reading pauses at least once,
    // and at most once per document past the first two; every document is still answered.
    let mut client = daemon.tcp();
    client.secure();
    client.login("alice", "pw");
    client.send(&list_domain().repeat(6));
    for _ in 0..6 {
        client.read_until("</LDM_interface>");
    }
    drop(client);

    // Two failed logins: the second is over sasl_attempts_max.
    let mut client = daemon.tcp();
    client.secure();
    for _ in 0..2 {
        client.send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAG5v</auth>",
        );
        client.read_until("</failure>");
    }
    client.read_to_close();

    std::thread::sleep(std::time::Duration::from_millis(200));
    let body = daemon.scrape();
    let value = |sample: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no sample {sample} in:\n{body}"))
    };
    assert_eq!(
        value("ldmd_limit_hits_total{limit=\"stanza_bytes_max\"}"),
        1.0
    );
    assert_eq!(
        value("ldmd_limit_hits_total{limit=\"sasl_attempts_max\"}"),
        1.0
    );
    assert_eq!(
        value("ldmd_stream_errors_total{condition=\"policy-violation\"}"),
        2.0
    );
    let paused = value("ldmd_limit_hits_total{limit=\"requests_in_flight_max\"}");
    assert!((1.0..=4.0).contains(&paused), "{paused} pauses");
    assert_eq!(
        value("ldmd_sasl_authentications_total{result=\"success\"}"),
        2.0
    );
    assert_eq!(
        value("ldmd_sasl_authentications_total{result=\"not-authorized\"}"),
        2.0
    );
    assert_eq!(
        value("ldmd_tls_handshakes_total{result=\"established\"}"),
        3.0
    );
    assert_eq!(
        value("ldmd_connections_accepted_total{transport=\"tcp\"}"),
        3.0
    );
    assert!(
        body.contains("# HELP ldmd_limit_hits_total "),
        "help text is exposed"
    );
}

#[test]
fn idle_authenticated_sessions_hold_no_pooled_buffer() {
    // Issue 2 §3: a connection with no partial element returns its buffer to the pool. (A stanza
    // split across TLS records waits in the connection's own buffer, released as it completes:
    // see the checklist's idle_connection_holds_no_input_buffer.)
    let daemon =
        Daemon::start_with_metrics("tcp_loopback_is_local = false", &[("idle", "read", "pw")]);
    let mut sessions = Vec::new();
    for _ in 0..50 {
        let mut client = daemon.tcp();
        client.secure();
        client.login("idle", "pw");
        sessions.push(client);
    }
    // Traffic borrows buffers and gives them back.
    for session in &mut sessions {
        session.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
        session.read_until("/>");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        Exposition::parse(&daemon.scrape())
            .get("ldmd_connections_open{phase=\"authenticated\",transport=\"tcp\"}"),
        50.0
    );
    assert_eq!(
        daemon.metric("ldmd_buffer_pool_in_use_buffers"),
        0.0,
        "50 idle sessions hold no buffer"
    );
}

/// Where `promtool` is: `$PROMTOOL`, else on the PATH, else unpacked (once, no root needed)
/// from Debian's `prometheus` package into the target directory, as `.ci/run` does.
fn promtool_program() -> &'static str {
    static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        if let Ok(program) = std::env::var("PROMTOOL") {
            return program;
        }
        if Command::new("promtool").arg("--version").output().is_ok() {
            return "promtool".into();
        }
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("promtool");
        let program = dir.join("unpacked/usr/bin/promtool");
        if !program.exists() {
            let fetch = "rm -rf unpacked prometheus_*.deb && apt-get download -qq prometheus \
                         && dpkg-deb -x prometheus_*.deb unpacked";
            std::fs::create_dir_all(&dir).unwrap();
            let out = Command::new("sh")
                .args(["-c", fetch])
                .current_dir(&dir)
                .output();
            let fetched = out.as_ref().is_ok_and(|o| o.status.success()) && program.exists();
            assert!(
                fetched,
                "promtool is needed: set PROMTOOL, put it on the PATH (Debian: apt-get install \
                 prometheus), or let this test unpack it with `apt-get download prometheus`, \
                 which failed: {out:?}"
            );
        }
        program.to_string_lossy().into_owned()
    })
}

/// Runs `promtool` (see [`promtool_program`]).
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let program = promtool_program();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{program}: {e} (promtool is needed: see .ci/run, or apt-get install prometheus)"
            )
        });
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The metric names an expression refers to (ldmd's and the process's), histogram series
/// reduced to their family.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts_name = (rest.starts_with("ldmd_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if !starts_name {
            i += 1;
            continue;
        }
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..len];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|f| f.ends_with("_seconds") || f.ends_with("_size"))
            .unwrap_or(name);
        names.push(family.to_owned());
        i += len;
    }
    names
}

#[test]
fn metric_names_pass_promtool_and_the_shipped_prometheus_and_grafana_files_check() {
    let daemon =
        Daemon::start_with_metrics("tcp_loopback_is_local = false", &[("ops", "write", "pw")]);
    // Some traffic, so that the histograms have series.
    let mut client = daemon.tcp();
    client.secure();
    client.login("ops", "pw");
    client.request(list_domain());
    client.request(&on_domain("add-domain", "lint"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let body = daemon.scrape();

    // promtool's lint: naming conventions, base units, _total, help text.
    let (ok, lint) = promtool(&["check", "metrics"], Some(&body));
    assert!(
        ok && lint.trim().is_empty(),
        "promtool check metrics:\n{lint}"
    );

    // The shipped scrape config and the alerting rules it loads.
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let config = deploy.join("prometheus/prometheus.yml");
    let (ok, out) = promtool(&["check", "config", config.to_str().unwrap()], None);
    assert!(ok, "{out}");
    let rules = std::fs::read_to_string(deploy.join("prometheus/ldmd-rules.yml")).unwrap();
    // The alerts' own unit tests: each fires when it should, and not before.
    let rule_tests = deploy.join("prometheus/ldmd-rules.test.yml");
    let (ok, out) = promtool(&["test", "rules", rule_tests.to_str().unwrap()], None);
    assert!(ok && out.contains("SUCCESS"), "{out}");

    // Every dashboard query parses as PromQL: promtool checks them as recording rules, with
    // Grafana's variables replaced by what they stand for.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana/ldmd-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 25, "{} queries", exprs.len());
    let mut as_rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*");
        as_rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: '{}'\n",
            expr.replace('\'', "''")
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let rules_path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&rules_path, as_rules).unwrap();
    let (ok, out) = promtool(&["check", "rules", rules_path.to_str().unwrap()], None);
    assert!(ok, "{out}");

    // And every metric they use is one the daemon exposes.
    let exposed = Exposition::parse(&body);
    let families: std::collections::HashSet<String> = exposed
        .samples
        .keys()
        .map(|k| k.split('{').next().unwrap().to_owned())
        .flat_map(|name| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).map(str::to_owned));
            [Some(name), family].into_iter().flatten()
        })
        .collect();
    for expr in exprs.iter().map(String::as_str).chain([rules.as_str()]) {
        for name in metric_names(expr) {
            assert!(
                families.contains(&name),
                "{name} is not exposed (in {expr})"
            );
        }
    }
}
