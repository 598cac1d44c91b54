//! The part of the I/O shell that differs between the two runtimes: how a listener accepts and
//! how a connection writes. Everything else (the actors' reads, which wait for readiness and
//! then receive into a pooled buffer, timers, the router, the pools) is the same code on both.
//!
//! - **io_uring:** TCP accepts and every write are submitted to the thread's ring; a write owns
//!   its pooled buffer until it completes. Sockets stay in blocking mode (io_uring honours
//!   `O_NONBLOCK`, and a write would then fail with `EAGAIN` instead of waiting).
//! - **epoll:** sockets are non-blocking; a write is sent at once and, when the socket's buffer
//!   is full, again each time epoll reports room; accepts wait for readability.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::server::nonblocking::send_now;
use crate::server::runtime::Runtime;

/// A TCP listener of one I/O thread.
pub enum TcpAcceptor {
    IoUring(tokio_uring::net::TcpListener),
    Epoll(AsyncFd<std::net::TcpListener>),
}

impl TcpAcceptor {
    /// Must be called on the thread's runtime.
    pub fn new(runtime: Runtime, listener: std::net::TcpListener) -> io::Result<TcpAcceptor> {
        match runtime {
            Runtime::IoUring => Ok(TcpAcceptor::IoUring(
                tokio_uring::net::TcpListener::from_std(listener),
            )),
            Runtime::Epoll => {
                listener.set_nonblocking(true)?;
                Ok(TcpAcceptor::Epoll(watch(listener)?))
            }
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        match self {
            TcpAcceptor::IoUring(listener) => listener.as_raw_fd(),
            TcpAcceptor::Epoll(listener) => listener.get_ref().as_raw_fd(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpAcceptor::IoUring(listener) => listener.local_addr(),
            TcpAcceptor::Epoll(listener) => listener.get_ref().local_addr(),
        }
    }

    /// The next connection, with `TCP_NODELAY` set (replies are whole documents: Nagle's wait
    /// would only delay them).
    pub async fn accept(&self) -> io::Result<(Transport, SocketAddr)> {
        let (transport, peer) = match self {
            TcpAcceptor::IoUring(listener) => {
                let (stream, peer) = listener.accept().await?;
                (Transport::UringTcp(stream), peer)
            }
            TcpAcceptor::Epoll(listener) => {
                let (stream, peer) = accept_ready(listener, |l| l.accept()).await?;
                stream.set_nonblocking(true)?;
                (
                    Transport::Epoll {
                        socket: stream.into(),
                        unix: false,
                    },
                    peer,
                )
            }
        };
        if let Err(e) = socket2::SockRef::from(&transport).set_tcp_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        Ok((transport, peer))
    }
}

/// The local Unix listener, on either runtime: accepts wait for readability (tokio-uring's own
/// Unix listener fails to bind on Linux ≥ 6.12.9), and each stream is handed to the runtime.
pub struct UnixAcceptor {
    runtime: Runtime,
    listener: AsyncFd<std::os::unix::net::UnixListener>,
}

impl UnixAcceptor {
    /// Must be called on the thread's runtime.
    pub fn new(
        runtime: Runtime,
        listener: std::os::unix::net::UnixListener,
    ) -> io::Result<UnixAcceptor> {
        listener.set_nonblocking(true)?;
        Ok(UnixAcceptor {
            runtime,
            listener: watch(listener)?,
        })
    }

    /// The next connection. The accepted socket starts in blocking mode whatever the
    /// listener's (accept4 without `SOCK_NONBLOCK`), as io_uring wants it.
    pub async fn accept(&self) -> io::Result<Transport> {
        let (stream, _) = accept_ready(&self.listener, |l| l.accept()).await?;
        Ok(match self.runtime {
            Runtime::IoUring => {
                Transport::UringUnix(tokio_uring::net::UnixStream::from_std(stream))
            }
            Runtime::Epoll => {
                stream.set_nonblocking(true)?;
                Transport::Epoll {
                    socket: stream.into(),
                    unix: true,
                }
            }
        })
    }
}

/// Registers a listener it owns with the reactor, for readability.
fn watch<L: AsRawFd>(listener: L) -> io::Result<AsyncFd<L>> {
    // SAFETY: the `AsyncFd` owns `listener`, so its fd stays open and the same for as long as
    // the registration lives.
    Ok(unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }?)
}

/// Waits for `listener` to be readable and accepts; a stale readiness is cleared and waited
/// out again.
async fn accept_ready<L, T>(
    listener: &AsyncFd<L>,
    accept: impl Fn(&L) -> io::Result<T>,
) -> io::Result<T>
where
    L: AsRawFd,
{
    loop {
        let mut ready = listener.readable().await?;
        if let Ok(result) = ready.try_io(|l| accept(l.get_ref())) {
            return result;
        }
    }
}

/// A connection's socket.
pub enum Transport {
    UringTcp(tokio_uring::net::TcpStream),
    UringUnix(tokio_uring::net::UnixStream),
    /// A non-blocking socket (TCP or Unix), written when epoll reports room.
    Epoll {
        socket: OwnedFd,
        unix: bool,
    },
}

impl AsRawFd for Transport {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Transport::UringTcp(s) => s.as_raw_fd(),
            Transport::UringUnix(s) => s.as_raw_fd(),
            Transport::Epoll { socket, .. } => socket.as_raw_fd(),
        }
    }
}

impl std::os::fd::AsFd for Transport {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the fd is owned by `self` and stays open for the borrow's lifetime.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

impl Transport {
    /// What the actor's readiness watches: writability too where writes wait for it.
    pub fn interest(&self) -> Interest {
        match self {
            Transport::UringTcp(_) | Transport::UringUnix(_) => Interest::READABLE,
            Transport::Epoll { .. } => Interest::READABLE | Interest::WRITABLE,
        }
    }

    /// Writes are submitted to io_uring (batched with the thread's other submissions).
    pub fn is_uring(&self) -> bool {
        !matches!(self, Transport::Epoll { .. })
    }

    pub fn is_unix(&self) -> bool {
        matches!(
            self,
            Transport::UringUnix(_) | Transport::Epoll { unix: true, .. }
        )
    }

    /// Writes all of `buffer`, then gives it back. `readiness` watches this socket with
    /// [`Transport::interest`]. Dropped before it completes, the io_uring write keeps the buffer
    /// until the kernel is done with it (see tokio-uring), and an epoll write simply stops.
    pub async fn write_all(
        &self,
        readiness: &AsyncFd<RawFd>,
        buffer: Vec<u8>,
    ) -> (io::Result<()>, Vec<u8>) {
        match self {
            Transport::UringTcp(s) => s.write_all(buffer).await,
            Transport::UringUnix(s) => s.write_all(buffer).await,
            Transport::Epoll { .. } => {
                let result = send_when_ready(readiness, &buffer).await;
                (result, buffer)
            }
        }
    }

    pub fn shutdown(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Both);
    }
}

/// Sends `bytes` on a non-blocking socket: at once, which nearly always takes everything, and
/// the rest as epoll reports room.
async fn send_when_ready(readiness: &AsyncFd<RawFd>, bytes: &[u8]) -> io::Result<()> {
    let mut sent = 0;
    while let Some(rest) = bytes.get(sent..).filter(|rest| !rest.is_empty()) {
        match send_now(*readiness.get_ref(), rest) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The readiness tokio holds may predate the full buffer: clear it, so that the
                // next wait is for room made after this send. (An edge that arrived meanwhile
                // changes the tick, and then clearing keeps it.)
                readiness.writable().await?.clear_ready();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
