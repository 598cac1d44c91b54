//! XML restrictions [§11], as the stream reports them.

use super::*;

fn ready() -> Pair {
    let mut pair = Pair::remote();
    pair.login();
    pair
}

#[test]
fn comment_is_restricted_xml() {
    let mut pair = ready();
    pair.send("<message><!-- hi --></message>");
    pair.expect_stream_error("restricted-xml");
}

#[test]
fn processing_instruction_is_restricted_xml() {
    let mut pair = ready();
    pair.send("<?evil?>");
    pair.expect_stream_error("restricted-xml");
}

#[test]
fn dtd_is_restricted_xml() {
    let mut pair = Pair::remote();
    pair.send("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]>");
    pair.expect_stream_error("restricted-xml");
}

#[test]
fn foreign_entity_is_restricted_xml_and_never_expanded() {
    let mut pair = ready();
    pair.send("<message><body>&xxe;</body></message>");
    pair.expect_stream_error("restricted-xml");
}

#[test]
fn ill_formed_xml_is_not_well_formed() {
    let mut pair = ready();
    pair.send("<message><body></message></body>");
    pair.expect_stream_error("not-well-formed");
}

#[test]
fn unsupported_encoding_is_refused() {
    let mut pair = Pair::remote();
    pair.send("<?xml version='1.0' encoding='UTF-16'?>");
    pair.expect_stream_error("unsupported-encoding");
}

#[test]
fn text_between_stanzas_is_bad_format() {
    let mut pair = ready();
    pair.send("hello");
    pair.expect_stream_error("bad-format");
}

#[test]
fn whitespace_between_stanzas_is_a_keepalive() {
    // §4.6.1.
    let mut pair = ready();
    pair.send("\n \t\r\n");
    pair.send(" <iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>\n");
    assert_eq!(pair.recv(), "<iq type='result' id='p'/>");
}

#[test]
fn input_split_at_every_byte_gives_the_same_output() {
    // The whole login and a ping, delivered one byte per TLS record, answer identically.
    let mut whole = Pair::remote();
    whole.login();
    whole.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    let expected = whole.recv();
    let mut split = Pair::remote();
    split.login();
    for byte in "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>".as_bytes() {
        split.send_bytes(&[*byte]);
    }
    assert_eq!(split.recv(), expected);
}

#[test]
fn mismatched_end_tag_gets_not_well_formed_without_waiting() {
    // `<a><b></a>` used to wedge the stream: the framer counted depth but kept no names, so it
    // waited for a balance that never came. Now the stream ends at the end tag.
    let mut pair = ready();
    pair.send("<message><body></message>");
    let out = pair.expect_stream_error("not-well-formed");
    assert!(out.contains("end tag does not match"), "{out}");
}

#[test]
fn second_stream_header_gets_unsupported_stanza_type_when_its_start_tag_ends() {
    // A client that restarts on its own would have its header read as a stanza that swallows
    // everything after it. The error comes at the header's `>`, with nothing else sent.
    let mut pair = ready();
    pair.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>");
    let out = pair.expect_stream_error("unsupported-stanza-type");
    assert!(out.contains("stream header inside an open stream"), "{out}");
    // Before authentication too, with the legacy header's bare name.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.recv();
    pair.send("<stream:stream to='example.com'>");
    pair.expect_stream_error("unsupported-stanza-type");
}

#[test]
fn undeclared_prefix_inside_a_stanza_is_bad_namespace_prefix() {
    // Nested elements and attributes of XMPP stanzas must use declared prefixes.
    for stanza in [
        "<iq type='get' id='1'><p:ping/></iq>",
        "<iq type='get' id='1' p:x='1'><ping xmlns='urn:xmpp:ping'/></iq>",
    ] {
        let mut pair = ready();
        pair.send(stanza);
        pair.expect_stream_error("bad-namespace-prefix");
    }
}

#[test]
fn namespace_ill_formed_stanzas_are_not_well_formed() {
    // Namespaces in XML 1.0: one expanded name per attribute, xml keeps its URI, QNames only.
    for stanza in [
        "<iq type='get' id='1' xmlns:a='urn:x' xmlns:b='urn:x' a:k='1' b:k='2'/>",
        "<iq type='get' id='1' xmlns:xml='urn:other'/>",
        "<iq type='get' id='1'><a:/></iq>",
        "<a:b:c xmlns:a='urn:x'/>",
    ] {
        let mut pair = ready();
        pair.send(stanza);
        pair.expect_stream_error("not-well-formed");
    }
}
