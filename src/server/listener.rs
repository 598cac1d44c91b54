//! Listening sockets.
//!
//! Each I/O thread gets its own TCP listener on every configured address, all sharing the port
//! with SO_REUSEPORT so the kernel spreads connections across threads. tokio-uring's own
//! `TcpListener::bind` always sets SO_REUSEPORT, which lets a second daemon silently share a
//! busy port; so we build the sockets with socket2 and first probe the address *without*
//! SO_REUSEPORT: if anything listens there, that probe fails and start-up stops with a clear
//! error. (A process that binds in the instant between the probe and our bind is not detected.)

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

const BACKLOG: i32 = 1024;

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{0} is already in use by another process")]
    AddressInUse(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("another ldmd is already listening on {0}")]
    SocketInUse(String),
    #[error("cannot listen on {path}: {source}")]
    Unix { path: String, source: io::Error },
}

/// `count` listeners sharing `addr` (port 0: one free port chosen for all of them).
pub fn bind_tcp_group(addr: SocketAddr, count: usize) -> Result<Vec<TcpListener>, ListenError> {
    if addr.port() != 0 {
        probe_free(addr)?;
    }
    let first = bind_reuseport(addr)?;
    let bound = first
        .local_addr()
        .map_err(|source| ListenError::Bind { addr, source })?;
    let mut group = vec![first];
    for _ in 1..count.max(1) {
        group.push(bind_reuseport(bound)?);
    }
    Ok(group)
}

/// Fails if some socket already listens on `addr`.
fn probe_free(addr: SocketAddr) -> Result<(), ListenError> {
    let socket = new_socket(addr).map_err(|source| ListenError::Bind { addr, source })?;
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(ListenError::AddressInUse(addr)),
        Err(source) => Err(ListenError::Bind { addr, source }),
    }
}

fn bind_reuseport(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let setup = || -> io::Result<TcpListener> {
        let socket = new_socket(addr)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    };
    setup().map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => ListenError::AddressInUse(addr),
        _ => ListenError::Bind { addr, source },
    })
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    // Restart quickly even with connections of the previous run in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// The local Unix socket, world-connectable (0666): every local peer is authorized by its uid
/// (SO_PEERCRED), unknown uids get no authorization. A stale socket file from a crashed run is
/// replaced; a live one (another daemon answers) is an error.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    let shown = path.display().to_string();
    let unix = |source| ListenError::Unix {
        path: shown.clone(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ListenError::SocketInUse(shown));
        }
        std::fs::remove_file(path).map_err(unix)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(unix)?;
    }
    let listener = UnixListener::bind(path).map_err(unix)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(unix)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_port_is_a_clear_error() {
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        let err = bind_tcp_group(addr, 2).unwrap_err();
        assert!(
            matches!(err, ListenError::AddressInUse(a) if a == addr),
            "{err}"
        );
    }

    #[test]
    fn busy_reuseport_group_of_another_process_is_detected() {
        // The trap tokio-uring's bind falls into: another SO_REUSEPORT listener on the port.
        let theirs = bind_tcp_group("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = theirs[0].local_addr().unwrap();
        assert!(matches!(
            bind_tcp_group(addr, 2),
            Err(ListenError::AddressInUse(_))
        ));
    }

    #[test]
    fn port_zero_gives_one_port_to_every_thread() {
        let group = bind_tcp_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<_> = group
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| *p == ports[0] && *p != 0));
    }

    #[test]
    fn stale_unix_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ldmd.sock");
        let live = bind_unix(&path).unwrap();
        assert!(matches!(bind_unix(&path), Err(ListenError::SocketInUse(_))));
        drop(live); // the file stays behind, as after a crash
        assert!(path.exists());
        let _again = bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
    }
}
