//! A test-owned TCP proxy on 127.0.0.1 between a source ldmd and its target, for link faults:
//! cut every connection and refuse new ones, blackhole one direction (bytes are read and
//! dropped, the connection stays open: a link that silently stops delivering), and heal.
//! Its threads end when the proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the link does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Link {
    Up = 0,
    /// Every connection closed, new ones closed at once.
    Cut = 1,
    /// Bytes from the source to the target are dropped.
    BlackholeToTarget = 2,
    /// Bytes from the target to the source are dropped.
    BlackholeToSource = 3,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Shared>,
}

struct Shared {
    link: AtomicU8,
    stop: AtomicBool,
    upstream: Mutex<SocketAddr>,
    open: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Shared {
            link: AtomicU8::new(Link::Up as u8),
            stop: AtomicBool::new(false),
            upstream: Mutex::new(upstream),
            open: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        std::thread::spawn(move || accept(listener, shared));
        Proxy { addr, state }
    }

    pub fn set(&self, link: Link) {
        self.state.link.store(link as u8, Ordering::SeqCst);
        if link == Link::Cut {
            for stream in self.state.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn heal(&self) {
        self.set(Link::Up);
    }

    /// Forwards new connections to `upstream` (a target restarted on another port).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.state.upstream.lock().unwrap() = upstream;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for stream in self.state.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn link(shared: &Shared) -> Link {
    match shared.link.load(Ordering::SeqCst) {
        1 => Link::Cut,
        2 => Link::BlackholeToTarget,
        3 => Link::BlackholeToSource,
        _ => Link::Up,
    }
}

fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if link(&shared) == Link::Cut {
            drop(client);
            continue;
        }
        let upstream = *shared.upstream.lock().unwrap();
        let Ok(server) = TcpStream::connect(upstream) else {
            continue;
        };
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        {
            let mut open = shared.open.lock().unwrap();
            open.push(client.try_clone().unwrap());
            open.push(server.try_clone().unwrap());
        }
        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let to_target = shared.clone();
        std::thread::spawn(move || pump(client, server, &to_target, Link::BlackholeToTarget));
        let to_source = shared.clone();
        std::thread::spawn(move || pump(s2, c2, &to_source, Link::BlackholeToSource));
    }
}

/// Copies `from` to `to` until either ends, dropping bytes while `blackhole` is the link.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, blackhole: Link) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match link(shared) {
            Link::Cut => break,
            l if l == blackhole => continue,
            _ => {}
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
