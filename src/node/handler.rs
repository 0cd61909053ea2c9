//! Turns LDK's events into actions (funding, claiming, sweeping, fee bumping) and into the
//! node's own [`Event`]s and payment records.

use std::sync::Arc;

use bitcoin::blockdata::locktime::absolute::LockTime;
use lightning::chain::chaininterface::ConfirmationTarget;
use lightning::events::bump_transaction::sync::{BumpTransactionEventHandlerSync, WalletSync};
use lightning::events::{
    Event as LdkEvent, HTLCHandlingFailureReason, HTLCHandlingFailureType, PaymentPurpose,
    ReplayEvent,
};
use lightning::ln::LocalHTLCFailureReason;
use lightning_types::payment::PaymentHash;

use super::chain::{Broadcaster, Fees};
use super::events::{Event, EventQueue};
use super::payments::{
    now_ms, update_in, upsert_in, PaymentDetails, PaymentDirection, PaymentKind, PaymentStatus,
    PaymentStore,
};
use super::types::{ChannelManager, Keys, Logger, Sweeper};
use super::wallet::Wallet;
use crate::config::Config;

pub(crate) type BumpHandler = BumpTransactionEventHandlerSync<
    Arc<Broadcaster>,
    Arc<WalletSync<Arc<Wallet>, Arc<Logger>>>,
    Arc<Keys>,
    Arc<Logger>,
>;

/// Handles LDK events for one node.
pub(crate) struct EventHandler {
    pub(crate) config: Arc<Config>,
    pub(crate) channel_manager: Arc<ChannelManager>,
    pub(crate) wallet: Arc<Wallet>,
    pub(crate) fees: Arc<Fees>,
    pub(crate) sweeper: Arc<Sweeper>,
    pub(crate) events: Arc<EventQueue>,
    pub(crate) payments: Arc<PaymentStore>,
    pub(crate) bump: BumpHandler,
}

impl EventHandler {
    fn push(&self, event: Event) -> Result<(), ReplayEvent> {
        self.events.push_from_ldk(event).map_err(|e| {
            log::error!("could not persist event, LDK will replay it: {e}");
            ReplayEvent()
        })
    }

    fn anchor_reserve_sat(&self) -> u64 {
        let n = self.channel_manager.list_channels().len() as u64;
        n * self.config.anchor_reserve_per_channel_sat
    }

    /// Handles one LDK event; an `Err` makes LDK hand it to us again later.
    pub(crate) async fn handle(&self, event: LdkEvent) -> Result<(), ReplayEvent> {
        match event {
            LdkEvent::FundingGenerationReady {
                temporary_channel_id,
                counterparty_node_id,
                channel_value_satoshis,
                output_script,
                ..
            } => {
                let fee_rate = self.fees.fee_rate(ConfirmationTarget::NonAnchorChannelFee);
                let height = self.channel_manager.current_best_block().height;
                let locktime = LockTime::from_height(height).unwrap_or(LockTime::ZERO);
                let value = bitcoin::Amount::from_sat(channel_value_satoshis);
                match self
                    .wallet
                    .build_funding_tx(output_script, value, fee_rate, locktime)
                {
                    Ok(tx) => {
                        if let Err(e) = self.channel_manager.funding_transaction_generated(
                            temporary_channel_id,
                            counterparty_node_id,
                            tx.clone(),
                        ) {
                            log::error!("funding transaction refused: {e:?}");
                            self.wallet.cancel_tx(&tx);
                        }
                    }
                    Err(e) => {
                        log::error!("cannot fund channel with {counterparty_node_id}: {e}");
                        let _ = self.channel_manager.force_close_broadcasting_latest_txn(
                            &temporary_channel_id,
                            &counterparty_node_id,
                            format!("funding failed: {e}"),
                        );
                    }
                }
            }
            LdkEvent::FundingTxBroadcastSafe { .. } => {}
            LdkEvent::OpenChannelRequest {
                temporary_channel_id,
                counterparty_node_id,
                funding_satoshis,
                channel_type,
                ..
            } => {
                let user_channel_id: u128 = rand::random();
                if channel_type.requires_anchors_zero_fee_htlc_tx() {
                    let reserve =
                        self.anchor_reserve_sat() + self.config.anchor_reserve_per_channel_sat;
                    let spendable = self.wallet.balance(0).spendable_sat;
                    if spendable < reserve {
                        log::warn!(
                            "rejecting anchor channel of {funding_satoshis} sat from {counterparty_node_id}: \
                             on-chain reserve {reserve} sat needed, {spendable} sat available"
                        );
                        let _ = self.channel_manager.force_close_broadcasting_latest_txn(
                            &temporary_channel_id,
                            &counterparty_node_id,
                            "no on-chain reserve for an anchor channel".into(),
                        );
                        return Ok(());
                    }
                }
                if let Err(e) = self.channel_manager.accept_inbound_channel(
                    &temporary_channel_id,
                    &counterparty_node_id,
                    user_channel_id,
                    None,
                ) {
                    log::error!("accepting channel from {counterparty_node_id} failed: {e:?}");
                }
            }
            LdkEvent::PaymentClaimable {
                payment_hash,
                amount_msat,
                purpose,
                claim_deadline,
                ..
            } => {
                self.on_claimable(payment_hash, amount_msat, purpose, claim_deadline)?;
            }
            LdkEvent::PaymentClaimed {
                payment_hash,
                amount_msat,
                purpose,
                ..
            } => {
                let preimage = purpose.preimage();
                let kind = match purpose {
                    PaymentPurpose::SpontaneousPayment(_) => PaymentKind::Keysend,
                    _ => PaymentKind::Bolt11,
                };
                // LDK may hand out a claim again after a restart: report it once.
                let existing = self
                    .payments
                    .get(&payment_hash, PaymentDirection::Inbound)
                    .map_err(|_| ReplayEvent())?;
                if existing.is_some_and(|p| p.status == PaymentStatus::Succeeded) {
                    return Ok(());
                }
                let record = |c: &rusqlite::Connection| {
                    let updated = update_in(c, &payment_hash, PaymentDirection::Inbound, |p| {
                        p.status = PaymentStatus::Succeeded;
                        p.amount_msat = Some(amount_msat);
                        if preimage.is_some() {
                            p.preimage = preimage;
                        }
                    })?;
                    if updated.is_none() {
                        let now = now_ms();
                        upsert_in(
                            c,
                            &PaymentDetails {
                                payment_hash,
                                direction: PaymentDirection::Inbound,
                                kind,
                                status: PaymentStatus::Succeeded,
                                amount_msat: Some(amount_msat),
                                fee_msat: None,
                                preimage,
                                invoice: None,
                                failure_reason: None,
                                created_at_ms: now,
                                updated_at_ms: now,
                            },
                        )?;
                    }
                    Ok(())
                };
                self.events
                    .push_with(
                        Event::PaymentReceived {
                            payment_hash,
                            amount_msat,
                        },
                        record,
                    )
                    .map_err(|e| {
                        log::error!(
                            "could not record payment {payment_hash}, LDK will replay it: {e}"
                        );
                        ReplayEvent()
                    })?;
            }
            LdkEvent::PaymentSent {
                payment_preimage,
                payment_hash,
                fee_paid_msat,
                amount_msat,
                ..
            } => {
                let existing = self
                    .payments
                    .get(&payment_hash, PaymentDirection::Outbound)
                    .map_err(|_| ReplayEvent())?;
                if existing.is_some_and(|p| p.status == PaymentStatus::Succeeded) {
                    return Ok(());
                }
                let event = Event::PaymentSuccessful {
                    amount_msat,
                    payment_hash,
                    payment_preimage,
                    fee_paid_msat,
                };
                self.events
                    .push_with(event, |c| {
                        update_in(c, &payment_hash, PaymentDirection::Outbound, |p| {
                            p.status = PaymentStatus::Succeeded;
                            p.preimage = Some(payment_preimage);
                            p.fee_msat = fee_paid_msat;
                            if amount_msat.is_some() {
                                p.amount_msat = amount_msat;
                            }
                        })
                        .map(|_| ())
                    })
                    .map_err(|e| {
                        log::error!(
                            "could not record payment {payment_hash}, LDK will replay it: {e}"
                        );
                        ReplayEvent()
                    })?;
            }
            LdkEvent::PaymentFailed {
                payment_hash,
                reason,
                ..
            } => {
                let reason = reason
                    .map(|r| format!("{r:?}"))
                    .unwrap_or_else(|| "unknown".into());
                if let Some(hash) = payment_hash {
                    self.payments
                        .update(&hash, PaymentDirection::Outbound, |p| {
                            p.status = PaymentStatus::Failed;
                            p.failure_reason = Some(reason.clone());
                        })
                        .map_err(|_| ReplayEvent())?;
                }
                self.push(Event::PaymentFailed {
                    payment_hash,
                    reason,
                })?;
            }
            LdkEvent::PaymentForwarded {
                total_fee_earned_msat,
                outbound_amount_forwarded_msat,
                ..
            } => {
                self.push(Event::PaymentForwarded {
                    fee_earned_msat: total_fee_earned_msat,
                    outbound_amount_msat: outbound_amount_forwarded_msat,
                })?;
            }
            LdkEvent::ChannelPending {
                channel_id,
                user_channel_id,
                counterparty_node_id,
                funding_txo,
                ..
            } => {
                self.push(Event::ChannelPending {
                    channel_id,
                    user_channel_id,
                    counterparty_node_id,
                    funding_txo,
                })?;
            }
            LdkEvent::ChannelReady {
                channel_id,
                user_channel_id,
                counterparty_node_id,
                ..
            } => {
                self.push(Event::ChannelReady {
                    channel_id,
                    user_channel_id,
                    counterparty_node_id,
                })?;
            }
            LdkEvent::ChannelClosed {
                channel_id,
                user_channel_id,
                reason,
                counterparty_node_id,
                ..
            } => {
                self.push(Event::ChannelClosed {
                    channel_id,
                    user_channel_id,
                    counterparty_node_id,
                    reason: reason.to_string(),
                })?;
            }
            LdkEvent::SpendableOutputs {
                outputs,
                channel_id,
            } => {
                // Static outputs already pay to our wallet's own addresses.
                if let Err(()) = self
                    .sweeper
                    .track_spendable_outputs(outputs, channel_id, true, None)
                    .await
                {
                    log::error!("could not track spendable outputs; LDK will replay them");
                    return Err(ReplayEvent());
                }
            }
            LdkEvent::BumpTransaction(ev) => self.bump.handle_event(&ev),
            LdkEvent::DiscardFunding {
                channel_id,
                funding_info,
            } => {
                if let lightning::events::FundingInfo::Tx { transaction } = funding_info {
                    log::info!("discarding funding of {channel_id}");
                    self.wallet.cancel_tx(&transaction);
                }
            }
            LdkEvent::HTLCHandlingFailed {
                failure_type,
                failure_reason,
                ..
            } => {
                log::info!("HTLC handling failed: {failure_type:?} {failure_reason:?}");
                if let (
                    HTLCHandlingFailureType::Receive { payment_hash },
                    Some(HTLCHandlingFailureReason::Local {
                        reason: LocalHTLCFailureReason::PaymentClaimBuffer,
                    }),
                ) = (failure_type, failure_reason)
                {
                    self.on_hold_timed_out(payment_hash)?;
                }
            }
            other => log::debug!("unhandled LDK event: {other:?}"),
        }
        Ok(())
    }

    /// LDK failed back a claimable HTLC that reached its claim deadline. For a held payment
    /// this closes the hold invoice: the record fails and the application hears of it once
    /// (an MPP payment fails back one HTLC at a time).
    fn on_hold_timed_out(&self, payment_hash: PaymentHash) -> Result<(), ReplayEvent> {
        let record = self
            .payments
            .get(&payment_hash, PaymentDirection::Inbound)
            .map_err(|_| ReplayEvent())?;
        let Some(record) = record else { return Ok(()) };
        if record.kind != PaymentKind::Bolt11Hold || record.status != PaymentStatus::Pending {
            return Ok(());
        }
        log::warn!("held payment {payment_hash} reached its claim deadline and was failed back");
        let amount_msat = record.amount_msat;
        self.events
            .push_with(
                Event::HeldPaymentTimedOut {
                    payment_hash,
                    amount_msat,
                },
                |c| {
                    update_in(c, &payment_hash, PaymentDirection::Inbound, |p| {
                        p.status = PaymentStatus::Failed;
                        p.failure_reason =
                            Some("held past its claim deadline: the node failed it back".into());
                    })?;
                    Ok(())
                },
            )
            .map_err(|e| {
                log::error!(
                    "could not record the timeout of {payment_hash}, LDK will replay it: {e}"
                );
                ReplayEvent()
            })
    }

    fn on_claimable(
        &self,
        payment_hash: PaymentHash,
        amount_msat: u64,
        purpose: PaymentPurpose,
        claim_deadline: Option<u32>,
    ) -> Result<(), ReplayEvent> {
        let record = self
            .payments
            .get(&payment_hash, PaymentDirection::Inbound)
            .map_err(|_| ReplayEvent())?;
        let fail = |why: &str| {
            log::warn!("failing HTLC for {payment_hash}: {why}");
            self.channel_manager.fail_htlc_backwards(&payment_hash);
        };
        match (&record, &purpose) {
            (Some(p), _) if p.status != PaymentStatus::Pending => {
                fail("payment already settled or failed");
            }
            (Some(p), _) if p.amount_msat.is_some_and(|a| amount_msat < a) => {
                fail("underpaid");
            }
            (Some(p), _)
                if p.amount_msat
                    .is_some_and(|a| amount_msat > a.saturating_mul(2)) =>
            {
                fail("overpaid more than twice the amount");
            }
            (Some(p), _) if p.kind == PaymentKind::Bolt11Hold => {
                self.payments
                    .update(&payment_hash, PaymentDirection::Inbound, |p| {
                        p.amount_msat = Some(amount_msat);
                    })
                    .map_err(|_| ReplayEvent())?;
                self.push(Event::PaymentClaimable {
                    payment_hash,
                    amount_msat,
                    claim_deadline,
                })?;
            }
            (_, PaymentPurpose::SpontaneousPayment(preimage)) => {
                if !self.config.accept_keysend {
                    fail("keysend payments are refused by configuration");
                    return Ok(());
                }
                if record.is_none() {
                    let now = now_ms();
                    let rec = PaymentDetails {
                        payment_hash,
                        direction: PaymentDirection::Inbound,
                        kind: PaymentKind::Keysend,
                        status: PaymentStatus::Pending,
                        amount_msat: Some(amount_msat),
                        fee_msat: None,
                        preimage: Some(*preimage),
                        invoice: None,
                        failure_reason: None,
                        created_at_ms: now,
                        updated_at_ms: now,
                    };
                    self.payments.upsert(&rec).map_err(|_| ReplayEvent())?;
                }
                self.channel_manager.claim_funds(*preimage);
            }
            (_, purpose) => match purpose.preimage() {
                Some(preimage) => self.channel_manager.claim_funds(preimage),
                None => fail("no preimage known for this payment"),
            },
        }
        Ok(())
    }
}
