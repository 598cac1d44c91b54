//! A hostile world, end to end: the real daemon over real sockets, driven through every input
//! that used to crash, wedge or starve it, and through every limit that now holds the line.
//!
//! Each test asserts the exact stream error, failure text or refusal; that a bystander still
//! gets its answer within a generous bound while the attack goes on (seconds: a bound on
//! liveness, not a speed target); and, where memory is the target, that the daemon's resident
//! memory stays under a stated ceiling.

mod support;

// The tests, by concept; beside this file rather than as test targets of their own.
#[path = "e2e_hostile/admission.rs"]
mod admission;
#[path = "e2e_hostile/logins.rs"]
mod logins;
#[path = "e2e_hostile/registry.rs"]
mod registry;
#[path = "e2e_hostile/store.rs"]
mod store;
#[path = "e2e_hostile/wire.rs"]
mod wire;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

const REMOTE: &str = "tcp_loopback_is_local = false";
/// How long a bystander may wait for an answer while an attack goes on.
const BYSTANDER_BOUND: Duration = Duration::from_secs(5);

fn stream_error(condition: &str) -> String {
    format!("<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>")
}

/// A logged-in remote client.
fn logged_in(daemon: &Daemon, user: &str, password: &str) -> Client {
    let mut client = daemon.tcp();
    client.secure();
    client.login(user, password);
    client
}

/// A TCP client whose connection comes from `source` (any 127.0.0.0/8 address).
fn tcp_from(daemon: &Daemon, source: [u8; 4]) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local = SocketAddr::from((source, 0));
    socket.bind(&local.into()).unwrap();
    socket.connect(&daemon.xmpp.unwrap().into()).unwrap();
    let stream: TcpStream = socket.into();
    Client::from_tcp(stream, &daemon.state_dir())
}

/// A local client over the Unix socket asks for the domain list and must be answered within
/// [`BYSTANDER_BOUND`]; returns how long it took.
fn bystander_is_answered(daemon: &Daemon) -> Duration {
    let started = Instant::now();
    let mut client = daemon.unix();
    client.secure();
    let reply = client.request(list_domain());
    let took = started.elapsed();
    assert!(reply.contains("primary"), "{reply}");
    assert!(
        took < BYSTANDER_BOUND,
        "a bystander waited {took:?} during the attack"
    );
    took
}

/// The daemon's resident memory, from /proc.
fn rss_bytes(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn remove_domain(name: &str) -> String {
    format!(
        r#"<LDM_interface version="1.3"><cmd><action>remove-domain</action><data version="3.0"><Envelope><References/><Content xsi:type="ovf:VirtualSystem_Type" id="{name}"><Section xsi:type="ovf:ResourceAllocationSection_type"/></Content></Envelope></data></cmd></LDM_interface>"#
    )
}

/// The failure text of a write the registry could not save, whatever the store's reason.
const NOT_SAVED: &str = "The change was not made: ldmd cannot save changes now";

/// A local client on the Unix socket, secured and ready for documents.
fn local(daemon: &Daemon) -> Client {
    let mut client = daemon.unix();
    client.secure();
    client
}

fn listed(client: &mut Client) -> Vec<String> {
    content_ids(&client.request(list_domain()))
}
