//! [`InvoiceService`]: creation, transitions, queries and the expiry sweep.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::TransactionBehavior;

use super::store::{self, Key};
use super::{
    fiat_to_msat, FiatPrice, HoldPreimage, Invoice, InvoiceAmount, InvoiceConfig, InvoiceError,
    InvoicePage, InvoiceQuery, InvoiceStatus, NewInvoice, MAX_AMOUNT_MSAT, MAX_DESCRIPTION_BYTES,
    MAX_METADATA_BYTES, MAX_REFERENCE_LEN,
};
use crate::backend::{BackendError, Hash32, InvoiceRequest, InvoiceState, LightningBackend};
use crate::events::{lock, rfc3339_now, DomainEvent, EventLog, InvoiceEventData, SharedConn};
use crate::rates::RateSource;

/// How many overdue invoices one sweep pass handles at most.
const SWEEP_BATCH: usize = 100;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What [`InvoiceService::transition`] did.
enum Outcome {
    /// The row changed and the event was appended.
    Applied(Invoice),
    /// The invoice already had the target status: nothing was written.
    Unchanged(Invoice),
    /// The invoice's status does not allow the transition: nothing was written.
    Refused(Invoice),
}

/// The merchant's invoices over a [`LightningBackend`], the domain database and the
/// [`EventLog`]. Cheap to share behind an [`Arc`]; every method is safe to call concurrently.
pub struct InvoiceService {
    backend: Arc<dyn LightningBackend>,
    conn: SharedConn,
    events: Arc<EventLog>,
    rates: Arc<dyn RateSource>,
    config: InvoiceConfig,
}

impl InvoiceService {
    /// A service storing invoices on the event log's connection (the node's database), pricing
    /// fiat invoices with `rates`. Creates the `invoices` table if needed.
    ///
    /// # Errors
    /// [`InvoiceError::InvalidConfig`] for unusable bounds ([`InvoiceConfig::validate`]),
    /// [`InvoiceError::Storage`] when the migration fails.
    pub fn new(
        backend: Arc<dyn LightningBackend>,
        events: Arc<EventLog>,
        rates: Arc<dyn RateSource>,
        config: InvoiceConfig,
    ) -> Result<Self, InvoiceError> {
        config.validate()?;
        let conn = events.conn().clone();
        crate::db::migrate(&lock(&conn), "invoices", store::MIGRATIONS)?;
        Ok(Self {
            backend,
            conn,
            events,
            rates,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &InvoiceConfig {
        &self.config
    }

    /// The event log the service appends to.
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    // ---- creation ---------------------------------------------------------------------------

    /// Validates `req`, prices it (fiat: at the rate source's current rate), creates the invoice
    /// on the backend and stores it with an `invoice_created` event.
    ///
    /// # Errors
    /// * [`InvoiceError::InvalidAmount`]: zero, negative or too large amount.
    /// * [`InvoiceError::InvalidExpiry`]: outside [`InvoiceConfig::min_expiry`] ..=
    ///   [`InvoiceConfig::max_expiry`].
    /// * [`InvoiceError::InvalidMetadata`]: not a JSON object, or larger than
    ///   [`super::MAX_METADATA_BYTES`].
    /// * [`InvoiceError::InvalidDescription`], [`InvoiceError::InvalidCurrency`],
    ///   [`InvoiceError::InvalidReference`], [`InvoiceError::DuplicateReference`].
    /// * [`InvoiceError::Rate`]: no rate for a fiat invoice.
    /// * [`InvoiceError::Backend`], [`InvoiceError::Storage`].
    pub async fn create(&self, req: NewInvoice) -> Result<Invoice, InvoiceError> {
        let expiry = self.check_expiry(req.expiry)?;
        if req.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(InvoiceError::InvalidDescription(format!(
                "{} bytes; a BOLT11 description holds at most {MAX_DESCRIPTION_BYTES}",
                req.description.len()
            )));
        }
        let metadata = check_metadata(req.metadata)?;
        let external_ref = req.external_ref.map(check_reference).transpose()?;
        if let Some(r) = &external_ref {
            if self.by_external_ref(r)?.is_some() {
                return Err(InvoiceError::DuplicateReference(r.clone()));
            }
        }
        let (amount_msat, fiat) = self.price(req.amount).await?;
        let (payment_hash, preimage) = match req.hold {
            None => (None, None),
            Some(HoldPreimage::Generate) => {
                let p = Hash32::random();
                (Some(p.sha256()), Some(p))
            }
            Some(HoldPreimage::Given(p)) => (Some(p.sha256()), Some(p)),
            Some(HoldPreimage::HashOnly(h)) => (Some(h), None),
        };
        let created = self
            .backend
            .create_invoice(InvoiceRequest {
                amount_msat,
                description: req.description.clone(),
                expiry_secs: expiry.as_secs() as u32,
                payment_hash,
            })
            .await?;
        let now = now_unix();
        let id = match &external_ref {
            Some(r) => format!("{r}-LN"),
            None => format!("inv_{}", hex20()),
        };
        let invoice = Invoice {
            id,
            external_ref: external_ref.clone(),
            payment_hash: created.payment_hash,
            bolt11: created.bolt11,
            status: InvoiceStatus::Open,
            amount_msat,
            fiat,
            description: req.description,
            metadata,
            hold: req.hold.is_some(),
            preimage,
            received_msat: None,
            created_at: now,
            expires_at: now + expiry.as_secs(),
            accepted_at: None,
            settled_at: None,
            closed_at: None,
        };
        let stored = match self.store_new(&invoice) {
            Ok(stored) => stored,
            Err(Ok(e)) => return Err(self.insert_failed(e, &invoice).await),
            Err(Err(e)) => return Err(e),
        };
        self.events.publish([stored]);
        log::info!(
            "invoice {} created ({} msat, hold: {})",
            invoice.id,
            invoice
                .amount_msat
                .map_or("open".to_string(), |a| a.to_string()),
            invoice.hold
        );
        Ok(invoice)
    }

    /// Inserts a new invoice with its `invoice_created` event. `Err(Ok(_))`: the insert itself
    /// failed (duplicate reference...); `Err(Err(_))`: anything else.
    fn store_new(
        &self,
        invoice: &Invoice,
    ) -> Result<crate::events::StoredEvent, Result<rusqlite::Error, InvoiceError>> {
        let mut conn = lock(&self.conn);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Err(e.into()))?;
        store::insert(&tx, invoice).map_err(Ok)?;
        let data = event_data(invoice, invoice.amount_msat, requested_fiat(invoice));
        let stored = self
            .events
            .append_in(&tx, &DomainEvent::InvoiceCreated(data))
            .map_err(|e| Err(e.into()))?;
        tx.commit().map_err(|e| Err(e.into()))?;
        Ok(stored)
    }

    /// Maps an insert failure, cancelling the orphaned backend invoice (best effort).
    async fn insert_failed(&self, e: rusqlite::Error, invoice: &Invoice) -> InvoiceError {
        if let Err(c) = self.backend.cancel_invoice(invoice.payment_hash).await {
            log::warn!(
                "cannot cancel orphaned backend invoice {}: {c}",
                invoice.payment_hash
            );
        }
        let msg = e.to_string();
        match (&invoice.external_ref, &e) {
            (Some(r), rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation
                    && msg.contains("external_ref") =>
            {
                InvoiceError::DuplicateReference(r.clone())
            }
            _ => InvoiceError::Storage(msg),
        }
    }

    fn check_expiry(&self, expiry: Option<Duration>) -> Result<Duration, InvoiceError> {
        let e = expiry.unwrap_or(self.config.default_expiry);
        if e < self.config.min_expiry || e > self.config.max_expiry || e.subsec_nanos() != 0 {
            return Err(InvoiceError::InvalidExpiry {
                requested: e,
                min: self.config.min_expiry,
                max: self.config.max_expiry,
            });
        }
        Ok(e)
    }

    async fn price(
        &self,
        amount: InvoiceAmount,
    ) -> Result<(Option<u64>, Option<FiatPrice>), InvoiceError> {
        let positive = |msat: u64| {
            if msat == 0 {
                Err(InvoiceError::InvalidAmount(
                    "amount must be greater than 0 (use an open amount to let the payer choose)"
                        .into(),
                ))
            } else if msat > MAX_AMOUNT_MSAT {
                Err(InvoiceError::InvalidAmount(format!(
                    "{msat} msat is more than 21 million BTC"
                )))
            } else {
                Ok(Some(msat))
            }
        };
        match amount {
            InvoiceAmount::Open => Ok((None, None)),
            InvoiceAmount::Msat(m) => Ok((positive(m)?, None)),
            InvoiceAmount::Sats(s) => {
                let m = s.saturating_mul(1000);
                Ok((positive(m)?, None))
            }
            InvoiceAmount::Fiat { amount, currency } => {
                let currency = currency.trim().to_ascii_uppercase();
                if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(InvoiceError::InvalidCurrency(format!(
                        "{currency:?} is not a three-letter ISO 4217 code such as EUR or USD"
                    )));
                }
                if amount <= rust_decimal::Decimal::ZERO {
                    return Err(InvoiceError::InvalidAmount(format!(
                        "fiat amount must be greater than 0, got {amount} {currency}"
                    )));
                }
                let rate = self.rates.btc_rate(&currency).await?;
                let msat = fiat_to_msat(amount, rate.btc_price)?;
                Ok((
                    Some(msat),
                    Some(FiatPrice {
                        amount,
                        currency,
                        btc_price: rate.btc_price,
                        source: rate.source,
                        fetched_at_unix: rate.fetched_at_unix,
                    }),
                ))
            }
        }
    }

    // ---- merchant actions -------------------------------------------------------------------

    /// Settles an accepted hold invoice with the preimage the service holds
    /// ([`HoldPreimage::Generate`] or [`HoldPreimage::Given`]). Settling a settled invoice
    /// returns it unchanged.
    ///
    /// # Errors
    /// [`InvoiceError::NotFound`]; [`InvoiceError::Preimage`] for a hash-only hold invoice (use
    /// [`InvoiceService::settle_with_preimage`]); [`InvoiceError::InvalidState`] when it is not
    /// a hold invoice, no payment is held yet, or it is cancelled or expired;
    /// [`InvoiceError::Backend`], [`InvoiceError::Storage`].
    pub async fn settle(&self, id: &str) -> Result<Invoice, InvoiceError> {
        let inv = self.require(id)?;
        match inv.preimage {
            Some(p) => self.settle_inner(inv, p).await,
            // Not a hold invoice, or already settled: `settle_inner` answers without using
            // the preimage.
            None if !inv.hold || inv.status == InvoiceStatus::Settled => {
                self.settle_inner(inv, Hash32([0; 32])).await
            }
            None => Err(InvoiceError::Preimage(format!(
                "invoice {id} was created with a payment hash only; settle it with its preimage"
            ))),
        }
    }

    /// Settles an accepted hold invoice with `preimage`, which must hash to its payment hash.
    ///
    /// # Errors
    /// As [`InvoiceService::settle`]; [`InvoiceError::Preimage`] when the preimage does not
    /// match.
    pub async fn settle_with_preimage(
        &self,
        id: &str,
        preimage: Hash32,
    ) -> Result<Invoice, InvoiceError> {
        let inv = self.require(id)?;
        if preimage.sha256() != inv.payment_hash {
            return Err(InvoiceError::Preimage(format!(
                "the preimage does not hash to invoice {id}'s payment hash {}",
                inv.payment_hash
            )));
        }
        self.settle_inner(inv, preimage).await
    }

    async fn settle_inner(&self, inv: Invoice, preimage: Hash32) -> Result<Invoice, InvoiceError> {
        let refuse = |inv: Invoice, message: &str| {
            Err(InvoiceError::InvalidState {
                id: inv.id,
                status: inv.status,
                message: message.into(),
            })
        };
        match inv.status {
            InvoiceStatus::Settled => return Ok(inv),
            _ if !inv.hold => {
                return refuse(
                    inv,
                    "only hold invoices are settled by the merchant; this one settles when paid",
                )
            }
            InvoiceStatus::Accepted => {}
            InvoiceStatus::Open => {
                return refuse(
                    inv,
                    "no payment is held yet; settle once the invoice is accepted",
                )
            }
            InvoiceStatus::Cancelled | InvoiceStatus::Expired => {
                return refuse(inv, "a cancelled or expired invoice never settles")
            }
        }
        self.backend.settle_invoice(preimage).await?;
        let now = now_unix();
        match self.transition(
            &inv.id,
            &[InvoiceStatus::Accepted],
            InvoiceStatus::Settled,
            |i| {
                i.preimage = Some(preimage);
                i.settled_at = Some(now);
            },
        )? {
            Outcome::Applied(i) | Outcome::Unchanged(i) => Ok(i),
            Outcome::Refused(i) => refuse(i, "it changed while being settled"),
        }
    }

    /// Cancels an open invoice, or fails back an accepted hold invoice's payment: the backend
    /// refuses later payments. Cancelling a cancelled invoice returns it unchanged.
    ///
    /// # Errors
    /// [`InvoiceError::NotFound`]; [`InvoiceError::InvalidState`] for a settled or expired
    /// invoice, or one the backend has already been paid for; [`InvoiceError::Backend`],
    /// [`InvoiceError::Storage`].
    pub async fn cancel(&self, id: &str) -> Result<Invoice, InvoiceError> {
        let inv = self.require(id)?;
        let refuse = |inv: Invoice, message: &str| {
            Err(InvoiceError::InvalidState {
                id: inv.id,
                status: inv.status,
                message: message.into(),
            })
        };
        match inv.status {
            InvoiceStatus::Cancelled => return Ok(inv),
            InvoiceStatus::Settled => return refuse(inv, "a paid invoice cannot be cancelled"),
            InvoiceStatus::Expired => return refuse(inv, "an expired invoice is already closed"),
            InvoiceStatus::Open | InvoiceStatus::Accepted => {}
        }
        if let Some(b) = self.backend.lookup_invoice(inv.payment_hash).await? {
            if b.state == InvoiceState::Settled {
                return refuse(
                    inv,
                    "the backend has already received the payment; it is being recorded",
                );
            }
        }
        cancel_on_backend(&*self.backend, inv.payment_hash).await?;
        let now = now_unix();
        match self.transition(
            &inv.id,
            &[InvoiceStatus::Open, InvoiceStatus::Accepted],
            InvoiceStatus::Cancelled,
            |i| i.closed_at = Some(now),
        )? {
            Outcome::Applied(i) | Outcome::Unchanged(i) => Ok(i),
            Outcome::Refused(i) => refuse(i, "it changed while being cancelled"),
        }
    }

    // ---- backend events ---------------------------------------------------------------------

    /// Applies the backend's "hold payment arrived" for `payment_hash`: `open` -> `accepted`
    /// with an `invoice_accepted` event. Idempotent. A payment for a cancelled or expired
    /// invoice is failed back again. Returns the invoice, or `None` if the hash is not one of
    /// this service's invoices.
    ///
    /// # Errors
    /// [`InvoiceError::Storage`]; [`InvoiceError::Backend`] when failing a late payment back
    /// fails.
    pub async fn on_accepted(
        &self,
        payment_hash: Hash32,
        amount_msat: u64,
    ) -> Result<Option<Invoice>, InvoiceError> {
        let now = now_unix();
        let out = self.transition_by_hash(
            &payment_hash,
            &[InvoiceStatus::Open],
            InvoiceStatus::Accepted,
            |i| {
                i.received_msat = Some(amount_msat);
                i.accepted_at = Some(now);
            },
        )?;
        let Some(out) = out else { return Ok(None) };
        match out {
            Outcome::Applied(i) | Outcome::Unchanged(i) => Ok(Some(i)),
            Outcome::Refused(i) if matches!(i.status, InvoiceStatus::Settled) => Ok(Some(i)),
            Outcome::Refused(i) => {
                log::warn!(
                    "payment held for {} invoice {}: failing it back",
                    i.status,
                    i.id
                );
                cancel_on_backend(&*self.backend, payment_hash).await?;
                Ok(Some(i))
            }
        }
    }

    /// Applies the backend's "held payment timed out" for `payment_hash`: the merchant did not
    /// settle or cancel an `accepted` invoice before the HTLC's claim deadline, so the backend
    /// failed the payment back. The invoice moves `accepted` -> `cancelled` with an
    /// `invoice_cancelled` event (the payer's wallet reports the payment failed). Idempotent;
    /// any other state is left alone. Returns the invoice, or `None` if the hash is not one of
    /// this service's invoices.
    ///
    /// # Errors
    /// [`InvoiceError::Storage`].
    pub fn on_hold_timed_out(&self, payment_hash: Hash32) -> Result<Option<Invoice>, InvoiceError> {
        let now = now_unix();
        let out = self.transition_by_hash(
            &payment_hash,
            &[InvoiceStatus::Accepted],
            InvoiceStatus::Cancelled,
            |i| i.closed_at = Some(now),
        )?;
        let Some(out) = out else { return Ok(None) };
        match out {
            Outcome::Applied(i) => {
                log::warn!(
                    "invoice {}: its held payment reached the claim deadline unsettled; cancelled",
                    i.id
                );
                Ok(Some(i))
            }
            Outcome::Unchanged(i) | Outcome::Refused(i) => Ok(Some(i)),
        }
    }

    /// Applies the backend's "invoice paid" for `payment_hash`: -> `settled`, recording the
    /// amount received, with a `payment_received` event carrying its fiat value. Idempotent: a
    /// replay appends nothing. Returns the invoice, or `None` if the hash is not one of this
    /// service's invoices.
    ///
    /// A settlement reported for a cancelled or expired invoice (the payment was accepted in
    /// the instant before the cancel reached the backend) is recorded too, with a warning.
    ///
    /// # Errors
    /// [`InvoiceError::Storage`].
    pub fn on_settled(
        &self,
        payment_hash: Hash32,
        amount_msat: u64,
    ) -> Result<Option<Invoice>, InvoiceError> {
        let Some(inv) = self.by_payment_hash(&payment_hash)? else {
            return Ok(None);
        };
        if matches!(
            inv.status,
            InvoiceStatus::Cancelled | InvoiceStatus::Expired
        ) {
            log::warn!(
                "invoice {} is {} but the backend settled its payment of {amount_msat} msat: recording it",
                inv.id,
                inv.status
            );
        }
        let now = now_unix();
        let out = self.transition(
            &inv.id,
            &[
                InvoiceStatus::Open,
                InvoiceStatus::Accepted,
                InvoiceStatus::Cancelled,
                InvoiceStatus::Expired,
            ],
            InvoiceStatus::Settled,
            |i| {
                i.received_msat = Some(amount_msat);
                i.settled_at = Some(now);
            },
        )?;
        match out {
            Outcome::Applied(i) | Outcome::Unchanged(i) | Outcome::Refused(i) => Ok(Some(i)),
        }
    }

    /// Expires open invoices whose expiry has passed: each is cancelled on the backend first
    /// (so late payments are refused), then marked `expired` with an `invoice_expired` event.
    /// An invoice the backend reports as paid is left for its settlement event. Returns the
    /// invoices expired by this pass (at most 100; the background sweep runs repeatedly).
    ///
    /// # Errors
    /// [`InvoiceError::Storage`]. Backend failures skip the invoice until the next pass.
    pub async fn expire_due(&self) -> Result<Vec<Invoice>, InvoiceError> {
        let ids = store::overdue(&lock(&self.conn), now_unix(), SWEEP_BATCH)?;
        let mut expired = Vec::new();
        for id in ids {
            let Some(inv) = self.get(&id)? else { continue };
            if inv.status != InvoiceStatus::Open {
                continue;
            }
            match self.backend.lookup_invoice(inv.payment_hash).await {
                Ok(Some(b)) if b.state == InvoiceState::Settled => continue,
                Ok(_) => {}
                Err(e) => {
                    log::warn!("expiry sweep: cannot look up invoice {id}: {e}");
                    if e.is_transient() {
                        break;
                    }
                    continue;
                }
            }
            if let Err(e) = cancel_on_backend(&*self.backend, inv.payment_hash).await {
                log::warn!("expiry sweep: cannot cancel invoice {id} on the backend: {e}");
                if e.is_transient() {
                    break;
                }
                continue;
            }
            let now = now_unix();
            if let Outcome::Applied(i) =
                self.transition(&id, &[InvoiceStatus::Open], InvoiceStatus::Expired, |i| {
                    i.closed_at = Some(now)
                })?
            {
                log::info!("invoice {id} expired");
                expired.push(i);
            }
        }
        Ok(expired)
    }

    // ---- queries ----------------------------------------------------------------------------

    /// The invoice with this id.
    ///
    /// # Errors
    /// [`InvoiceError::Storage`].
    pub fn get(&self, id: &str) -> Result<Option<Invoice>, InvoiceError> {
        store::get(&lock(&self.conn), Key::Id(id))
    }

    /// The invoice with this payment hash.
    ///
    /// # Errors
    /// [`InvoiceError::Storage`].
    pub fn by_payment_hash(&self, hash: &Hash32) -> Result<Option<Invoice>, InvoiceError> {
        store::get(&lock(&self.conn), Key::Hash(hash))
    }

    /// The invoice created with this external reference (`INV-001`, not `INV-001-LN`).
    ///
    /// # Errors
    /// [`InvoiceError::Storage`].
    pub fn by_external_ref(&self, external_ref: &str) -> Result<Option<Invoice>, InvoiceError> {
        store::get(&lock(&self.conn), Key::Reference(external_ref))
    }

    /// A page of invoices, newest first, optionally in one status.
    ///
    /// # Errors
    /// [`InvoiceError::InvalidInput`] for a page size outside 1..=500 or a cursor this service
    /// did not return; [`InvoiceError::Storage`].
    pub fn list(&self, query: &InvoiceQuery) -> Result<InvoicePage, InvoiceError> {
        store::list(&lock(&self.conn), query)
    }

    fn require(&self, id: &str) -> Result<Invoice, InvoiceError> {
        self.get(id)?
            .ok_or_else(|| InvoiceError::NotFound(format!("no invoice with id {id:?}")))
    }

    /// [`Self::transition`] for the invoice with `payment_hash`; `None` when the hash is not
    /// one of this service's invoices.
    fn transition_by_hash(
        &self,
        payment_hash: &Hash32,
        from: &[InvoiceStatus],
        to: InvoiceStatus,
        mutate: impl FnOnce(&mut Invoice),
    ) -> Result<Option<Outcome>, InvoiceError> {
        let Some(inv) = self.by_payment_hash(payment_hash)? else {
            return Ok(None);
        };
        self.transition(&inv.id, from, to, mutate).map(Some)
    }

    /// Moves invoice `id` from one of `from` to `to` (applying `mutate`) and appends the
    /// matching event, in one transaction; then publishes the event.
    fn transition(
        &self,
        id: &str,
        from: &[InvoiceStatus],
        to: InvoiceStatus,
        mutate: impl FnOnce(&mut Invoice),
    ) -> Result<Outcome, InvoiceError> {
        let (next, stored) = {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let cur = store::get(&tx, Key::Id(id))?
                .ok_or_else(|| InvoiceError::NotFound(format!("no invoice with id {id:?}")))?;
            if cur.status == to {
                return Ok(Outcome::Unchanged(cur));
            }
            if !from.contains(&cur.status) {
                return Ok(Outcome::Refused(cur));
            }
            let mut next = cur.clone();
            next.status = to;
            mutate(&mut next);
            if !store::update_if(&tx, &next, cur.status)? {
                return Err(InvoiceError::Storage(format!(
                    "invoice {id} changed during its transition"
                )));
            }
            let event = match to {
                InvoiceStatus::Open => unreachable!("no transition leads back to open"),
                InvoiceStatus::Accepted => DomainEvent::InvoiceAccepted(event_data(
                    &next,
                    next.received_msat,
                    next.received_fiat(),
                )),
                InvoiceStatus::Settled => DomainEvent::PaymentReceived(event_data(
                    &next,
                    next.received_msat,
                    next.received_fiat(),
                )),
                InvoiceStatus::Cancelled => DomainEvent::InvoiceCancelled(event_data(
                    &next,
                    next.amount_msat,
                    requested_fiat(&next),
                )),
                InvoiceStatus::Expired => DomainEvent::InvoiceExpired(event_data(
                    &next,
                    next.amount_msat,
                    requested_fiat(&next),
                )),
            };
            let stored = self.events.append_in(&tx, &event)?;
            tx.commit()?;
            (next, stored)
        };
        self.events.publish([stored]);
        Ok(Outcome::Applied(next))
    }
}

/// Cancels on the backend; a backend that does not know the hash has nothing to refuse.
async fn cancel_on_backend(
    backend: &dyn LightningBackend,
    hash: Hash32,
) -> Result<(), BackendError> {
    match backend.cancel_invoice(hash).await {
        Ok(()) | Err(BackendError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn requested_fiat(inv: &Invoice) -> Option<rust_decimal::Decimal> {
    inv.fiat.as_ref().map(|f| f.amount)
}

/// The payload of an invoice event; `amount_sats` is `amount_msat` rounded down.
fn event_data(
    inv: &Invoice,
    amount_msat: Option<u64>,
    amount_fiat: Option<rust_decimal::Decimal>,
) -> InvoiceEventData {
    InvoiceEventData {
        invoice_id: inv.id.clone(),
        payment_hash: inv.payment_hash.to_string(),
        amount_sats: amount_msat.map(|m| m / 1000),
        amount_msat,
        amount_fiat,
        currency: inv.fiat.as_ref().map(|f| f.currency.clone()),
        timestamp: rfc3339_now(),
        description: inv.description.clone(),
        metadata: inv.metadata.clone(),
    }
}

fn check_metadata(m: Option<serde_json::Value>) -> Result<serde_json::Value, InvoiceError> {
    let m = m.unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let kind = match &m {
        serde_json::Value::Object(_) => None,
        serde_json::Value::Null => Some("null"),
        serde_json::Value::Bool(_) => Some("a boolean"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Array(_) => Some("an array"),
    };
    if let Some(kind) = kind {
        return Err(InvoiceError::InvalidMetadata(format!(
            "must be a JSON object such as {{\"order\": \"42\"}}, got {kind}"
        )));
    }
    let len = m.to_string().len();
    if len > MAX_METADATA_BYTES {
        return Err(InvoiceError::InvalidMetadata(format!(
            "{len} bytes serialized; at most {MAX_METADATA_BYTES} are accepted"
        )));
    }
    Ok(m)
}

fn check_reference(r: String) -> Result<String, InvoiceError> {
    if r.is_empty() || r.chars().count() > MAX_REFERENCE_LEN {
        return Err(InvoiceError::InvalidReference(format!(
            "{r:?} must be 1 to {MAX_REFERENCE_LEN} characters"
        )));
    }
    if let Some(c) = r
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(InvoiceError::InvalidReference(format!(
            "{r:?} contains {c:?}; use only letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(r)
}

fn hex20() -> String {
    let b: [u8; 10] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service's futures must be `Send` so servers can spawn them.
    #[allow(dead_code)]
    fn futures_are_send(s: &InvoiceService) {
        fn is_send<T: Send>(_: T) {}
        is_send(s.create(NewInvoice::new(InvoiceAmount::Open, "")));
        is_send(s.settle(""));
        is_send(s.settle_with_preimage("", Hash32([0; 32])));
        is_send(s.cancel(""));
        is_send(s.on_accepted(Hash32([0; 32]), 0));
        is_send(s.expire_due());
    }
}
