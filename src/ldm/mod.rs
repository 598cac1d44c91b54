//! The LDM XML interface (ldm-xml-interface.md): the document model, its parser and writer, and
//! the handler seam through which documents reach whoever answers them. Pure: no I/O.
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

pub mod action;
pub mod document;
pub mod event;

pub mod handler;
pub mod parse;
pub mod reply;
pub mod write;

pub use action::{Action, ActionName};
pub use document::{
    Binding, Cmd, CmdResponse, Content, Data, DataResponse, Document, Envelope, Item, Property,
    Response, Role, Section, SectionKind, Status, authorize,
};
pub use parse::parse_document;
pub use reply::{EventDoc, Reply, ReplyCmd, ReplyData, ReplyError};
pub use write::{write_request, write_response};
