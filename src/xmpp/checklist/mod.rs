//! The RFC 6120 checklist (`shared/spec/xmpp-c2s.md`), one named test per line, run against the
//! pure [`Connection`] with an in-memory rustls client: no sockets, a manual clock, and
//! deterministic stream ids, so that every assertion is on exact bytes.

mod closing;
mod events;
mod header;
mod hostile;
mod local;
mod sasl;
mod stanzas;
mod starttls;
mod xml;

pub use std::sync::Arc;
pub use std::time::Duration;

pub use crate::ldm::Role;
pub use crate::testing::*;
pub use crate::xmpp::connection::{ConnectionConfig, Event};
pub use crate::xmpp::stream::{Identity, Peer};
