//! `ldmd`: the Logical Domains Manager daemon, and its user administration.
//!
//! ```text
//! ldmd [--config PATH] [--listen ADDR]... [--socket PATH] [--state-dir DIR] [--metrics-listen ADDR]
//! ldmd user add NAME --auth read|write      (password from stdin)
//! ldmd user list
//! ldmd user remove NAME
//! ldmd trust add FILE [--name NAME]         (a peer ldmd's certificate, for migration)
//! ldmd trust list
//! ldmd trust remove NAME
//! ```

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use ldmd::auth::store::{StoreError, UserStore};
use ldmd::config::{Config, LogFormat, Overrides, RuntimeChoice};
use ldmd::ldm::Role;
use ldmd::registry::actor::RegistryActor;
use ldmd::registry::state::{MigrationSettings, RegistryLimits};
use ldmd::registry::store::Store;
use ldmd::registry::{Registry, Settings};
use ldmd::server::Server;

/// The registry's database, in the state directory.
const REGISTRY_FILE: &str = "registry.redb";

#[derive(Parser)]
#[command(
    name = "ldmd",
    version,
    about = "Logical Domains Manager daemon: the LDM XML interface over XMPP"
)]
struct Cli {
    /// TOML configuration file (see README, "Configuration"; the system service reads
    /// /etc/ldmd/ldmd.toml) [default: none: every key at its default]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// XMPP listen address (repeatable); replaces `listen` from the file [default:
    /// 127.0.0.1:6482]
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// Path of the local Unix socket; replaces `socket` from the file [default:
    /// <state-dir>/ldmd.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Directory of the certificate, the users and the domain state; replaces `state_dir`
    /// from the file [default: ./ldmd-state]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Address of the Prometheus /metrics endpoint, or `off`; replaces `metrics_listen` from
    /// the file [default: 127.0.0.1:9482]
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// What the I/O threads run on: auto (io_uring where it works, else epoll), io_uring or
    /// epoll; replaces `runtime` from the file [default: auto]
    #[arg(long, value_name = "RUNTIME", value_parser = RuntimeChoice::parse)]
    runtime: Option<RuntimeChoice>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the accounts remote clients log in with (SASL PLAIN over TLS).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage the peer certificates this daemon trusts as migration targets.
    Trust {
        #[command(subcommand)]
        action: TrustAction,
    },
}

#[derive(Subcommand)]
enum TrustAction {
    /// Trust the certificate(s) in FILE (PEM), stored as NAME.pem in <state_dir>/trust.
    Add {
        file: PathBuf,
        /// The name to store it under (default: the file's name without .pem).
        #[arg(long)]
        name: Option<String>,
    },
    /// List trusted certificates: name, SHA-256 fingerprint, subject names.
    List,
    /// Stop trusting the certificate stored as NAME.
    Remove { name: String },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user; the password is read from stdin (prompted twice on a terminal).
    Add {
        name: String,
        /// What the user may do: read (list-*, events) or write (everything).
        #[arg(long, value_parser = ["read", "write"])]
        auth: String,
    },
    /// List users and their authorization.
    List,
    /// Change a user's password, read like `add`'s; the user's open sessions end.
    Passwd { name: String },
    /// Change what a user may do; the user's open sessions get it at once.
    Set {
        name: String,
        /// read (list-*, events) or write (everything).
        #[arg(long, value_parser = ["read", "write"])]
        auth: String,
    },
    /// Remove a user; the user's open sessions end.
    Remove { name: String },
}

/// mimalloc rather than glibc's malloc: see the README's Performance section.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's options by number (`mi_option_t` in its v3 `mimalloc.h`; the sys crate names
/// only some). The test below checks that they still mean what they meant.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed after a burst of TLS handshakes goes back to the OS at once, and arenas are
/// committed as used: measured with 6,000 idle sessions, this brings mimalloc's memory per
/// session from 9.5 KiB down to glibc's 6 KiB. Run before `main`, from the process's
/// constructors: Rust's runtime allocates (and so sets mimalloc up) before `main` begins.
extern "C" fn tune_allocator() {
    // SAFETY: mi_option_set only stores an option value.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

fn main() -> ExitCode {
    crash_on_panic();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(kind) = ldmd::docs::requested(&args) {
        let command = <Cli as clap::CommandFactory>::command();
        return match ldmd::docs::generate(command, &kind, "8", &mut io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => fail(message),
        };
    }
    let cli = Cli::parse_from(args);
    let overrides = Overrides {
        listen: cli.listen.clone(),
        socket: cli.socket.clone(),
        state_dir: cli.state_dir.clone(),
        metrics_listen: cli.metrics_listen.clone(),
        runtime: cli.runtime,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => return fail(format!("configuration: {e}")),
    };
    let result = match cli.command {
        None => run(config),
        Some(Command::User { action }) => user(&config, action),
        Some(Command::Trust { action }) => trust(&config, action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

/// Crash-only: a panic on any thread ends the whole process with one log line, never leaving a
/// live daemon with a dead thread (a registry that no longer answers, an I/O thread whose
/// connections hang). Nothing acknowledged is lost: every answer follows its durable commit,
/// and a supervisor restarts the daemon on the same state.
fn crash_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        tracing::error!(thread, "panic{location}: {payload}; ending the process");
        // Written directly too, in case logging is not set up yet or is what panicked.
        eprintln!("ldmd: panic in thread {thread}{location}: {payload}; ending the process");
        std::process::abort();
    }));
}

fn fail(message: String) -> ExitCode {
    eprintln!("ldmd: {message}");
    ExitCode::FAILURE
}

/// Opens the durable registry in the state directory: restores it, or creates the machine's
/// first state. A store that cannot be opened for writing (a full or failing disk) is read
/// instead: the daemon starts, serves reads, refuses writes, and retries the store, rather
/// than exiting at every start until someone frees the disk.
fn open_registry(config: &Config) -> Result<RegistryActor, String> {
    ldmd::auth::store::create_private_dir(&config.state_dir)
        .map_err(|e| format!("state directory {}: {e}", config.state_dir.display()))?;
    let path = config.state_dir.join(REGISTRY_FILE);
    let settings = Settings {
        xmpp_enabled: config.xmpp_enabled,
        limits: RegistryLimits::from_limits(&config.limits),
        migration: MigrationSettings {
            concurrent_max: config.migration.concurrent_max,
            reservation_idle_secs: config.migration.reservation_idle_secs,
            host_name: gethostname::gethostname().to_string_lossy().into_owned(),
        },
        ..Settings::default()
    };
    let opened = Store::open(&path).and_then(|store| Ok((store.load()?, store)));
    let (store, records, store_fault) = match opened {
        Ok((records, store)) => (store, records, None),
        Err(e) => {
            tracing::error!(error = %e, "cannot open the registry store for writing: reading it instead; writes are refused until it opens");
            let records = Store::read_only(&path)
                .map_err(|read| format!("{e}; reading it failed too: {}", read.message))?;
            (Store::closed(&path), records, Some(e.message))
        }
    };
    let registry = match records {
        None => {
            let mut seed = [0u8; 8];
            getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
            Registry::new(
                config.machine.clone(),
                settings,
                u64::from_le_bytes(seed),
                ldmd::registry::actor::unix_now(),
            )
            .map_err(|e| format!("registry: {e}"))?
        }
        Some(records) => {
            let (registry, notes) = Registry::restore(config.machine.clone(), settings, records)
                .map_err(|e| format!("registry: {e}"))?;
            // Memory DRs rolled back, and migrations resumed by their restart rules.
            let rolled_back =
                ldmd::metrics::get().memdr(ldmd::registry::model::MemDrEnd::RolledBack);
            for note in notes {
                tracing::warn!("{note}");
                if note.starts_with("the memory DR") {
                    rolled_back.increment(1);
                }
            }
            registry
        }
    };
    let mut actor = RegistryActor::new(registry, store, config.guest);
    actor.store_fault = store_fault;
    actor.reply_bytes_in_flight_max = config.limits.reply_bytes_in_flight_max;
    actor.migration = std::sync::Arc::new(config.migration.worker.clone());
    Ok(actor)
}

fn run(mut config: Config) -> Result<(), String> {
    init_logging(&config);
    // Before anything is created: an explicit io_uring that cannot work leaves nothing behind,
    // and `auto` says once why it falls back (the server then takes the runtime as given).
    let runtime = ldmd::server::runtime::resolve(config.runtime).map_err(|e| e.to_string())?;
    config.runtime = runtime.into();
    raise_file_limit(config.limits.connections_max + config.limits.unix_connections_max);
    // A start that fails leaves no state directory it created behind (a typo in --state-dir
    // must not leave a fresh certificate and database there).
    let state_dir = config.state_dir.clone();
    let fresh = !state_dir.exists();
    let metrics_addr = config.metrics_listen;
    let server = start(config).inspect_err(|_| {
        if fresh {
            let _ = std::fs::remove_dir_all(&state_dir);
        }
    })?;
    announce(&server, metrics_addr);
    wait_for_signal()?;
    tracing::info!("shutting down");
    // systemd: the stop has begun (the drain may take `limits.shutdown_drain_secs`).
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    server.shutdown();
    tracing::info!("stopped");
    Ok(())
}

/// Everything a start creates and binds: the metrics listener, the registry, the server.
fn start(config: Config) -> Result<Server, String> {
    if let Some(addr) = config.metrics_listen {
        ldmd::metrics::install_exporter(addr)?;
    }
    let mut registry = open_registry(&config)?;
    let resolvers = ldmd::auth::verifier::ResolverKey::default();
    registry.resolvers = resolvers.clone();
    // Reads are answered on the I/O threads from replicas of the committed state.
    let reads = ldmd::registry::replica::ReadPath::new(
        config.io_threads.max(1),
        config.limits.reply_bytes_in_flight_max,
    );
    registry.reads = Some(reads.clone());
    Server::start_with(config, Box::new(registry), resolvers, Some(reads))
        .map_err(|e| e.to_string())
}

/// Says the daemon is ready: in the log, on stdout (one machine-readable line, for supervisors
/// and tests), and to systemd when it started us (`Type=notify`).
fn announce(server: &Server, metrics_addr: Option<std::net::SocketAddr>) {
    if server.certificate_generated {
        tracing::info!(fingerprint = %server.fingerprint, "generated a self-signed TLS certificate");
    }
    let xmpp = server
        .tcp_addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(xmpp = %xmpp, unix = %server.socket_path.display(), fingerprint = %server.fingerprint, runtime = %server.runtime, "ldmd ready");
    let metrics = metrics_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    println!(
        "ldmd ready xmpp={} unix={} metrics={} fingerprint={} runtime={}",
        if xmpp.is_empty() { "off" } else { &xmpp },
        server.socket_path.display(),
        metrics,
        server.fingerprint,
        server.runtime
    );
    let _ = io::stdout().flush();
    // Without NOTIFY_SOCKET (not started by systemd) this does nothing.
    let status = format!(
        "serving XMPP on {} and {}",
        if xmpp.is_empty() {
            "no TCP port"
        } else {
            &xmpp
        },
        server.socket_path.display()
    );
    if let Err(e) = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ],
    ) {
        tracing::warn!(error = %e, "cannot tell systemd that ldmd is ready");
    }
}

/// Each connection is a descriptor: raise the soft limit to the hard one, and say so when even
/// that is below what the connection limits allow.
fn raise_file_limit(connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
    let needed = connections as u64 + 256;
    if limit.rlim_cur < needed {
        tracing::warn!(
            open_files = limit.rlim_cur,
            needed,
            "RLIMIT_NOFILE is below limits.connections_max + unix_connections_max; raise it or lower them"
        );
    }
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("signal runtime: {e}"))?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        Ok(())
    })
}

/// Logs go to stderr (the journal, under systemd): text, or one JSON object per line, with
/// colours only on a terminal. The audit trail is logged at info whatever the filter says,
/// unless `audit = false`.
fn init_logging(config: &Config) {
    let audit = if config.audit { "info" } else { "off" };
    let log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let log = log.as_deref().unwrap_or(&config.log);
    let directives = format!("{log},{}={audit}", ldmd::server::audit::TARGET);
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    let _ = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn user(config: &Config, action: UserAction) -> Result<(), String> {
    let path = config.users_file();
    let store_error = |e: StoreError| e.to_string();
    match action {
        UserAction::Add { name, auth } => {
            ldmd::auth::store::check_user_name(&name).map_err(store_error)?;
            let role: Role = auth.parse()?;
            let password = read_password(&name)?;
            UserStore::add(&path, &name, role, &password).map_err(store_error)?;
            eprintln!(
                "added {name} ({auth}); remote clients log in as {name}@{}",
                config.domains[0]
            );
        }
        UserAction::List => {
            let store = UserStore::load(&path).map_err(store_error)?;
            println!("{:<32} AUTH", "NAME");
            for user in store.users() {
                println!("{:<32} {}", user.name, user.auth);
            }
        }
        UserAction::Passwd { name } => {
            if UserStore::load(&path)
                .map_err(store_error)?
                .get(&name)
                .is_none()
            {
                return Err(store_error(StoreError::Missing(name)));
            }
            let password = read_password(&name)?;
            UserStore::set_password(&path, &name, &password).map_err(store_error)?;
            eprintln!("changed the password of {name}; its open sessions end");
        }
        UserAction::Set { name, auth } => {
            let role: Role = auth.parse()?;
            UserStore::set_role(&path, &name, role).map_err(store_error)?;
            eprintln!("{name} is now {auth}");
        }
        UserAction::Remove { name } => {
            UserStore::remove(&path, &name).map_err(store_error)?;
            eprintln!("removed {name}");
        }
    }
    Ok(())
}

fn trust(config: &Config, action: TrustAction) -> Result<(), String> {
    use ldmd::migration::trust;
    match action {
        TrustAction::Add { file, name } => {
            let (name, fingerprints) = trust::add(&config.state_dir, &file, name.as_deref())?;
            eprintln!(
                "trusted {name} ({}) for migration: {}",
                trust::directory(&config.state_dir)
                    .join(format!("{name}.pem"))
                    .display(),
                fingerprints.join(", ")
            );
        }
        TrustAction::List => {
            println!("{:<24} {:<95} SUBJECT", "NAME", "SHA-256");
            for listed in trust::list(&config.state_dir)? {
                println!(
                    "{:<24} {:<95} {}",
                    listed.name,
                    listed.fingerprint,
                    listed.subjects.join(", ")
                );
            }
        }
        TrustAction::Remove { name } => {
            trust::remove(&config.state_dir, &name)?;
            eprintln!("removed {name}");
        }
    }
    Ok(())
}

/// The password: prompted twice without echo on a terminal, else the first line of stdin.
fn read_password(name: &str) -> Result<Zeroizing<String>, String> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let mut line = Zeroizing::new(String::new());
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password: {e}"))?;
        let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
        return Ok(trimmed);
    }
    let first = prompt_hidden(&format!("Password for {name}: "))?;
    let second = prompt_hidden("Again: ")?;
    if *first != *second {
        return Err("the passwords differ".into());
    }
    Ok(first)
}

fn prompt_hidden(prompt: &str) -> Result<Zeroizing<String>, String> {
    eprint!("{prompt}");
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; all zeroes is a valid value that tcgetattr overwrites.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr on stdin with a struct we own.
    let have_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = Zeroizing::new(String::new());
    let read = io::stdin().lock().read_line(&mut line);
    if have_tty {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    eprintln!();
    read.map_err(|e| format!("reading the password: {e}"))?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocator_is_tuned_before_main() {
        // The numbers follow the sys crate's own (it names option 16, the one after purge
        // delay in mimalloc v3's enum), and the crate is pinned to the version checked.
        assert_eq!(
            libmimalloc_sys::mi_option_use_numa_nodes - 1,
            MI_OPTION_PURGE_DELAY
        );
        // The constructor ran before this test's main: both are 0 (their defaults are 1000
        // and 2).
        // SAFETY: mi_option_get only reads an option value.
        let (delay, eager) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT),
            )
        };
        assert_eq!((delay, eager), (0, 0));
    }
}
