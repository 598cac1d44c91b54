use super::*;

fn parse(xml: &str) -> Element<'_> {
    Element::parse(xml, &NamespaceScope::client()).expect("element parses")
}

#[test]
fn resolves_stream_default_namespace() {
    // A stanza without xmlns inherits jabber:client from the stream header (RFC 6120 §4.8.3).
    let iq = parse("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(iq.is("iq", Namespace::Client));
    assert_eq!(iq.attr("type"), Some("get"));
    assert!(iq.child("ping", Namespace::Ping).is_some());
}

#[test]
fn prefix_is_free() {
    // The namespace, not the prefix, identifies an element.
    let e = parse(
        "<x:auth xmlns:x='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</x:auth>",
    );
    assert!(e.is("auth", Namespace::Sasl));
    assert_eq!(e.text(), "AGEAYg==");
}

#[test]
fn undeclared_prefix_is_reported_not_refused() {
    // LDM documents use ovf:, rasd:, gprop: without declarations: kept, flagged, matched by local name.
    let e = parse("<LDM_interface><ovf:Content ovf:id='ldg1'/></LDM_interface>");
    assert!(e.has_undeclared_prefix());
    let content = e.child_local("Content").unwrap();
    assert_eq!(content.namespace, Namespace::Undeclared);
    assert_eq!(content.attr_local("id"), Some("ldg1"));
}

#[test]
fn text_merges_references_and_cdata() {
    let e = parse("<a>x &lt; y&#x21;<![CDATA[ <z> ]]>&amp;</a>");
    assert_eq!(e.text(), "x < y! <z> &");
}

#[test]
fn single_text_piece_is_borrowed() {
    // Zero copy: a value without escapes borrows from the framed bytes.
    let e = parse("<a b='plain'>plain text</a>");
    assert!(matches!(e.text(), Cow::Borrowed(_)));
    assert!(matches!(e.attrs[0].value, Cow::Borrowed(_)));
}

#[test]
fn attribute_values_are_normalized_and_unescaped() {
    let e = parse("<a b='1&amp;2\t3'/>");
    assert_eq!(e.attr("b"), Some("1&2 3"));
}

#[test]
fn line_endings_are_normalized() {
    assert_eq!(parse("<a>1\r\n2\r3</a>").text(), "1\n2\n3");
}

#[test]
fn mismatched_end_tag_is_an_error() {
    assert!(Element::parse("<a><b></a></b>", &NamespaceScope::client()).is_err());
}

#[test]
fn duplicate_attribute_is_an_error() {
    assert!(Element::parse("<a b='1' b='2'/>", &NamespaceScope::client()).is_err());
}

#[test]
fn inner_declarations_are_scoped() {
    let e = parse(
        "<a xmlns='urn:xmpp:ping'><b/><c xmlns='jabber:client'/></a><!-- -->"
            .split("<!--")
            .next()
            .unwrap(),
    );
    assert_eq!(e.namespace, Namespace::Ping);
    let kids: Vec<_> = e.elements().map(|k| k.namespace).collect();
    assert_eq!(kids, [Namespace::Ping, Namespace::Client]);
}

#[test]
fn header_tag_collects_scope_and_attributes() {
    let tag = HeaderTag::parse(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>",
    )
    .unwrap();
    assert_eq!(tag.namespace, Namespace::Streams);
    assert_eq!(tag.local_name(), "stream");
    assert_eq!(tag.scope, NamespaceScope::client());
    assert_eq!(tag.attr("to"), Some("example.com"));
}

#[test]
fn legacy_header_has_undeclared_stream_prefix() {
    // The illumos LDM client's header: no xmlns at all (ldm-xml-interface.md §1.2).
    let tag =
        HeaderTag::parse("<stream:stream xml:lang=\"en\" version=\"1.0\" id=\"xmpp\">").unwrap();
    assert_eq!(tag.namespace, Namespace::Undeclared);
    assert_eq!(tag.scope.default, Namespace::None);
    assert_eq!(tag.attr("id"), Some("xmpp"));
}

fn refusal(xml: &str) -> ParseError {
    Element::parse(xml, &NamespaceScope::client()).expect_err("must be refused")
}

#[test]
fn names_must_be_qualified_names() {
    // Namespaces in XML 1.0 §4: one colon at most, with a name on each side.
    for bad in [
        "<a:/>",
        "<:a/>",
        "<a:b:c xmlns:a='urn:x'/>",
        "<iq><a:/></iq>",
        "<iq x:='1'/>",
        "<iq :x='1'/>",
        "<a:1b xmlns:a='urn:x'/>",
    ] {
        assert!(
            matches!(refusal(bad), ParseError::NotWellFormed(_)),
            "{bad}"
        );
    }
}

#[test]
fn the_xml_and_xmlns_prefixes_keep_their_meaning() {
    // §3: xml may be declared only with its own URI; nothing else may take that URI; xmlns and
    // its URI are never declared.
    let own = "<iq xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>";
    assert!(Element::parse(own, &NamespaceScope::client()).is_ok());
    for bad in [
        "<iq xmlns:xml='urn:other'/>",
        "<iq xmlns:x='http://www.w3.org/XML/1998/namespace'/>",
        "<iq xmlns='http://www.w3.org/XML/1998/namespace'/>",
        "<iq xmlns:xmlns='urn:x'/>",
        "<iq xmlns:x='http://www.w3.org/2000/xmlns/'/>",
        "<iq><b xmlns:xml='urn:other'/></iq>",
    ] {
        assert!(
            matches!(refusal(bad), ParseError::NotWellFormed(_)),
            "{bad}"
        );
    }
}

#[test]
fn two_attributes_with_one_expanded_name_are_refused() {
    // §6.3: a:x and b:x with a and b bound to the same URI are the same attribute.
    let bad = "<iq xmlns:a='urn:x' xmlns:b='urn:x' a:k='1' b:k='2'/>";
    assert!(matches!(refusal(bad), ParseError::NotWellFormed(_)));
    let inherited = "<iq xmlns:a='urn:x'><c xmlns:b='urn:x' a:k='1' b:k='2'/></iq>";
    assert!(matches!(refusal(inherited), ParseError::NotWellFormed(_)));
    let via_header = "<iq xmlns:s='http://etherx.jabber.org/streams' s:k='1' stream:k='2'/>";
    assert!(matches!(refusal(via_header), ParseError::NotWellFormed(_)));
    // Different namespaces, or no namespace beside one, are different attributes.
    let fine = "<iq xmlns:a='urn:x' xmlns:b='urn:y' a:k='1' b:k='2' k='3'/>";
    assert!(Element::parse(fine, &NamespaceScope::client()).is_ok());
}

#[test]
fn undeclared_prefixes_in_stanzas_are_refused_at_every_depth() {
    // Only LDM documents are lenient; an XMPP stanza's nested elements and attributes must use
    // declared prefixes (bad-namespace-prefix).
    for bad in [
        "<iq type='get' id='1'><p:ping/></iq>",
        "<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'><x:y/></ping></iq>",
        "<iq type='get' id='1' p:x='1'/>",
        "<message><body q:lang='en'>x</body></message>",
    ] {
        assert!(
            matches!(refusal(bad), ParseError::UndeclaredPrefix(_)),
            "{bad}"
        );
    }
}

#[test]
fn ldm_documents_keep_undeclared_prefixes() {
    // Oracle's clients write rasd:, gprop:, ovf: and xsi: without declarations.
    let doc = "<LDM_interface version='1.0'><cmd><data version='3.0'><Envelope><ovf:Content xsi:type='ovf:VirtualSystem_Type' ovf:id='ldg1'><Section xsi:type='ovf:ResourceAllocationSection_type'><Item><rasd:OtherResourceType>cpu</rasd:OtherResourceType><gprop:GenericProperty key='x' rasd:k='1' ovf:k='2'>1</gprop:GenericProperty></Item></Section></ovf:Content></Envelope></data></cmd></LDM_interface>";
    let e = parse(doc);
    assert!(e.has_undeclared_prefix());
    // The other namespace rules still hold inside them.
    assert!(matches!(
        refusal("<LDM_interface><a:/></LDM_interface>"),
        ParseError::NotWellFormed(_)
    ));
    assert!(matches!(
        refusal("<LDM_interface xmlns:xml='urn:x'/>"),
        ParseError::NotWellFormed(_)
    ));
}
