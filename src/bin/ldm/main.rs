//! `ldm`: the operator's command-line client of ldmd.
//!
//! Each invocation builds its request documents (`ldmd::cli::request`), opens one session
//! (`ldmd::client`), sends them, and renders the replies (`ldmd::cli::{text, json}`).
//!
//! Exit status: 0 success; 1 the daemon refused (each `resp_msg` on stderr); 2 usage (clap's,
//! an operand checked here, a trust setting that cannot be used); 3 the daemon cannot be
//! reached; 4 authentication failed; 5 TLS, protocol or timeout, and `ldm events` whose
//! stream ends before `--count` events (or at all, without a count).

mod args;
mod connect;
mod plan;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::{Map, Value, json};

use ldmd::cli::request::{self, UsageError};
use ldmd::cli::view::{self, GROUPS};
use ldmd::cli::{devices, json as js, raw, text};
use ldmd::client::{ClientError, Session};
use ldmd::ldm::action::Action;
use ldmd::ldm::document::{Document, Status};
use ldmd::ldm::reply::Reply;

use args::{Cli, Command};
use plan::{View, plan};

/// Silence after which `ldm events` sends a whitespace keepalive (the daemon's idle timeout
/// defaults to 15 minutes).
const KEEPALIVE: Duration = Duration::from_secs(60);

/// What went wrong, as an exit status and a line for stderr.
enum Failure {
    /// The daemon answered with failures (already printed): exit 1.
    Refused,
    Usage(String),
    Client(ClientError),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Failure {
        Failure::Usage(e.0)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

/// How replies are printed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
    /// `-o` groups of the long listing.
    Groups(Vec<String>),
    /// `-o status`: the long operation of each domain.
    Status,
}

fn output(text: Option<&str>) -> Result<Output, Failure> {
    match text {
        None | Some("text") => Ok(Output::Text),
        Some("json") => Ok(Output::Json),
        Some(list) => {
            let mut groups = Vec::new();
            for given in list.split(',').map(str::trim) {
                groups.push(group(given)?);
            }
            if groups.iter().any(|g| g == "status") {
                return match groups.len() {
                    1 => Ok(Output::Status),
                    _ => Err(Failure::Usage(
                        "-o: status is shown on its own, not with other sections".into(),
                    )),
                };
            }
            Ok(Output::Groups(groups))
        }
    }
}

/// A section of `-o`, as named or by a prefix of its name that no other section shares
/// (`net` is network, `mem` memory; `d` could be disk or domain), as Oracle's ldm accepts.
fn group(given: &str) -> Result<String, Failure> {
    let known = || {
        let mut all: Vec<&str> = GROUPS.to_vec();
        all.push("status");
        all
    };
    if known().contains(&given) {
        return Ok(given.to_owned());
    }
    let matches: Vec<&str> = known()
        .into_iter()
        .filter(|g| !given.is_empty() && g.starts_with(given))
        .collect();
    match matches[..] {
        [one] => Ok(one.to_owned()),
        [] => Err(Failure::Usage(format!(
            "-o: unknown format '{given}' (expected text, json, status, or sections among {})",
            GROUPS.join(",")
        ))),
        _ => Err(Failure::Usage(format!(
            "-o: '{given}' is ambiguous: {}",
            matches.join(", ")
        ))),
    }
}

/// The version Oracle's `ldm` reports whose interface and output ldm follows.
const ORACLE_VERSION: &str = "3.6.0";

/// `ldm -V`: Oracle's banner shape, which discovery tools match (`Logical Domains Manager
/// (v X.Y)`, the indented protocol lines, `System PROM:`), naming what really runs: ldmd,
/// which simulates the hypervisor and firmware, so those lines carry ldmd's own version.
fn banner() -> String {
    let ldmd = env!("CARGO_PKG_VERSION");
    format!(
        "\nLogical Domains Manager (v {ORACLE_VERSION})\n    \
         Hypervisor control protocol v 1.0 (ldmd {ldmd}, simulated)\n    \
         Using Hypervisor MD v 1.0\n\n\
         System PROM:\n    \
         Hypervisor  v. {ldmd}    @(#)Hypervisor {ldmd} ldmd (simulated)\n    \
         OpenBoot    v. {ldmd}    @(#)OBP {ldmd} ldmd (simulated)\n\n"
    )
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 2 && (args[1] == "-V" || args[1] == "--version") {
        print_out(&banner());
        return ExitCode::SUCCESS;
    }
    if let Some(kind) = ldmd::docs::requested(&args) {
        let command = <Cli as clap::CommandFactory>::command();
        return match ldmd::docs::generate(command, &kind, "1", &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("ldm: {message}");
                ExitCode::from(2)
            }
        };
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused) => ExitCode::from(1),
        Err(Failure::Usage(message)) => {
            eprintln!("ldm: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Client(e)) => {
            eprintln!("ldm: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// clap's message, except for a mistyped subcommand: the few nearest names, nearest first.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let typo = match (error.kind(), error.get(ContextKind::InvalidSubcommand)) {
        (ErrorKind::InvalidSubcommand, Some(ContextValue::String(typo))) => typo.clone(),
        _ => error.exit(),
    };
    let command = <Cli as clap::CommandFactory>::command();
    let names = command
        .get_subcommands()
        .flat_map(|sub| std::iter::once(sub.get_name()).chain(sub.get_visible_aliases()));
    let near = ldmd::cli::suggest::closest(&typo, names);
    eprintln!("ldm: unknown subcommand '{typo}'");
    match near.as_slice() {
        [] => {}
        [only] => eprintln!("  did you mean {only}?"),
        [first @ .., last] => eprintln!("  did you mean {} or {last}?", first.join(", ")),
    }
    eprintln!("\nUsage: ldm [OPTIONS] <COMMAND>\n\nFor the list of subcommands, try 'ldm --help'.");
    ExitCode::from(2)
}

/// `-o SECTIONS` shapes the long listing only; elsewhere it would be silently ignored.
fn check_output(command: &Command, output: &Output) -> Result<(), Failure> {
    match (command, output) {
        (_, Output::Text | Output::Json)
        | (Command::ListDomain { .. } | Command::ListBindings { .. }, Output::Groups(_))
        | (
            Command::ListDomain {
                long: false,
                extended: false,
                parseable: false,
                ..
            },
            Output::Status,
        ) => Ok(()),
        (_, Output::Status) => Err(Failure::Usage(
            "-o status applies to list-domain alone (without -l, -e or -p)".into(),
        )),
        (_, Output::Groups(_)) => Err(Failure::Usage(
            "-o SECTIONS applies to list-domain and list-bindings only (here: -o text or -o json)"
                .into(),
        )),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let output = output(cli.output.as_deref())?;
    check_output(&cli.command, &output)?;
    let conn = &cli.conn;
    match cli.command {
        Command::Events { class, count } => {
            let document = request::register_events(&class)?;
            events(conn, &document, &class, count, output == Output::Json)
        }
        Command::Xml { file } => xml(conn, &file, &output, true),
        Command::AddDomain {
            input: Some(file), ..
        } => xml(conn, &file.to_string_lossy(), &output, false),
        Command::MigrateDomain {
            force,
            dry_run,
            target_password_file,
            target_port,
            source,
            target,
        } => {
            let target = request::migration_target(&target)?;
            let user = match &target.user {
                Some(user) => user.clone(),
                None => login_name()?,
            };
            let session_target = connect::target(conn)?;
            let password = target_password(target_password_file.as_deref(), &user, &target.host)?;
            let document = request::migrate_domain(
                &source,
                &target,
                target_port,
                &user,
                &password,
                dry_run,
                force,
            );
            request::check_characters(&document)?;
            let mut session = Session::connect(&session_target)?;
            let (_, reply) = send(&mut session, &document)?;
            session.close();
            show(&reply, &View::Quiet, &output)
        }
        mut command => {
            // `-o cpu,network` picks sections of the long form, so it implies `-l`.
            if let (Command::ListDomain { long, .. }, Output::Groups(_)) = (&mut command, &output) {
                *long = true;
            }
            let plan = plan(command)?;
            let mut session = Session::connect(&connect::target(conn)?)?;
            let document = match plan.document {
                Ok(document) => document,
                Err(service_action) => {
                    // Services are named without their domain: ask who provides it first.
                    let (_, services) =
                        send(&mut session, &request::list_all(Action::ListServices))?;
                    let owner = view::service_owner(&services, &service_action.service);
                    (service_action.build)(owner.as_deref())?
                }
            };
            let (_, reply) = send(&mut session, &document)?;
            session.close();
            show(&reply, &plan.view, &output)
        }
    }
}

/// The invoking user's login name: the default user on the migration target.
fn login_name() -> Result<String, Failure> {
    // SAFETY: getpwuid returns a pointer into static storage or null; it is read at once, on
    // this thread, before any other passwd call.
    let name = unsafe {
        let entry = libc::getpwuid(libc::geteuid());
        if entry.is_null() || (*entry).pw_name.is_null() {
            None
        } else {
            std::ffi::CStr::from_ptr((*entry).pw_name)
                .to_str()
                .ok()
                .map(str::to_owned)
        }
    };
    name.or_else(|| std::env::var("USER").ok())
        .ok_or_else(|| Failure::Usage("migrate-domain: no login name: give USER@HOST".into()))
}

/// The target user's password: `-p FILE`, then `LDM_TARGET_PASSWORD`, then a prompt without
/// echo (`--password-file` and `LDM_PASSWORD` stay the source login's).
fn target_password(
    file: Option<&std::path::Path>,
    user: &str,
    host: &str,
) -> Result<zeroize::Zeroizing<String>, Failure> {
    use zeroize::Zeroizing;
    if let Some(path) = file {
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                Failure::Usage(format!("migrate-domain: -p {}: {e}", path.display()))
            })?);
        return Ok(Zeroizing::new(
            text.lines().next().unwrap_or_default().to_owned(),
        ));
    }
    if let Some(value) = std::env::var_os("LDM_TARGET_PASSWORD") {
        return value
            .into_string()
            .map(Zeroizing::new)
            .map_err(|_| Failure::Usage("LDM_TARGET_PASSWORD is not valid UTF-8".into()));
    }
    rpassword::prompt_password(format!("Target password for {user}@{host}: "))
        .map(Zeroizing::new)
        .map_err(|e| {
            Failure::Usage(format!(
                "migrate-domain: no password for {user}@{host}: give -p FILE, set LDM_TARGET_PASSWORD, or run on a terminal ({e})"
            ))
        })
}

fn send(session: &mut Session, document: &Document) -> Result<(String, Reply), Failure> {
    let mut bytes = Vec::new();
    ldmd::ldm::write_request(&mut bytes, document);
    Ok(session.request(&bytes)?)
}

/// Prints a reply as `view` and `output` say; failures and warnings go to stderr.
fn show(reply: &Reply, view: &View, output: &Output) -> Result<(), Failure> {
    let failed = reply.status != Status::Success;
    for message in reply.failures().into_iter().filter(|_| failed) {
        eprintln!("{}", text::terminal_safe(message));
    }
    for warning in reply.warnings() {
        eprintln!("{}", text::terminal_safe(warning));
    }
    let groups = match output {
        Output::Groups(groups) => groups.clone(),
        _ => Vec::new(),
    };
    let printed = if *output == Output::Json {
        let mut object = js::outcome(reply);
        add_json(&mut object, reply, view);
        format!("{}\n", Value::Object(object))
    } else {
        match view {
            View::Quiet => String::new(),
            View::Table | View::Parseable if *output == Output::Status => {
                text::status(&view::domain_rows(reply))
            }
            View::Table => text::list_table(&view::domain_rows(reply)),
            View::Parseable => text::list_parseable(&view::domain_rows(reply)),
            View::Long { parseable } => text::long_listing(reply, &groups, *parseable),
            View::Constraints { parseable } => text::constraints(reply, *parseable),
            View::Services { parseable } => text::services(reply, *parseable),
            View::ConstraintsXml => {
                let mut bytes = Vec::new();
                let contents = view::contents(reply, Action::ListConstraints);
                if contents
                    .iter()
                    .any(|c| c.id == ldmd::registry::CONTROL_DOMAIN)
                {
                    eprintln!(
                        "ldm: {} is left out: the control domain exists on every machine and is not added",
                        ldmd::registry::CONTROL_DOMAIN
                    );
                }
                ldmd::ldm::write_request(&mut bytes, &request::recreate(&contents));
                format!(
                    "<?xml version=\"1.0\"?>\n{}\n",
                    String::from_utf8_lossy(&bytes)
                )
            }
            View::Devices {
                all,
                parseable,
                classes,
            } => devices::devices(reply, classes, *all, *parseable),
            View::Io { parseable } => devices::io(reply, *parseable),
            View::Spconfig { parseable } => text::spconfig(reply, *parseable),
            View::Variables { names, parseable } => text::variables(reply, names, *parseable),
        }
    };
    print_out(&printed);
    if failed {
        Err(Failure::Refused)
    } else {
        Ok(())
    }
}

fn add_json(object: &mut Map<String, Value>, reply: &Reply, view: &View) {
    let rows = || view::domain_rows(reply);
    let (key, value) = match view {
        View::Quiet => return,
        View::Table | View::Parseable => ("domains", js::domains(reply, &rows(), None)),
        View::Long { .. } => (
            "domains",
            js::domains(reply, &rows(), Some(Action::ListBindings)),
        ),
        View::Constraints { .. } | View::ConstraintsXml => (
            "domains",
            js::domains_with_resources(reply, Action::ListConstraints),
        ),
        View::Services { .. } => (
            "services",
            js::domains_with_resources(reply, Action::ListServices),
        ),
        View::Devices { .. } | View::Io { .. } => {
            ("devices", js::section_items(reply, Action::ListDevices))
        }
        View::Spconfig { .. } => ("spconfigs", js::spconfig_list(reply)),
        View::Variables { names, .. } => {
            let mut vars = Map::new();
            for content in view::contents(reply, Action::ListVariable) {
                for var in view::items(content).filter(|i| i.resource_type == "var") {
                    let name = var.property("name").unwrap_or_default();
                    if names.is_empty() || names.iter().any(|n| n == name) {
                        vars.insert(
                            name.to_owned(),
                            json!(var.property("value").unwrap_or_default()),
                        );
                    }
                }
            }
            ("variables", Value::Object(vars))
        }
    };
    object.insert(key.into(), value);
}

/// Writes what a command prints. A reader that went away (`ldm list | head -0`) is not an
/// error, and no other write error changes the exit status the reply decided.
fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text::terminal_safe(text).as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("ldm: cannot write the output: {e}");
        }
        _ => {}
    }
}

/// `ldm events`: registers, then prints each event as it arrives. Events end only when
/// `count` have been printed, the reader of stdout goes away, or on Ctrl-C; a stream that
/// ends before is a failure (exit 5).
fn events(
    conn: &args::Connection,
    document: &Document,
    class: &str,
    count: Option<u64>,
    json_lines: bool,
) -> Result<(), Failure> {
    let target = connect::target(conn)?;
    let mut session = Session::connect(&target)?;
    let (_, reply) = send(&mut session, document)?;
    if reply.status != Status::Success {
        return show(&reply, &View::Quiet, &Output::Text);
    }
    eprintln!("ldm: listening for {class} events (Ctrl-C to stop)");
    let mut seen = 0;
    let mut stdout = std::io::stdout();
    while count.is_none_or(|c| seen < c) {
        let Some(event) = session.next_event(KEEPALIVE)? else {
            let events = match count {
                Some(c) => format!("{seen} of {c} events"),
                None if seen == 1 => "1 event".to_owned(),
                None => format!("{seen} events"),
            };
            return Err(Failure::Client(ClientError::Protocol {
                at: target.endpoint.to_string(),
                reason: format!("the stream ended after {events}"),
            }));
        };
        let line = if json_lines {
            js::event(&event).to_string()
        } else {
            text::event_line(&event)
        };
        // A closed stdout (`ldm events | head -1`) ends the loop quietly.
        if writeln!(stdout, "{}", text::terminal_safe(&line))
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
        seen += 1;
    }
    session.close();
    Ok(())
}

/// `ldm xml FILE|-`: sends the document as written and prints the reply as received (when
/// `echo`; `ldm add-domain -i FILE` prints nothing on success, as every write), or with
/// `-o json` its outcome (`status`, `messages`, `warnings`).
fn xml(conn: &args::Connection, file: &str, output: &Output, echo: bool) -> Result<(), Failure> {
    let mut text = String::new();
    let read = if file == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|t| text = t)
    };
    read.map_err(|e| Failure::Usage(format!("{file}: {e}")))?;
    let document = raw::strip_declaration(&text);
    raw::check_document(document).map_err(Failure::Usage)?;
    let mut session = Session::connect(&connect::target(conn)?)?;
    let (raw, reply) = session.request(document.as_bytes())?;
    session.close();
    if *output == Output::Json {
        return show(&reply, &View::Quiet, output);
    }
    if echo {
        print_out(&format!("{raw}\n"));
    }
    if reply.status == Status::Success {
        Ok(())
    } else {
        for message in reply.failures() {
            eprintln!("{}", text::terminal_safe(message));
        }
        Err(Failure::Refused)
    }
}

#[cfg(test)]
mod tests;
