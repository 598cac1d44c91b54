//! Two daemons, a proxy between them, and what a test asks of them.
//!
//! Shared by two test binaries (e2e_migration and migration_faults), each using a part of it.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::support::proxy::{Link, Proxy};
use crate::support::*;

pub const LDM: &str = env!("CARGO_BIN_EXE_ldm");

/// The target's account the source logs in with.
pub const USER: &str = "mover";
pub const PASSWORD: &str = "move-it";

/// Short timers, so that faults settle in seconds; `pace`: the source's seconds per GiB;
/// `extra`: more `[migration]` keys.
pub fn migration_config(pace: f64, extra: &str) -> String {
    format!(
        "[migration]\nconnect_timeout_secs = 2\nreply_timeout_secs = 4\ncommit_timeout_secs = 2\nresolve_backoff_max_secs = 0.5\nreservation_idle_secs = 4\nseconds_per_gib = {pace}\n{extra}"
    )
}

/// How long a migration or a settlement may take here.
pub const SETTLE: Duration = Duration::from_secs(30);

pub struct Hosts {
    pub source: Daemon,
    pub target: Daemon,
    pub proxy: Proxy,
    /// What each side was started with, to start it again the same way.
    pub source_config: String,
    pub target_config: String,
}

/// How to start a pair.
#[derive(Default)]
pub struct Setup<'a> {
    /// Top-level keys for each side (not `[migration]`).
    pub source_config: &'a str,
    pub target_config: &'a str,
    /// The source's modelled seconds per GiB (0: no pacing).
    pub pace: f64,
    /// More `[migration]` keys for the source.
    pub source_migration: &'a str,
    pub source_env: &'a [(&'a str, &'a str)],
    pub target_env: &'a [(&'a str, &'a str)],
    /// The shipped `[migration]` timers on both sides instead of the short test ones.
    pub default_timers: bool,
}

impl Hosts {
    /// Two daemons with the test timers, the source trusting the target's certificate.
    pub fn start() -> Hosts {
        Hosts::start_with(&Setup::default())
    }

    /// A pair whose source moves a running domain's memory at `pace` seconds per GiB.
    pub fn paced(pace: f64) -> Hosts {
        Hosts::start_with(&Setup {
            pace,
            ..Setup::default()
        })
    }

    pub fn start_with(setup: &Setup<'_>) -> Hosts {
        let migration = |pace: f64, extra: &str| {
            if setup.default_timers {
                format!("[migration]\nseconds_per_gib = {pace}\n{extra}")
            } else {
                migration_config(pace, extra)
            }
        };
        let target_config = format!(
            "tcp_loopback_is_local = false\n{}{}",
            setup.target_config,
            migration(0.0, "")
        );
        let source_config = format!(
            "{}{}",
            setup.source_config,
            migration(setup.pace, setup.source_migration)
        );
        let target = Daemon::start_with_metrics_env(
            &target_config,
            &[(USER, "write", PASSWORD)],
            setup.target_env,
        );
        let source = Daemon::start_with_metrics_env(&source_config, &[], setup.source_env);
        let hosts = Hosts {
            proxy: Proxy::start(target.xmpp.unwrap()),
            source,
            target,
            source_config,
            target_config,
        };
        hosts.trust_target();
        hosts
    }

    /// Starts the source again on its state (after a fault killed it, or to check what a
    /// restart finds), without fault points.
    pub fn restart_source(&mut self) {
        let dir = self.source.kill_and_take_dir();
        self.source = Daemon::restart_with_metrics(dir, &self.source_config, &[]);
    }

    /// Starts the target again on its state; the proxy follows it to its new port.
    pub fn restart_target(&mut self) {
        let dir = self.target.kill_and_take_dir();
        self.target = Daemon::restart_with_metrics(dir, &self.target_config, &[]);
        self.proxy.set_upstream(self.target.xmpp.unwrap());
    }

    /// Once both run and the link is up: no migration record is left on either side (the
    /// target's tombstone forgotten, the source's record gone), nothing migrating.
    #[track_caller]
    pub fn settled(&self) {
        let report = || {
            [("source", &self.source), ("target", &self.target)]
                .iter()
                .map(|(side, d)| {
                    let lines: Vec<String> = d
                        .scrape()
                        .lines()
                        .filter(|l| l.starts_with("ldmd_migration"))
                        .map(str::to_owned)
                        .collect();
                    format!("{side}: {}", lines.join("; "))
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let deadline = Instant::now() + SETTLE;
        loop {
            let done = [&self.source, &self.target].iter().all(|d| {
                let text = d.scrape();
                total(&text, "ldmd_migration_records") == 0.0
                    && total(&text, "ldmd_migration_in_doubt") == 0.0
            });
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not within {SETTLE:?}: no migration record is left on either side\n{}\nsource stderr: {}\ntarget stderr: {}",
                report(),
                self.source.stderr_so_far.lock().unwrap(),
                self.target.stderr_so_far.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[allow(dead_code)]
    fn settled_old(&self) {
        eventually(SETTLE, "no migration record is left on either side", || {
            [&self.source, &self.target].iter().all(|d| {
                let text = d.scrape();
                assert!(
                    text.contains("ldmd_migration_records{"),
                    "no records gauge: {text}"
                );
                total(&text, "ldmd_migration_records") == 0.0
                    && total(&text, "ldmd_migration_in_doubt") == 0.0
            })
        });
    }

    /// `ldmd trust add <target's certificate> --name target` on the source.
    pub fn trust_target(&self) {
        let cert = self.target.state_dir().join("tls-cert.pem");
        let out = run_cli(
            &self.source.state_dir(),
            &["trust", "add", cert.to_str().unwrap(), "--name", "target"],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Where the source reaches the target: through the proxy.
    pub fn target_address(&self) -> String {
        self.proxy.addr.to_string()
    }

    pub fn link(&self, link: Link) {
        self.proxy.set(link);
    }

    /// Sends migrate-domain to the source and returns its reply (which waits for the outcome).
    pub fn migrate(&self, domain: &str, target_name: &str, options: &[&str]) -> String {
        self.migrate_as(domain, target_name, options, USER, PASSWORD)
    }

    pub fn migrate_as(
        &self,
        domain: &str,
        target_name: &str,
        options: &[&str],
        user: &str,
        password: &str,
    ) -> String {
        let mut client = self.source.unix();
        client.secure();
        client.request(&migrate_document(
            domain,
            target_name,
            &self.target_address(),
            user,
            password,
            options,
        ))
    }
}

/// A migrate-domain document, as §6 writes it.
pub fn migrate_document(
    domain: &str,
    target_name: &str,
    target: &str,
    user: &str,
    password: &str,
    options: &[&str],
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let options = if options.is_empty() {
        String::new()
    } else {
        format!("<options>{}</options>", options.join(" "))
    };
    format!(
        r#"<LDM_interface version="1.3"><cmd><action>migrate-domain</action>{options}<data version="3.0"><Envelope><References/><Content xsi:type="ovf:VirtualSystem_Type" id="{domain}"><Section xsi:type="ovf:ResourceAllocationSection_type"/></Content><Content xsi:type="ovf:VirtualSystem_Type" id="{target_name}"><Section xsi:type="ovf:ResourceAllocationSection_type"><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType><gprop:GenericProperty key="target">{target}</gprop:GenericProperty><gprop:GenericProperty key="username">{user}</gprop:GenericProperty><gprop:GenericProperty key="password">{password}</gprop:GenericProperty></Item></Section></Content></Envelope></data></cmd></LDM_interface>"#,
        user = b64(user),
        password = b64(password),
    )
}

/// Runs `ldm --socket <daemon's socket> ARGS` (bounded in time).
pub fn ldm(daemon: &Daemon, args: &[&str]) -> Output {
    ldm_with(daemon, args, &[])
}

/// `ldm` with more environment, in a session of its own: no controlling terminal, so a
/// password prompt fails at once instead of waiting on the tester's terminal.
pub fn ldm_with(daemon: &Daemon, args: &[&str], env: &[(&str, &str)]) -> Output {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(LDM);
    command
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .env_remove("LDMD_SOCKET")
        .env_remove("LDM_PASSWORD")
        .env_remove("LDM_TARGET_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and touches no memory of this process.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ldm {args:?} ran longer than {SETTLE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ldm ARGS` must succeed; returns its stdout.
#[track_caller]
pub fn ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = ldm(daemon, args);
    assert!(
        out.status.success(),
        "ldm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A guest `name` with CPUs, memory, a vdisk, a vnet and variables, left in `state`
/// (inactive, bound or active). The volume it uses is exported on both daemons.
pub fn guest(hosts: &Hosts, name: &str, state: &str) {
    for daemon in [&hosts.source, &hosts.target] {
        let listed = ok(daemon, &["list-services", "-p"]);
        if !listed.contains("vol-shared") {
            ok(
                daemon,
                &["add-vdsdev", "/dev/zvol/shared", "vol-shared@primary-vds0"],
            );
        }
    }
    let source = &hosts.source;
    ok(source, &["add-domain", name]);
    ok(source, &["add-vcpu", "4", name]);
    ok(source, &["add-memory", "2G", name]);
    ok(
        source,
        &["add-vdisk", "disk0", "vol-shared@primary-vds0", name],
    );
    ok(source, &["add-vnet", "net0", "primary-vsw0", name]);
    ok(
        source,
        &["add-variable", "boot-device=disk0", "auto-boot?=true", name],
    );
    if state != "inactive" {
        ok(source, &["bind-domain", name]);
    }
    if state == "active" {
        ok(source, &["start-domain", name]);
    }
}

/// The DOMAIN line of `name` in `ldm list -l -p` (flags spelled out: `source`, `error`), or
/// None.
pub fn listed(daemon: &Daemon, name: &str) -> Option<String> {
    ok(daemon, &["list", "-l", "-p"])
        .lines()
        .find(|l| l.starts_with(&format!("DOMAIN|name={name}|")))
        .map(str::to_owned)
}

/// The value of `key` in a parseable line.
pub fn field(line: &str, key: &str) -> String {
    line.split('|')
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_owned()
}

/// What identifies a domain and must survive a migration: list-constraints -p without the
/// lines that name it (its name differs after a rename), and with its console group, which
/// is its name unless set, written as NAME too.
pub fn identity(daemon: &Daemon, name: &str) -> String {
    ok(daemon, &["list-constraints", "-p", name])
        .lines()
        .filter(|l| !l.starts_with("DOMAIN|"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(&format!("|name={name}|"), "|name=NAME|")
        .replace(&format!("|group={name}|"), "|group=NAME|")
}

/// Polls `check` until it holds, or fails after `within`.
#[track_caller]
pub fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sum of every sample of metric `name`, whatever its labels (0 when absent).
pub fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A sample's value in a /metrics text (0 when absent).
pub fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Everything a daemon has bound, as `ldm list-bindings -p` prints it, without what moves by
/// itself: uptimes (they tick) and utilisations (the control domain's is the host's measured
/// CPU use).
pub fn bindings(daemon: &Daemon) -> String {
    ok(daemon, &["list-bindings", "-p"])
        .lines()
        .map(|l| {
            l.split('|')
                .filter(|f| {
                    !["uptime=", "util=", "norm_util="]
                        .iter()
                        .any(|k| f.starts_with(k))
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The free memory of a daemon's machine in bytes: the sizes of the free blocks `ldm
/// list-devices -p memory` lists, summed as capacity scripts sum them.
pub fn free_memory(daemon: &Daemon) -> u64 {
    let listing = ok(daemon, &["list-devices", "-p", "memory"]);
    assert!(listing.starts_with("VERSION 1.6\nMEMORY\n"), "{listing}");
    listing
        .lines()
        .filter(|l| l.starts_with("|pa="))
        .map(|l| field(l, "size").parse::<u64>().unwrap())
        .sum()
}

/// The real addresses and sizes of a bound domain's memory (physical addresses differ from
/// machine to machine; real addresses must not).
pub fn real_addresses(daemon: &Daemon, name: &str) -> Vec<(String, String)> {
    ok(daemon, &["list-bindings", "-p", name])
        .lines()
        .filter(|l| l.starts_with("|ra="))
        .map(|l| (field(l, "ra"), field(l, "size")))
        .collect()
}
