//! XMPP client-to-server streams (RFC 6120), sans I/O.

pub mod connection;
pub mod error;
pub mod jid;
pub mod outbox;
pub mod sasl;
pub mod stream;
pub mod tls;

#[cfg(test)]
mod checklist;

pub use connection::{Connection, ConnectionConfig, Event};
pub use error::{SaslFailure, StanzaErrorCondition, StreamError, StreamErrorCondition};
pub use outbox::Outbox;
pub use stream::{IdSource, Identity, Peer, Step, Stream, StreamConfig};
