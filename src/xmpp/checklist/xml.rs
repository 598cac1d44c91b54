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
