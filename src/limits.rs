//! Every limit the daemon enforces, named by its config key (which is also its metric label).
//!
//! A limit that fires is counted in `ldmd_limit_hits_total{limit="<key>"}`; the defaults live in
//! `config::Limits` and are documented in the README.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Largest top-level element.
    StanzaBytes,
    /// Largest stream header (XML declaration included).
    HeaderBytes,
    /// Deepest element nesting in a stanza.
    Depth,
    /// Most attributes on one element.
    Attributes,
    /// Longest attribute value.
    AttributeValueBytes,
    /// Longest element or attribute name.
    NameBytes,
    /// SASL attempts per stream before the stream is closed.
    SaslAttempts,
    /// Time from TCP accept to authentication.
    AuthTimeout,
    /// Time without traffic from the peer.
    IdleTimeout,
    /// Open TCP connections.
    Connections,
    /// Open Unix-socket connections.
    UnixConnections,
    /// LDM documents handed off and not yet answered, per connection (back-pressure, not an error).
    RequestsInFlight,
    /// Time a peer may take to accept bytes we are writing.
    SendTimeout,
    /// Password checks waiting for a verifier thread.
    AuthQueue,
    /// Events waiting for one subscriber's connection to take them.
    EventQueue,
    /// Time documents in flight may take to be answered once shutdown begins.
    ShutdownDrain,
}

impl Limit {
    pub const ALL: [Limit; 16] = [
        Limit::StanzaBytes,
        Limit::HeaderBytes,
        Limit::Depth,
        Limit::Attributes,
        Limit::AttributeValueBytes,
        Limit::NameBytes,
        Limit::SaslAttempts,
        Limit::AuthTimeout,
        Limit::IdleTimeout,
        Limit::Connections,
        Limit::UnixConnections,
        Limit::RequestsInFlight,
        Limit::SendTimeout,
        Limit::AuthQueue,
        Limit::EventQueue,
        Limit::ShutdownDrain,
    ];

    /// The config key that sets this limit, also used as the metric label.
    pub fn key(self) -> &'static str {
        match self {
            Limit::StanzaBytes => "stanza_bytes_max",
            Limit::HeaderBytes => "header_bytes_max",
            Limit::Depth => "depth_max",
            Limit::Attributes => "attributes_max",
            Limit::AttributeValueBytes => "attribute_value_bytes_max",
            Limit::NameBytes => "name_bytes_max",
            Limit::SaslAttempts => "sasl_attempts_max",
            Limit::AuthTimeout => "auth_timeout_secs",
            Limit::IdleTimeout => "idle_timeout_secs",
            Limit::Connections => "connections_max",
            Limit::UnixConnections => "unix_connections_max",
            Limit::RequestsInFlight => "requests_in_flight_max",
            Limit::SendTimeout => "send_timeout_secs",
            Limit::AuthQueue => "auth_queue_max",
            Limit::EventQueue => "event_queue_max",
            Limit::ShutdownDrain => "shutdown_drain_secs",
        }
    }
}
