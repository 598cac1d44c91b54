//! XMPP client-to-server streams (RFC 6120), sans I/O.

pub mod error;
pub mod jid;
pub mod sasl;

pub use error::{SaslFailure, StanzaErrorCondition, StreamError, StreamErrorCondition};
