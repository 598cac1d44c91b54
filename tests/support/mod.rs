//! Shared by the end-to-end tests: a real `ldmd` process on free ports with a private state
//! directory, and a small blocking XMPP client (rustls after STARTTLS). Every daemon is killed
//! when its handle drops, so no test leaves a process behind.

#![allow(dead_code)]

pub mod proxy;
mod python;

#[allow(unused_imports)] // only the interop and metrics tests run Python
pub use python::python;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ldmd");
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime every daemon of the run is started with (`LDMD_TEST_RUNTIME`: io_uring or
/// epoll; unset: the daemon's own choice). `.ci/run` runs the end-to-end suites on both.
pub fn test_runtime() -> Option<String> {
    let runtime = std::env::var("LDMD_TEST_RUNTIME").ok()?;
    assert!(
        ["auto", "io_uring", "epoll"].contains(&runtime.as_str()),
        "LDMD_TEST_RUNTIME={runtime:?}: expected auto, io_uring or epoll"
    );
    Some(runtime)
}

pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub xmpp: Option<SocketAddr>,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub fingerprint: String,
    /// What its I/O threads run on, as its ready line says (io_uring or epoll).
    pub runtime: String,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// What the daemon wrote on stderr so far.
    pub stderr_so_far: Arc<std::sync::Mutex<String>>,
}

/// A port that was free a moment ago (for the metrics listener, which cannot report its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    /// Starts `ldmd` with `config` (TOML) appended to test defaults.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with_users(config, &[])
    }

    /// Starts `ldmd` after adding `users` (name, auth, password) with `ldmd user add`.
    pub fn start_with_users(config: &str, users: &[(&str, &str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        add_users(&dir.path().join("state"), users);
        Daemon::start_in(dir, config)
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Daemon {
        Daemon::spawn(dir, config, None, &[])
    }

    /// Starts `ldmd` with extra environment variables (fault points: `LDMD_FAULTS`).
    pub fn start_with_env(
        config: &str,
        users: &[(&str, &str, &str)],
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        add_users(&dir.path().join("state"), users);
        Daemon::spawn(dir, config, None, env)
    }

    /// Starts `ldmd` in `dir` (state in `dir/state`), with extra environment variables.
    pub fn start_in_with_env(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(dir, config, None, env)
    }

    /// Starts `ldmd` serving /metrics on a free port.
    pub fn start_with_metrics(config: &str, users: &[(&str, &str, &str)]) -> Daemon {
        Daemon::start_with_metrics_env(config, users, &[])
    }

    /// [`Daemon::start_with_metrics`], with extra environment variables.
    pub fn start_with_metrics_env(
        config: &str,
        users: &[(&str, &str, &str)],
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        add_users(&dir.path().join("state"), users);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Daemon::spawn(dir, config, Some(addr), env)
    }

    /// Starts `ldmd` again in `dir` (after a crash), serving /metrics on a free port.
    pub fn restart_with_metrics(
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Daemon::spawn(dir, config, Some(addr), env)
    }

    fn spawn(
        dir: tempfile::TempDir,
        config: &str,
        metrics: Option<SocketAddr>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let runtime = test_runtime();
        let mut command = Daemon::command(&dir, config, metrics, runtime.as_deref());
        let child = command.envs(env.iter().copied()).spawn().unwrap();
        Daemon::ready(dir, child, metrics, runtime)
    }

    /// The command that starts `ldmd` in `dir` (state in `dir/state`), on `runtime` if given,
    /// with its output piped; [`Daemon::ready`] takes the started child.
    pub fn command(
        dir: &tempfile::TempDir,
        config: &str,
        metrics: Option<SocketAddr>,
        runtime: Option<&str>,
    ) -> Command {
        let state = dir.path().join("state");
        let config_path = dir.path().join("ldmd.toml");
        let full = format!(
            "io_threads = 2\ndomains = ['localhost', 'example.com']\nlog = 'warn'\n{config}\n"
        );
        std::fs::write(&config_path, full).unwrap();
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--state-dir")
            .arg(&state)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen"])
            .arg(metrics.map_or_else(|| "off".to_owned(), |a| a.to_string()))
            .args(runtime.iter().flat_map(|r| ["--runtime", r]))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Waits for a started daemon's ready line; a daemon started on `runtime` must say it runs
    /// on it.
    pub fn ready(
        dir: tempfile::TempDir,
        mut child: Child,
        metrics: Option<SocketAddr>,
        runtime: Option<String>,
    ) -> Daemon {
        let stderr = child.stderr.take().unwrap();
        let stderr_so_far = Arc::new(std::sync::Mutex::new(String::new()));
        let so_far = stderr_so_far.clone();
        let stderr = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                so_far.lock().unwrap().push_str(&line);
                line.clear();
            }
            so_far.lock().unwrap().clone()
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("ldmd ready "),
            "daemon did not start: {line:?}"
        );
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_owned()
        };
        let running = field("runtime");
        if let Some(wanted) = runtime.filter(|r| r != "auto") {
            assert_eq!(
                running, wanted,
                "the daemon runs on another runtime than asked"
            );
        }
        let xmpp = field("xmpp");
        Daemon {
            runtime: running,
            xmpp: (xmpp != "off").then(|| xmpp.split(',').next().unwrap().parse().unwrap()),
            socket: PathBuf::from(field("unix")),
            metrics,
            fingerprint: field("fingerprint"),
            child,
            dir,
            stderr: Some(stderr),
            stderr_so_far,
        }
    }

    /// Waits (bounded) until the daemon has written `needle` on stderr.
    pub fn wait_for_stderr(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.stderr_so_far.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Whether the process has ended (a fault point killed it).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// GET /metrics, as text.
    pub fn scrape(&self) -> String {
        scrape(self.metrics.expect("metrics enabled"))
    }

    /// The value of one sample (exact name with labels as exposed), or 0 if absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.scrape()
            .lines()
            .find_map(|line| {
                line.strip_prefix(sample)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn tcp(&self) -> Client {
        Client::tcp(self.xmpp.expect("xmpp listener"), &self.state_dir())
    }

    pub fn unix(&self) -> Client {
        Client::unix(&self.socket, &self.state_dir())
    }

    /// SIGKILL, as a host that dies would; the state stays here for a restart.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL (if it still runs), and the directory handed back for the next daemon on the
    /// same state; this handle keeps an empty one.
    pub fn kill_and_take_dir(&mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// SIGKILL, as a crash would: no shutdown, nothing flushed. Reaps the process and hands the
    /// directory back, so that the next daemon can start on the same state.
    pub fn crash(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Drop still runs and needs a directory to own; an empty one costs nothing.
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Waits (bounded) for the process to end by itself: its exit status and stderr text, and
    /// the directory, for a daemon to start again on the same state.
    pub fn wait_for_exit(mut self) -> (std::process::ExitStatus, String, tempfile::TempDir) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stderr = self.stderr.take().unwrap().join().unwrap();
                let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
                return (status, stderr, dir);
            }
            assert!(Instant::now() < deadline, "ldmd did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status (and the stderr text).
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stderr = self.stderr.take().unwrap().join().unwrap();
                return (status, stderr);
            }
            assert!(Instant::now() < deadline, "ldmd did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET /metrics from `addr`, as text.
pub fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Adds (name, auth, password) users with `ldmd user add`.
pub fn add_users(state: &Path, users: &[(&str, &str, &str)]) {
    for (name, auth, password) in users {
        let out = run_cli(
            state,
            &["user", "add", name, "--auth", auth],
            Some(password),
        );
        assert!(
            out.status.success(),
            "user add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `ldmd <args>` against a state directory, feeding `stdin`.
pub fn run_cli(state: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        // A command that refuses before it reads (an unknown user) closes its stdin first.
        let _ = writeln!(input, "{text}");
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// The daemon's certificate as the only trust root.
pub fn client_tls(state: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in ldmd::server::certs::read_certificates(&state.join("tls-cert.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

pub trait Socket: Read + Write + Send {}
impl<T: Read + Write + Send> Socket for T {}

pub enum Wire {
    Plain(Box<dyn Socket>),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Box<dyn Socket>>>),
    Gone,
}

/// A blocking XMPP client over TCP or the Unix socket.
pub struct Client {
    wire: Wire,
    tls: Arc<rustls::ClientConfig>,
    /// Received and not yet matched.
    pub pending: String,
}

pub const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
pub const STARTTLS: &str = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";

impl Client {
    pub fn tcp(addr: SocketAddr, state: &Path) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            wire: Wire::Plain(Box::new(stream)),
            tls: client_tls(state),
            pending: String::new(),
        }
    }

    /// A client over an already connected TCP stream (bound to a chosen source address).
    pub fn from_tcp(stream: TcpStream, state: &Path) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            wire: Wire::Plain(Box::new(stream)),
            tls: client_tls(state),
            pending: String::new(),
        }
    }

    pub fn unix(path: &Path, state: &Path) -> Client {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            wire: Wire::Plain(Box::new(stream)),
            tls: client_tls(state),
            pending: String::new(),
        }
    }

    pub fn send(&mut self, data: &str) {
        self.send_bytes(data.as_bytes());
    }

    pub fn send_bytes(&mut self, data: &[u8]) {
        self.try_send_bytes(data).unwrap();
    }

    /// Sends, or says why the connection could not take it (for tests where the daemon dies).
    pub fn try_send_bytes(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.wire {
            Wire::Plain(s) => s.write_all(data).and_then(|()| s.flush()),
            Wire::Tls(s) => s.write_all(data).and_then(|()| s.flush()),
            Wire::Gone => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection gone",
            )),
        }
    }

    /// Reads until `needle` has arrived; returns everything up to and including it.
    pub fn read_until(&mut self, needle: &str) -> String {
        self.try_read_until(needle)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Client::read_until`], but the end of the connection or the deadline is an error
    /// rather than a panic.
    pub fn try_read_until(&mut self, needle: &str) -> io::Result<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(at) = self.pending.find(needle) {
                let rest = self.pending.split_off(at + needle.len());
                return Ok(std::mem::replace(&mut self.pending, rest));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("timed out waiting for {needle:?}; got {:?}", self.pending),
                ));
            }
            let read = self.try_read_some().map_err(|e| {
                io::Error::new(e.kind(), format!("read: {e}, waiting for {needle:?}"))
            })?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed waiting for {needle:?}; got {:?}",
                        self.pending
                    ),
                ));
            }
        }
    }

    /// Reads until the peer closes; returns everything not yet matched.
    pub fn read_to_close(&mut self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        while self.read_some() > 0 {
            assert!(Instant::now() < deadline, "the server did not close");
        }
        std::mem::take(&mut self.pending)
    }

    /// One read; 0 at end of stream (a TLS close_notify or a plain FIN).
    pub fn read_some(&mut self) -> usize {
        self.try_read_some().unwrap_or_else(|e| panic!("read: {e}"))
    }

    /// One read; 0 at end of stream, also when it ends abruptly (a reset, or TLS without
    /// close_notify); other errors (the read timeout among them) are returned.
    pub fn try_read_some(&mut self) -> io::Result<usize> {
        let mut buf = [0u8; 16 * 1024];
        let n = match &mut self.wire {
            Wire::Plain(s) => s.read(&mut buf),
            Wire::Tls(s) => s.read(&mut buf),
            Wire::Gone => return Ok(0),
        };
        match n {
            Ok(n) => {
                self.pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Header, STARTTLS, TLS handshake against the daemon's certificate, new header.
    pub fn secure(&mut self) -> String {
        self.send(HEADER);
        self.read_until("</stream:features>");
        self.send(STARTTLS);
        self.read_until("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        self.start_tls();
        self.send(HEADER);
        self.read_until("</stream:features>")
    }

    pub fn start_tls(&mut self) {
        let Wire::Plain(socket) = std::mem::replace(&mut self.wire, Wire::Gone) else {
            panic!("TLS already started");
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(self.tls.clone(), name).unwrap();
        let mut stream = rustls::StreamOwned::new(connection, socket);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        self.wire = Wire::Tls(Box::new(stream));
    }

    /// Authenticates with SASL PLAIN and restarts; returns the post-auth features.
    pub fn login(&mut self, user: &str, password: &str) -> String {
        use base64::Engine as _;
        let message =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{message}</auth>"
        ));
        let answer = self.read_until("/>");
        assert!(answer.contains("<success"), "login failed: {answer}");
        self.send(HEADER);
        self.read_until("</stream:features>")
    }

    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match &self.wire {
            Wire::Tls(s) => s.conn.protocol_version(),
            _ => None,
        }
    }

    /// Sends a document and reads its reply.
    pub fn request(&mut self, document: &str) -> String {
        self.send(document);
        self.read_until("</LDM_interface>")
    }

    /// Like [`Client::request`], but a connection that ends first is an error, not a panic.
    pub fn try_request(&mut self, document: &str) -> io::Result<String> {
        self.try_send_bytes(document.as_bytes())?;
        self.try_read_until("</LDM_interface>")
    }
}

pub fn list_domain() -> &'static str {
    "<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>"
}

/// add-domain of `name` with an ldom_info Item, as the wire contract writes it.
pub fn add_domain(name: &str) -> String {
    format!(
        r#"<LDM_interface version="1.3"><cmd><action>add-domain</action><data version="3.0"><Envelope><References/><Content xsi:type="ovf:VirtualSystem_Type" id="{name}"><Section xsi:type="ovf:ResourceAllocationSection_type"><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType></Item></Section></Content></Envelope></data></cmd></LDM_interface>"#
    )
}

/// Parses one reply document (whatever precedes its root is skipped).
fn parse_reply(reply: &str) -> ldmd::xml::Element<'_> {
    let root = reply
        .find("<LDM_interface")
        .expect("an LDM_interface reply");
    ldmd::xml::Element::parse(&reply[root..], &ldmd::xml::NamespaceScope::client())
        .unwrap_or_else(|e| panic!("reply is not well-formed ({e:?}): {reply}"))
}

/// The document status (`success` or `failure`), from the `response` that is the root's last
/// child (§2.1), and the first `resp_msg` anywhere in the reply (a reason may sit at the
/// object, cmd or document level).
pub fn document_status(reply: &str) -> (String, Option<String>) {
    let root = parse_reply(reply);
    let status = root
        .elements()
        .last()
        .filter(|e| e.local_name() == "response")
        .and_then(|response| response.child_local("status"))
        .unwrap_or_else(|| panic!("no document status last: {reply}"))
        .text()
        .into_owned();
    let mut messages = Vec::new();
    descendants(&root, "resp_msg", &mut |e| {
        messages.push(e.text().into_owned())
    });
    (status, messages.into_iter().next())
}

/// The `id` (or `ovf:id`) of every `Content` anywhere in a reply, in document order.
pub fn content_ids(reply: &str) -> Vec<String> {
    let mut ids = Vec::new();
    descendants(&parse_reply(reply), "Content", &mut |e| {
        ids.extend(e.attr_local("id").map(str::to_owned))
    });
    ids
}

/// Calls `found` on every element below `element` with this local name, in document order.
fn descendants<'a>(
    element: &ldmd::xml::Element<'a>,
    local: &str,
    found: &mut impl FnMut(&ldmd::xml::Element<'a>),
) {
    for child in element.elements() {
        if child.local_name() == local {
            found(child);
        }
        descendants(child, local, found);
    }
}

impl Client {
    /// A client over an already connected Unix stream, with a given TLS configuration.
    pub fn over(stream: UnixStream, tls: Arc<rustls::ClientConfig>) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            wire: Wire::Plain(Box::new(stream)),
            tls,
            pending: String::new(),
        }
    }
}
