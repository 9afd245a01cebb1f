//! [`MemBackend`]: the [`Backend`] contract served by one local
//! [`kv::Store`], with no replication. The API tests run against it, and it
//! is the reference for what the node runtime must do (see the contract in
//! [`crate::api`]).
//!
//! Commands apply immediately, stamped with this process's monotonic clock
//! (or a manual clock, for tests that move time by hand). One lock guards
//! the store and every watch session, so a watcher's catch-up from history
//! and its live events join without a gap or a repeat, as
//! [`kv::WatchHub`] requires.
//!
//! Leases expire as on a leader: before each request the backend proposes
//! (here: applies) a `LeaseExpire` for the leases past their deadline.
//! [`MemBackend::spawn_lease_expiry`] does the same periodically when no
//! requests come.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use kv::{
    ApplyContext, Command, LeaseExpireRequest, Limits, ResponseHeader, Store, WatchCreateRequest,
    WatchHub, WatchResponse,
};
use tokio::sync::{Mutex, mpsc};

use super::backend::{ApiError, Backend, MemberInfo, NodeStatus, WatchStream};
use super::watch_service::INVALID_WATCH_ID;

/// Leases revoked per expiry command, at most.
const EXPIRE_BATCH: usize = 1024;

/// Who the in-memory member is, and how it is bounded.
#[derive(Clone, Debug)]
pub struct MemConfig {
    /// The cluster id it reports.
    pub cluster_id: u64,
    /// Its member id.
    pub member_id: u64,
    /// Its `--name`.
    pub name: String,
    /// Peer URLs it reports in `MemberList`.
    pub peer_urls: Vec<String>,
    /// Client URLs it reports in `MemberList`.
    pub client_urls: Vec<String>,
    /// The store's limits.
    pub limits: Limits,
    /// Responses buffered per watch session on the returned stream (more
    /// wait in an unbounded queue: a slow watcher delays only itself).
    pub session_buffer: usize,
}

impl Default for MemConfig {
    fn default() -> Self {
        MemConfig {
            cluster_id: 0x5359_4e4f_4400_0001,
            member_id: 0x5359_4e4f_4400_0101,
            name: "synod-mem".to_owned(),
            peer_urls: vec!["http://127.0.0.1:2380".to_owned()],
            client_urls: vec!["http://127.0.0.1:2379".to_owned()],
            limits: Limits::default(),
            session_buffer: 256,
        }
    }
}

#[derive(Debug)]
enum Clock {
    Monotonic(Instant),
    Manual(AtomicU64),
}

#[derive(Debug)]
struct Session {
    hub: WatchHub,
    out: mpsc::UnboundedSender<WatchResponse>,
}

#[derive(Debug)]
struct State {
    store: Store,
    sessions: BTreeMap<u64, Session>,
    next_session: u64,
    /// Commands applied (refused ones included, as slots they would fill).
    applied_index: u64,
}

impl State {
    /// Applies a command and routes its events to every session's hub.
    fn apply(&mut self, command: &Command, now_ms: u64) -> Result<kv::Response, ApiError> {
        self.applied_index += 1;
        let applied = self.store.apply(command, ApplyContext { now_ms })?;
        if !applied.events.is_empty() {
            let revision = self.store.revision();
            for session in self.sessions.values_mut() {
                for response in session.hub.publish(revision, &applied.events) {
                    // A closed session is removed by `watch_close`.
                    let _ = session.out.send(response);
                }
            }
        }
        Ok(applied.response)
    }

    /// Revokes the leases past their deadline at `now_ms`, as the leader's
    /// expiry loop does.
    fn expire_due(&mut self, now_ms: u64) -> usize {
        let ids = self.store.expired_leases(now_ms, EXPIRE_BATCH);
        if ids.is_empty() {
            return 0;
        }
        match self.apply(&Command::LeaseExpire(LeaseExpireRequest { ids }), now_ms) {
            Ok(kv::Response::LeaseExpire(answer)) => answer.revoked.len(),
            _ => 0,
        }
    }

    fn send(&mut self, session: u64, responses: Vec<WatchResponse>) {
        if let Some(session) = self.sessions.get(&session) {
            for response in responses {
                let _ = session.out.send(response);
            }
        }
    }
}

/// A [`Backend`] over one local [`Store`]; see the module docs.
#[derive(Debug)]
pub struct MemBackend {
    state: Mutex<State>,
    clock: Clock,
    config: MemConfig,
}

impl Default for MemBackend {
    fn default() -> Self {
        MemBackend::new(MemConfig::default())
    }
}

impl MemBackend {
    /// A fresh store (revision 1) on the process's monotonic clock.
    pub fn new(config: MemConfig) -> Self {
        MemBackend::with_clock(config, Clock::Monotonic(Instant::now()))
    }

    /// A fresh store whose clock stands still at 0 until
    /// [`MemBackend::advance_clock`] moves it: lease expiry without waiting.
    pub fn with_manual_clock(config: MemConfig) -> Self {
        MemBackend::with_clock(config, Clock::Manual(AtomicU64::new(0)))
    }

    fn with_clock(config: MemConfig, clock: Clock) -> Self {
        MemBackend {
            state: Mutex::new(State {
                store: Store::new(config.limits.clone()),
                sessions: BTreeMap::new(),
                next_session: 1,
                applied_index: 0,
            }),
            clock,
            config,
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MemConfig {
        &self.config
    }

    /// The time stamp the next command gets, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        match &self.clock {
            Clock::Monotonic(start) => {
                u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
            }
            Clock::Manual(now) => now.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward by `ms`; no effect on the monotonic one.
    pub fn advance_clock(&self, ms: u64) {
        if let Clock::Manual(now) = &self.clock {
            now.fetch_add(ms, Ordering::SeqCst);
        }
    }

    /// Revokes every lease past its deadline now; returns how many.
    pub async fn expire_leases(&self) -> usize {
        let now_ms = self.now_ms();
        self.state.lock().await.expire_due(now_ms)
    }

    /// Runs [`MemBackend::expire_leases`] every `every` until the backend
    /// is dropped.
    pub fn spawn_lease_expiry(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let backend: Weak<MemBackend> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(backend) = backend.upgrade() else {
                    break;
                };
                backend.expire_leases().await;
            }
        })
    }

    /// Runs `f` on the store, under the lock (for tests and tools).
    pub async fn inspect<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.state.lock().await.store)
    }

    /// Watch sessions open.
    pub async fn session_count(&self) -> usize {
        self.state.lock().await.sessions.len()
    }

    /// The lock, with due leases expired first.
    async fn current(&self) -> (tokio::sync::MutexGuard<'_, State>, u64) {
        let now_ms = self.now_ms();
        let mut state = self.state.lock().await;
        state.expire_due(now_ms);
        (state, now_ms)
    }
}

impl Backend for MemBackend {
    async fn propose(&self, command: Command) -> Result<kv::Response, ApiError> {
        let (mut state, now_ms) = self.current().await;
        state.apply(&command, now_ms)
    }

    async fn range(
        &self,
        request: kv::RangeRequest,
        _serializable: bool,
    ) -> Result<kv::RangeResponse, ApiError> {
        let (state, _) = self.current().await;
        Ok(state.store.range(&request)?)
    }

    async fn lease_time_to_live(
        &self,
        request: kv::LeaseTimeToLiveRequest,
    ) -> Result<kv::LeaseTimeToLiveResponse, ApiError> {
        let (state, now_ms) = self.current().await;
        Ok(state.store.lease_time_to_live(&request, now_ms))
    }

    async fn lease_leases(&self) -> Result<kv::LeaseLeasesResponse, ApiError> {
        let (state, _) = self.current().await;
        Ok(state.store.lease_leases())
    }

    async fn watch_open(&self) -> Result<(u64, WatchStream), ApiError> {
        let (queue_tx, mut queue_rx) = mpsc::unbounded_channel::<WatchResponse>();
        let (tx, rx) = mpsc::channel(self.config.session_buffer.max(1));
        // Moves the session's queue onto the bounded stream; ends when the
        // session is closed (queue dropped) or the stream's reader is gone.
        tokio::spawn(async move {
            while let Some(response) = queue_rx.recv().await {
                if tx.send(response).await.is_err() {
                    break;
                }
            }
        });
        let mut state = self.state.lock().await;
        let id = state.next_session;
        state.next_session += 1;
        state.sessions.insert(
            id,
            Session {
                hub: WatchHub::new(),
                out: queue_tx,
            },
        );
        Ok((id, WatchStream { responses: rx }))
    }

    async fn watch_create(
        &self,
        session: u64,
        request: WatchCreateRequest,
    ) -> Result<(), ApiError> {
        let (mut state, _) = self.current().await;
        let state = &mut *state;
        let Some(entry) = state.sessions.get_mut(&session) else {
            return Err(ApiError::Stopped);
        };
        let responses = entry.hub.create(&state.store, &request);
        state.send(session, responses);
        Ok(())
    }

    async fn watch_cancel(&self, session: u64, watch_id: i64) {
        let mut state = self.state.lock().await;
        let revision = state.store.revision();
        let cancelled = state
            .sessions
            .get_mut(&session)
            .and_then(|s| s.hub.cancel(watch_id, revision));
        state.send(session, cancelled.into_iter().collect());
    }

    async fn watch_progress(&self, session: u64) {
        let mut state = self.state.lock().await;
        // Every watcher of the hub is always in sync (events are routed under
        // the lock), so progress can be reported at once, as etcd reports it
        // for a synced stream: watch id -1 and the current revision.
        let progress = WatchResponse {
            header: ResponseHeader {
                revision: state.store.revision(),
            },
            watch_id: INVALID_WATCH_ID,
            ..WatchResponse::default()
        };
        state.send(session, vec![progress]);
    }

    async fn watch_close(&self, session: u64) {
        self.state.lock().await.sessions.remove(&session);
    }

    async fn status(&self) -> Result<NodeStatus, ApiError> {
        let (state, _) = self.current().await;
        Ok(NodeStatus {
            cluster_id: self.config.cluster_id,
            member_id: self.config.member_id,
            leader: self.config.member_id,
            revision: state.store.revision(),
            term: 1,
            commit_index: state.applied_index,
            applied_index: state.applied_index,
            db_size: i64::try_from(state.store.snapshot().len()).unwrap_or(i64::MAX),
            errors: Vec::new(),
        })
    }

    async fn members(&self) -> Result<Vec<MemberInfo>, ApiError> {
        Ok(vec![MemberInfo {
            id: self.config.member_id,
            name: self.config.name.clone(),
            peer_urls: self.config.peer_urls.clone(),
            client_urls: self.config.client_urls.clone(),
            is_learner: false,
        }])
    }

    async fn change_members(&self, _change: kv::MemberChange) -> Result<Vec<MemberInfo>, ApiError> {
        // One member and no log: there is no one to add and nothing to
        // remove without losing the store.
        Err(ApiError::Cluster(kv::ClusterError::Unhealthy))
    }

    async fn hash_kv(&self) -> Result<(u32, i64, i64), ApiError> {
        let (state, _) = self.current().await;
        let hash = state.store.state_hash();
        // Fold the 64-bit state hash into etcd's 32 bits.
        let folded = ((hash >> 32) ^ (hash & 0xffff_ffff)) as u32;
        Ok((
            folded,
            state.store.revision(),
            state.store.compact_revision(),
        ))
    }

    async fn snapshot(&self) -> Result<Vec<u8>, ApiError> {
        let (state, _) = self.current().await;
        Ok(state.store.snapshot())
    }
}
