//! Bytes waiting for the peer, kept in whole messages.
//!
//! A message is one logical unit: a header with its features, a reply document, an error with
//! the stream close. Ordinary XMPP clients get every pending message in one write; the legacy
//! LDM client parses each `read()` as a whole document (ldm-xml-interface.md §1.2), so for it
//! each message goes out in a write of its own. The buffer is released when it empties, so an
//! idle stream holds no output memory.

use crate::xml::XmlWriter;

#[derive(Debug, Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    /// Offsets in `bytes` where messages end, ascending.
    ends: Vec<usize>,
}

impl Outbox {
    /// A writer appending to the current (unfinished) message.
    pub fn writer(&mut self) -> XmlWriter<'_> {
        XmlWriter::new(&mut self.bytes)
    }

    /// The buffer, for writers that append to a `Vec<u8>`; append only.
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Marks the end of the current message; a no-op if nothing was written since the last end.
    pub fn end_message(&mut self) {
        if self.ends.last().copied().unwrap_or(0) < self.bytes.len() {
            self.ends.push(self.bytes.len());
        }
    }

    /// Appends `message`, already written elsewhere, as a whole message of its own.
    pub fn push_message(&mut self, message: &[u8]) {
        debug_assert_eq!(
            self.pending_bytes(),
            self.bytes.len(),
            "no message is half written between calls"
        );
        self.bytes.extend_from_slice(message);
        self.end_message();
    }

    /// Bytes of complete messages waiting.
    pub fn pending_bytes(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The first complete message.
    pub fn first_message(&self) -> Option<&[u8]> {
        self.ends
            .first()
            .map(|&end| self.bytes.get(..end).unwrap_or_default())
    }

    /// Every complete message, back to back.
    pub fn all_messages(&self) -> &[u8] {
        self.bytes.get(..self.pending_bytes()).unwrap_or_default()
    }

    /// Drops the first `count` complete messages.
    pub fn consume_messages(&mut self, count: usize) {
        let count = count.min(self.ends.len());
        let Some(&cut) = count.checked_sub(1).and_then(|last| self.ends.get(last)) else {
            return;
        };
        self.ends.drain(..count);
        self.ends
            .iter_mut()
            .for_each(|end| *end = end.saturating_sub(cut));
        self.bytes.drain(..cut);
        if self.bytes.is_empty() {
            // Release the capacity: idle streams hold nothing.
            self.bytes = Vec::new();
            self.ends = Vec::new();
        }
    }

    /// Number of complete messages waiting.
    pub fn message_count(&self) -> usize {
        self.ends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_message_boundaries_and_releases_memory() {
        let mut out = Outbox::default();
        out.writer().raw("<a/>");
        out.end_message();
        out.end_message(); // empty: ignored
        out.writer().raw("<b/>");
        out.end_message();
        out.writer().raw("<c"); // unfinished: not yet transmittable
        assert_eq!(out.message_count(), 2);
        assert_eq!(out.first_message(), Some(&b"<a/>"[..]));
        assert_eq!(out.all_messages(), b"<a/><b/>");
        out.consume_messages(1);
        assert_eq!(out.all_messages(), b"<b/>");
        out.writer().raw("/>");
        out.end_message();
        out.consume_messages(2);
        assert!(out.is_empty());
        assert_eq!(out.bytes.capacity(), 0);
    }
}
