//! One XMPP client session, as far as a load test needs: STARTTLS, SASL PLAIN, bind, and then
//! requests that wait for a marker in the reply. Parsing is deliberately loose (substring
//! markers): the load generator measures the server, it does not validate it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::stanza;

/// How to reach and log in to the server.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub domain: String,
    pub user: Option<String>,
    pub password: String,
    pub tls: Arc<rustls::ClientConfig>,
    /// Local source address (spreads connections over 127.0.0.0/8 when ports run short).
    pub source: Option<IpAddr>,
    pub timeout: Duration,
}

pub struct Session {
    stream: TlsStream<TcpStream>,
    /// Received and not yet consumed.
    buf: Vec<u8>,
    /// The server's domain, the `to` of our pings.
    domain: String,
}

#[derive(Debug)]
pub struct SessionError(pub String);

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(what: impl std::fmt::Display) -> SessionError {
    SessionError(what.to_string())
}

impl Session {
    /// Connects, secures the stream and (when a user is given) authenticates and binds.
    pub async fn open(target: &Target) -> Result<Session, SessionError> {
        tokio::time::timeout(target.timeout, Session::open_inner(target))
            .await
            .map_err(|_| err("timed out opening the session"))?
    }

    async fn open_inner(target: &Target) -> Result<Session, SessionError> {
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(err)?;
        if let Some(source) = target.source {
            socket.bind(SocketAddr::new(source, 0)).map_err(err)?;
        }
        let mut tcp = socket
            .connect(target.addr)
            .await
            .map_err(|e| err(format!("connect: {e}")))?;
        tcp.set_nodelay(true).map_err(err)?;
        let header = header(&target.domain);
        let mut buf = Vec::new();
        tcp.write_all(header.as_bytes()).await.map_err(err)?;
        read_until(&mut tcp, &mut buf, b"</stream:features>").await?;
        tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await
            .map_err(err)?;
        read_until(&mut tcp, &mut buf, b"<proceed").await?;
        let name = ServerName::try_from(target.domain.clone()).map_err(err)?;
        let stream = TlsConnector::from(target.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| err(format!("TLS: {e}")))?;
        let mut session = Session {
            stream,
            buf: Vec::new(),
            domain: target.domain.clone(),
        };
        session.send(header.as_bytes()).await?;
        session.wait(b"</stream:features>").await?;
        if let Some(user) = &target.user {
            let message = base64::engine::general_purpose::STANDARD
                .encode(format!("\0{user}\0{}", target.password));
            let auth = format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{message}</auth>"
            );
            session.send(auth.as_bytes()).await?;
            let answer = session.wait(b"/>").await?;
            if !answer.contains("<success") {
                return Err(err(format!("authentication failed: {answer}")));
            }
            session.send(header.as_bytes()).await?;
            session.wait(b"</stream:features>").await?;
            session.send(b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>").await?;
            session.wait(b"</iq>").await?;
        }
        Ok(session)
    }

    pub async fn send(&mut self, data: &[u8]) -> Result<(), SessionError> {
        self.stream.write_all(data).await.map_err(err)?;
        self.stream.flush().await.map_err(err)
    }

    /// Reads until `marker`; returns everything up to and including it.
    pub async fn wait(&mut self, marker: &[u8]) -> Result<String, SessionError> {
        read_until(&mut self.stream, &mut self.buf, marker).await
    }

    /// Sends one LDM document and reads up to the end of its reply, which a server sends before
    /// anything that answers a later document (replies come in order).
    pub async fn request(&mut self, document: &[u8]) -> Result<String, SessionError> {
        self.send(document).await?;
        self.wait(b"</LDM_interface>").await
    }

    /// Sends an XEP-0199 ping to the server and reads until its answer, skipping any other
    /// stanza; says whether the answer was a `result` (not an `error`).
    pub async fn ping(&mut self, id: &str) -> Result<bool, SessionError> {
        let iq = format!(
            "<iq type='get' id='{id}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            self.domain
        );
        self.send(iq.as_bytes()).await?;
        loop {
            let element = self.next_element().await?;
            if element.starts_with("<stream:error") {
                return Err(err(format!("stream error: {element}")));
            }
            if element.starts_with("<iq") && stanza::attr(&element, "id") == Some(id) {
                return Ok(stanza::attr(&element, "type") == Some("result"));
            }
        }
    }

    /// The next whole top-level element the server sends.
    async fn next_element(&mut self) -> Result<String, SessionError> {
        loop {
            if let Some(range) = stanza::first_element(&self.buf) {
                let element = String::from_utf8_lossy(&self.buf[range.clone()]).into_owned();
                self.buf.drain(..range.end);
                return Ok(element);
            }
            if self.buf.trim_ascii_start().starts_with(b"</") {
                // An end tag at the top level can only close the stream.
                return Err(err("closed by the server: </stream:stream>"));
            }
            read_more(&mut self.stream, &mut self.buf).await?;
        }
    }

    /// Reads up to the end of the next `LDM_event` (a subscribed stream receives nothing else
    /// unless it asks). Cancel-safe: bytes read stay in the buffer.
    pub async fn next_event(&mut self) -> Result<String, SessionError> {
        self.wait(b"</LDM_event>").await
    }

    /// A whitespace keepalive (RFC 6120 §4.6.1), for a stream that only listens.
    pub async fn keepalive(&mut self) -> Result<(), SessionError> {
        self.send(b" ").await
    }

    /// Ends the stream politely.
    pub async fn close(mut self) {
        let _ = self.send(b"</stream:stream>").await;
        let _ = self.stream.shutdown().await;
    }
}

pub fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

async fn read_until<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    marker: &[u8],
) -> Result<String, SessionError> {
    loop {
        if let Some(at) = buf.windows(marker.len()).position(|w| w == marker) {
            let rest = buf.split_off(at + marker.len());
            let found = std::mem::replace(buf, rest);
            let text = String::from_utf8_lossy(&found).into_owned();
            if text.contains("<stream:error>") {
                return Err(err(format!("stream error: {text}")));
            }
            return Ok(text);
        }
        read_more(stream, buf).await?;
    }
}

/// Appends one read's worth to `buf`; the end of the stream is an error that shows what was
/// left unread. Cancel-safe: nothing is appended unless the read completed.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(), SessionError> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await.map_err(err)?;
    if n == 0 {
        let seen = String::from_utf8_lossy(buf).into_owned();
        return Err(err(format!("closed by the server: {seen}")));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// TLS for the client: the server's certificate from a file, or no verification at all.
pub fn client_tls(
    ca: Option<&std::path::Path>,
    insecure: bool,
    resumption: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let path = ca.ok_or("give --ca FILE (the server's certificate) or --insecure")?;
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    if !resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// Accepts any certificate (`--insecure`): for load tests against self-signed servers only.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
