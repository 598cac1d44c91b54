//! For the scenarios' tests: a real ldmd in this process (the durable registry on a private
//! state directory, one I/O thread, no /metrics) on a free loopback port, a SASL user
//! `load`/`pw` with write authorization, and the command line parsed as `ldm-load` would.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use ldmd::auth::store::UserStore;
use ldmd::config::{Config, Overrides};
use ldmd::ldm::Role;
use ldmd::ldm::handler::Unsupported;
use ldmd::registry::actor::{RegistryActor, unix_now};
use ldmd::registry::store::Store;
use ldmd::registry::{Registry, Settings};
use ldmd::server::Server;
use ldmd::server::dispatch::HandlerThread;

use crate::ldm::Action;
use crate::session::{self, Session, Target};
use crate::{Cli, Scenario};

pub const USER: &str = "load";
pub const PASSWORD: &str = "pw";

/// Which answers the daemon gives.
pub enum Answers {
    /// The real registry: every action of the LDM interface, durably.
    Registry,
    /// Every document refused (a failure reply for each).
    Refusals,
}

pub struct Ldmd {
    server: Option<Server>,
    pub dir: tempfile::TempDir,
}

impl Ldmd {
    pub fn start(answers: Answers) -> Ldmd {
        let dir = tempfile::tempdir().unwrap();
        let overrides = Overrides {
            listen: vec!["127.0.0.1:0".into()],
            socket: Some(dir.path().join("ldmd.sock")),
            state_dir: Some(dir.path().to_path_buf()),
            metrics_listen: Some("off".into()),
            ..Overrides::default()
        };
        // Loopback peers log in like remote ones: with SASL PLAIN, then bind.
        let config = Config::from_toml(
            "io_threads = 1\nlog = 'warn'\ntcp_loopback_is_local = false",
            &overrides,
        )
        .unwrap();
        UserStore::add(&config.users_file(), USER, Role::Write, PASSWORD).unwrap();
        let backend: Box<dyn ldmd::server::dispatch::Backend> = match answers {
            Answers::Registry => {
                let store = Store::open(&dir.path().join("registry.redb")).unwrap();
                let registry =
                    Registry::new(config.machine.clone(), Settings::default(), 7, unix_now())
                        .expect("registry");
                Box::new(RegistryActor::new(registry, store, config.guest))
            }
            Answers::Refusals => Box::new(HandlerThread(Box::new(Unsupported))),
        };
        let server = Server::start(config, backend).unwrap();
        Ldmd {
            server: Some(server),
            dir,
        }
    }

    pub fn addr(&self) -> String {
        self.server.as_ref().unwrap().tcp_addrs[0].to_string()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("tls-cert.pem")
    }

    /// The flags that reach this daemon as `load`, before a scenario's own.
    pub fn flags(&self) -> Vec<String> {
        let ca = self.ca().display().to_string();
        [
            "--target",
            &self.addr(),
            "--ca",
            &ca,
            "--user",
            USER,
            "--password",
            PASSWORD,
        ]
        .map(String::from)
        .into()
    }

    /// The names of the domains the registry holds, read with list-domain.
    pub fn domains(&self) -> Vec<String> {
        let target = Target {
            addr: self.addr().parse().unwrap(),
            domain: "localhost".into(),
            user: Some(USER.into()),
            password: PASSWORD.into(),
            tls: session::client_tls(Some(&self.ca()), false, true).unwrap(),
            source: None,
            timeout: Duration::from_secs(10),
        };
        block_on(async move {
            let mut session = Session::open(&target).await.unwrap();
            let reply = session
                .request(Action::ListDomain.document(None).as_bytes())
                .await
                .unwrap();
            session.close().await;
            reply
                .split("<Content")
                .skip(1)
                .filter_map(|c| {
                    let at = c.find(" id=")? + 5;
                    let quote = &c[at - 1..at];
                    Some(c[at..at + c[at..].find(quote)?].to_owned())
                })
                .collect()
        })
    }
}

impl Drop for Ldmd {
    fn drop(&mut self) {
        // Outside any runtime: shutdown blocks until the daemon's threads end.
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// Runs `future` on a runtime of its own with two workers, as the binary does on this machine.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(future)
}

/// `ldm-load <args>` parsed, or clap's message.
pub fn parse(args: &[&str]) -> Result<Scenario, String> {
    let argv = std::iter::once("ldm-load").chain(args.iter().copied());
    Cli::try_parse_from(argv)
        .map(|cli| cli.scenario)
        .map_err(|e| e.to_string())
}

/// `scenario` with the daemon's flags and then `flags`.
pub fn scenario(ldmd: &Ldmd, name: &str, flags: &[&str]) -> Scenario {
    let base = ldmd.flags();
    let mut argv: Vec<&str> = vec![name];
    argv.extend(base.iter().map(String::as_str));
    argv.extend_from_slice(flags);
    parse(&argv).unwrap()
}

/// A /metrics server on a free loopback port that answers every request with `body` until its
/// runtime ends; its URL.
pub async fn serve_metrics(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let response = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}");
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    url
}
