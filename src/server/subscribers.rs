//! One stream's share of event delivery: the classes it subscribed to, and how many events wait
//! for it.
//!
//! The router fans every committed event out to the subscribers of its thread without ever
//! waiting for one of them. A subscriber whose peer stops reading leaves its actor stuck in a
//! write while events keep arriving, so its inbox would grow without bound. Each subscription
//! therefore counts the events queued for it: the router refuses the one past
//! `event_queue_max`, once, and the stream is ended with `resource-constraint` rather than
//! slowing the thread or the registry down for everyone else. The count grows whatever keeps
//! the actor from taking events: a slow peer, or its own wait for the registry to accept one of
//! its documents; `event_queue_max` must allow for the second.
//!
//! Kept free of I/O so that these rules are tested here; the router and the connection's actor
//! share a [`Subscription`] in a `Cell` (one thread, no borrow across an await).

use crate::ldm::event::{EventClass, EventMask, SubscriptionChange};

/// One connection's subscription.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    mask: EventMask,
    /// Events pushed to the connection's inbox and not yet handed to its stream.
    queued: u32,
    /// The queue overflowed: the stream is being ended and is offered nothing more.
    overflowed: bool,
}

/// What the router does with one event for one subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Not a class it wants, or it is already being dropped.
    Skip,
    /// Push the event to the connection's inbox.
    Queue,
    /// `event_queue_max` events already wait: end the stream. Said once per subscription.
    Overflow,
}

impl Subscription {
    /// Applies a (un)registration, answered in the same commit order as the events.
    pub fn change(&mut self, change: SubscriptionChange) {
        // A stream being dropped must not come back through a registration still in flight.
        if !self.overflowed {
            self.mask = change.apply(self.mask);
        }
    }

    /// Whether the router must keep offering this subscription events.
    pub fn is_subscribed(&self) -> bool {
        !self.overflowed && !self.mask.is_empty()
    }

    /// Decides what happens to an event of `class`, counting it if it is queued.
    pub fn offer(&mut self, class: EventClass, queue_max: u32) -> Offer {
        debug_assert!(queue_max > 0);
        if self.overflowed || !self.mask.wants(class) {
            return Offer::Skip;
        }
        if self.queued >= queue_max {
            self.overflowed = true;
            return Offer::Overflow;
        }
        self.queued += 1;
        Offer::Queue
    }

    /// The actor took one queued event out of the inbox (whether its stream wrote it or not).
    pub fn take(&mut self) {
        debug_assert!(self.queued > 0, "took an event that was never queued");
        self.queued = self.queued.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribed(mask: EventMask) -> Subscription {
        let mut subscription = Subscription::default();
        subscription.change(SubscriptionChange {
            subscribe: mask,
            unsubscribe: EventMask::NONE,
        });
        subscription
    }

    #[test]
    fn only_subscribed_classes_are_queued() {
        // A domain subscriber gets domain and progress events, not resource events (§5).
        let mut subscription = subscribed(EventMask::DOMAIN);
        assert_eq!(subscription.offer(EventClass::Domain, 4), Offer::Queue);
        assert_eq!(subscription.offer(EventClass::Progress, 4), Offer::Queue);
        assert_eq!(subscription.offer(EventClass::Resource, 4), Offer::Skip);
        assert_eq!(subscription.queued, 2);
        assert_eq!(
            Subscription::default().offer(EventClass::Domain, 4),
            Offer::Skip
        );
    }

    #[test]
    fn a_full_queue_overflows_once_and_stops_the_subscription() {
        // The event past event_queue_max ends the stream; nothing after it is queued.
        let mut subscription = subscribed(EventMask::ALL);
        for _ in 0..3 {
            assert_eq!(subscription.offer(EventClass::Domain, 3), Offer::Queue);
        }
        assert_eq!(subscription.offer(EventClass::Domain, 3), Offer::Overflow);
        assert_eq!(subscription.offer(EventClass::Domain, 3), Offer::Skip);
        assert!(!subscription.is_subscribed());
        assert_eq!(subscription.queued, 3, "the refused event is not counted");
    }

    #[test]
    fn taking_events_makes_room() {
        // A subscriber that keeps up never overflows, however many events pass through.
        let mut subscription = subscribed(EventMask::HARDWARE);
        for _ in 0..10_000 {
            assert_eq!(subscription.offer(EventClass::Hardware, 2), Offer::Queue);
            assert_eq!(subscription.offer(EventClass::Progress, 2), Offer::Queue);
            subscription.take();
            subscription.take();
        }
        assert_eq!(subscription.queued, 0);
        assert!(subscription.is_subscribed());
    }

    #[test]
    fn unregistering_everything_ends_the_subscription() {
        let mut subscription = subscribed(EventMask::DOMAIN.union(EventMask::RESOURCE));
        subscription.change(SubscriptionChange {
            subscribe: EventMask::NONE,
            unsubscribe: EventMask::DOMAIN,
        });
        assert!(subscription.is_subscribed());
        assert_eq!(subscription.offer(EventClass::Domain, 4), Offer::Skip);
        subscription.change(SubscriptionChange {
            subscribe: EventMask::NONE,
            unsubscribe: EventMask::ALL,
        });
        assert!(!subscription.is_subscribed());
    }

    #[test]
    fn an_overflowed_subscription_cannot_register_again() {
        // A registration answered after the overflow must not revive a stream being ended.
        let mut subscription = subscribed(EventMask::DOMAIN);
        assert_eq!(subscription.offer(EventClass::Domain, 1), Offer::Queue);
        assert_eq!(subscription.offer(EventClass::Domain, 1), Offer::Overflow);
        subscription.change(SubscriptionChange {
            subscribe: EventMask::ALL,
            unsubscribe: EventMask::NONE,
        });
        assert!(!subscription.is_subscribed());
        assert_eq!(subscription.offer(EventClass::Hardware, 1), Offer::Skip);
    }
}
