//! Hostile input never panics and never leaves a connection stuck: mutated transcripts of real
//! sessions, delivered in random splits. The generator is deterministic, so a failure replays
//! from its seed.

use super::*;
use crate::xml::{Framer, FramerLimits};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that stress the framer's states when spliced in.
const SPLICES: &[&[u8]] = &[
    b"<",
    b">",
    b"&",
    b"&amp;",
    b"&#x0;",
    b"<!--",
    b"-->",
    b"<![CDATA[",
    b"]]>",
    b"<?",
    b"?>",
    b"'",
    b"\"",
    b"</stream:stream>",
    b"<stream:stream>",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xef\xbf\xbf",
    b" xmlns:x='y'",
    b"/",
    b"<iq type='get' id='x'>",
    b"</iq>",
    b"<LDM_interface version='1.0'>",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
            1 => {
                let splice = SPLICES[rng.below(SPLICES.len())];
                bytes.splice(at..at, splice.iter().copied());
            }
            2 if at < bytes.len() => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => bytes.truncate(at),
            4 if at < bytes.len() => {
                let end = (at + 1 + rng.below(64)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => bytes.insert(at, rng.next() as u8),
        }
    }
    bytes
}

/// Delivers `bytes` in random chunks (through TLS if the pair is secured).
fn deliver_in_pieces(rng: &mut Rng, pair: &mut Pair, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() && !pair.server.is_finished() {
        let n = 1 + rng.below(rest.len().min(97));
        let (chunk, tail) = rest.split_at(n);
        pair.send_bytes(chunk);
        answer_work(pair);
        pair.recv();
        rest = tail;
    }
}

/// Answers what the connection handed out, as the verifier and the handler would: password
/// checks are refused, documents get an (empty) response.
fn answer_work(pair: &mut Pair) {
    for event in pair.events() {
        match event {
            Event::Verify(_) => pair.answer_auth(Err(crate::xmpp::SaslFailure::NotAuthorized)),
            Event::Document(..) => pair
                .server
                .handle_response(pair.now, &crate::ldm::Response::default()),
            _ => {}
        }
    }
}

/// After hostile input the connection has either ended or is waiting for more bytes (never for
/// something that will not come).
fn assert_not_stuck(pair: &mut Pair, seed: u64) {
    pair.recv();
    assert!(
        pair.server.is_finished() || pair.server.wants_input(),
        "seed {seed}: neither finished nor reading"
    );
    // The deadline always ends an unauthenticated connection.
    if !pair.server.is_finished() && !pair.server.is_authenticated() {
        pair.advance(Duration::from_secs(31));
        pair.recv();
        assert!(
            pair.server.is_finished(),
            "seed {seed}: the auth deadline did not end it"
        );
    }
}

const PLAIN_TRANSCRIPT: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";

const SECURE_TRANSCRIPT: &str = "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq> <iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq><presence/><message to='b@example.com'><body>a &lt; b &#x41; <![CDATA[x]]></body></message><LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' ovf:id='ldg1'/></Envelope></data></cmd></LDM_interface></stream:stream>";

#[test]
fn mutated_plaintext_phase_never_panics_or_sticks() {
    for seed in 1..=1500u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let input = mutate(&mut rng, PLAIN_TRANSCRIPT.as_bytes());
        let mut pair = if seed % 3 == 0 {
            Pair::local(Role::Write)
        } else {
            Pair::remote()
        };
        deliver_in_pieces(&mut rng, &mut pair, &input);
        assert_not_stuck(&mut pair, seed);
    }
}

#[test]
fn mutated_stanzas_after_login_never_panic_or_stick() {
    for seed in 1..=600u64 {
        let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
        let input = mutate(&mut rng, SECURE_TRANSCRIPT.as_bytes());
        let mut pair = Pair::remote();
        pair.login();
        deliver_in_pieces(&mut rng, &mut pair, &input);
        answer_work(&mut pair);
        assert_not_stuck(&mut pair, seed);
    }
}

#[test]
fn random_bytes_never_panic_the_framer() {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for _ in 0..20_000 {
        let len = rng.below(64);
        let input: Vec<u8> = (0..len)
            .map(|_| match rng.below(4) {
                0 => b"<>&;/'\"=! ?[]-x:"[rng.below(16)],
                _ => rng.next() as u8,
            })
            .collect();
        let mut framer = Framer::new(FramerLimits {
            stanza_bytes_max: 32,
            preauth_stanza_bytes_max: 32,
            header_bytes_max: 48,
            ..FramerLimits::default()
        });
        let mut buf = Vec::new();
        for chunk in input.chunks(1 + rng.below(8)) {
            buf.extend_from_slice(chunk);
            match framer.next(&buf) {
                Ok(Some(frame)) => {
                    buf.drain(..frame.end);
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
}
