//! The on-chain wallet (BDK, persisted in the node's SQLite file) and the keys manager that
//! sends LDK's destination and shutdown scripts to it.

use std::sync::{Arc, Mutex, MutexGuard};

use bdk_wallet::chain::ChainPosition;
use bdk_wallet::event::WalletEvent;
use bdk_wallet::template::Bip84;
use bdk_wallet::{KeychainKind, PersistedWallet, SignOptions};
use bitcoin::bip32::Xpriv;
use bitcoin::blockdata::locktime::absolute::LockTime;
use bitcoin::key::Secp256k1;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::ecdh::SharedSecret;
use bitcoin::secp256k1::ecdsa::{RecoverableSignature, Signature};
use bitcoin::secp256k1::{All, PublicKey, Scalar};
use bitcoin::{Address, Amount, FeeRate, Network, ScriptBuf, Transaction, TxOut, WPubkeyHash};
use lightning::chain::{BestBlock, Listen};
use lightning::events::bump_transaction::sync::WalletSourceSync;
use lightning::events::bump_transaction::Utxo;
use lightning::ln::inbound_payment::ExpandedKey;
use lightning::ln::msgs::UnsignedGossipMessage;
use lightning::ln::script::ShutdownScript;
use lightning::sign::{
    ChangeDestinationSource, EntropySource, InMemorySigner, KeysManager, NodeSigner, OutputSpender,
    PeerStorageKey, ReceiveAuthKey, Recipient, SignerProvider, SpendableOutputDescriptor,
};
use lightning_invoice::RawBolt11Invoice;
use rusqlite::Connection;

use super::events::{Event, EventQueue};
use crate::Error;

/// On-chain balances, in sat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnchainBalance {
    /// Confirmed funds.
    pub confirmed_sat: u64,
    /// Unconfirmed funds (our own change and incoming transactions).
    pub unconfirmed_sat: u64,
    /// What [`crate::Node::send_onchain`] can spend now: confirmed plus our own unconfirmed
    /// change, less the reserve kept for fee-bumping anchor channels.
    pub spendable_sat: u64,
    /// The reserve kept back for anchor channels' fee bumping.
    pub anchor_reserve_sat: u64,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Newly confirmed transactions that brought the wallet more than they spent, with the net
/// amount received in sat.
fn receipts(inner: &Inner, events: Vec<WalletEvent>) -> Vec<(bitcoin::Txid, u64)> {
    events
        .into_iter()
        .filter_map(|ev| match ev {
            WalletEvent::TxConfirmed {
                txid,
                tx,
                old_block_time: None,
                ..
            } => {
                let (sent, received) = inner.wallet.sent_and_received(&tx);
                (received > sent).then(|| (txid, (received - sent).to_sat()))
            }
            _ => None,
        })
        .collect()
}

struct Inner {
    wallet: PersistedWallet<Connection>,
    conn: Connection,
}

/// The node's BDK wallet.
pub(crate) struct Wallet {
    inner: Mutex<Inner>,
    events: Arc<EventQueue>,
    network: Network,
}

fn werr(e: impl std::fmt::Display) -> Error {
    Error::Wallet(e.to_string())
}

impl Wallet {
    /// Loads the wallet from `conn` (the node's database), creating it on first start.
    pub(crate) fn load_or_create(
        mut conn: Connection,
        master: &Xpriv,
        network: Network,
        events: Arc<EventQueue>,
    ) -> Result<Self, Error> {
        let external = Bip84(*master, KeychainKind::External);
        let internal = Bip84(*master, KeychainKind::Internal);
        let loaded = bdk_wallet::Wallet::load()
            .descriptor(KeychainKind::External, Some(external.clone()))
            .descriptor(KeychainKind::Internal, Some(internal.clone()))
            .extract_keys()
            .check_network(network)
            .load_wallet(&mut conn)
            .map_err(|e| Error::Corrupt(format!("wallet: {e}")))?;
        let wallet = match loaded {
            Some(w) => w,
            None => bdk_wallet::Wallet::create(external, internal)
                .network(network)
                .create_wallet(&mut conn)
                .map_err(|e| Error::Storage(format!("cannot create wallet: {e}")))?,
        };
        Ok(Self {
            inner: Mutex::new(Inner { wallet, conn }),
            events,
            network,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(inner: &mut Inner) -> Result<(), Error> {
        let Inner { wallet, conn } = inner;
        wallet
            .persist(conn)
            .map_err(|e| Error::Storage(format!("wallet persist: {e}")))?;
        Ok(())
    }

    /// The block the wallet has seen last.
    pub(crate) fn best_block(&self) -> BestBlock {
        let cp = self.lock().wallet.latest_checkpoint();
        BestBlock {
            block_hash: cp.hash(),
            height: cp.height(),
        }
    }

    /// A fresh receive address.
    pub(crate) fn new_address(&self) -> Result<Address, Error> {
        let mut inner = self.lock();
        let addr = inner
            .wallet
            .reveal_next_address(KeychainKind::External)
            .address;
        Self::persist(&mut inner)?;
        Ok(addr)
    }

    /// A fresh change address.
    pub(crate) fn new_internal_address(&self) -> Result<Address, Error> {
        let mut inner = self.lock();
        let addr = inner
            .wallet
            .next_unused_address(KeychainKind::Internal)
            .address;
        Self::persist(&mut inner)?;
        Ok(addr)
    }

    /// Balances, with `reserve_sat` kept back from the spendable figure.
    pub(crate) fn balance(&self, reserve_sat: u64) -> OnchainBalance {
        let b = self.lock().wallet.balance();
        let spendable = b.trusted_spendable().to_sat();
        OnchainBalance {
            confirmed_sat: b.confirmed.to_sat(),
            unconfirmed_sat: (b.trusted_pending + b.untrusted_pending).to_sat(),
            spendable_sat: spendable.saturating_sub(reserve_sat),
            anchor_reserve_sat: reserve_sat,
        }
    }

    /// Parses an address string and checks it belongs to the wallet's network.
    pub(crate) fn parse_address(&self, s: &str) -> Result<Address, Error> {
        let a: Address<bitcoin::address::NetworkUnchecked> = s
            .parse()
            .map_err(|e| Error::InvalidAddress(format!("{s}: {e}")))?;
        a.require_network(self.network)
            .map_err(|_| Error::InvalidAddress(format!("{s} is not a {} address", self.network)))
    }

    fn sign_and_record(inner: &mut Inner, mut psbt: Psbt) -> Result<Transaction, Error> {
        let finalized = inner
            .wallet
            .sign(&mut psbt, SignOptions::default())
            .map_err(werr)?;
        if !finalized {
            return Err(Error::Wallet("could not sign every input".into()));
        }
        let tx = psbt.extract_tx().map_err(werr)?;
        inner
            .wallet
            .apply_unconfirmed_txs([(tx.clone(), now_unix())]);
        Self::persist(inner)?;
        Ok(tx)
    }

    fn map_create_err(e: bdk_wallet::error::CreateTxError, reserve: u64) -> Error {
        match e {
            bdk_wallet::error::CreateTxError::CoinSelection(i) => Error::InsufficientFunds {
                needed_sat: i.needed.to_sat() + reserve,
                available_sat: i.available.to_sat(),
            },
            bdk_wallet::error::CreateTxError::OutputBelowDustLimit(_) => {
                Error::InvalidAmount("the amount is below the dust limit".into())
            }
            e => Error::Wallet(e.to_string()),
        }
    }

    /// Builds, signs and records a transaction paying `amount_sat` (or everything spendable
    /// above `reserve_sat` when `None`) to `script`. The caller broadcasts it.
    pub(crate) fn build_send(
        &self,
        script: ScriptBuf,
        amount_sat: Option<u64>,
        fee_rate: FeeRate,
        reserve_sat: u64,
    ) -> Result<Transaction, Error> {
        let mut inner = self.lock();
        let spendable = inner.wallet.balance().trusted_spendable().to_sat();
        let psbt = match amount_sat {
            Some(0) => return Err(Error::InvalidAmount("amount must be greater than 0".into())),
            Some(amount) => {
                if amount.saturating_add(reserve_sat) > spendable {
                    return Err(Error::InsufficientFunds {
                        needed_sat: amount + reserve_sat,
                        available_sat: spendable,
                    });
                }
                let mut b = inner.wallet.build_tx();
                b.add_recipient(script, Amount::from_sat(amount))
                    .fee_rate(fee_rate);
                let psbt = b
                    .finish()
                    .map_err(|e| Self::map_create_err(e, reserve_sat))?;
                let fee = psbt.fee().map_err(werr)?.to_sat();
                if amount + fee + reserve_sat > spendable {
                    inner.wallet.cancel_tx(&psbt.unsigned_tx);
                    return Err(Error::InsufficientFunds {
                        needed_sat: amount + fee + reserve_sat,
                        available_sat: spendable,
                    });
                }
                psbt
            }
            None if reserve_sat == 0 => {
                let mut b = inner.wallet.build_tx();
                b.drain_wallet().drain_to(script).fee_rate(fee_rate);
                b.finish().map_err(|e| Self::map_create_err(e, 0))?
            }
            None => {
                // Drain everything but the reserve: size the fee on a full drain, then pay
                // out what is left above the reserve with change back to us.
                let mut probe = inner.wallet.build_tx();
                probe
                    .drain_wallet()
                    .drain_to(script.clone())
                    .fee_rate(fee_rate);
                let probe = probe
                    .finish()
                    .map_err(|e| Self::map_create_err(e, reserve_sat))?;
                inner.wallet.cancel_tx(&probe.unsigned_tx);
                let fee = probe.fee().map_err(werr)?.to_sat();
                // A change output adds ~31 vbytes; leave room for it.
                let change_fee = fee_rate.fee_vb(31).map(|a| a.to_sat()).unwrap_or(0);
                let amount = spendable
                    .checked_sub(reserve_sat + fee + change_fee)
                    .filter(|a| *a > 0);
                let Some(amount) = amount else {
                    return Err(Error::InsufficientFunds {
                        needed_sat: reserve_sat + fee + change_fee + 1,
                        available_sat: spendable,
                    });
                };
                let mut b = inner.wallet.build_tx();
                b.add_recipient(script, Amount::from_sat(amount))
                    .fee_rate(fee_rate);
                b.finish()
                    .map_err(|e| Self::map_create_err(e, reserve_sat))?
            }
        };
        Self::sign_and_record(&mut inner, psbt)
    }

    /// Builds and signs a channel funding transaction; it is recorded in the wallet so its
    /// inputs are not spent twice.
    pub(crate) fn build_funding_tx(
        &self,
        script: ScriptBuf,
        value: Amount,
        fee_rate: FeeRate,
        locktime: LockTime,
    ) -> Result<Transaction, Error> {
        let mut inner = self.lock();
        let mut b = inner.wallet.build_tx();
        b.add_recipient(script, value)
            .fee_rate(fee_rate)
            .nlocktime(locktime);
        let psbt = b.finish().map_err(|e| Self::map_create_err(e, 0))?;
        Self::sign_and_record(&mut inner, psbt)
    }

    /// Checks that the wallet could fund `value_sat` plus a reserve at `fee_rate`.
    pub(crate) fn check_can_fund(
        &self,
        value_sat: u64,
        reserve_sat: u64,
        fee_rate: FeeRate,
    ) -> Result<(), Error> {
        let spendable = self.lock().wallet.balance().trusted_spendable().to_sat();
        // A funding transaction with one input and change is ~150 vbytes.
        let fee = fee_rate.fee_vb(150).map(|a| a.to_sat()).unwrap_or(0);
        let needed = value_sat + reserve_sat + fee;
        if needed > spendable {
            return Err(Error::InsufficientFunds {
                needed_sat: needed,
                available_sat: spendable,
            });
        }
        Ok(())
    }

    /// Forgets an unbroadcast transaction built by this wallet, freeing its inputs.
    pub(crate) fn cancel_tx(&self, tx: &Transaction) {
        let mut inner = self.lock();
        inner.wallet.cancel_tx(tx);
        let _ = Self::persist(&mut inner);
    }

    /// Records a transaction we broadcast (e.g. a sweep) as unconfirmed.
    pub(crate) fn record_unconfirmed(&self, tx: &Transaction) {
        let mut inner = self.lock();
        // BDK keeps only transactions relevant to the wallet.
        inner
            .wallet
            .apply_unconfirmed_txs([(tx.clone(), now_unix())]);
        let _ = Self::persist(&mut inner);
    }

    fn connect_block(&self, block: &bitcoin::Block, height: u32) {
        let mut inner = self.lock();
        let events = match inner.wallet.apply_block_events(block, height) {
            Ok(ev) => ev,
            Err(e) => {
                log::error!("wallet could not connect block {height}: {e}");
                return;
            }
        };
        if let Err(e) = Self::persist(&mut inner) {
            log::error!("wallet persist failed at block {height}: {e}");
        }
        for (txid, amount_sat) in receipts(&inner, events) {
            if let Err(e) = self
                .events
                .push(Event::OnchainFundsReceived { txid, amount_sat })
            {
                log::error!("could not record on-chain receipt {txid}: {e}");
            }
        }
    }

    /// Confirmed UTXOs, for anchor fee bumping.
    fn confirmed_utxos(&self) -> Vec<Utxo> {
        let inner = self.lock();
        inner
            .wallet
            .list_unspent()
            .filter(|u| matches!(u.chain_position, ChainPosition::Confirmed { .. }))
            .filter_map(|u| {
                let spk = &u.txout.script_pubkey;
                if !spk.is_p2wpkh() {
                    return None;
                }
                let wpkh = WPubkeyHash::from_slice(&spk.as_bytes()[2..]).ok()?;
                Some(Utxo::new_v0_p2wpkh(u.outpoint, u.txout.value, &wpkh))
            })
            .collect()
    }

    fn sign_foreign_psbt(&self, mut psbt: Psbt) -> Result<Transaction, ()> {
        let inner = self.lock();
        // LDK fills only witness_utxo; BDK must trust it to sign.
        let opts = SignOptions {
            trust_witness_utxo: true,
            ..Default::default()
        };
        inner
            .wallet
            .sign(&mut psbt, opts)
            .map_err(|e| log::error!("sign psbt: {e}"))?;
        psbt.extract_tx()
            .map_err(|e| log::error!("extract tx: {e}"))
    }
}

use bitcoin::hashes::Hash;

impl Listen for Wallet {
    fn filtered_block_connected(
        &self,
        header: &bitcoin::block::Header,
        txdata: &lightning::chain::transaction::TransactionData,
        height: u32,
    ) {
        let block = bitcoin::Block {
            header: *header,
            txdata: txdata.iter().map(|(_, tx)| (*tx).clone()).collect(),
        };
        self.connect_block(&block, height);
    }

    fn block_connected(&self, block: &bitcoin::Block, height: u32) {
        self.connect_block(block, height);
    }

    fn blocks_disconnected(&self, _fork_point: BestBlock) {
        // BDK reorganises itself when the next block connects to a different parent.
    }
}

impl WalletSourceSync for Wallet {
    fn list_confirmed_utxos(&self) -> Result<Vec<Utxo>, ()> {
        Ok(self.confirmed_utxos())
    }
    fn get_change_script(&self) -> Result<ScriptBuf, ()> {
        self.new_internal_address()
            .map(|a| a.script_pubkey())
            .map_err(|e| log::error!("{e}"))
    }
    fn sign_psbt(&self, psbt: Psbt) -> Result<Transaction, ()> {
        self.sign_foreign_psbt(psbt)
    }
}

/// LDK's [`KeysManager`], except that the scripts LDK pays us to (cooperative close outputs,
/// swept outputs) are fresh addresses of the BDK wallet.
pub(crate) struct NodeKeysManager {
    inner: KeysManager,
    wallet: Arc<Wallet>,
}

impl NodeKeysManager {
    pub(crate) fn new(seed: &[u8; 32], wallet: Arc<Wallet>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            inner: KeysManager::new(seed, now.as_secs(), now.subsec_nanos(), true),
            wallet,
        }
    }
}

impl NodeSigner for NodeKeysManager {
    fn get_expanded_key(&self) -> ExpandedKey {
        self.inner.get_expanded_key()
    }
    fn get_peer_storage_key(&self) -> PeerStorageKey {
        self.inner.get_peer_storage_key()
    }
    fn get_receive_auth_key(&self) -> ReceiveAuthKey {
        self.inner.get_receive_auth_key()
    }
    fn get_node_id(&self, recipient: Recipient) -> Result<PublicKey, ()> {
        self.inner.get_node_id(recipient)
    }
    fn ecdh(
        &self,
        recipient: Recipient,
        other_key: &PublicKey,
        tweak: Option<&Scalar>,
    ) -> Result<SharedSecret, ()> {
        self.inner.ecdh(recipient, other_key, tweak)
    }
    fn sign_invoice(
        &self,
        invoice: &RawBolt11Invoice,
        recipient: Recipient,
    ) -> Result<RecoverableSignature, ()> {
        self.inner.sign_invoice(invoice, recipient)
    }
    fn sign_bolt12_invoice(
        &self,
        invoice: &lightning::offers::invoice::UnsignedBolt12Invoice,
    ) -> Result<bitcoin::secp256k1::schnorr::Signature, ()> {
        self.inner.sign_bolt12_invoice(invoice)
    }
    fn sign_gossip_message(&self, msg: UnsignedGossipMessage) -> Result<Signature, ()> {
        self.inner.sign_gossip_message(msg)
    }
    fn sign_message(&self, msg: &[u8]) -> Result<String, ()> {
        self.inner.sign_message(msg)
    }
}

impl EntropySource for NodeKeysManager {
    fn get_secure_random_bytes(&self) -> [u8; 32] {
        self.inner.get_secure_random_bytes()
    }
}

impl OutputSpender for NodeKeysManager {
    fn spend_spendable_outputs(
        &self,
        descriptors: &[&SpendableOutputDescriptor],
        outputs: Vec<TxOut>,
        change_destination_script: ScriptBuf,
        feerate_sat_per_1000_weight: u32,
        locktime: Option<LockTime>,
        secp_ctx: &Secp256k1<All>,
    ) -> Result<Transaction, ()> {
        self.inner.spend_spendable_outputs(
            descriptors,
            outputs,
            change_destination_script,
            feerate_sat_per_1000_weight,
            locktime,
            secp_ctx,
        )
    }
}

impl SignerProvider for NodeKeysManager {
    type EcdsaSigner = InMemorySigner;

    fn generate_channel_keys_id(&self, inbound: bool, user_channel_id: u128) -> [u8; 32] {
        self.inner
            .generate_channel_keys_id(inbound, user_channel_id)
    }
    fn derive_channel_signer(&self, channel_keys_id: [u8; 32]) -> InMemorySigner {
        self.inner.derive_channel_signer(channel_keys_id)
    }
    fn get_destination_script(&self, _channel_keys_id: [u8; 32]) -> Result<ScriptBuf, ()> {
        self.wallet
            .new_address()
            .map(|a| a.script_pubkey())
            .map_err(|e| log::error!("{e}"))
    }
    fn get_shutdown_scriptpubkey(&self) -> Result<ShutdownScript, ()> {
        let addr = self.wallet.new_address().map_err(|e| log::error!("{e}"))?;
        let program = addr.witness_program().ok_or(())?;
        ShutdownScript::new_witness_program(&program).map_err(|_| ())
    }
}

impl ChangeDestinationSource for NodeKeysManager {
    fn get_change_destination_script<'a>(
        &'a self,
    ) -> lightning::util::async_poll::AsyncResult<'a, ScriptBuf, ()> {
        let r = self
            .wallet
            .new_internal_address()
            .map(|a| a.script_pubkey())
            .map_err(|_| ());
        Box::pin(async move { r })
    }
}

impl Wallet {
    /// A request for an Esplora sync of every revealed script.
    pub(crate) fn sync_request(
        &self,
    ) -> bdk_wallet::chain::spk_client::SyncRequest<(KeychainKind, u32)> {
        self.lock().wallet.start_sync_with_revealed_spks().build()
    }

    /// Applies an Esplora sync result, recording received funds as events.
    pub(crate) fn apply_update(&self, update: impl Into<bdk_wallet::Update>) -> Result<(), Error> {
        let mut inner = self.lock();
        let events = inner.wallet.apply_update_events(update).map_err(werr)?;
        Self::persist(&mut inner)?;
        for (txid, amount_sat) in receipts(&inner, events) {
            self.events
                .push(Event::OnchainFundsReceived { txid, amount_sat })?;
        }
        Ok(())
    }

    /// Moves a freshly created wallet's checkpoint to `tip`, so it does not scan from genesis.
    pub(crate) fn set_birthday(&self, tip: BestBlock) -> Result<(), Error> {
        let mut inner = self.lock();
        if inner.wallet.latest_checkpoint().height() >= tip.height {
            return Ok(());
        }
        let cp = inner
            .wallet
            .latest_checkpoint()
            .insert(bdk_wallet::chain::BlockId {
                height: tip.height,
                hash: tip.block_hash,
            });
        inner
            .wallet
            .apply_update(bdk_wallet::Update {
                chain: Some(cp),
                ..Default::default()
            })
            .map_err(werr)?;
        Self::persist(&mut inner)
    }
}
