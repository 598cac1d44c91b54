//! The LDM document model (ldm-xml-interface.md §2), owned so it can cross to the registry.
//!
//! ```text
//! LDM_interface @version
//!   cmd+ : action, option(s)?, arguments?, data+ @version
//!     data : Envelope? : References, Content* (@id) : Section* (@xsi:type) : Item*, Section*
//! ```
//! Requests and responses share these types: a response echoes its request's data or fills it in.

use crate::ldm::action::{Action, ActionName};

/// A request document, as parsed. Malformations are recorded, not refused, so that the reply
/// can say exactly what was wrong at the right level (§2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Document {
    /// `@version`, echoed in the reply.
    pub version: Option<String>,
    pub cmds: Vec<Cmd>,
    /// Why the document as a whole cannot be processed (no cmd at all, no version).
    pub malformed: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmd {
    /// Parsed once; an action this daemon does not know is kept as written, for the reply.
    pub action: Option<ActionName>,
    /// Flags from `<option>`/`<options>` elements, split on whitespace (`-f`, `all`, `memdr`).
    pub options: Vec<String>,
    /// Words of an `<arguments>` element.
    pub arguments: Vec<String>,
    pub data: Vec<Data>,
    /// Why the cmd itself cannot be processed (no action, two actions, no data).
    pub malformed: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Data {
    /// `@version`; required ("3.0"), checked by whoever handles the data.
    pub version: Option<String>,
    pub envelope: Option<Envelope>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// One per domain.
    pub contents: Vec<Content>,
    /// Objects that belong to no domain (SP configurations, services).
    pub sections: Vec<Section>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    /// The domain name (`@id` or `@ovf:id`).
    pub id: String,
    pub sections: Vec<Section>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SectionKind {
    /// `ovf:ResourceAllocationSection_type` (or `_Type`).
    ResourceAllocation,
    /// `ovf:VirtualHardwareSection_Type`.
    VirtualHardware,
    /// Anything else, kept as written.
    Other(String),
}

impl SectionKind {
    pub fn from_xsi_type(xsi_type: &str) -> SectionKind {
        let local = xsi_type.split_once(':').map_or(xsi_type, |(_, l)| l);
        if local.eq_ignore_ascii_case("ResourceAllocationSection_type") {
            SectionKind::ResourceAllocation
        } else if local.eq_ignore_ascii_case("VirtualHardwareSection_type") {
            SectionKind::VirtualHardware
        } else {
            SectionKind::Other(xsi_type.to_owned())
        }
    }

    /// The spelling we write (the Oracle documents' most common one).
    pub fn xsi_type(&self) -> &str {
        match self {
            SectionKind::ResourceAllocation => "ovf:ResourceAllocationSection_type",
            SectionKind::VirtualHardware => "ovf:VirtualHardwareSection_Type",
            SectionKind::Other(t) => t,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    pub items: Vec<Item>,
}

/// One resource (§4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Item {
    /// `rasd:OtherResourceType`: `ldom_info`, `cpu`, `memory`, `vds`, ...
    pub resource_type: String,
    /// `rasd:AllocationUnits`: counts and sizes.
    pub allocation_units: Option<String>,
    /// `rasd:Address`: a MAC address.
    pub address: Option<String>,
    /// `uuid` (ldom_info).
    pub uuid: Option<String>,
    /// `gprop:GenericProperty key="..."`, in document order.
    pub properties: Vec<Property>,
    /// `bind:Binding` children (list-bindings output).
    pub bindings: Vec<Binding>,
}

impl Item {
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
}

/// What a resource is bound to: its own properties, written as `bind:Binding` with Items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    pub items: Vec<Item>,
}

/// `success` or `failure`, exactly as written on the wire (§2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Failure,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
        }
    }
}

impl Default for Status {
    /// What a missing status means to a reader: not a success.
    fn default() -> Status {
        Status::Failure
    }
}

/// The reply to one [`Document`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub version: Option<String>,
    pub cmds: Vec<CmdResponse>,
    /// The document-level `resp_msg`, only when the document itself was malformed.
    pub malformed: Option<String>,
}

impl Response {
    /// `success` only if everything succeeded (§2.1).
    pub fn status(&self) -> Status {
        if self.malformed.is_none() && self.cmds.iter().all(|c| c.status() == Status::Success) {
            Status::Success
        } else {
            Status::Failure
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmdResponse {
    /// The request's action, echoed as written.
    pub action: Option<ActionName>,
    pub options: Vec<String>,
    pub data: Vec<DataResponse>,
    /// The cmd-level `resp_msg`, only when the cmd itself was malformed or its action unknown.
    pub failure: Option<String>,
}

impl CmdResponse {
    /// `failure` if the cmd was refused or any of its objects failed.
    pub fn status(&self) -> Status {
        if self.failure.is_none() && self.data.iter().all(|d| d.status == Status::Success) {
            Status::Success
        } else {
            Status::Failure
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataResponse {
    /// The object, echoed in request form or filled in by a list action.
    pub data: Data,
    pub status: Status,
    /// Reasons for a failure (one or more), or informational messages on success.
    pub messages: Vec<String>,
    /// The optional second `response`, carrying a warning (memory rounded up, ...).
    pub warning: Option<String>,
}

/// The access a peer has, established by the transport (SASL user or local uid).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Authenticated, authorized for nothing (an unknown local uid).
    #[default]
    None,
    /// A source ldmd settling one migration with the target's token (`migrate-resolve` and
    /// `migrate-forget` only; the token in each message says which migration). Never a role of
    /// the users file.
    Resolve,
    /// `list-*` and event registration.
    Read,
    /// Everything.
    Write,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Resolve => "resolve",
            Role::Read => "read",
            Role::Write => "write",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "none" => Ok(Role::None),
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            other => Err(format!(
                "unknown authorization '{other}' (expected read or write)"
            )),
        }
    }
}

/// Whether `role` may run `action` (its [`Action::role`], §3); the refusal is the reply's
/// `resp_msg`.
pub fn authorize(action: Action, role: Role) -> Result<(), String> {
    if role == Role::Resolve {
        if action.resolves() {
            return Ok(());
        }
        return Err(format!(
            "Not authorized: a migration resolver may only send migrate-resolve and migrate-forget, not '{action}'"
        ));
    }
    require(action.as_str(), action.role(), role)
}

/// The refusal of the action `name` to a peer with `role` when it needs `required`.
pub(crate) fn require(name: &str, required: Role, role: Role) -> Result<(), String> {
    if role >= required {
        Ok(())
    } else {
        Err(format!(
            "Not authorized: '{name}' requires {} authorization",
            required.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_read_and_everything_else_needs_write() {
        assert_eq!(Action::ListDomain.role(), Role::Read);
        assert_eq!(Action::RegDomainEvents.role(), Role::Read);
        assert_eq!(Action::UnregAllEvents.role(), Role::Read);
        assert_eq!(Action::AddDomain.role(), Role::Write);
        assert_eq!(Action::CancelOperation.role(), Role::Write);
        assert!(authorize(Action::ListDomain, Role::Read).is_ok());
        assert!(authorize(Action::AddDomain, Role::Read).is_err());
        assert!(authorize(Action::ListDomain, Role::None).is_err());
        assert!(authorize(Action::AddDomain, Role::Write).is_ok());
    }
}
