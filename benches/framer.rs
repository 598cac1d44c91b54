//! Framer throughput (MB/s) by read size: the caller's loop of append, frame, drop, over a
//! realistic stream of LDM documents, iq stanzas and keepalives. A second group also builds
//! the element tree of each frame (framer + quick-xml tokenizer), which is what a connection
//! does per stanza.
//!
//! `cargo bench --bench framer`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ldmd::xml::{Element, FrameKind, Framer, FramerLimits, NamespaceScope};

const READ_SIZES: [usize; 6] = [16, 128, 1024, 4096, 16 * 1024, 64 * 1024];

/// About 1 MB of stream content after a header.
fn stream() -> Vec<u8> {
    let mut s = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>".to_vec();
    let document = r#"<LDM_interface version="1.3"><cmd><action>add-vcpu</action><data version="3.0"><Envelope><References/><Content xsi:type="ovf:VirtualSystem_Type" id="ldg1"><Section xsi:type="ovf:VirtualHardwareSection_Type"><Item><rasd:OtherResourceType>cpu</rasd:OtherResourceType><rasd:AllocationUnits>8</rasd:AllocationUnits><gprop:GenericProperty key="wcore">0</gprop:GenericProperty></Item></Section></Content></Envelope></data></cmd></LDM_interface>"#;
    let ping = "<iq type='get' id='ping-123456'><ping xmlns='urn:xmpp:ping'/></iq>";
    let message =
        "<message to='bob@localhost'><body>x &lt; y &amp; z &#169; caf\u{e9}</body></message>";
    while s.len() < 1_000_000 {
        s.extend_from_slice(document.as_bytes());
        s.extend_from_slice(b"\n ");
        s.extend_from_slice(ping.as_bytes());
        s.extend_from_slice(message.as_bytes());
    }
    s
}

/// Feeds `input` in reads of `read` bytes, framing as a connection does; returns frames seen.
fn frame_all(input: &[u8], read: usize, parse: bool) -> usize {
    let mut framer = Framer::new(FramerLimits::default());
    framer.set_authenticated(true);
    let mut buf = Vec::with_capacity(2 * read.max(4096));
    let scope = NamespaceScope::client();
    let mut frames = 0;
    for chunk in input.chunks(read) {
        buf.extend_from_slice(chunk);
        let mut consumed = 0;
        while let Some(frame) = framer.next(&buf[consumed..]).expect("valid stream") {
            if parse && frame.kind == FrameKind::Element {
                let text = std::str::from_utf8(&buf[consumed + frame.start..consumed + frame.end])
                    .unwrap();
                black_box(Element::parse(text, &scope).expect("element"));
            }
            consumed += frame.end;
            frames += 1;
        }
        buf.drain(..consumed);
    }
    frames
}

fn framer(c: &mut Criterion) {
    let input = stream();
    for (group_name, parse) in [("framer", false), ("framer+tokenizer", true)] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Bytes(input.len() as u64));
        for read in READ_SIZES {
            group.bench_with_input(BenchmarkId::from_parameter(read), &read, |b, &read| {
                b.iter(|| frame_all(black_box(&input), read, parse))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, framer);
criterion_main!(benches);
