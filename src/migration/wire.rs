//! The internal documents one ldmd sends another during a migration. They are ordinary
//! `LDM_interface` documents (so they go through the target's normal pipeline: framing, limits,
//! authorization, batching, durable commit before the answer), with one cmd, one data object
//! naming the domain on the target, and the migration's fields as `ldom_info` properties:
//!
//! ```text
//! <cmd><action>migrate-reserve</action><options>force</options>
//!   <data version="3.0"><Envelope><Content id="ldg1-new"> ldom_info:
//!     migration-protocol = 1            every message
//!     migration-id       = 32 hex       every message
//!     token              = 64 hex       transfer, commit, resolve, forget
//!     source-daemon      = 32 hex       check, reserve
//!     definition         = base64(JSON) check, reserve: the domain as the source stores it
//!     seq, chunks, chunk = n, n, base64 transfer: one chunk of the modelled runtime state
//!     chunks, digest     = n, 64 hex    commit: SHA-256 over every chunk, in order
//! ```
//!
//! The target answers in the same shape: `token` (reserve), `outcome` = committed | aborted
//! (commit, resolve), with status `success`. A `failure` is never a definitive outcome.

use base64::Engine as _;

use super::{MigrationId, Outcome, PROTOCOL_VERSION, Token, decode_hex, hex};
use crate::ldm::action::Action;
use crate::ldm::document::{
    Cmd, Content, Data, Document, Envelope, Item, Property, Section, SectionKind,
};
use crate::ldm::reply::Reply;
use crate::ldm::write::DATA_VERSION;

/// The `LDM_interface` version of the internal documents.
const DOCUMENT_VERSION: &str = "1.3";

/// Bytes of modelled runtime state per chunk.
pub const CHUNK_BYTES: usize = 4096;

/// What a source asks a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Every check of reserve, changing nothing (a dry run).
    Check(Offer),
    Reserve(Offer),
    Transfer {
        token: Token,
        seq: u32,
        chunks: u32,
        chunk: Vec<u8>,
    },
    Commit {
        token: Token,
        chunks: u32,
        digest: [u8; 32],
    },
    Resolve {
        token: Token,
    },
    Forget {
        token: Token,
    },
}

/// The domain offered to the target (check and reserve).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The daemon the domain comes from: a daemon refuses a migration from itself.
    pub source_daemon: u128,
    /// The domain's record on the source, as JSON (see `registry::model::Domain`).
    pub definition: Vec<u8>,
    /// `force`: soft checks (a console port taken) are overridden.
    pub force: bool,
}

/// One message: the migration, the name the domain has on the target, and the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: MigrationId,
    /// The domain's name on the target.
    pub domain: String,
    pub request: Request,
}

impl Message {
    pub fn action(&self) -> Action {
        match self.request {
            Request::Check(_) => Action::MigrateCheck,
            Request::Reserve(_) => Action::MigrateReserve,
            Request::Transfer { .. } => Action::MigrateTransfer,
            Request::Commit { .. } => Action::MigrateCommit,
            Request::Resolve { .. } => Action::MigrateResolve,
            Request::Forget { .. } => Action::MigrateForget,
        }
    }

    /// The request document.
    pub fn to_document(&self) -> Document {
        let mut props = vec![
            prop("migration-protocol", PROTOCOL_VERSION.to_string()),
            prop("migration-id", self.id.to_string()),
        ];
        let mut options = Vec::new();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        match &self.request {
            Request::Check(offer) | Request::Reserve(offer) => {
                props.push(prop(
                    "source-daemon",
                    format!("{:032x}", offer.source_daemon),
                ));
                props.push(prop("definition", b64(&offer.definition)));
                if offer.force {
                    options.push("force".to_owned());
                }
            }
            Request::Transfer {
                token,
                seq,
                chunks,
                chunk,
            } => {
                props.push(prop("token", token.to_hex()));
                props.push(prop("seq", seq.to_string()));
                props.push(prop("chunks", chunks.to_string()));
                props.push(prop("chunk", b64(chunk)));
            }
            Request::Commit {
                token,
                chunks,
                digest,
            } => {
                props.push(prop("token", token.to_hex()));
                props.push(prop("chunks", chunks.to_string()));
                props.push(prop("digest", hex(digest)));
            }
            Request::Resolve { token } | Request::Forget { token } => {
                props.push(prop("token", token.to_hex()));
            }
        }
        Document {
            version: Some(DOCUMENT_VERSION.into()),
            cmds: vec![Cmd {
                action: Some(self.action().into()),
                options,
                arguments: Vec::new(),
                data: vec![on_domain(&self.domain, info(props))],
                malformed: None,
            }],
            malformed: None,
        }
    }

    /// The message in `action`'s cmd and its object `data`, as the target reads it. The
    /// refusal says what is wrong in the operator's words.
    pub fn parse(action: Action, cmd: &Cmd, data: &Data) -> Result<Message, String> {
        let content = match data.envelope.as_ref().map(|e| &e.contents[..]) {
            Some([content]) => content,
            _ => return Err(format!("{action} needs one Content naming the domain")),
        };
        let mut info = content
            .sections
            .iter()
            .flat_map(|s| &s.items)
            .filter(|i| i.resource_type == "ldom_info");
        let (Some(info), None) = (info.next(), info.next()) else {
            return Err(format!("{action} needs one ldom_info Item"));
        };
        let field = |key: &str| {
            info.property(key)
                .map(str::trim)
                .ok_or_else(|| format!("{action} needs the '{key}' property"))
        };
        let version = field("migration-protocol")?;
        if version != PROTOCOL_VERSION.to_string() {
            return Err(format!(
                "This ldmd speaks migration protocol {PROTOCOL_VERSION}; the source sent protocol {version}"
            ));
        }
        let id = MigrationId::parse(field("migration-id")?)
            .ok_or_else(|| format!("{action}: migration-id must be 32 hex digits"))?;
        let token = || {
            Token::parse(field("token")?)
                .ok_or_else(|| format!("{action}: token must be 64 hex digits"))
        };
        let number = |key: &str| {
            field(key)?
                .parse::<u32>()
                .map_err(|_| format!("{action}: {key} must be a whole number"))
        };
        let b64 = |key: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(field(key)?)
                .map_err(|_| format!("{action}: {key} must be base64"))
        };
        let offer = || -> Result<Offer, String> {
            let daemon = decode_hex::<16>(field("source-daemon")?)
                .ok_or_else(|| format!("{action}: source-daemon must be 32 hex digits"))?;
            Ok(Offer {
                source_daemon: u128::from_be_bytes(daemon),
                definition: b64("definition")?,
                force: cmd
                    .options
                    .iter()
                    .chain(&cmd.arguments)
                    .any(|o| o == "force" || o == "-f"),
            })
        };
        let request = match action {
            Action::MigrateCheck => Request::Check(offer()?),
            Action::MigrateReserve => Request::Reserve(offer()?),
            Action::MigrateTransfer => {
                let (seq, chunks) = (number("seq")?, number("chunks")?);
                if seq >= chunks {
                    return Err(format!("{action}: chunk {seq} of {chunks} is past the end"));
                }
                Request::Transfer {
                    token: token()?,
                    seq,
                    chunks,
                    chunk: b64("chunk")?,
                }
            }
            Action::MigrateCommit => Request::Commit {
                token: token()?,
                chunks: number("chunks")?,
                digest: decode_hex::<32>(field("digest")?)
                    .ok_or_else(|| format!("{action}: digest must be 64 hex digits"))?,
            },
            Action::MigrateResolve => Request::Resolve { token: token()? },
            Action::MigrateForget => Request::Forget { token: token()? },
            other => return Err(format!("{other} is not a migration message")),
        };
        Ok(Message {
            id,
            domain: content.id.clone(),
            request,
        })
    }
}

/// What the target answered, as the source reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A success, with the answer's `token` and `outcome` properties when it had them, and its
    /// warnings.
    Success {
        token: Option<Token>,
        outcome: Option<Outcome>,
        warnings: Vec<String>,
    },
    /// A refusal: its reasons. Never an outcome.
    Failure(Vec<String>),
}

impl Answer {
    pub fn from_reply(action: Action, reply: &Reply) -> Answer {
        let Some(cmd) = reply.cmd(action) else {
            let reasons = reply.failures().into_iter().map(str::to_owned).collect();
            return Answer::Failure(reasons);
        };
        let object = cmd.data.first();
        let succeeded = reply.status == crate::ldm::Status::Success
            && object.is_some_and(|d| d.status == crate::ldm::Status::Success);
        if !succeeded {
            return Answer::Failure(reply.failures().into_iter().map(str::to_owned).collect());
        }
        let info = object
            .and_then(|d| d.data.envelope.as_ref())
            .and_then(|e| e.contents.first())
            .and_then(|c| {
                c.sections
                    .iter()
                    .flat_map(|s| &s.items)
                    .find(|i| i.resource_type == "ldom_info")
            });
        let property = |key: &str| info.and_then(|i| i.property(key)).map(str::trim);
        Answer::Success {
            token: property("token").and_then(Token::parse),
            outcome: property("outcome").and_then(Outcome::parse),
            warnings: reply.warnings().into_iter().map(str::to_owned).collect(),
        }
    }

    /// Whether the answer came from a daemon that knows the internal actions: an ldmd older
    /// than migration answers them "Unknown action 'migrate-…'".
    pub fn speaks_migration(&self) -> bool {
        match self {
            Answer::Failure(reasons) => !reasons
                .iter()
                .any(|r| r.starts_with("Unknown action 'migrate-")),
            Answer::Success { .. } => true,
        }
    }
}

/// The object a target answers with: the domain named, and `props` in its ldom_info.
pub fn answer_data(domain: &str, props: Vec<(&str, String)>) -> Data {
    on_domain(
        domain,
        info(props.into_iter().map(|(k, v)| prop(k, v)).collect()),
    )
}

/// SHA-256 of the modelled runtime state, chunk by chunk (the target computes the same as the
/// chunks arrive).
pub fn chunk_digest_update(context: &mut ring::digest::Context, seq: u32, chunk: &[u8]) {
    context.update(&seq.to_be_bytes());
    context.update(chunk);
}

/// Chunk `seq` of migration `id`'s modelled runtime state: bytes that only this migration and
/// this position produce, so a chunk lost, repeated or reordered changes the digest.
pub fn modelled_chunk(id: MigrationId, seq: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHUNK_BYTES);
    let mut block: u32 = 0;
    while out.len() < CHUNK_BYTES {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(&id.0.to_be_bytes());
        context.update(&seq.to_be_bytes());
        context.update(&block.to_be_bytes());
        out.extend_from_slice(context.finish().as_ref());
        block = block.wrapping_add(1);
    }
    out.truncate(CHUNK_BYTES);
    out
}

fn prop(key: &str, value: String) -> Property {
    Property {
        key: key.into(),
        value,
    }
}

fn info(properties: Vec<Property>) -> Item {
    Item {
        resource_type: "ldom_info".into(),
        properties,
        ..Item::default()
    }
}

fn on_domain(domain: &str, item: Item) -> Data {
    Data {
        version: Some(DATA_VERSION.into()),
        envelope: Some(Envelope {
            contents: vec![Content {
                id: domain.into(),
                sections: vec![Section {
                    kind: SectionKind::ResourceAllocation,
                    items: vec![item],
                }],
            }],
            sections: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: &Message) -> Message {
        let document = message.to_document();
        let mut xml = Vec::new();
        crate::ldm::write::write_request(&mut xml, &document);
        let xml = String::from_utf8(xml).unwrap();
        let root = crate::xml::Element::parse(&xml, &crate::xml::NamespaceScope::client()).unwrap();
        let parsed = crate::ldm::parse_document(&root);
        let cmd = &parsed.cmds[0];
        let action = cmd.action.as_ref().and_then(|a| a.known()).unwrap();
        Message::parse(action, cmd, &cmd.data[0]).unwrap()
    }

    #[test]
    fn every_message_survives_the_wire() {
        let id = MigrationId(0xfeed_0000_0000_0000_0000_0000_0000_0001);
        let token = Token([0xab; 32]);
        let offer = Offer {
            source_daemon: 0x1234,
            definition: br#"{"name":"ldg1"}"#.to_vec(),
            force: true,
        };
        for request in [
            Request::Check(offer.clone()),
            Request::Reserve(Offer {
                force: false,
                ..offer
            }),
            Request::Transfer {
                token: token.clone(),
                seq: 2,
                chunks: 3,
                chunk: modelled_chunk(id, 2),
            },
            Request::Commit {
                token: token.clone(),
                chunks: 3,
                digest: [7; 32],
            },
            Request::Resolve {
                token: token.clone(),
            },
            Request::Forget { token },
        ] {
            let message = Message {
                id,
                domain: "ldg1-new".into(),
                request,
            };
            assert_eq!(round_trip(&message), message);
        }
    }

    #[test]
    fn a_daemon_older_than_migration_is_recognised_by_its_answer() {
        let message = Message {
            id: MigrationId(1),
            domain: "ldg1".into(),
            request: Request::Resolve {
                token: Token([1; 32]),
            },
        };
        let answered = |reason: &str| {
            let response = crate::ldm::handler::respond_to_each_cmd(&message.to_document(), |_| {
                reason.to_owned()
            });
            let mut out = Vec::new();
            crate::ldm::write_response(&mut out, &response);
            let reply = Reply::from_xml(std::str::from_utf8(&out).unwrap()).unwrap();
            Answer::from_reply(Action::MigrateResolve, &reply)
        };
        // The words of this daemon's own registry for an action it does not know.
        let old = answered("Unknown action 'migrate-resolve'");
        assert!(!old.speaks_migration(), "{old:?}");
        let refusal = answered("No reservation for this migration exists on the target");
        assert!(refusal.speaks_migration(), "{refusal:?}");
        assert!(matches!(refusal, Answer::Failure(_)));
    }

    #[test]
    fn a_message_of_another_protocol_or_with_bad_fields_is_refused_in_words() {
        let message = Message {
            id: MigrationId(1),
            domain: "ldg1".into(),
            request: Request::Resolve {
                token: Token([1; 32]),
            },
        };
        let tampered = |key: usize, value: &str| {
            let mut document = message.to_document();
            let cmd = &mut document.cmds[0];
            let item = &mut cmd.data[0].envelope.as_mut().unwrap().contents[0].sections[0].items[0];
            item.properties[key].value = value.into();
            let cmd = document.cmds.remove(0);
            Message::parse(Action::MigrateResolve, &cmd, &cmd.data[0])
        };
        assert_eq!(
            tampered(0, "2").unwrap_err(),
            "This ldmd speaks migration protocol 1; the source sent protocol 2"
        );
        assert_eq!(
            tampered(2, "nope").unwrap_err(),
            "migrate-resolve: token must be 64 hex digits"
        );
        let document = message.to_document();
        let cmd = &document.cmds[0];
        assert!(Message::parse(Action::ListDomain, cmd, &cmd.data[0]).is_err());
    }

    #[test]
    fn chunks_differ_by_migration_and_position() {
        let a = modelled_chunk(MigrationId(1), 0);
        assert_eq!(a.len(), CHUNK_BYTES);
        assert_ne!(a, modelled_chunk(MigrationId(1), 1));
        assert_ne!(a, modelled_chunk(MigrationId(2), 0));
        assert_eq!(a, modelled_chunk(MigrationId(1), 0));
    }
}
