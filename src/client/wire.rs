//! The client's transport: a connected Unix or TCP socket, plain or inside TLS, and how to
//! open one within a time limit.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};
use socket2::{Domain, SockAddr, Socket, Type};

use super::Endpoint;

/// A connected socket of either kind.
pub(super) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    /// Bounds each read and each write by `timeout`. A zero timeout means "none" to the
    /// kernel, so the caller stops at zero instead of coming here.
    pub(super) fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        debug_assert!(
            !timeout.is_zero(),
            "a zero socket timeout would wait forever"
        );
        let timeout = timeout.max(Duration::from_millis(1));
        match self {
            Sock::Tcp(s) => s
                .set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout))),
            Sock::Unix(s) => s
                .set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout))),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.flush(),
            Sock::Unix(s) => s.flush(),
        }
    }
}

pub(super) enum Wire {
    Plain(Sock),
    Tls(Box<StreamOwned<ClientConnection, Sock>>),
    /// Only while the plain socket moves into TLS, or after a failed handshake.
    Gone,
}

impl Wire {
    /// Bounds the next reads and writes by what is `left` of a deadline.
    pub(super) fn set_timeouts(&self, left: Duration) {
        let _ = match self {
            Wire::Plain(s) => s.set_timeouts(left),
            Wire::Tls(t) => t.sock.set_timeouts(left),
            Wire::Gone => Ok(()),
        };
    }
}

/// Connects within `timeout`.
pub(super) fn open(endpoint: &Endpoint, timeout: Duration) -> io::Result<Sock> {
    match endpoint {
        Endpoint::Unix(path) => open_unix(path, timeout).map(Sock::Unix),
        Endpoint::Tcp { host, port } => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            let deadline = std::time::Instant::now() + timeout;
            for addr in (host.as_str(), *port).to_socket_addrs()? {
                // Every address shares the one limit.
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                }
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(stream) => {
                        // Without it TLS 1.2 handshakes stall about 40 ms each (architecture.md).
                        stream.set_nodelay(true)?;
                        return Ok(Sock::Tcp(stream));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

/// A blocking connect bounded by the socket's send timeout. A Unix socket connects at once or
/// waits for room in the listener's backlog (a daemon that stopped accepting); Linux bounds
/// that wait by `SO_SNDTIMEO` and then fails with `EAGAIN`. A non-blocking connect would
/// fail at once instead of waiting out the timeout.
fn open_unix(path: &std::path::Path, timeout: Duration) -> io::Result<UnixStream> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    match socket.connect(&SockAddr::unix(path)?) {
        Ok(()) => Ok(UnixStream::from(socket)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
        }
        Err(e) => Err(e),
    }
}

/// A short reason, without Rust's `(os error N)` tail.
pub(super) fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_unix_connect_to_a_full_backlog_gives_up_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.sock");
        let address = SockAddr::unix(&path).unwrap();
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&address).unwrap();
        listener.listen(0).unwrap();
        // Fill the backlog: a daemon that stopped accepting.
        let mut waiting = Vec::new();
        loop {
            let peer = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
            peer.set_nonblocking(true).unwrap();
            match peer.connect(&address) {
                Ok(()) => waiting.push(peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(waiting.len() < 1000, "the backlog never filled");
        }
        let (done, result) = mpsc::channel();
        let endpoint = Endpoint::Unix(path);
        let started = Instant::now();
        std::thread::spawn(move || {
            let _ = done.send(open(&endpoint, Duration::from_millis(300)).map(|_| ()));
        });
        let outcome = result
            .recv_timeout(Duration::from_secs(10))
            .expect("the connect was not bounded");
        let error = outcome.expect_err("connected to a full backlog");
        assert_eq!(describe_io(&error), "timed out");
        assert!(started.elapsed() >= Duration::from_millis(250));
        drop(listener);
    }
}
