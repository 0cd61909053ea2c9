//! Lightkeeper: an embedded Lightning node for merchants, built on LDK and BDK.
//!
//! The [`Node`] embeds a full Lightning node (LDK) and an on-chain wallet (BDK), both stored in
//! one SQLite database. Build one with [`Builder`]:
//!
//! ```no_run
//! use lightkeeper::{Builder, Event, Network};
//! let node = Builder::new()
//!     .network(Network::Regtest)
//!     .storage_dir("/tmp/lightkeeper")
//!     .chain_source_bitcoind_rpc("127.0.0.1", 18443, "user", "password")
//!     .listening_address("127.0.0.1:9735".parse().unwrap())
//!     .build()?;
//! node.start()?;
//! let invoice = node.create_invoice(Some(50_000_000), "coffee", 3600)?;
//! println!("pay me: {invoice}");
//! if let Event::PaymentReceived { amount_msat, .. } = node.wait_next_event() {
//!     println!("received {amount_msat} msat");
//! }
//! node.event_handled()?;
//! node.stop()?;
//! # Ok::<(), lightkeeper::Error>(())
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod backend;
pub mod breaker;
pub mod config;
pub mod db;
mod error;
pub mod events;
pub mod invoice;
pub mod logger;
pub mod merchant;
pub mod node;
pub mod rates;
pub mod reliability;
pub mod tower;
pub mod webhook;

pub use backend::{EmbeddedBackend, LightningBackend};
pub use bitcoin::{FeeRate, Network};
pub use config::Config;
pub use error::Error;
pub use lightning_invoice::Bolt11Invoice;
pub use lightning_types::payment::{PaymentHash, PaymentPreimage};
pub use node::builder::Builder;
pub use node::chain::ChainSourceConfig;
pub use node::events::Event;
pub use node::payments::{PaymentDetails, PaymentDirection, PaymentKind, PaymentStatus};
pub use node::wallet::OnchainBalance;
pub use node::{ChannelDetails, Node, PeerDetails};
