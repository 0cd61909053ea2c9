//! [`ReplicatedPersister`]: LDK's `Persist` for the node's channel monitors, writing locally
//! and to replicas before an update counts as done.
//!
//! Every new monitor and every `ChannelMonitorUpdate` is first written to the node's SQLite
//! database (durable before anything else happens), then queued to each replica's thread:
//!
//! - [`ReplicationMode::Sync`]: the call blocks until `quorum` replicas acknowledged (at
//!   most a timeout; not while fewer than `quorum` replicas are reachable), so the writer
//!   is held back while replicas are slow.
//! - [`ReplicationMode::Async`]: the call returns at once.
//!
//! In both modes the update is reported `InProgress` (LDK does not allow mixing `Completed`
//! and `InProgress` in one run) and a completion thread calls
//! `ChainMonitor::channel_monitor_updated` as soon as `quorum` replicas hold it.
//!
//! Either way no payment proceeds on a state that is not replicated: LDK does not send
//! `revoke_and_ack`/`commitment_signed` for a channel whose monitor update is in progress.
//!
//! Chain-sync writes (no `ChannelMonitorUpdate`) are replicated in the background without
//! waiting. With a tower among the replicas, each revoked counterparty
//! commitment also yields an encrypted justice blob (see [`crate::tower`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use bitcoin::{ScriptBuf, Transaction};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::chan_utils::CommitmentTransaction;
use lightning::ln::types::ChannelId;
use lightning::sign::InMemorySigner;
use lightning::util::persist::{KVStoreSync, MonitorName};
use lightning::util::ser::Writeable;
use serde::{Deserialize, Serialize};

use super::replica::{Replica, ReplicaConfig};
use super::{justice_key, seal, txid_hint};
use crate::node::store::SqliteStore;
use crate::node::types::{ChainMonitor, Keys, LocalMonitorPersister};
use crate::Error;

const JUSTICE_NAMESPACE: &str = "lightkeeper_justice";
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// When a monitor update counts as replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMode {
    /// Block the writing thread until `quorum` replicas acknowledged, at most `timeout`; the
    /// channel waits for the replicas either way.
    Sync {
        /// How many replicas must hold the update.
        quorum: usize,
        /// How long one update may block.
        timeout: Duration,
    },
    /// Return at once; the channel moves on when `quorum` replicas acknowledged.
    Async {
        /// How many replicas must hold the update.
        quorum: usize,
    },
}

impl ReplicationMode {
    /// The number of replicas that must acknowledge.
    pub fn quorum(&self) -> usize {
        match self {
            ReplicationMode::Sync { quorum, .. } | ReplicationMode::Async { quorum } => *quorum,
        }
    }
}

/// Replication settings for [`crate::Builder::monitor_replication`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// The replicas, in order.
    pub replicas: Vec<ReplicaConfig>,
    /// When an update counts as replicated.
    pub mode: ReplicationMode,
    /// Fee rate of the justice transactions handed to towers, in sat per 1000 weight units.
    pub justice_fee_rate_sat_per_kw: u64,
}

impl ReplicationConfig {
    /// Synchronous replication to `replicas`, `quorum` of which must acknowledge each update
    /// (the writer blocks at most 2 s; the channel stays paused until they do). A quorum of
    /// 0 replicates in the background without holding anything back.
    pub fn sync(replicas: Vec<ReplicaConfig>, quorum: usize) -> Self {
        Self {
            replicas,
            mode: ReplicationMode::Sync {
                quorum,
                timeout: Duration::from_secs(2),
            },
            justice_fee_rate_sat_per_kw: 2_500,
        }
    }
    /// Asynchronous replication to `replicas`, `quorum` of which must acknowledge before the
    /// channel moves on.
    pub fn asynchronous(replicas: Vec<ReplicaConfig>, quorum: usize) -> Self {
        Self {
            replicas,
            mode: ReplicationMode::Async { quorum },
            justice_fee_rate_sat_per_kw: 2_500,
        }
    }
    /// Sets the fee rate of justice transactions (sat per 1000 weight units).
    pub fn justice_fee_rate(mut self, sat_per_kw: u64) -> Self {
        self.justice_fee_rate_sat_per_kw = sat_per_kw;
        self
    }
}

/// The state of one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaHealth {
    /// Which replica (`sqlite:<path>` or `tower:<url>`).
    pub replica: String,
    /// Whether its last attempt succeeded.
    pub healthy: bool,
    /// Writes waiting for it (monitors, archives, justice blobs).
    pub queued: usize,
    /// The last error, while unhealthy.
    pub last_error: Option<String>,
    /// Unix time of its last acknowledged write.
    pub last_success_unix: Option<u64>,
    /// Justice blobs it accepted.
    pub blobs_uploaded: u64,
}

/// Replication health, from [`crate::Node::monitor_replication_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// Enough replicas are reachable and no monitor update waits for them.
    pub healthy: bool,
    /// The configured mode.
    pub mode: ReplicationMode,
    /// Each replica.
    pub replicas: Vec<ReplicaHealth>,
    /// Monitor updates LDK is holding back until replicas acknowledge them (the channels
    /// concerned cannot make payments meanwhile).
    pub pending_monitor_updates: usize,
    /// Justice blobs built so far in this run.
    pub justice_blobs_created: u64,
    /// A one-line summary for operators.
    pub message: String,
}

#[derive(Clone)]
enum Job {
    Monitor {
        name: String,
        update_id: u64,
        data: Arc<Vec<u8>>,
        updates: Vec<(u64, Arc<Vec<u8>>)>,
    },
    Archive {
        name: String,
    },
    Blob {
        hint: [u8; super::HINT_LEN],
        blob: Arc<Vec<u8>>,
    },
}

struct WorkerState {
    queue: VecDeque<Job>,
    in_flight: bool,
    healthy: bool,
    last_error: Option<String>,
    last_success_unix: Option<u64>,
    blobs_uploaded: u64,
}

struct Worker {
    replica: Box<dyn Replica>,
    state: Mutex<WorkerState>,
    cv: Condvar,
}

#[derive(Default)]
struct Acks {
    /// Per monitor name, the highest acknowledged update id per replica.
    acked: HashMap<String, Vec<Option<u64>>>,
    channels: HashMap<ChannelId, String>,
}

struct Shared {
    workers: Vec<Worker>,
    quorum: usize,
    acks: Mutex<Acks>,
    ack_cv: Condvar,
    stop: AtomicBool,
    chain_monitor: OnceLock<Weak<ChainMonitor>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The highest update id at least `quorum` replicas hold for `name`.
    fn quorum_acked(&self, acks: &Acks, name: &str) -> Option<u64> {
        if self.quorum == 0 {
            return Some(u64::MAX);
        }
        let mut ids: Vec<u64> = acks.acked.get(name)?.iter().flatten().copied().collect();
        if ids.len() < self.quorum {
            return None;
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Some(ids[self.quorum - 1])
    }

    fn push(&self, worker: &Worker, mut job: Job) {
        let mut st = lock(&worker.state);
        if let Job::Monitor {
            name,
            updates: new_updates,
            ..
        } = &mut job
        {
            // A newer full monitor supersedes a queued one; keep the queued updates.
            let skip = usize::from(st.in_flight);
            let mut carried = Vec::new();
            let mut i = skip;
            while i < st.queue.len() {
                if matches!(&st.queue[i], Job::Monitor { name: n, .. } if n == name) {
                    if let Some(Job::Monitor { updates, .. }) = st.queue.remove(i) {
                        carried.extend(updates);
                    }
                } else {
                    i += 1;
                }
            }
            if !carried.is_empty() {
                carried.append(new_updates);
                *new_updates = carried;
            }
        }
        st.queue.push_back(job);
        worker.cv.notify_all();
    }

    fn run_worker(self: Arc<Self>, idx: usize) {
        let worker = &self.workers[idx];
        let mut failures = 0u32;
        loop {
            let job = {
                let mut st = lock(&worker.state);
                loop {
                    if self.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Some(j) = st.queue.front() {
                        let j = j.clone();
                        st.in_flight = true;
                        break j;
                    }
                    st = worker
                        .cv
                        .wait_timeout(st, Duration::from_millis(500))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            };
            let res = match &job {
                Job::Monitor {
                    name,
                    update_id,
                    data,
                    updates,
                } => {
                    let ups: Vec<(u64, Vec<u8>)> =
                        updates.iter().map(|(i, u)| (*i, u.to_vec())).collect();
                    worker.replica.put_monitor(name, *update_id, data, &ups)
                }
                Job::Archive { name } => worker.replica.archive_monitor(name),
                Job::Blob { hint, blob } => worker.replica.put_blob(hint, blob),
            };
            match res {
                Ok(()) => {
                    failures = 0;
                    {
                        let mut st = lock(&worker.state);
                        st.queue.pop_front();
                        st.in_flight = false;
                        if !st.healthy {
                            log::info!("replica {} is reachable again", worker.replica.describe());
                        }
                        st.healthy = true;
                        st.last_error = None;
                        st.last_success_unix = Some(super::now_unix());
                        if matches!(job, Job::Blob { .. }) {
                            st.blobs_uploaded += 1;
                        }
                    }
                    if let Job::Monitor {
                        name, update_id, ..
                    } = job
                    {
                        let mut acks = lock(&self.acks);
                        let n = self.workers.len();
                        let slot =
                            &mut acks.acked.entry(name).or_insert_with(|| vec![None; n])[idx];
                        *slot = Some(slot.map_or(update_id, |s| s.max(update_id)));
                        drop(acks);
                        self.ack_cv.notify_all();
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    {
                        let mut st = lock(&worker.state);
                        st.in_flight = false;
                        if st.healthy {
                            log::warn!("replica {} failed: {e}", worker.replica.describe());
                        }
                        st.healthy = false;
                        st.last_error = Some(e);
                    }
                    self.ack_cv.notify_all();
                    let backoff = (Duration::from_millis(50)
                        * 2u32.saturating_pow(failures.min(6)))
                    .min(MAX_BACKOFF);
                    let st = lock(&worker.state);
                    let _ = worker.cv.wait_timeout(st, backoff);
                }
            }
        }
    }

    /// Releases monitor updates LDK holds in progress once a quorum of replicas has them.
    fn run_completions(self: Arc<Self>) {
        loop {
            {
                let acks = lock(&self.acks);
                let _ = self
                    .ack_cv
                    .wait_timeout(acks, Duration::from_millis(20))
                    .unwrap_or_else(|p| p.into_inner());
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let Some(cm) = self.chain_monitor.get().and_then(Weak::upgrade) else {
                continue;
            };
            for (channel_id, ids) in cm.list_pending_monitor_updates() {
                if ids.is_empty() {
                    continue;
                }
                let done = {
                    let acks = lock(&self.acks);
                    acks.channels
                        .get(&channel_id)
                        .and_then(|name| self.quorum_acked(&acks, name))
                };
                let Some(done) = done else { continue };
                for id in ids.into_iter().filter(|id| *id <= done) {
                    if let Err(e) = cm.channel_monitor_updated(channel_id, id) {
                        log::warn!("channel_monitor_updated({channel_id}, {id}): {e:?}");
                    } else {
                        log::debug!("monitor update {id} of {channel_id} replicated");
                    }
                }
            }
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
struct JusticeQueue {
    /// Hex script the justice transactions pay to (one wallet address per channel).
    destination: String,
    /// Counterparty commitments not yet revoked: (unsigned justice tx hex, to_local value,
    /// commitment number).
    pending: Vec<(String, u64, u64)>,
}

struct Justice {
    fee_rate: u64,
    destination: Box<dyn Fn() -> Option<ScriptBuf> + Send + Sync>,
    queues: Mutex<HashMap<String, JusticeQueue>>,
    created: AtomicU64,
}

/// The node's `Persist` implementation: the local SQLite store, plus replicas when
/// configured (see the module docs). Without replicas it behaves exactly like LDK's
/// `Persist` for a `KVStoreSync`.
pub struct ReplicatedPersister {
    store: Arc<SqliteStore>,
    local: Arc<LocalMonitorPersister>,
    pub(crate) keys: Arc<Keys>,
    mode: Option<ReplicationMode>,
    shared: Option<Arc<Shared>>,
    key: [u8; 32],
    justice: Option<Justice>,
}

impl ReplicatedPersister {
    /// A persister that only writes to the local store.
    pub(crate) fn local(
        store: Arc<SqliteStore>,
        local: Arc<LocalMonitorPersister>,
        keys: Arc<Keys>,
    ) -> Self {
        Self {
            store,
            local,
            keys,
            mode: None,
            shared: None,
            key: [0; 32],
            justice: None,
        }
    }

    /// A persister replicating to `config.replicas`; `key` encrypts monitor backups and
    /// `destination` gives the script justice transactions pay to.
    pub(crate) fn replicated(
        store: Arc<SqliteStore>,
        local: Arc<LocalMonitorPersister>,
        keys: Arc<Keys>,
        config: &ReplicationConfig,
        key: [u8; 32],
        destination: Box<dyn Fn() -> Option<ScriptBuf> + Send + Sync>,
    ) -> Result<Self, Error> {
        let quorum = config.mode.quorum();
        if config.replicas.is_empty() || quorum > config.replicas.len() {
            return Err(Error::InvalidConfig(format!(
                "monitor replication needs at least one replica and a quorum of at most {} (got {quorum})",
                config.replicas.len()
            )));
        }
        let mut workers = Vec::new();
        for r in &config.replicas {
            workers.push(Worker {
                replica: r.open()?,
                state: Mutex::new(WorkerState {
                    queue: VecDeque::new(),
                    in_flight: false,
                    healthy: true,
                    last_error: None,
                    last_success_unix: None,
                    blobs_uploaded: 0,
                }),
                cv: Condvar::new(),
            });
        }
        let with_tower = workers.iter().any(|w| w.replica.accepts_blobs());
        let shared = Arc::new(Shared {
            workers,
            quorum,
            acks: Mutex::new(Acks::default()),
            ack_cv: Condvar::new(),
            stop: AtomicBool::new(false),
            chain_monitor: OnceLock::new(),
        });
        for i in 0..shared.workers.len() {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("lk-replica-{i}"))
                .spawn(move || s.run_worker(i))?;
        }
        let s = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("lk-replica-done".into())
            .spawn(move || s.run_completions())?;
        Ok(Self {
            store,
            local,
            keys,
            mode: Some(config.mode),
            shared: Some(shared),
            key,
            justice: with_tower.then(|| Justice {
                fee_rate: config.justice_fee_rate_sat_per_kw,
                destination,
                queues: Mutex::new(HashMap::new()),
                created: AtomicU64::new(0),
            }),
        })
    }

    /// Gives the completion thread the chain monitor to release updates on.
    pub(crate) fn set_chain_monitor(&self, cm: &Arc<ChainMonitor>) {
        if let Some(s) = &self.shared {
            let _ = s.chain_monitor.set(Arc::downgrade(cm));
        }
    }

    /// Replication health; `None` when no replicas are configured.
    pub(crate) fn status(&self, cm: &ChainMonitor) -> Option<ReplicationStatus> {
        let shared = self.shared.as_ref()?;
        let mode = self.mode?;
        let replicas: Vec<ReplicaHealth> = shared
            .workers
            .iter()
            .map(|w| {
                let st = lock(&w.state);
                ReplicaHealth {
                    replica: w.replica.describe(),
                    healthy: st.healthy,
                    queued: st.queue.len(),
                    last_error: st.last_error.clone(),
                    last_success_unix: st.last_success_unix,
                    blobs_uploaded: st.blobs_uploaded,
                }
            })
            .collect();
        let pending: usize = cm
            .list_pending_monitor_updates()
            .values()
            .map(|v| v.len())
            .sum();
        let reachable = replicas.iter().filter(|r| r.healthy).count();
        let healthy = reachable >= shared.quorum && pending == 0;
        let mut message = if healthy {
            format!("ok: {reachable} of {} replicas reachable", replicas.len())
        } else {
            format!(
                "degraded: {reachable} of {} replicas reachable (quorum {}); {pending} monitor update(s) held back, channels paused until replicated",
                replicas.len(),
                shared.quorum
            )
        };
        for r in replicas.iter().filter(|r| !r.healthy) {
            message.push_str(&format!(
                "; {}: {}",
                r.replica,
                r.last_error.as_deref().unwrap_or("unreachable")
            ));
        }
        Some(ReplicationStatus {
            healthy,
            mode,
            replicas,
            pending_monitor_updates: pending,
            justice_blobs_created: self
                .justice
                .as_ref()
                .map_or(0, |j| j.created.load(Ordering::Relaxed)),
            message,
        })
    }

    fn enqueue_monitor(
        &self,
        shared: &Shared,
        name: &str,
        monitor: &ChannelMonitor<InMemorySigner>,
        update: Option<&ChannelMonitorUpdate>,
    ) -> u64 {
        let update_id = monitor.get_latest_update_id();
        {
            let mut acks = lock(&shared.acks);
            acks.channels.insert(monitor.channel_id(), name.to_string());
        }
        let data = Arc::new(seal(&self.key, &monitor.encode()));
        let updates: Vec<(u64, Arc<Vec<u8>>)> = update
            .map(|u| vec![(u.update_id, Arc::new(seal(&self.key, &u.encode())))])
            .unwrap_or_default();
        for w in &shared.workers {
            shared.push(
                w,
                Job::Monitor {
                    name: name.to_string(),
                    update_id,
                    data: Arc::clone(&data),
                    updates: updates.clone(),
                },
            );
        }
        update_id
    }

    /// Waits (sync mode) or not (async mode) for the quorum; see the module docs. LDK
    /// forbids mixing `Completed` and `InProgress` in one run, so with a quorum every update
    /// is reported `InProgress` and released by the completion thread once replicated.
    fn outcome(&self, shared: &Shared, name: &str, update_id: u64) -> ChannelMonitorUpdateStatus {
        if shared.quorum == 0 {
            return ChannelMonitorUpdateStatus::Completed;
        }
        // Waiting only helps while enough replicas are reachable; a known outage must not
        // block the node's threads on every update.
        let reachable = shared
            .workers
            .iter()
            .filter(|w| lock(&w.state).healthy)
            .count();
        if let (Some(ReplicationMode::Sync { timeout, .. }), true) =
            (self.mode, reachable >= shared.quorum)
        {
            let deadline = Instant::now() + timeout;
            let mut acks = lock(&shared.acks);
            loop {
                if shared
                    .quorum_acked(&acks, name)
                    .is_some_and(|id| id >= update_id)
                {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    log::warn!(
                        "monitor update {update_id} of {name} not replicated to {} replica(s) within {timeout:?}; the channel waits",
                        shared.quorum
                    );
                    break;
                }
                acks = shared
                    .ack_cv
                    .wait_timeout(acks, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        ChannelMonitorUpdateStatus::InProgress
    }

    fn justice_data(
        &self,
        j: &Justice,
        q: &mut JusticeQueue,
        tx: &CommitmentTransaction,
    ) -> Option<(String, u64, u64)> {
        if q.destination.is_empty() {
            q.destination = (j.destination)()?.to_hex_string();
        }
        let dest = ScriptBuf::from_hex(&q.destination).ok()?;
        let trusted = tx.trust();
        let idx = trusted.revokeable_output_index()?;
        let value = trusted.built_transaction().transaction.output[idx].value;
        let justice = trusted.build_to_local_justice_tx(j.fee_rate, dest).ok()?;
        Some((
            bitcoin::consensus::encode::serialize_hex(&justice),
            value.to_sat(),
            tx.commitment_number(),
        ))
    }

    /// Queues the counterparty commitments `new` introduces and turns every revoked one into
    /// an encrypted justice blob for the towers.
    fn process_justice(
        &self,
        shared: &Shared,
        name: &str,
        monitor: &ChannelMonitor<InMemorySigner>,
        new: Vec<CommitmentTransaction>,
    ) {
        let Some(j) = &self.justice else { return };
        let mut queues = lock(&j.queues);
        if !queues.contains_key(name) {
            let q = KVStoreSync::read(&*self.store, JUSTICE_NAMESPACE, "", name)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            queues.insert(name.to_string(), q);
        }
        let q = queues.get_mut(name).expect("inserted above");
        let mut changed = false;
        for tx in &new {
            if let Some(d) = self.justice_data(j, q, tx) {
                q.pending.push(d);
                changed = true;
            }
        }
        while let Some((hex, value, number)) = q.pending.first().cloned() {
            let Ok(tx) = bitcoin::consensus::encode::deserialize_hex::<Transaction>(&hex) else {
                q.pending.remove(0);
                continue;
            };
            let commitment_txid = tx.input[0].previous_output.txid;
            match monitor.sign_to_local_justice_tx(tx, 0, value, number) {
                Ok(signed) => {
                    let blob = seal(
                        &justice_key(&commitment_txid),
                        &bitcoin::consensus::serialize(&signed),
                    );
                    let blob = Arc::new(blob);
                    for w in shared.workers.iter().filter(|w| w.replica.accepts_blobs()) {
                        shared.push(
                            w,
                            Job::Blob {
                                hint: txid_hint(&commitment_txid),
                                blob: Arc::clone(&blob),
                            },
                        );
                    }
                    j.created.fetch_add(1, Ordering::Relaxed);
                    log::debug!(
                        "justice blob for revoked commitment {commitment_txid} (justice tx {})",
                        signed.compute_txid()
                    );
                    q.pending.remove(0);
                    changed = true;
                }
                Err(()) => break,
            }
        }
        if changed {
            if let Ok(b) = serde_json::to_vec(&*q) {
                if let Err(e) = KVStoreSync::write(&*self.store, JUSTICE_NAMESPACE, "", name, b) {
                    log::warn!("cannot persist the justice queue of {name}: {e}");
                }
            }
        }
    }
}

impl Drop for ReplicatedPersister {
    fn drop(&mut self) {
        if let Some(s) = &self.shared {
            s.stop.store(true, Ordering::SeqCst);
            for w in &s.workers {
                w.cv.notify_all();
            }
            s.ack_cv.notify_all();
        }
    }
}

impl Persist<InMemorySigner> for ReplicatedPersister {
    fn persist_new_channel(
        &self,
        monitor_name: MonitorName,
        monitor: &ChannelMonitor<InMemorySigner>,
    ) -> ChannelMonitorUpdateStatus {
        let local =
            Persist::<InMemorySigner>::persist_new_channel(&*self.local, monitor_name, monitor);
        let Some(shared) = &self.shared else {
            return local;
        };
        if local != ChannelMonitorUpdateStatus::Completed {
            return local;
        }
        let name = monitor_name.to_string();
        let id = self.enqueue_monitor(shared, &name, monitor, None);
        if let Some(tx) = monitor.initial_counterparty_commitment_tx() {
            self.process_justice(shared, &name, monitor, vec![tx]);
        }
        self.outcome(shared, &name, id)
    }

    fn update_persisted_channel(
        &self,
        monitor_name: MonitorName,
        update: Option<&ChannelMonitorUpdate>,
        monitor: &ChannelMonitor<InMemorySigner>,
    ) -> ChannelMonitorUpdateStatus {
        let local = Persist::<InMemorySigner>::update_persisted_channel(
            &*self.local,
            monitor_name,
            update,
            monitor,
        );
        let Some(shared) = &self.shared else {
            return local;
        };
        if local != ChannelMonitorUpdateStatus::Completed {
            return local;
        }
        let name = monitor_name.to_string();
        let id = self.enqueue_monitor(shared, &name, monitor, update);
        let Some(update) = update else {
            // Chain sync (or a refused update): replicated in the background, nothing to wait
            // for; still `InProgress`, as LDK must see one mode only.
            return if shared.quorum == 0 {
                ChannelMonitorUpdateStatus::Completed
            } else {
                ChannelMonitorUpdateStatus::InProgress
            };
        };
        let new = monitor.counterparty_commitment_txs_from_update(update);
        self.process_justice(shared, &name, monitor, new);
        self.outcome(shared, &name, id)
    }

    fn archive_persisted_channel(&self, monitor_name: MonitorName) {
        Persist::<InMemorySigner>::archive_persisted_channel(&*self.local, monitor_name);
        let Some(shared) = &self.shared else { return };
        let name = monitor_name.to_string();
        if let Some(j) = &self.justice {
            lock(&j.queues).remove(&name);
            let _ = KVStoreSync::remove(&*self.store, JUSTICE_NAMESPACE, "", &name, false);
        }
        for w in &shared.workers {
            shared.push(w, Job::Archive { name: name.clone() });
        }
    }
}
