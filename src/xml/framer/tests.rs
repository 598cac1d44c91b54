use super::*;

/// Plays the caller: appends each chunk, frames, drops consumed bytes. Returns every frame's
/// kind and bytes, whitespace frames left out (their count depends on where reads split).
fn frames_of(
    chunks: &[&[u8]],
    limits: FramerLimits,
) -> Result<Vec<(FrameKind, Vec<u8>)>, FrameError> {
    let mut framer = Framer::new(limits);
    framer.set_authenticated(true); // the pre-authentication limit has tests of its own
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = framer.next(&buf)? {
            if frame.kind != FrameKind::Whitespace {
                out.push((frame.kind, buf[frame.start..frame.end].to_vec()));
            }
            buf.drain(..frame.end);
            if frame.kind == FrameKind::StreamEnd {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

fn frames(input: &[u8]) -> Result<Vec<(FrameKind, Vec<u8>)>, FrameError> {
    frames_of(&[input], FramerLimits::default())
}

fn first_error(input: &[u8]) -> FrameError {
    frames(input).expect_err("input must be refused")
}

const BARE_HEADER: &[u8] = b"<s:stream>";

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

/// A stream that exercises every construct the framer knows.
const RICH_STREAM: &[u8] = b"\xEF\xBB\xBF<?xml version='1.0' encoding='UTF-8'?>\n\
<x:stream xmlns='jabber:client' xmlns:x='http://etherx.jabber.org/streams' to=\"a>b\" version='1.0'>  \
<iq type='get' id='p&amp;1'><ping xmlns='urn:xmpp:ping'/></iq>\n \t\r\
<LDM_interface version=\"1.0\"><cmd><action>list-domain</action><data version=\"3.0\">\
<gprop:GenericProperty key='a&#x3C;b'>x &lt; y &#169; \xC3\xA9</gprop:GenericProperty>\
<![CDATA[ <not> ]] ]]]>tail</data></cmd></LDM_interface>\
<presence/>   </x:stream>";

fn rich_expected() -> Vec<(FrameKind, Vec<u8>)> {
    frames(RICH_STREAM).expect("rich stream frames")
}

#[test]
fn frames_header_elements_and_end() {
    // The rich stream splits into exactly its header, three stanzas and the end tag.
    let got = rich_expected();
    let kinds: Vec<_> = got.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            FrameKind::Header,
            FrameKind::Element,
            FrameKind::Element,
            FrameKind::Element,
            FrameKind::StreamEnd
        ]
    );
    assert!(got[0].1.starts_with(b"<x:stream ") && got[0].1.ends_with(b"version='1.0'>"));
    assert_eq!(
        got[1].1,
        b"<iq type='get' id='p&amp;1'><ping xmlns='urn:xmpp:ping'/></iq>"
    );
    assert!(got[2].1.starts_with(b"<LDM_interface") && got[2].1.ends_with(b"</LDM_interface>"));
    assert_eq!(got[3].1, b"<presence/>");
    assert_eq!(got[4].1, b"</x:stream>");
}

#[test]
fn every_split_point_gives_the_same_frames() {
    // Resumability: splitting the stream into two reads at any byte yields identical frames.
    let expected = rich_expected();
    for split in 0..=RICH_STREAM.len() {
        let (a, b) = RICH_STREAM.split_at(split);
        assert_eq!(
            frames_of(&[a, b], FramerLimits::default()).unwrap(),
            expected,
            "split at {split}"
        );
    }
}

#[test]
fn every_pair_of_split_points_gives_the_same_frames() {
    // Three reads, all split positions: catches states that survive only one resume.
    let expected = rich_expected();
    let n = RICH_STREAM.len();
    for i in 0..=n {
        for j in i..=n {
            let chunks = [&RICH_STREAM[..i], &RICH_STREAM[i..j], &RICH_STREAM[j..]];
            assert_eq!(
                frames_of(&chunks, FramerLimits::default()).unwrap(),
                expected,
                "splits {i},{j}"
            );
        }
    }
}

#[test]
fn byte_at_a_time_gives_the_same_frames() {
    // The slowest client possible still frames identically.
    let chunks: Vec<&[u8]> = RICH_STREAM.chunks(1).collect();
    assert_eq!(
        frames_of(&chunks, FramerLimits::default()).unwrap(),
        rich_expected()
    );
}

#[test]
fn errors_are_the_same_at_every_split_point() {
    // A refusal does not depend on how the bytes were split.
    let bad: &[&[u8]] = &[
        b"<stream:stream><a><!-- c --></a>",
        b"<stream:stream><a>&foo;</a>",
        b"<stream:stream><a b='<'/>",
        b"<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>",
        b"<stream:stream>hello",
        b"<stream:stream><a></b></a></stream:other>",
    ];
    for input in bad {
        let expected = frames(input).map(|f| f.len());
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            let got = frames_of(&[a, b], FramerLimits::default()).map(|f| f.len());
            assert_eq!(
                got,
                expected,
                "input {:?} split {split}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn whitespace_keepalive_is_returned_so_the_buffer_can_be_released() {
    // RFC 6120 §4.6.1: whitespace between stanzas is legal and must not pin a read buffer.
    let mut framer = Framer::new(FramerLimits::default());
    let mut buf = HEADER.to_vec();
    let header = framer.next(&buf).unwrap().unwrap();
    buf.drain(..header.end);
    buf.extend_from_slice(b" \n ");
    let frame = framer.next(&buf).unwrap().unwrap();
    assert_eq!(frame.kind, FrameKind::Whitespace);
    assert_eq!(frame.end, 3);
    buf.drain(..frame.end);
    assert!(framer.is_between_frames());
    assert_eq!(framer.next(&buf).unwrap(), None);
}

#[test]
fn partial_element_is_held_until_complete() {
    // "Need more bytes" is an ordinary answer, not an error.
    let mut framer = Framer::new(FramerLimits::default());
    let mut buf = HEADER.to_vec();
    let header = framer.next(&buf).unwrap().unwrap();
    buf.drain(..header.end);
    buf.extend_from_slice(b"<message><body>hi");
    assert_eq!(framer.next(&buf).unwrap(), None);
    assert!(!framer.is_between_frames());
    buf.extend_from_slice(b"</body></message>");
    let frame = framer.next(&buf).unwrap().unwrap();
    assert_eq!(
        &buf[frame.start..frame.end],
        b"<message><body>hi</body></message>"
    );
}

#[test]
fn restart_accepts_a_new_declaration_and_header() {
    // RFC 6120 §4.3.3: after STARTTLS or SASL the stream starts over, declaration included.
    let mut framer = Framer::new(FramerLimits::default());
    let mut buf = HEADER.to_vec();
    buf.extend_from_slice(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    let header = framer.next(&buf).unwrap().unwrap();
    buf.drain(..header.end);
    let starttls = framer.next(&buf).unwrap().unwrap();
    buf.drain(..starttls.end);
    framer.restart();
    buf.extend_from_slice(b"<?xml version='1.0'?>");
    buf.extend_from_slice(HEADER);
    let frame = framer.next(&buf).unwrap().unwrap();
    assert_eq!(frame.kind, FrameKind::Header);
    assert_eq!(&buf[frame.start..frame.end], HEADER);
}

#[test]
fn comment_is_restricted_xml() {
    // RFC 6120 §11.1: comments are forbidden.
    assert!(matches!(
        first_error(b"<stream:stream><a><!-- x --></a>"),
        FrameError::Restricted(_)
    ));
    assert!(matches!(
        first_error(b"<!-- x --><stream:stream>"),
        FrameError::Restricted(_)
    ));
}

#[test]
fn processing_instruction_is_restricted_xml() {
    // RFC 6120 §11.1: processing instructions are forbidden.
    assert!(matches!(
        first_error(b"<stream:stream><?php x?>"),
        FrameError::Restricted(_)
    ));
    assert!(matches!(
        first_error(b"<?xml-stylesheet x?><stream:stream>"),
        FrameError::Restricted(_)
    ));
}

#[test]
fn dtd_is_restricted_xml() {
    // RFC 6120 §11.1: internal and external DTD subsets are forbidden (no billion laughs).
    let input = b"<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY lol 'lol'>]><stream:stream>";
    assert!(matches!(first_error(input), FrameError::Restricted(_)));
    assert!(matches!(
        first_error(b"<stream:stream><a><!DOCTYPE x></a>"),
        FrameError::Restricted(_)
    ));
}

#[test]
fn foreign_entity_reference_is_restricted_xml() {
    // RFC 6120 §11.1: only the five predefined entities; never expanded, always refused.
    assert!(matches!(
        first_error(b"<stream:stream><a>&lol;</a>"),
        FrameError::Restricted(_)
    ));
    assert!(matches!(
        first_error(b"<stream:stream><a b='&lol;'/>"),
        FrameError::Restricted(_)
    ));
    assert!(
        frames(b"<stream:stream><a b='&lt;&gt;&amp;&quot;&apos;&#65;&#x42;'>&#x1F600;</a>").is_ok()
    );
}

#[test]
fn malformed_references_are_not_well_formed() {
    for input in [
        &b"<stream:stream><a>& b</a>"[..],
        b"<stream:stream><a>&#xZZ;</a>",
        b"<stream:stream><a>&#0;</a>",
        b"<stream:stream><a>&#xD800;</a>",
        b"<stream:stream><a>&#x110000;</a>",
        b"<stream:stream><a>&#x000000000000000000000000000000000041;</a>",
    ] {
        assert!(
            matches!(first_error(input), FrameError::NotWellFormed(_)),
            "{input:?}"
        );
    }
}

#[test]
fn declaration_with_another_encoding_is_unsupported_encoding() {
    // RFC 6120 §11.6: UTF-8 only.
    let input = b"<?xml version='1.0' encoding='UTF-16'?><stream:stream>";
    assert_eq!(first_error(input), FrameError::UnsupportedEncoding);
    assert!(frames(b"<?xml version='1.0' encoding='utf-8'?><stream:stream>").is_ok());
}

#[test]
fn utf16_input_is_unsupported_encoding() {
    assert_eq!(
        first_error(b"\xFF\xFE<\x00s\x00"),
        FrameError::UnsupportedEncoding
    );
    assert_eq!(
        first_error(b"\xFE\xFF\x00<"),
        FrameError::UnsupportedEncoding
    );
}

#[test]
fn declaration_is_allowed_only_at_the_start() {
    // The XML declaration may only open the stream.
    assert!(matches!(
        first_error(b" <?xml version='1.0'?><stream:stream>"),
        FrameError::Restricted(_)
    ));
    assert!(matches!(
        first_error(b"<stream:stream><?xml version='1.0'?>"),
        FrameError::Restricted(_)
    ));
}

#[test]
fn tls_client_hello_on_the_plaintext_port_is_not_well_formed() {
    // A client trying direct TLS first gets not-well-formed at the very first byte.
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    assert!(matches!(first_error(&hello), FrameError::NotWellFormed(_)));
    assert!(matches!(
        first_error(&hello[..1]),
        FrameError::NotWellFormed(_)
    ));
}

#[test]
fn http_request_is_not_well_formed() {
    assert!(matches!(
        first_error(b"GET / HTTP/1.1\r\n"),
        FrameError::NotWellFormed(_)
    ));
}

#[test]
fn text_between_stanzas_is_refused() {
    assert_eq!(
        first_error(b"<stream:stream>hello<a/>"),
        FrameError::TextBetweenStanzas
    );
}

#[test]
fn invalid_utf8_and_control_characters_are_not_well_formed() {
    assert!(matches!(
        first_error(b"<stream:stream><a>\xC3\x28</a>"),
        FrameError::NotWellFormed(_)
    ));
    assert!(matches!(
        first_error(b"<stream:stream><a>\x01</a>"),
        FrameError::NotWellFormed(_)
    ));
    assert!(matches!(
        first_error(b"<stream:stream><a>\xEF\xBF\xBF</a>"),
        FrameError::NotWellFormed(_)
    ));
    assert!(matches!(
        first_error(b"<stream:stream \x07>"),
        FrameError::NotWellFormed(_)
    ));
}

#[test]
fn cdata_end_in_text_is_not_well_formed() {
    // XML 1.0 §2.4: ']]>' may not appear in character data; ']' and ']]' alone may.
    assert!(matches!(
        first_error(b"<stream:stream><a>x]]>y</a>"),
        FrameError::NotWellFormed(_)
    ));
    assert!(matches!(
        first_error(b"<stream:stream><a>]]]></a>"),
        FrameError::NotWellFormed(_)
    ));
    assert!(frames(b"<stream:stream><a>a] b]] c]x]]y ]]</a><b>]</b>").is_ok());
    let input = b"<stream:stream><a>x]]>y</a>";
    for split in 0..=input.len() {
        let (a, b) = input.split_at(split);
        assert!(
            frames_of(&[a, b], FramerLimits::default()).is_err(),
            "split {split}"
        );
    }
}

#[test]
fn character_references_may_have_leading_zeros() {
    assert!(frames(b"<stream:stream><a>&#x0000041;&#00065;</a>").is_ok());
}

#[test]
fn markup_errors_are_not_well_formed() {
    for input in [
        &b"<stream:stream><a b='<'/>"[..],
        b"<stream:stream><a b=c/>",
        b"<stream:stream><a b/>",
        b"<stream:stream><a b='1'c='2'/>",
        b"<stream:stream><a/ >",
        b"<stream:stream/>",
        b"</stream:stream>",
        b"<stream:stream></>",
        b"<stream:stream></other>",
        b"<stream:stream>< a/>",
        b"<stream:stream><a><![CDTA[x]]></a>",
    ] {
        assert!(
            matches!(first_error(input), FrameError::NotWellFormed(_)),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn stanza_over_the_limit_is_refused_before_it_completes() {
    // RFC 6120 §13.12: the limit fires as soon as the partial stanza outgrows it.
    let limits = FramerLimits {
        stanza_bytes_max: 64,
        ..FramerLimits::default()
    };
    let mut body = b"<message><body>".to_vec();
    body.extend(std::iter::repeat_n(b'x', 100));
    let got = frames_of(&[HEADER, &body], limits);
    assert_eq!(got, Err(FrameError::LimitExceeded(Limit::StanzaBytes)));
    let exact = b"<a>"
        .iter()
        .chain(&[b'y'; 57])
        .chain(b"</a>")
        .copied()
        .collect::<Vec<_>>();
    assert_eq!(exact.len(), 64);
    assert!(frames_of(&[HEADER, &exact], limits).is_ok());
}

#[test]
fn header_over_the_limit_is_refused() {
    let limits = FramerLimits {
        header_bytes_max: 32,
        ..FramerLimits::default()
    };
    assert_eq!(
        frames_of(&[HEADER], limits),
        Err(FrameError::LimitExceeded(Limit::HeaderBytes))
    );
}

#[test]
fn depth_over_the_limit_is_refused() {
    let limits = FramerLimits {
        depth_max: 3,
        ..FramerLimits::default()
    };
    assert!(frames_of(&[HEADER, b"<a><b><c/></b></a>"], limits).is_ok());
    let got = frames_of(&[HEADER, b"<a><b><c><d/></c></b></a>"], limits);
    assert_eq!(got, Err(FrameError::LimitExceeded(Limit::Depth)));
}

#[test]
fn attributes_over_the_limit_are_refused() {
    let limits = FramerLimits {
        attributes_max: 2,
        ..FramerLimits::default()
    };
    assert!(frames_of(&[BARE_HEADER, b"<a x='1' y='2'/>"], limits).is_ok());
    let got = frames_of(&[BARE_HEADER, b"<a x='1' y='2' z='3'/>"], limits);
    assert_eq!(got, Err(FrameError::LimitExceeded(Limit::Attributes)));
}

#[test]
fn attribute_value_over_the_limit_is_refused() {
    let limits = FramerLimits {
        attribute_value_bytes_max: 8,
        ..FramerLimits::default()
    };
    assert!(frames_of(&[BARE_HEADER, b"<a x='12345678'/>"], limits).is_ok());
    let got = frames_of(&[BARE_HEADER, b"<a x='12&amp;456789'/>"], limits);
    assert_eq!(
        got,
        Err(FrameError::LimitExceeded(Limit::AttributeValueBytes))
    );
}

#[test]
fn name_over_the_limit_is_refused() {
    let limits = FramerLimits {
        name_bytes_max: 8,
        ..FramerLimits::default()
    };
    let got = frames_of(&[HEADER, b"<abcdefghijk/>"], limits);
    assert_eq!(got, Err(FrameError::LimitExceeded(Limit::NameBytes)));
}

#[test]
fn bytes_after_the_stream_end_are_ignored() {
    let mut framer = Framer::new(FramerLimits::default());
    let buf = b"<s:stream></s:stream>garbage";
    let header = framer.next(buf).unwrap().unwrap();
    let rest = &buf[header.end..];
    let end = framer.next(rest).unwrap().unwrap();
    assert_eq!(end.kind, FrameKind::StreamEnd);
    assert!(framer.is_ended());
    assert_eq!(framer.next(&rest[end.end..]).unwrap(), None);
}

/// Frames `input` split at every byte position; every split must give the same result.
fn same_at_every_split(input: &[u8]) -> Result<Vec<(FrameKind, Vec<u8>)>, FrameError> {
    let whole = frames(input);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(
            frames_of(&[a, b], FramerLimits::default()),
            whole,
            "split at {at} of {}",
            String::from_utf8_lossy(input)
        );
    }
    whole
}

#[test]
fn mismatched_end_tag_is_not_well_formed_at_its_close() {
    // XML 1.0 §3 (element type match): `<a><b></a>` is refused as soon as `</a>` ends, at every
    // split point, instead of waiting forever for a balance that never comes.
    let mut input = HEADER.to_vec();
    input.extend_from_slice(b"<a><b></a>");
    let err = same_at_every_split(&input).unwrap_err();
    assert_eq!(
        err,
        FrameError::NotWellFormed("end tag does not match the element it closes")
    );
    // The refusal comes as soon as the end tag's name is complete, before its `>`.
    let mut framer = Framer::new(FramerLimits::default());
    let mut buf = HEADER.to_vec();
    let header = framer.next(&buf).unwrap().unwrap();
    buf.drain(..header.end);
    buf.extend_from_slice(b"<a><b></a");
    assert_eq!(framer.next(&buf), Ok(None));
    buf.push(b' ');
    assert!(framer.next(&buf).is_err());
}

#[test]
fn end_tags_match_at_every_depth_and_prefix() {
    // Names are compared exactly, prefix included; siblings, self-closing elements and deep
    // nesting beyond the inline slots all balance.
    let mut ok = HEADER.to_vec();
    ok.extend_from_slice(
        b"<a:x><b/><c><d><e><f><g><h><i><j><k>t</k></j></i></h></g></f></e></d></c><b></b></a:x>",
    );
    let got = same_at_every_split(&ok).unwrap();
    assert_eq!(got.len(), 2);
    for bad in [
        &b"<a:x></b:x>"[..],
        b"<ab></a>",
        b"<a></ab>",
        b"<a><b></b></c>",
        b"<a><a1><a2><a3><a4><a5><a6><a7><a8><a9></a8></a9></a7></a6></a5></a4></a3></a2></a1></a>",
    ] {
        let mut input = HEADER.to_vec();
        input.extend_from_slice(bad);
        assert!(
            matches!(frames(&input), Err(FrameError::NotWellFormed(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn second_stream_header_is_refused_when_its_start_tag_ends() {
    // A client that restarts the stream on its own: refused at the `>` of the new header, at
    // every split, rather than read as a stanza that swallows the rest of the stream.
    let mut input = HEADER.to_vec();
    input.extend_from_slice(HEADER);
    assert_eq!(same_at_every_split(&input), Err(FrameError::NestedHeader));
    // Whatever its prefix: a client restarting on its own may pick another.
    let mut other = HEADER.to_vec();
    other.extend_from_slice(b"<x:stream xmlns:x='http://etherx.jabber.org/streams'>");
    assert_eq!(frames(&other), Err(FrameError::NestedHeader));
    // The same name deeper inside a stanza is only a name.
    let mut nested = HEADER.to_vec();
    nested.extend_from_slice(b"<iq><stream:stream>x</stream:stream></iq>");
    assert!(frames(&nested).is_ok());
}

#[test]
fn whitespace_before_a_restarted_streams_declaration_is_skipped() {
    // Clients leave a newline after </auth>; it lands before the restarted stream's header.
    let mut framer = Framer::new(FramerLimits::default());
    let first = HEADER;
    let got = framer.next(first).unwrap().unwrap();
    assert_eq!(got.kind, FrameKind::Header);
    framer.restart();
    let again = b"\n \r\n<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>";
    let got = framer.next(again).unwrap().unwrap();
    assert_eq!(got.kind, FrameKind::Header);
    // On a first stream the declaration must come first, as XML says.
    let mut fresh = Framer::new(FramerLimits::default());
    assert!(fresh.next(&again[..]).is_err());
}

#[test]
fn preauth_stanza_limit_applies_until_authenticated() {
    // An unauthenticated peer may not make the daemon hold a large partial stanza.
    let limits = FramerLimits {
        stanza_bytes_max: 1024,
        preauth_stanza_bytes_max: 64,
        ..FramerLimits::default()
    };
    let mut framer = Framer::new(limits);
    let mut buf = HEADER.to_vec();
    let header = framer.next(&buf).unwrap().unwrap();
    buf.drain(..header.end);
    buf.extend_from_slice(b"<auth>");
    buf.extend(std::iter::repeat_n(b'x', 100));
    assert_eq!(
        framer.next(&buf),
        Err(FrameError::LimitExceeded(Limit::PreauthStanzaBytes))
    );
    let mut framer = Framer::new(limits);
    framer.set_authenticated(true);
    let mut buf = HEADER.to_vec();
    let header = framer.next(&buf).unwrap().unwrap();
    buf.drain(..header.end);
    buf.extend_from_slice(b"<a>");
    buf.extend(std::iter::repeat_n(b'x', 100));
    buf.extend_from_slice(b"</a>");
    assert_eq!(framer.next(&buf).unwrap().unwrap().kind, FrameKind::Element);
    // A restart keeps the limit in force.
    framer.restart();
    let mut buf = HEADER.to_vec();
    let header = framer.next(&buf).unwrap().unwrap();
    buf.drain(..header.end);
    buf.extend_from_slice(b"<a>");
    buf.extend(std::iter::repeat_n(b'x', 100));
    buf.extend_from_slice(b"</a>");
    assert_eq!(framer.next(&buf).unwrap().unwrap().kind, FrameKind::Element);
}

#[test]
fn the_framer_stays_small() {
    // Every connection holds one (the README's memory figures count it): the open names'
    // first eight offsets live inline, so most stanzas allocate nothing. 168 bytes today.
    let size = std::mem::size_of::<Framer>();
    assert!(size <= 176, "{size} bytes");
}
