//! Who is the local peer? The kernel knows: `SO_PEERCRED` on a Unix socket, and for a TCP peer
//! on loopback the owner of the peer's socket, found with an exact sock_diag lookup of the
//! connection's 4-tuple (one netlink round trip, no scan of the socket table).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, TCP_CLOSE, TCP_SYN_RECV, TCP_TIME_WAIT,
};

use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

/// The uid of the process at the other end of a Unix socket.
pub fn unix_peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// True when both ends of a TCP connection are loopback addresses (IPv4-mapped included).
pub fn is_loopback_pair(peer: SocketAddr, local: SocketAddr) -> bool {
    fn loopback(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        }
    }
    loopback(peer.ip()) && loopback(local.ip())
}

/// A netlink socket for sock_diag queries; one per I/O thread.
pub struct SockDiag {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl SockDiag {
    pub fn new() -> io::Result<SockDiag> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        Ok(SockDiag {
            socket,
            sequence: 0,
            buffer: vec![0; 4096],
        })
    }

    /// The uid owning the peer's end of the TCP connection `peer` → `local` (as the server sees
    /// it), or `None` if the kernel has no such socket (the peer already left).
    pub fn tcp_peer_uid(&mut self, peer: SocketAddr, local: SocketAddr) -> io::Result<Option<u32>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.sequence;
        let family = if peer.is_ipv4() { AF_INET } else { AF_INET6 };
        // The peer's socket: its source is the peer address, its destination is ours.
        let socket_id = SocketId {
            source_port: peer.port(),
            destination_port: local.port(),
            source_address: peer.ip(),
            destination_address: local.ip(),
            interface_id: 0,
            cookie: [0xff; 8], // INET_DIAG_NOCOOKIE: match on addresses only
        };
        let request = InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id,
        };
        let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;
        // The kernel answers within send(), so the reply is already queued: never block the
        // I/O thread waiting for it. No answer means "not local" (no privileges).
        let received = match self
            .socket
            .recv(&mut &mut self.buffer[..], libc::MSG_DONTWAIT)
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };

        let mut offset = 0;
        while offset < received {
            let message =
                NetlinkMessage::<SockDiagMessage>::deserialize(&self.buffer[offset..received])
                    .map_err(|e| io::Error::other(e.to_string()))?;
            if message.header.sequence_number == self.sequence {
                return Ok(match message.payload {
                    // Only a socket a process still owns reports its owner: time-wait and
                    // request sockets report uid 0, which must not read as root.
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response))
                        if !matches!(
                            response.header.state,
                            TCP_SYN_RECV | TCP_TIME_WAIT | TCP_CLOSE
                        ) =>
                    {
                        Some(response.header.uid)
                    }

                    _ => None, // an error message: ENOENT when the socket is gone
                });
            }
            let length = message.header.length as usize;
            if length == 0 {
                break;
            }
            offset += length;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn unix_peer_is_ourselves() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: getuid has no preconditions.
        assert_eq!(unix_peer_uid(a.as_raw_fd()).unwrap(), unsafe {
            libc::getuid()
        });
    }

    #[test]
    fn tcp_loopback_peer_uid_is_found_with_sock_diag() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let local = server.local_addr().unwrap();
        assert!(is_loopback_pair(peer, local));
        let uid = SockDiag::new().unwrap().tcp_peer_uid(peer, local).unwrap();
        // SAFETY: getuid has no preconditions.
        assert_eq!(uid, Some(unsafe { libc::getuid() }));
        drop(client);
    }

    #[test]
    fn peer_socket_in_time_wait_is_not_reported_as_root() {
        // A client that closed first leaves a time-wait socket, which the kernel reports with
        // uid 0: that must read as "unknown", never as root.
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, peer) = listener.accept().unwrap();
        let local = server.local_addr().unwrap();
        drop(client); // active close: the client's socket ends in TIME_WAIT
        let _ = server.read(&mut [0u8; 8]);
        drop(server);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            SockDiag::new().unwrap().tcp_peer_uid(peer, local).unwrap(),
            None
        );
    }

    #[test]
    fn unknown_connection_has_no_uid() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(
            SockDiag::new().unwrap().tcp_peer_uid(peer, local).unwrap(),
            None
        );
    }

    #[test]
    fn loopback_pairs() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:1".parse().unwrap();
        assert!(is_loopback_pair(lo, lo));
        assert!(is_loopback_pair(mapped, "[::1]:2".parse().unwrap()));
        assert!(!is_loopback_pair(remote, lo));
    }
}
