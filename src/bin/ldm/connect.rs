//! Where the daemon is and how to trust it, from the command line, the environment and the
//! daemon's own configuration file. Flags always beat the environment.
//!
//! Unix socket (the default), the first of: `--socket`; with `--config` and/or
//! `--state-dir`, the socket ldmd itself would use with those flags (the config's `socket`,
//! else `<state_dir>/ldmd.sock`, `--state-dir` overriding the config's `state_dir`);
//! `LDMD_SOCKET`; `./ldmd-state/ldmd.sock` (ldmd's default) if `./ldmd-state` exists; the system daemon's
//! `/run/ldmd/ldmd.sock`. Its certificate: `tls.cert_file`
//! of `--config`, else `tls-cert.pem` in the state directory (`--state-dir`, the config's
//! `state_dir`, or the socket's directory). How far the socket and certificate are trusted
//! is [`ldmd::client::local_trust`]'s rule.
//!
//! TCP (`--host`): `--ca`, `--fingerprint` or `--insecure`; without them, the certificate of
//! `--config`/`--state-dir` when one is given. The password of `--user` comes from
//! `--password-file`, then `LDM_PASSWORD`, then a prompt on the terminal without echo.

use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use ldmd::cli::request::check_xml_text;
use ldmd::client::{
    ClientError, Endpoint, Login, Target, Trust, local_certificate, local_trust, parse_fingerprint,
};
use ldmd::config::{
    Config, DEFAULT_PORT, DEFAULT_STATE_DIR, Overrides, SOCKET_NAME, SYSTEM_SOCKET,
};

use crate::args::Connection;

fn setup(message: impl Into<String>) -> ClientError {
    ClientError::Setup(message.into())
}

/// Builds the session target from the options.
pub fn target(conn: &Connection) -> Result<Target, ClientError> {
    if let Some(domain) = &conn.domain {
        check_xml_text("--domain", domain).map_err(|e| setup(e.0))?;
    }
    // Read as ldmd reads it when started with the same --config and --state-dir.
    let overrides = Overrides {
        state_dir: conn.state_dir.clone(),
        ..Overrides::default()
    };
    let config = match &conn.config {
        Some(path) => Some(
            Config::load(Some(path), &overrides).map_err(|e| setup(format!("--config: {e}")))?,
        ),
        None => None,
    };
    let state_dir = conn
        .state_dir
        .clone()
        .or_else(|| config.as_ref().map(|c| c.state_dir.clone()));
    let certificate = config
        .as_ref()
        .and_then(|c| c.tls.cert_and_key.as_ref().map(|(cert, _)| cert.clone()))
        .or_else(|| state_dir.as_ref().map(|d| d.join("tls-cert.pem")));
    let explicit = explicit_trust(conn)?;
    let timeouts = (
        Duration::from_secs(conn.connect_timeout.max(1)),
        Duration::from_secs(conn.timeout.max(1)),
    );
    if let Some(host) = &conn.host {
        let (host, port) = host_port(host)?;
        let trust = match (explicit, certificate) {
            (Some(trust), _) => trust,
            (None, Some(cert)) => match local_certificate(&cert)? {
                Some(trust) => trust,
                None => return Err(no_way_to_verify()),
            },
            (None, None) => return Err(no_way_to_verify()),
        };
        let domain = conn.domain.clone().unwrap_or_else(|| {
            if host.parse::<std::net::IpAddr>().is_ok() {
                "localhost".to_owned()
            } else {
                host.clone()
            }
        });
        if let (Some(user), Trust::Insecure) = (&conn.user, &trust) {
            eprintln!(
                "ldm: warning: --insecure: the password of {user} goes to a server whose certificate is not verified"
            );
        }
        let login = match &conn.user {
            Some(user) => Some(Login {
                user: user.clone(),
                password: password(conn, user, &host)?,
            }),
            None => None,
        };
        return Ok(Target {
            endpoint: Endpoint::Tcp { host, port },
            domain: Some(domain),
            trust,
            login,
            connect_timeout: timeouts.0,
            reply_timeout: timeouts.1,
        });
    }
    if conn.user.is_some() {
        return Err(setup(
            "--user logs in over TCP: give --host too (the Unix socket authorizes by uid)",
        ));
    }
    let socket = conn
        .socket
        .clone()
        .or_else(|| config.as_ref().map(|c| c.socket.clone()))
        .or_else(|| conn.state_dir.as_ref().map(|d| d.join(SOCKET_NAME)))
        .or_else(|| std::env::var_os("LDMD_SOCKET").map(PathBuf::from))
        .unwrap_or_else(default_socket);
    let certificate = certificate.unwrap_or_else(|| {
        socket
            .parent()
            .unwrap_or(Path::new("."))
            .join("tls-cert.pem")
    });
    let trust = match explicit {
        Some(trust) => trust,
        None => local_trust(&socket, &certificate)?,
    };
    Ok(Target {
        endpoint: Endpoint::Unix(socket),
        domain: conn.domain.clone(),
        trust,
        login: None,
        connect_timeout: timeouts.0,
        reply_timeout: timeouts.1,
    })
}

/// Without any flag or `LDMD_SOCKET`: the development daemon's `./ldmd-state/ldmd.sock` when
/// its state directory is here (a stopped daemon is then reported as such, and a directory
/// planted by another user is refused by the trust rule), else the system daemon's
/// `/run/ldmd/ldmd.sock`.
fn default_socket() -> PathBuf {
    if Path::new(DEFAULT_STATE_DIR).is_dir() {
        Path::new(DEFAULT_STATE_DIR).join(SOCKET_NAME)
    } else {
        PathBuf::from(SYSTEM_SOCKET)
    }
}

fn explicit_trust(conn: &Connection) -> Result<Option<Trust>, ClientError> {
    let given = [conn.ca.is_some(), conn.fingerprint.is_some(), conn.insecure];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(setup("give only one of --ca, --fingerprint and --insecure"));
    }
    if let Some(text) = &conn.fingerprint {
        return Ok(Some(Trust::Fingerprint(
            parse_fingerprint(text).map_err(setup)?,
        )));
    }
    Ok(conn
        .ca
        .clone()
        .map(Trust::Ca)
        .or(conn.insecure.then_some(Trust::Insecure)))
}

fn no_way_to_verify() -> ClientError {
    setup("--host needs a way to verify the daemon: --ca FILE, --fingerprint SHA256 or --insecure")
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn host_port(text: &str) -> Result<(String, u16), ClientError> {
    let bad = || setup(format!("--host: expected HOST[:PORT], got '{text}'"));
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
    if let Some(rest) = text.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => port(p)?,
            None if tail.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_owned(), port));
    }
    match text.matches(':').count() {
        0 if !text.is_empty() => Ok((text.to_owned(), DEFAULT_PORT)),
        1 => {
            let (host, p) = text.split_once(':').ok_or_else(bad)?;
            if host.is_empty() {
                return Err(bad());
            }
            Ok((host.to_owned(), port(p)?))
        }
        // More than one colon and no brackets: an IPv6 address without a port.
        _ if text.parse::<std::net::Ipv6Addr>().is_ok() => Ok((text.to_owned(), DEFAULT_PORT)),
        _ => Err(bad()),
    }
}

/// The password: `--password-file`, `LDM_PASSWORD`, or a prompt without echo on the
/// terminal. It is never printed or logged, and is wiped from memory when dropped.
fn password(conn: &Connection, user: &str, host: &str) -> Result<Zeroizing<String>, ClientError> {
    if let Some(path) = &conn.password_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| setup(format!("--password-file {}: {e}", path.display())))?,
        );
        let line = text.lines().next().unwrap_or_default();
        return Ok(Zeroizing::new(line.to_owned()));
    }
    if let Some(value) = std::env::var_os("LDM_PASSWORD") {
        return value
            .into_string()
            .map(Zeroizing::new)
            .map_err(|_| setup("LDM_PASSWORD is not valid UTF-8"));
    }
    rpassword::prompt_password(format!("Password for {user}@{host}: "))
        .map(Zeroizing::new)
        .map_err(|e| {
            setup(format!(
                "no password for {user}: set LDM_PASSWORD, give --password-file, or run on a terminal ({e})"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_an_optional_port_and_ipv6_in_brackets() {
        assert_eq!(host_port("ldom-host").unwrap(), ("ldom-host".into(), 6482));
        assert_eq!(
            host_port("127.0.0.1:7000").unwrap(),
            ("127.0.0.1".into(), 7000)
        );
        assert_eq!(host_port("[::1]:7000").unwrap(), ("::1".into(), 7000));
        assert_eq!(host_port("[::1]").unwrap(), ("::1".into(), 6482));
        assert_eq!(host_port("::1").unwrap(), ("::1".into(), 6482));
        for bad in ["", ":7000", "h:port", "h:99999", "[::1", "[::1]x", "a:b:c"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }
}
