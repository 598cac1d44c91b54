//! The TLS adapter: rustls's unbuffered server connection behind three calls.
//!
//! The unbuffered API leaves every buffer to the caller, so an idle session holds about 3 KiB of
//! rustls state and no record buffers (the buffered `ServerConnection` keeps ~7 KiB of buffer
//! capacity per connection). rustls's next major version replaces this API; keeping all of it in
//! this file makes that move one file's work.
//!
//! Calling order: `read` with the ciphertext received so far (then drop the `consumed` bytes),
//! `encrypt` to append records for plaintext, `close_notify` before closing.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

/// What `read` reports, in the order it happens.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsInput<'a> {
    /// The handshake completed: reported before the first application data.
    Established,
    /// The plaintext of one application-data record.
    Plaintext(&'a [u8]),
    /// The peer sent close_notify.
    PeerClosed,
}

pub struct Tls {
    conn: UnbufferedServerConnection,
    established: bool,
}

/// A TLS failure; the alert for the peer (if any) is already in the outgoing buffer.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(#[from] pub rustls::Error);

impl Tls {
    pub fn new(config: Arc<ServerConfig>) -> Result<Tls, TlsError> {
        Ok(Tls {
            conn: UnbufferedServerConnection::new(config)?,
            established: false,
        })
    }

    pub fn is_established(&self) -> bool {
        self.established
    }

    /// The negotiated version, once the handshake has chosen one.
    pub fn version(&self) -> Option<&'static str> {
        match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            _ => Some("other"),
        }
    }

    /// Processes every complete record in `incoming`: handshake records are answered into
    /// `outgoing`, and what happens is reported to `on_input` in order. Returns the number of
    /// bytes of `incoming` used; the caller drops them.
    pub fn read(
        &mut self,
        incoming: &mut [u8],
        outgoing: &mut Vec<u8>,
        mut on_input: impl FnMut(TlsInput<'_>),
    ) -> Result<usize, TlsError> {
        let mut consumed = 0;
        loop {
            let unread = incoming.get_mut(consumed..).unwrap_or_default();
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(unread);
            let state = match state {
                Ok(state) => state,
                Err(err) => {
                    consumed = consumed.saturating_add(discard);
                    let unread = incoming.get_mut(consumed..).unwrap_or_default();
                    self.flush_alert(unread, outgoing);
                    return Err(err.into());
                }
            };
            let done = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    // Application data implies a finished handshake (early data is disabled),
                    // and it may arrive before rustls reports the traffic state.
                    if !self.established {
                        self.established = true;
                        on_input(TlsInput::Established);
                    }
                    while let Some(record) = traffic.next_record() {
                        on_input(TlsInput::Plaintext(record?.payload));
                    }
                    false
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_record(&mut encode, outgoing);
                    false
                }
                // The records are already queued in `outgoing`, which the caller writes in order.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    false
                }
                ConnectionState::PeerClosed => {
                    on_input(TlsInput::PeerClosed);
                    false
                }
                ConnectionState::WriteTraffic(_) => {
                    if !self.established {
                        self.established = true;
                        on_input(TlsInput::Established);
                    }
                    true
                }
                ConnectionState::BlockedHandshake | ConnectionState::Closed => true,
                // Early data is never enabled; any other future state is unexpected.
                _ => return Err(rustls::Error::General("unexpected TLS state".into()).into()),
            };
            consumed = consumed.saturating_add(discard);
            if done {
                return Ok(consumed);
            }
        }
    }

    /// Appends records carrying `plaintext` to `outgoing`. `incoming` is the unconsumed
    /// ciphertext left by `read`: rustls may hold offsets into it (a handshake message split
    /// across records), so every call must see the same buffer.
    pub fn encrypt(
        &mut self,
        plaintext: &[u8],
        incoming: &mut Vec<u8>,
        outgoing: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        self.with_write_traffic(incoming, outgoing, |traffic, outgoing| {
            append_with(outgoing, |buf| match traffic.encrypt(plaintext, buf) {
                Ok(n) => Ok(n),
                Err(EncryptError::InsufficientSize(e)) => Err(Some(e.required_size)),
                Err(EncryptError::EncryptExhausted) => Err(None),
            })
        })
    }

    /// Appends a close_notify alert to `outgoing` (a no-op before the handshake completes).
    pub fn close_notify(&mut self, incoming: &mut Vec<u8>, outgoing: &mut Vec<u8>) {
        if !self.established {
            return;
        }
        let _ = self.with_write_traffic(incoming, outgoing, |traffic, outgoing| {
            append_with(outgoing, |buf| match traffic.queue_close_notify(buf) {
                Ok(n) => Ok(n),
                Err(EncryptError::InsufficientSize(e)) => Err(Some(e.required_size)),
                Err(EncryptError::EncryptExhausted) => Err(None),
            })
        });
    }

    /// Reaches the `WriteTraffic` state (emitting any pending handshake records first) and
    /// runs `write` in it.
    fn with_write_traffic(
        &mut self,
        incoming: &mut Vec<u8>,
        outgoing: &mut Vec<u8>,
        write: impl FnOnce(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut Vec<u8>,
        ) -> bool,
    ) -> Result<(), TlsError> {
        let mut write = Some(write);
        // `read` processed every complete record, so this only reaches the traffic state; the
        // bounded loop emits handshake records still queued on the way.
        for _ in 0..16 {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(incoming);
            let outcome = match state? {
                ConnectionState::WriteTraffic(mut traffic) => {
                    let written = write.take().is_some_and(|w| w(&mut traffic, outgoing));
                    Some(if written {
                        Ok(())
                    } else {
                        Err(rustls::Error::EncryptError.into())
                    })
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_record(&mut encode, outgoing);
                    None
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                _ => Some(Err(rustls::Error::General(
                    "TLS is not ready to send".into(),
                )
                .into())),
            };
            incoming.drain(..discard);
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
        Err(rustls::Error::General("TLS did not reach the traffic state".into()).into())
    }

    /// After an error rustls queues a fatal alert: emit it so the peer learns why. `incoming` is
    /// what remains of the buffer after the error's discard, as rustls requires.
    fn flush_alert(&mut self, incoming: &mut [u8], outgoing: &mut Vec<u8>) {
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) =
            self.conn.process_tls_records(incoming).state
        {
            encode_record(&mut encode, outgoing);
        }
    }
}

/// Appends one handshake or alert record that rustls asks us to encode.
fn encode_record(
    encode: &mut rustls::unbuffered::EncodeTlsData<'_, rustls::server::ServerConnectionData>,
    outgoing: &mut Vec<u8>,
) {
    append_with(outgoing, |buf| match encode.encode(buf) {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(e)) => Err(Some(e.required_size)),
        Err(EncodeError::AlreadyEncoded) => Err(None),
    });
}

/// Lets `write` fill spare capacity at the end of `out`, growing it when told the size needed.
/// Returns false if `write` failed for another reason.
fn append_with(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> bool {
    let start = out.len();
    let mut room: usize = 1024;
    loop {
        out.resize(start.saturating_add(room), 0);
        match write(out.get_mut(start..).unwrap_or_default()) {
            Ok(written) => {
                out.truncate(start.saturating_add(written));
                return true;
            }
            Err(Some(required)) if required > room => room = required,
            Err(_) => {
                out.truncate(start);
                return false;
            }
        }
    }
}
