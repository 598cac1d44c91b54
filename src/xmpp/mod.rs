//! XMPP client-to-server streams (RFC 6120), sans I/O.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

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
