//! The node layer's error type.

use std::fmt;

/// Errors returned by [`crate::Node`] and [`crate::Builder`].
///
/// Every variant carries enough context for an operator to act on it; none of them is returned
/// for a programming error inside the library (those are bugs and are logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The node is not running: call [`crate::Node::start`] first.
    NotRunning,
    /// The node is already running.
    AlreadyRunning,
    /// The storage directory or database could not be opened, read or written.
    Storage(String),
    /// Persisted state could not be decoded (corrupt database or an incompatible version).
    Corrupt(String),
    /// The configuration is invalid; the message names the setting.
    InvalidConfig(String),
    /// The given mnemonic is not a valid BIP39 phrase.
    InvalidMnemonic(String),
    /// The chain source (bitcoind or Esplora) could not be reached or answered with an error.
    ChainSource(String),
    /// The on-chain wallet failed to build, sign or persist a transaction.
    Wallet(String),
    /// Not enough spendable on-chain funds (amount requested and available, in sat).
    InsufficientFunds {
        /// What the operation needed, in sat (including fees where known).
        needed_sat: u64,
        /// What the wallet can spend now, in sat.
        available_sat: u64,
    },
    /// An address string did not parse or belongs to another network.
    InvalidAddress(String),
    /// A node id (public key) string did not parse.
    InvalidNodeId(String),
    /// A socket address did not parse.
    InvalidSocketAddress(String),
    /// Connecting to a peer failed or timed out.
    ConnectionFailed(String),
    /// The peer is not connected; connect first.
    PeerNotConnected(String),
    /// No channel with this id exists.
    UnknownChannel(String),
    /// LDK refused to open, close or use a channel; the message says why.
    ChannelOperation(String),
    /// An amount is zero, too small, too large or missing where it is required.
    InvalidAmount(String),
    /// The invoice string is not a valid BOLT11 invoice for this network.
    InvalidInvoice(String),
    /// The invoice could not be created.
    InvoiceCreation(String),
    /// A payment with this hash was already made or is in flight.
    DuplicatePayment(String),
    /// The payment could not be sent (no route, insufficient capacity, ...).
    PaymentSending(String),
    /// No payment with this hash is known.
    UnknownPayment(String),
    /// An operation was refused because its input is invalid; the message says which one.
    InvalidInput(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotRunning => write!(f, "the node is not running; call start() first"),
            Error::AlreadyRunning => write!(f, "the node is already running"),
            Error::Storage(m) => write!(f, "storage error: {m}"),
            Error::Corrupt(m) => write!(f, "persisted state is unreadable: {m}"),
            Error::InvalidConfig(m) => write!(f, "invalid configuration: {m}"),
            Error::InvalidMnemonic(m) => write!(f, "invalid BIP39 mnemonic: {m}"),
            Error::ChainSource(m) => write!(f, "chain source error: {m}"),
            Error::Wallet(m) => write!(f, "on-chain wallet error: {m}"),
            Error::InsufficientFunds { needed_sat, available_sat } => write!(
                f,
                "insufficient on-chain funds: {needed_sat} sat needed, {available_sat} sat spendable"
            ),
            Error::InvalidAddress(m) => write!(f, "invalid address: {m}"),
            Error::InvalidNodeId(m) => write!(f, "invalid node id: {m}"),
            Error::InvalidSocketAddress(m) => write!(f, "invalid socket address: {m}"),
            Error::ConnectionFailed(m) => write!(f, "connection failed: {m}"),
            Error::PeerNotConnected(m) => write!(f, "peer {m} is not connected"),
            Error::UnknownChannel(m) => write!(f, "unknown channel {m}"),
            Error::ChannelOperation(m) => write!(f, "channel operation failed: {m}"),
            Error::InvalidAmount(m) => write!(f, "invalid amount: {m}"),
            Error::InvalidInvoice(m) => write!(f, "invalid invoice: {m}"),
            Error::InvoiceCreation(m) => write!(f, "could not create invoice: {m}"),
            Error::DuplicatePayment(m) => write!(f, "payment {m} was already sent or is in flight"),
            Error::PaymentSending(m) => write!(f, "payment failed to send: {m}"),
            Error::UnknownPayment(m) => write!(f, "unknown payment {m}"),
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<lightning::io::Error> for Error {
    fn from(e: lightning::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}
