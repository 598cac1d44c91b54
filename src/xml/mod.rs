//! XML for XMPP streams: the framer that finds stanza boundaries in pooled bytes, the borrowing
//! element tree built from one framed slice, and the escaping writer.
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

pub mod element;
pub mod framer;
pub mod writer;

pub use element::{Attr, Element, HeaderTag, Namespace, NamespaceScope, Node, ParseError};
pub use framer::{Frame, FrameError, FrameKind, Framer, FramerLimits, Limit, is_xml_char};
pub use writer::XmlWriter;
