//! The client's transport: a connected Unix or TCP socket, plain or inside TLS, and how to
//! open one.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

use super::Endpoint;

/// A connected socket of either kind.
pub(super) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub(super) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(timeout),
            Sock::Unix(s) => s.set_read_timeout(timeout),
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
    pub(super) fn set_read_timeout(&self, timeout: Option<Duration>) {
        let _ = match self {
            Wire::Plain(s) => s.set_read_timeout(timeout),
            Wire::Tls(t) => t.sock.set_read_timeout(timeout),
            Wire::Gone => Ok(()),
        };
    }
}

pub(super) fn open(endpoint: &Endpoint, timeout: Duration) -> io::Result<Sock> {
    match endpoint {
        Endpoint::Unix(path) => UnixStream::connect(path).map(Sock::Unix),
        Endpoint::Tcp { host, port } => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for addr in (host.as_str(), *port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, timeout) {
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
