//! Configuration: a TOML file (`ldmd --config PATH`), overridden by command-line flags, parsed
//! once into checked types. Every key, its default and its meaning is in the README; unknown
//! keys are refused so that a typo is an error, not a silently ignored setting.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ldm::Role;
pub use crate::limits::Limits;
use crate::limits::LimitsFile;
pub use crate::server::runtime::RuntimeChoice;

/// The XMPP port of the reference daemon.
pub const DEFAULT_PORT: u16 = 6482;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6482";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9482";
pub const DEFAULT_STATE_DIR: &str = "./ldmd-state";
pub const SOCKET_NAME: &str = "ldmd.sock";
/// The socket of a daemon installed as a system service (`deploy/ldmd.toml`): in a directory
/// every local user can reach, unlike the private state directory.
pub const SYSTEM_SOCKET: &str = "/run/ldmd/ldmd.sock";
/// The configuration a system service reads.
pub const SYSTEM_CONFIG: &str = "/etc/ldmd/ldmd.toml";

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One line per event: time, level, target, message, `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line, the fields under `fields`.
    Json,
}

/// The file as written by the operator.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<Vec<String>>,
    socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    metrics_listen: Option<String>,
    io_threads: Option<usize>,
    runtime: Option<RuntimeChoice>,
    xmpp_enabled: Option<bool>,
    domains: Option<Vec<String>>,
    tcp_loopback_is_local: Option<bool>,
    log: Option<String>,
    log_format: Option<LogFormat>,
    audit: Option<bool>,
    #[serde(default)]
    tls: TlsFile,
    #[serde(default)]
    auth: AuthFile,
    #[serde(default)]
    local_users: BTreeMap<String, String>,
    #[serde(default)]
    limits: LimitsFile,
    machine: Option<crate::registry::machine::MachineConfig>,
    #[serde(default)]
    memdr: MemDrFile,
    #[serde(default)]
    migration: MigrationFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrationFile {
    concurrent_max: Option<usize>,
    seconds_per_gib: Option<f64>,
    connect_timeout_secs: Option<f64>,
    reply_timeout_secs: Option<f64>,
    commit_timeout_secs: Option<f64>,
    resolve_backoff_max_secs: Option<f64>,
    reservation_idle_secs: Option<u64>,
    ca_file: Option<PathBuf>,
    fingerprints: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemDrFile {
    seconds_per_gib: Option<f64>,
    guest_memory_floor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    allow_tls13: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    verifier_threads: Option<usize>,
    cache_entries_max: Option<usize>,
}

/// Flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    pub runtime: Option<RuntimeChoice>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP addresses of the XMPP listener (empty when `xmpp_enabled = false`).
    pub listen: Vec<SocketAddr>,
    /// The local Unix socket.
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Where /metrics is served; `None` when turned off.
    pub metrics_listen: Option<SocketAddr>,
    pub io_threads: usize,
    /// What the I/O threads run on (`auto`: io_uring when it works here).
    pub runtime: RuntimeChoice,
    pub xmpp_enabled: bool,
    /// XMPP domains served, lower case; the first is the default.
    pub domains: Vec<String>,
    /// TCP peers on loopback whose uid the kernel reports are local peers.
    pub tcp_loopback_is_local: bool,
    /// The log filter (`info`, `ldmd=debug`, ...).
    pub log: String,
    pub log_format: LogFormat,
    /// The audit trail (log target `ldmd::audit`) is logged, whatever `log` says.
    pub audit: bool,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    /// Roles of local uids other than root (root always has write).
    pub local_users: BTreeMap<u32, Role>,
    /// The uid the daemon runs as. Its processes may write over local transports unless
    /// `local_users` maps it otherwise: they can already read and change the state directory,
    /// so this grants nothing new, and a daemon started by an ordinary user works with `ldm`.
    pub owner_uid: u32,
    pub limits: Limits,
    /// The modelled machine's inventory (`[machine]`).
    pub machine: crate::registry::machine::Machine,
    /// The modelled guests that memory DR waits for (`[memdr]`).
    pub guest: crate::registry::actor::GuestModel,
    /// Migration between daemons (`[migration]`).
    pub migration: MigrationConfig,
}

/// `[migration]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationConfig {
    /// Migrations this daemon takes part in at once, as source or target.
    pub concurrent_max: usize,
    /// A reservation that hears nothing from its source for this long is released.
    pub reservation_idle_secs: u64,
    /// How the source's worker reaches and waits for targets (trust, timers, pacing).
    pub worker: crate::migration::worker::Settings,
}

impl MigrationConfig {
    fn from_file(file: MigrationFile, state_dir: &Path) -> Result<MigrationConfig, ConfigError> {
        let defaults = crate::migration::worker::Settings::default();
        let seconds =
            |key: &'static str, value: Option<f64>, default: std::time::Duration| match value {
                None => Ok(default),
                Some(v) if (0.05..=86_400.0).contains(&v) => {
                    Ok(std::time::Duration::from_secs_f64(v))
                }
                Some(_) => Err(invalid(key, "must be between 0.05 and 86400 seconds")),
            };
        let seconds_per_gib = match file.seconds_per_gib {
            None => defaults.seconds_per_gib,
            Some(v) if (0.0..=3600.0).contains(&v) => v,
            Some(_) => {
                return Err(invalid(
                    "migration.seconds_per_gib",
                    "must be between 0 and 3600",
                ));
            }
        };
        let concurrent_max = match file.concurrent_max.unwrap_or(4) {
            n @ 1..=256 => n,
            _ => return Err(invalid("migration.concurrent_max", "must be 1 to 256")),
        };
        let reservation_idle_secs = match file.reservation_idle_secs.unwrap_or(60) {
            n @ 1..=86_400 => n,
            _ => {
                return Err(invalid(
                    "migration.reservation_idle_secs",
                    "must be 1 to 86400",
                ));
            }
        };
        let fingerprints = file
            .fingerprints
            .unwrap_or_default()
            .iter()
            .map(|f| crate::client::parse_fingerprint(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("migration.fingerprints", e))?;
        Ok(MigrationConfig {
            concurrent_max,
            reservation_idle_secs,
            worker: crate::migration::worker::Settings {
                state_dir: state_dir.to_owned(),
                ca_file: file.ca_file,
                fingerprints,
                connect_timeout: seconds(
                    "migration.connect_timeout_secs",
                    file.connect_timeout_secs,
                    defaults.connect_timeout,
                )?,
                reply_timeout: seconds(
                    "migration.reply_timeout_secs",
                    file.reply_timeout_secs,
                    defaults.reply_timeout,
                )?,
                commit_timeout: seconds(
                    "migration.commit_timeout_secs",
                    file.commit_timeout_secs,
                    defaults.commit_timeout,
                )?,
                resolve_backoff_max: seconds(
                    "migration.resolve_backoff_max_secs",
                    file.resolve_backoff_max_secs,
                    defaults.resolve_backoff_max,
                )?,
                seconds_per_gib,
            },
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// Both or neither; without them a certificate is generated in the state directory.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    pub allow_tls13: bool,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Threads that check passwords (argon2id), off the I/O threads.
    pub verifier_threads: usize,
    /// Successful verifications remembered (as keyed digests), so reconnecting clients do not
    /// pay the hash every time.
    pub cache_entries_max: usize,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitError),
}

fn guest_model(file: &MemDrFile) -> Result<crate::registry::actor::GuestModel, ConfigError> {
    let mut guest = crate::registry::actor::GuestModel::default();
    if let Some(seconds) = file.seconds_per_gib {
        if !(0.0..=3600.0).contains(&seconds) {
            return Err(invalid(
                "memdr.seconds_per_gib",
                "must be between 0 and 3600",
            ));
        }
        guest.seconds_per_gib = seconds;
    }
    if let Some(floor) = &file.guest_memory_floor {
        guest.memory_floor = crate::registry::units::parse_size(floor)
            .map_err(|e| invalid("memdr.guest_memory_floor", e))?;
    }
    Ok(guest)
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl Config {
    /// Loads `path` (if given) and applies the flags.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match path {
            None => File::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
        };
        Config::from_file(file, overrides)
    }

    /// Parses configuration text (for tests and `--check-config`).
    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: "<config>".into(),
            message: e.to_string(),
        })?;
        Config::from_file(file, overrides)
    }

    fn from_file(file: File, overrides: &Overrides) -> Result<Config, ConfigError> {
        let xmpp_enabled = file.xmpp_enabled.unwrap_or(true);
        let listen_text = if overrides.listen.is_empty() {
            file.listen
                .unwrap_or_else(|| vec![DEFAULT_LISTEN.to_owned()])
        } else {
            overrides.listen.clone()
        };
        let listen = if xmpp_enabled {
            listen_text
                .iter()
                .map(|a| parse_addr("listen", a))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let state_dir = overrides
            .state_dir
            .clone()
            .or(file.state_dir)
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into());
        let socket = overrides
            .socket
            .clone()
            .or(file.socket)
            .unwrap_or_else(|| state_dir.join(SOCKET_NAME));
        let metrics_text = overrides
            .metrics_listen
            .clone()
            .or(file.metrics_listen)
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        let metrics_listen = match metrics_text.trim() {
            "" | "off" | "none" => None,
            addr => Some(parse_addr("metrics_listen", addr)?),
        };
        let io_threads = match file.io_threads.unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > 256 => return Err(invalid("io_threads", "at most 256")),
            n => n,
        };
        let domains = match file.domains {
            Some(domains) if domains.is_empty() => {
                return Err(invalid("domains", "at least one domain is required"));
            }
            Some(domains) => domains,
            None => default_domains(),
        };
        let domains = domains
            .into_iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect::<Vec<_>>();
        if let Some(bad) = domains
            .iter()
            .find(|d| !crate::xmpp::jid::is_valid_domain(d))
        {
            return Err(invalid("domains", format!("'{bad}' is not a valid domain")));
        }
        let cert_and_key = match (file.tls.cert_file, file.tls.key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "tls",
                    "set both cert_file and key_file, or neither",
                ));
            }
        };
        let mut local_users = BTreeMap::new();
        for (uid, role) in file.local_users {
            let uid: u32 = uid
                .parse()
                .map_err(|_| invalid("local_users", format!("'{uid}' is not a numeric uid")))?;
            let role: Role = role
                .parse()
                .map_err(|e: String| invalid("local_users", e))?;
            local_users.insert(uid, role);
        }
        let auth = AuthConfig {
            verifier_threads: file.auth.verifier_threads.unwrap_or(2).clamp(1, 64),
            cache_entries_max: file.auth.cache_entries_max.unwrap_or(4096),
        };
        let migration = MigrationConfig::from_file(file.migration, &state_dir)?;
        Ok(Config {
            listen,
            socket,
            state_dir,
            metrics_listen,
            io_threads,
            runtime: overrides.runtime.or(file.runtime).unwrap_or_default(),
            xmpp_enabled,
            domains,
            tcp_loopback_is_local: file.tcp_loopback_is_local.unwrap_or(true),
            log: file.log.unwrap_or_else(|| "info".to_owned()),
            log_format: file.log_format.unwrap_or_default(),
            audit: file.audit.unwrap_or(true),
            tls: TlsConfig {
                cert_and_key,
                allow_tls13: file.tls.allow_tls13.unwrap_or(false),
            },
            auth,
            local_users,
            // SAFETY: geteuid has no preconditions and cannot fail.
            owner_uid: unsafe { libc::geteuid() },
            limits: limits(file.limits)?,
            machine: crate::registry::machine::Machine::from_config(
                &file.machine.unwrap_or_default(),
            )
            .map_err(|message| invalid("machine", message))?,
            guest: guest_model(&file.memdr)?,
            migration,
        })
    }

    /// The role of a local peer: root writes, mapped uids get their role, others nothing.
    pub fn local_role(&self, uid: u32) -> Role {
        if uid == 0 {
            return Role::Write;
        }
        let unmapped = if uid == self.owner_uid {
            Role::Write
        } else {
            Role::None
        };
        self.local_users.get(&uid).copied().unwrap_or(unmapped)
    }

    /// Where the user store lives.
    pub fn users_file(&self) -> PathBuf {
        self.state_dir.join("users.toml")
    }
}

fn limits(file: LimitsFile) -> Result<Limits, ConfigError> {
    let limits = file.resolve()?;
    limits.check_relations()?;
    Ok(limits)
}

/// `host:port`, or a bare host with the default port.
fn parse_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    Err(invalid(
        key,
        format!("'{text}' is not an address like 127.0.0.1:6482 or [::1]:6482"),
    ))
}

/// The host's name and `localhost`.
fn default_domains() -> Vec<String> {
    let host = gethostname::gethostname()
        .to_string_lossy()
        .trim()
        .to_ascii_lowercase();
    let mut domains = Vec::new();
    if !host.is_empty() && host != "localhost" && crate::xmpp::jid::is_valid_domain(&host) {
        domains.push(host);
    }
    domains.push("localhost".to_owned());
    domains
}

#[cfg(test)]
mod tests;
