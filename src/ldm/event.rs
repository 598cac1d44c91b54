//! `LDM_event` documents (ldm-xml-interface.md §5) and the classes subscribers choose from.
//!
//! An event is written once, when the registry commits the change, and the same bytes go to
//! every subscriber: they do not depend on who reads them.

use std::sync::Arc;

use crate::ldm::document::Data;
use crate::ldm::write::write_event;

/// The action named by the domain event of a guest reset because its master panicked
/// (failure-policy `reset`, §5). No request has this action: it is an event name only.
pub const DOMAIN_RESET: &str = "domain-reset";

/// The event classes of §5. Progress reports go to domain and hardware subscribers (ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventClass {
    Domain,
    Resource,
    Hardware,
    Progress,
}

/// A set of event classes a stream is subscribed to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventMask(u8);

impl EventMask {
    pub const NONE: EventMask = EventMask(0);
    pub const DOMAIN: EventMask = EventMask(1);
    pub const RESOURCE: EventMask = EventMask(2);
    pub const HARDWARE: EventMask = EventMask(4);
    pub const ALL: EventMask = EventMask(7);

    pub fn union(self, other: EventMask) -> EventMask {
        EventMask(self.0 | other.0)
    }

    pub fn minus(self, other: EventMask) -> EventMask {
        EventMask(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether a subscriber with this mask receives events of `class`.
    pub fn wants(self, class: EventClass) -> bool {
        match class {
            EventClass::Domain => self.0 & Self::DOMAIN.0 != 0,
            EventClass::Resource => self.0 & Self::RESOURCE.0 != 0,
            EventClass::Hardware => self.0 & Self::HARDWARE.0 != 0,
            EventClass::Progress => self.0 & (Self::DOMAIN.0 | Self::HARDWARE.0) != 0,
        }
    }
}

/// A change to the subscriptions of one stream, carried with the reply that made it so that the
/// stream sees exactly the events committed after its registration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionChange {
    pub subscribe: EventMask,
    pub unsubscribe: EventMask,
}

impl SubscriptionChange {
    pub fn is_empty(self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }

    /// `mask` after this change (a later registration wins over an earlier removal).
    pub fn apply(self, mask: EventMask) -> EventMask {
        mask.minus(self.unsubscribe).union(self.subscribe)
    }

    /// This change followed by `later`.
    pub fn then(self, later: SubscriptionChange) -> SubscriptionChange {
        SubscriptionChange {
            subscribe: self
                .subscribe
                .minus(later.unsubscribe)
                .union(later.subscribe),
            unsubscribe: self
                .unsubscribe
                .minus(later.subscribe)
                .union(later.unsubscribe),
        }
    }
}

/// One committed change, as its subscribers will read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub class: EventClass,
    /// The whole `LDM_event` document, written once.
    pub document: Arc<[u8]>,
}

impl Event {
    pub fn new(class: EventClass, action: &str, data: &Data) -> Event {
        let mut out = Vec::with_capacity(512);
        write_event(&mut out, action, data);
        Event {
            class,
            document: out.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_goes_to_domain_and_hardware_subscribers() {
        assert!(EventMask::DOMAIN.wants(EventClass::Progress));
        assert!(EventMask::HARDWARE.wants(EventClass::Progress));
        assert!(!EventMask::RESOURCE.wants(EventClass::Progress));
        assert!(!EventMask::DOMAIN.wants(EventClass::Resource));
    }

    #[test]
    fn later_changes_win() {
        let reg = SubscriptionChange {
            subscribe: EventMask::ALL,
            unsubscribe: EventMask::NONE,
        };
        let unreg_domain = SubscriptionChange {
            subscribe: EventMask::NONE,
            unsubscribe: EventMask::DOMAIN,
        };
        let both = reg.then(unreg_domain);
        assert_eq!(
            both.apply(EventMask::NONE),
            EventMask::ALL.minus(EventMask::DOMAIN)
        );
        assert_eq!(
            unreg_domain.then(reg).apply(EventMask::NONE),
            EventMask::ALL
        );
    }
}
