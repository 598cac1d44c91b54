//! The actions of ldm-xml-interface.md §3, as one type: a cmd's `<action>` is parsed once into
//! an [`Action`] (or kept as written when this daemon does not know it, see [`ActionName`]),
//! the registry matches on it exhaustively, and the writer writes its wire name back.
//!
//! The table at the bottom is the only list. The `actions!` macro turns it into the enum, its
//! wire names ([`Action::as_str`], [`Action::parse`]) and [`Action::ALL`]; the third column
//! says what kind of action each is, from which its role (§3) and its event (§5) follow. Adding
//! an action is one line here, after which the compiler lists every `match` that must learn
//! what it does, and a misspelt action does not compile.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ldm::document::{Role, authorize, require};
use crate::ldm::event::{EventClass, EventMask};

/// What an action is, as far as anything but its registry rule is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `list-*`: answers with objects and changes nothing. Read authorization.
    List,
    /// `reg-*-events` / `unreg-*-events`: changes the subscriptions of the stream that asked.
    /// Read authorization.
    Registration { subscribe: bool, classes: EventMask },
    /// Changes the registry, and then publishes an event of this class, if any (a cancellation
    /// publishes nothing: the operation it stops publishes what it did). Write authorization.
    Change(Option<EventClass>),
    /// A message of one ldmd to another during a migration (`migration::wire`): not an `ldm`
    /// subcommand, publishes nothing. Write authorization; `migrate-resolve` and
    /// `migrate-forget` also to a resolver identity ([`Role::Resolve`]).
    Internal,
}

const LIST: Kind = Kind::List;
const DOMAIN_EVENT: Kind = Kind::Change(Some(EventClass::Domain));
const RESOURCE_EVENT: Kind = Kind::Change(Some(EventClass::Resource));
const HARDWARE_EVENT: Kind = Kind::Change(Some(EventClass::Hardware));
const NO_EVENT: Kind = Kind::Change(None);
const INTERNAL: Kind = Kind::Internal;

const fn reg(classes: EventMask) -> Kind {
    Kind::Registration {
        subscribe: true,
        classes,
    }
}

const fn unreg(classes: EventMask) -> Kind {
    Kind::Registration {
        subscribe: false,
        classes,
    }
}

/// One line per action: `Variant = "wire-name", kind;`.
macro_rules! actions {
    ( $( $variant:ident = $wire:literal, $kind:expr; )+ ) => {
        /// An action of §3, named on the wire by its long ldm subcommand name (no aliases).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action {
            $( $variant, )+
        }

        impl Action {
            /// How many actions there are.
            pub const COUNT: usize = [ $( $wire, )+ ].len();

            /// Every action, in table order (also the order of their metric labels).
            pub const ALL: [Action; Action::COUNT] = [ $( Action::$variant, )+ ];

            /// The wire name, exactly as §3 spells it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Action::$variant => $wire, )+
                }
            }

            /// The action named `name`: exact and case-sensitive, as on the wire (the parser
            /// has already trimmed the element's text).
            pub fn parse(name: &str) -> Option<Action> {
                match name {
                    $( $wire => Some(Action::$variant), )+
                    _ => None,
                }
            }

            const fn kind(self) -> Kind {
                match self {
                    $( Action::$variant => $kind, )+
                }
            }
        }
    };
}

impl Action {
    /// The role §3 asks for: read for every `list-*` action and every event (un)registration,
    /// write for everything else.
    pub const fn role(self) -> Role {
        match self.kind() {
            Kind::List | Kind::Registration { .. } => Role::Read,
            Kind::Change(_) | Kind::Internal => Role::Write,
        }
    }

    /// Whether this is a message between two daemons during a migration.
    pub const fn is_internal(self) -> bool {
        matches!(self.kind(), Kind::Internal)
    }

    /// Whether a resolver identity (a source ldmd settling one migration with its token) may
    /// send this action.
    pub const fn resolves(self) -> bool {
        matches!(self, Action::MigrateResolve | Action::MigrateForget)
    }

    /// Whether this is a `list-*` action (answers with objects, changes nothing).
    pub const fn is_list(self) -> bool {
        matches!(self.kind(), Kind::List)
    }

    /// For `reg-*-events` (`true`) and `unreg-*-events` (`false`): the classes it names.
    pub const fn registration(self) -> Option<(bool, EventMask)> {
        match self.kind() {
            Kind::Registration { subscribe, classes } => Some((subscribe, classes)),
            Kind::List | Kind::Change(_) | Kind::Internal => None,
        }
    }

    /// The class of the event this action publishes once its change is applied (§5); `None`
    /// for actions that publish nothing: lists, registrations and cancellations.
    pub const fn event_class(self) -> Option<EventClass> {
        match self.kind() {
            Kind::Change(class) => class,
            Kind::List | Kind::Registration { .. } | Kind::Internal => None,
        }
    }

    /// The action its events name (§5): the wire name, except that event names say `crypto`
    /// where actions say `mau`.
    pub const fn event_name(self) -> &'static str {
        match self {
            Action::AddMau => "add-crypto",
            Action::SetMau => "set-crypto",
            Action::RemoveMau => "remove-crypto",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stored by its wire name (a memory DR's record names the action that asked for it).
impl Serialize for Action {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Action, D::Error> {
        let name = String::deserialize(deserializer)?;
        Action::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown LDM action '{name}'")))
    }
}

/// A cmd's `<action>` as the peer wrote it: an action this daemon knows, or a name it does not,
/// kept so that the reply can echo it exactly ("Unknown action 'frob'").
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ActionName {
    Known(Action),
    Unknown(String),
}

impl ActionName {
    /// Reads the (trimmed) text of an `<action>` element.
    pub fn parse(name: &str) -> ActionName {
        match Action::parse(name) {
            Some(action) => ActionName::Known(action),
            None => ActionName::Unknown(name.to_owned()),
        }
    }

    /// The name as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ActionName::Known(action) => action.as_str(),
            ActionName::Unknown(name) => name,
        }
    }

    pub fn known(&self) -> Option<Action> {
        match self {
            ActionName::Known(action) => Some(*action),
            ActionName::Unknown(_) => None,
        }
    }

    /// Whether a peer with `role` may be told more about this cmd than that it is not
    /// authorized. A name this daemon does not know needs the role §3's rule gives that name
    /// (read for `list-*`, `reg-*` and `unreg-*`, write otherwise), so that a peer without it
    /// is refused in the same words whether the action exists or not.
    pub fn authorize(&self, role: Role) -> Result<(), String> {
        match self {
            ActionName::Known(action) => authorize(*action, role),
            ActionName::Unknown(name) => {
                let reads = ["list-", "reg-", "unreg-"]
                    .iter()
                    .any(|prefix| name.starts_with(prefix));
                let required = if reads { Role::Read } else { Role::Write };
                require(name, required, role)
            }
        }
    }
}

impl From<Action> for ActionName {
    fn from(action: Action) -> ActionName {
        ActionName::Known(action)
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

actions! {
    // domains
    AddDomain                = "add-domain",                DOMAIN_EVENT;
    RemoveDomain             = "remove-domain",             DOMAIN_EVENT;
    SetDomain                = "set-domain",                RESOURCE_EVENT;
    ListDomain               = "list-domain",               LIST;
    // lifecycle
    BindDomain               = "bind-domain",               DOMAIN_EVENT;
    UnbindDomain             = "unbind-domain",             DOMAIN_EVENT;
    StartDomain              = "start-domain",              DOMAIN_EVENT;
    StopDomain               = "stop-domain",               DOMAIN_EVENT;
    PanicDomain              = "panic-domain",              DOMAIN_EVENT;
    // cpu / crypto
    AddVcpu                  = "add-vcpu",                  RESOURCE_EVENT;
    SetVcpu                  = "set-vcpu",                  RESOURCE_EVENT;
    RemoveVcpu               = "remove-vcpu",               RESOURCE_EVENT;
    AddMau                   = "add-mau",                   RESOURCE_EVENT;
    SetMau                   = "set-mau",                   RESOURCE_EVENT;
    RemoveMau                = "remove-mau",                RESOURCE_EVENT;
    // memory
    AddMemory                = "add-memory",                RESOURCE_EVENT;
    SetMemory                = "set-memory",                RESOURCE_EVENT;
    RemoveMemory             = "remove-memory",             RESOURCE_EVENT;
    // virtual disk
    AddVdiskserver           = "add-vdiskserver",           RESOURCE_EVENT;
    RemoveVdiskserver        = "remove-vdiskserver",        RESOURCE_EVENT;
    AddVdiskserverdevice     = "add-vdiskserverdevice",     RESOURCE_EVENT;
    RemoveVdiskserverdevice  = "remove-vdiskserverdevice",  RESOURCE_EVENT;
    AddVdisk                 = "add-vdisk",                 RESOURCE_EVENT;
    RemoveVdisk              = "remove-vdisk",              RESOURCE_EVENT;
    // virtual network
    AddVswitch               = "add-vswitch",               RESOURCE_EVENT;
    SetVswitch               = "set-vswitch",               RESOURCE_EVENT;
    RemoveVswitch            = "remove-vswitch",            RESOURCE_EVENT;
    AddVnet                  = "add-vnet",                  RESOURCE_EVENT;
    SetVnet                  = "set-vnet",                  RESOURCE_EVENT;
    RemoveVnet               = "remove-vnet",               RESOURCE_EVENT;
    // console
    AddVconscon              = "add-vconscon",              RESOURCE_EVENT;
    SetVconscon              = "set-vconscon",              RESOURCE_EVENT;
    RemoveVconscon           = "remove-vconscon",           RESOURCE_EVENT;
    SetVconsole              = "set-vconsole",              RESOURCE_EVENT;
    // variables
    AddVariable              = "add-variable",              RESOURCE_EVENT;
    SetVariable              = "set-variable",              RESOURCE_EVENT;
    RemoveVariable           = "remove-variable",           RESOURCE_EVENT;
    ListVariable             = "list-variable",             LIST;
    // physical I/O
    AddIo                    = "add-io",                    RESOURCE_EVENT;
    RemoveIo                 = "remove-io",                 RESOURCE_EVENT;
    // SP configurations
    AddSpconfig              = "add-spconfig",              HARDWARE_EVENT;
    SetSpconfig              = "set-spconfig",              HARDWARE_EVENT;
    RemoveSpconfig           = "remove-spconfig",           HARDWARE_EVENT;
    ListSpconfig             = "list-spconfig",             LIST;
    // listings
    ListBindings             = "list-bindings",             LIST;
    ListConstraints          = "list-constraints",          LIST;
    ListDevices              = "list-devices",              LIST;
    ListServices             = "list-services",             LIST;
    // long operations
    CancelOperation          = "cancel-operation",          NO_EVENT;
    RemoveReconf             = "remove-reconf",             NO_EVENT;
    // events
    RegDomainEvents          = "reg-domain-events",         reg(EventMask::DOMAIN);
    UnregDomainEvents        = "unreg-domain-events",       unreg(EventMask::DOMAIN);
    RegResourceEvents        = "reg-resource-events",       reg(EventMask::RESOURCE);
    UnregResourceEvents      = "unreg-resource-events",     unreg(EventMask::RESOURCE);
    RegHardwareEvents        = "reg-hardware-events",       reg(EventMask::HARDWARE);
    UnregHardwareEvents      = "unreg-hardware-events",     unreg(EventMask::HARDWARE);
    RegAllEvents             = "reg-all-events",            reg(EventMask::ALL);
    UnregAllEvents           = "unreg-all-events",          unreg(EventMask::ALL);
    // migration (long operation)
    MigrateDomain            = "migrate-domain",            DOMAIN_EVENT;
    // migration between two daemons: what a source ldmd sends a target ldmd
    MigrateCheck             = "migrate-check",             INTERNAL;
    MigrateReserve           = "migrate-reserve",           INTERNAL;
    MigrateTransfer          = "migrate-transfer",          INTERNAL;
    MigrateCommit            = "migrate-commit",            INTERNAL;
    MigrateResolve           = "migrate-resolve",           INTERNAL;
    MigrateForget            = "migrate-forget",            INTERNAL;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_name_round_trips_and_nothing_else_parses() {
        // §3: the action is the exact long name; case, spaces and aliases are not actions.
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action), "{action}");
            assert_eq!(action.to_string(), action.as_str());
            assert_eq!(
                ActionName::parse(action.as_str()),
                ActionName::Known(action)
            );
            assert_eq!(ActionName::from(action).as_str(), action.as_str());
            assert_eq!(ActionName::from(action).known(), Some(action));
        }
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::COUNT, "wire names are unique");
        for (index, action) in Action::ALL.into_iter().enumerate() {
            assert_eq!(action as usize, index, "ALL is in declaration order");
        }
        assert_eq!(Action::COUNT, 65);
        for not_an_action in [
            "",
            "LIST-DOMAIN",
            "list-domain ",
            " list-domain",
            "ls",
            "add-crypto",
            "add-vdsdev",
            "rm-vds",
            "reg-cpu-events",
            "domain-reset",
            "frob",
        ] {
            assert_eq!(Action::parse(not_an_action), None, "{not_an_action:?}");
            let name = ActionName::parse(not_an_action);
            assert_eq!(name, ActionName::Unknown(not_an_action.to_owned()));
            assert_eq!(name.as_str(), not_an_action, "echoed exactly as written");
            assert_eq!(name.known(), None);
        }
    }

    #[test]
    fn reads_need_read_and_everything_else_needs_write() {
        // §3: read for every list-* action and every reg-*/unreg-* action, write otherwise.
        for action in Action::ALL {
            let name = action.as_str();
            let reads =
                name.starts_with("list-") || name.starts_with("reg-") || name.starts_with("unreg-");
            let expected = if reads { Role::Read } else { Role::Write };
            assert_eq!(action.role(), expected, "{action}");
            assert_eq!(action.is_list(), name.starts_with("list-"), "{action}");
        }
        assert_eq!(Action::ListDomain.role(), Role::Read);
        assert_eq!(Action::UnregAllEvents.role(), Role::Read);
        assert_eq!(Action::CancelOperation.role(), Role::Write);
        assert_eq!(Action::MigrateDomain.role(), Role::Write);
    }

    #[test]
    fn unknown_names_are_authorized_by_the_rule_of_their_name() {
        // A peer without the role hears "Not authorized" whether the action exists or not.
        let frob = ActionName::parse("frob");
        assert_eq!(
            frob.authorize(Role::Read),
            Err("Not authorized: 'frob' requires write authorization".into())
        );
        assert_eq!(frob.authorize(Role::Write), Ok(()));
        let list_frob = ActionName::parse("list-frob");
        assert_eq!(list_frob.authorize(Role::Read), Ok(()));
        assert_eq!(
            list_frob.authorize(Role::None),
            Err("Not authorized: 'list-frob' requires read authorization".into())
        );
        assert_eq!(
            ActionName::from(Action::AddDomain).authorize(Role::Read),
            Err("Not authorized: 'add-domain' requires write authorization".into())
        );
    }

    #[test]
    fn registrations_name_their_classes() {
        // §5: reg-*-events subscribes the stream to a class, unreg-*-events unsubscribes it.
        let expected = [
            (Action::RegDomainEvents, (true, EventMask::DOMAIN)),
            (Action::UnregDomainEvents, (false, EventMask::DOMAIN)),
            (Action::RegResourceEvents, (true, EventMask::RESOURCE)),
            (Action::UnregResourceEvents, (false, EventMask::RESOURCE)),
            (Action::RegHardwareEvents, (true, EventMask::HARDWARE)),
            (Action::UnregHardwareEvents, (false, EventMask::HARDWARE)),
            (Action::RegAllEvents, (true, EventMask::ALL)),
            (Action::UnregAllEvents, (false, EventMask::ALL)),
        ];
        for (action, registration) in expected {
            assert_eq!(action.registration(), Some(registration), "{action}");
            assert_eq!(action.event_class(), None, "{action}");
        }
        let registrations = Action::ALL
            .iter()
            .filter(|a| a.registration().is_some())
            .count();
        assert_eq!(registrations, expected.len());
        assert_eq!(Action::ListDomain.registration(), None);
        assert_eq!(Action::AddDomain.registration(), None);
    }

    #[test]
    fn events_are_published_in_the_class_and_under_the_name_of_section_5() {
        use EventClass::{Domain, Hardware, Resource};
        for (action, class) in [
            (Action::AddDomain, Domain),
            (Action::RemoveDomain, Domain),
            (Action::BindDomain, Domain),
            (Action::UnbindDomain, Domain),
            (Action::StartDomain, Domain),
            (Action::StopDomain, Domain),
            (Action::PanicDomain, Domain),
            (Action::MigrateDomain, Domain),
            (Action::SetDomain, Resource),
            (Action::AddVcpu, Resource),
            (Action::RemoveMemory, Resource),
            (Action::AddVdiskserverdevice, Resource),
            (Action::SetVconsole, Resource),
            (Action::AddIo, Resource),
            (Action::AddSpconfig, Hardware),
            (Action::SetSpconfig, Hardware),
            (Action::RemoveSpconfig, Hardware),
        ] {
            assert_eq!(action.event_class(), Some(class), "{action}");
        }
        for quiet in [
            Action::ListDomain,
            Action::ListSpconfig,
            Action::RegAllEvents,
            Action::CancelOperation,
            Action::RemoveReconf,
        ] {
            assert_eq!(quiet.event_class(), None, "{quiet}");
        }
        assert_eq!(Action::AddMau.event_name(), "add-crypto");
        assert_eq!(Action::SetMau.event_name(), "set-crypto");
        assert_eq!(Action::RemoveMau.event_name(), "remove-crypto");
        for action in Action::ALL {
            let renamed = action.as_str().replace("-mau", "-crypto");
            assert_eq!(action.event_name(), renamed, "{action}");
        }
    }

    #[test]
    fn a_stored_action_is_its_wire_name() {
        // A memory DR record names its action; the store keeps the wire name.
        let json = serde_json::to_string(&Action::RemoveMemory).unwrap();
        assert_eq!(json, "\"remove-memory\"");
        let back: Action = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Action::RemoveMemory);
        assert!(serde_json::from_str::<Action>("\"frob\"").is_err());
    }
}
