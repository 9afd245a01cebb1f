//! etcd's `Watch` service: one bidirectional stream carries many watchers.
//!
//! Each gRPC stream is one backend watch session ([`Backend::watch_open`]).
//! Two loops serve it, driven together in one task:
//! - the *reader* turns the client's requests into backend calls (create,
//!   cancel, progress);
//! - the *forwarder* passes the session's responses to the client, converted,
//!   with the member's header, split into fragments for watchers that asked
//!   for it, and with periodic progress notifications for watchers that
//!   asked for those.
//!
//! etcd's clients match a `created` response to the oldest create they are
//! waiting for, so `created` responses must go out in the order of the
//! creates, including the ones answered here without the backend (a bad
//! filter, an empty key range). The reader tells the forwarder the outcome
//! of each create in order; the forwarder holds backend responses behind a
//! `created` until it knows which create that `created` answers.
//!
//! When the client goes away (the response stream is dropped) or its request
//! stream breaks, the session is closed with [`Backend::watch_close`]. A
//! client that only half-closes (ends its requests) keeps its watchers, as
//! with etcd.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use kv::{Limits, WatchId};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::backend::{ApiError, Backend};
use super::stream::{ChannelStream, HeaderFill};
use crate::client_port::BurstHint;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::watch_server::Watch;

/// etcd's default `--experimental-watch-progress-notify-interval`.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Responses in flight to one client before the forwarder waits.
const OUTBOUND_BUFFER: usize = 128;

/// etcd's watch id for a create that was refused, and for progress
/// notifications that concern every watcher of a stream.
pub const INVALID_WATCH_ID: WatchId = -1;

/// etcd's text for a watch whose key range is empty (`key >= range_end`).
pub const EMPTY_WATCHER_RANGE: &str = "mvcc: watcher range is empty";

/// The Watch service over a [`Backend`].
#[derive(Debug)]
pub struct WatchService<B> {
    backend: Arc<B>,
    config: SessionConfig,
}

#[derive(Clone, Copy, Debug)]
struct SessionConfig {
    header: HeaderFill,
    /// Responses above this size are fragmented for watchers that asked.
    max_response_bytes: usize,
    /// Period of progress notifications; `None`: never.
    progress_interval: Option<Duration>,
}

impl<B: Backend> WatchService<B> {
    /// The service for member `member_id` of cluster `cluster_id`, with
    /// etcd's default fragment size (`--max-request-bytes`) and progress
    /// interval (10 minutes).
    pub fn new(backend: Arc<B>, cluster_id: u64, member_id: u64) -> Self {
        WatchService {
            backend,
            config: SessionConfig {
                header: HeaderFill {
                    cluster_id,
                    member_id,
                },
                max_response_bytes: Limits::default().max_request_bytes,
                progress_interval: Some(DEFAULT_PROGRESS_INTERVAL),
            },
        }
    }

    /// Fragments responses larger than `limits.max_request_bytes`, as etcd
    /// does with its `--max-request-bytes`.
    #[must_use]
    pub fn with_limits(mut self, limits: &Limits) -> Self {
        self.config.max_response_bytes = limits.max_request_bytes;
        self
    }

    /// Sends progress notifications to streams with `progress_notify`
    /// watchers every `interval` (`None`: never).
    #[must_use]
    pub fn with_progress_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.progress_interval = interval.filter(|d| !d.is_zero());
        self
    }
}

#[tonic::async_trait]
impl<B: Backend> Watch for WatchService<B> {
    type WatchStream = ChannelStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Its events come in bursts: the connection gathers its writes.
        if let Some(hint) = request.extensions().get::<BurstHint>() {
            hint.mark();
        }
        let inbound = request.into_inner();
        let (session, stream) = self.backend.watch_open().await?;
        let (tx, outbound) = ChannelStream::channel(OUTBOUND_BUFFER);
        let backend = Arc::clone(&self.backend);
        let config = self.config;
        tokio::spawn(async move {
            let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
            let reader = read_requests(backend.as_ref(), session, inbound, ctrl_tx);
            let forwarder = Forwarder::new(config).run(
                backend.as_ref(),
                session,
                stream.responses,
                ctrl_rx,
                &tx,
            );
            tokio::select! {
                () = reader => {}
                () = forwarder => {}
            }
            backend.watch_close(session).await;
        });
        Ok(Response::new(outbound))
    }
}

/// What a watcher asked of the stream itself.
#[derive(Clone, Copy, Debug, Default)]
struct StreamOptions {
    fragment: bool,
    progress_notify: bool,
}

/// The outcome of one create, in the order of the creates.
#[derive(Debug)]
enum Outcome {
    /// The backend took it: its `created` response comes on the session.
    Created(StreamOptions),
    /// Refused here or by the state machine: answer `created` + `canceled`
    /// with this reason and watch id -1, as etcd does.
    Refused(String),
    /// The node cannot serve watches (no leader, stopped): end the stream.
    Fatal(Status),
}

/// etcd's check that a watch range is not empty, after its own rewriting
/// (an empty key is `[0]`; a `range_end` of `[0]` means "to the end").
fn empty_range(request: &pb::WatchCreateRequest) -> bool {
    let key: &[u8] = if request.key.is_empty() {
        &[0]
    } else {
        &request.key
    };
    let end = &request.range_end;
    !end.is_empty() && end.as_slice() != [0] && key >= end.as_slice()
}

/// The reader: requests to backend calls. Returns only when the client's
/// request stream breaks; after the client ends its requests, or after a
/// fatal error, it waits for the forwarder to finish the session.
async fn read_requests<B: Backend>(
    backend: &B,
    session: u64,
    mut inbound: Streaming<pb::WatchRequest>,
    outcomes: mpsc::UnboundedSender<Outcome>,
) {
    use pb::watch_request::RequestUnion;
    loop {
        let request = match inbound.message().await {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(_) => return,
        };
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                let outcome = create_watch(backend, session, create).await;
                let fatal = matches!(outcome, Outcome::Fatal(_));
                if outcomes.send(outcome).is_err() || fatal {
                    break;
                }
            }
            Some(RequestUnion::CancelRequest(cancel)) => {
                backend.watch_cancel(session, cancel.watch_id).await;
            }
            Some(RequestUnion::ProgressRequest(_)) => backend.watch_progress(session).await,
            // etcd ignores a request with nothing in it.
            None => {}
        }
    }
    std::future::pending::<()>().await;
}

async fn create_watch<B: Backend>(
    backend: &B,
    session: u64,
    create: pb::WatchCreateRequest,
) -> Outcome {
    if empty_range(&create) {
        return Outcome::Refused(EMPTY_WATCHER_RANGE.to_owned());
    }
    let options = StreamOptions {
        fragment: create.fragment,
        progress_notify: create.progress_notify,
    };
    let request = match kv::WatchCreateRequest::try_from(create) {
        Ok(request) => request,
        Err(error) => return Outcome::Refused(error.to_string()),
    };
    match backend.watch_create(session, request).await {
        Ok(()) => Outcome::Created(options),
        Err(ApiError::Kv(error)) => Outcome::Refused(error.to_string()),
        Err(error) => Outcome::Fatal(error.into()),
    }
}

/// The forwarder's state.
struct Forwarder {
    config: SessionConfig,
    /// Outcomes of creates not yet matched with their `created` response.
    outcomes: VecDeque<Outcome>,
    /// Backend responses waiting behind a `created` whose create outcome
    /// has not arrived yet, in backend order.
    held: VecDeque<kv::WatchResponse>,
    /// Live watchers and what they asked of the stream.
    watchers: BTreeMap<WatchId, StreamOptions>,
    /// Events were sent since the last progress tick.
    active: bool,
}

/// The next tick of an optional ticker; never without one.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Whether the client is still there after a send.
type Alive = bool;

impl Forwarder {
    fn new(config: SessionConfig) -> Self {
        Forwarder {
            config,
            outcomes: VecDeque::new(),
            held: VecDeque::new(),
            watchers: BTreeMap::new(),
            active: false,
        }
    }

    async fn run<B: Backend>(
        mut self,
        backend: &B,
        session: u64,
        mut responses: mpsc::Receiver<kv::WatchResponse>,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
        tx: &mpsc::Sender<Result<pb::WatchResponse, Status>>,
    ) {
        let period = self.config.progress_interval;
        let mut ticker =
            period.map(|p| tokio::time::interval_at(tokio::time::Instant::now() + p, p));
        loop {
            tokio::select! {
                // Outcomes first: a create's outcome is queued before the
                // backend's `created` for it can be looked at.
                biased;
                () = tx.closed() => return,
                Some(outcome) = outcomes.recv() => self.outcomes.push_back(outcome),
                response = responses.recv() => match response {
                    Some(response) => self.held.push_back(response),
                    None => {
                        // The backend ended the session: it is stopping.
                        let _ = tx.send(Err(ApiError::Stopped.into())).await;
                        return;
                    }
                },
                () = tick(&mut ticker) => {
                    let wanted = self.watchers.values().any(|w| w.progress_notify);
                    if wanted && !self.active {
                        backend.watch_progress(session).await;
                    }
                    self.active = false;
                }
            }
            if !self.flush(tx).await {
                return;
            }
        }
    }

    /// Sends everything that can go out in order.
    async fn flush(&mut self, tx: &mpsc::Sender<Result<pb::WatchResponse, Status>>) -> Alive {
        loop {
            // Refusals of creates older than any unanswered one go first.
            match self.outcomes.front() {
                Some(Outcome::Refused(_)) => {
                    let Some(Outcome::Refused(reason)) = self.outcomes.pop_front() else {
                        unreachable!("just looked")
                    };
                    let refusal = pb::WatchResponse {
                        header: self.config.header.fill(None),
                        watch_id: INVALID_WATCH_ID,
                        created: true,
                        canceled: true,
                        cancel_reason: reason,
                        ..pb::WatchResponse::default()
                    };
                    if tx.send(Ok(refusal)).await.is_err() {
                        return false;
                    }
                    continue;
                }
                Some(Outcome::Fatal(_)) => {
                    let Some(Outcome::Fatal(status)) = self.outcomes.pop_front() else {
                        unreachable!("just looked")
                    };
                    let _ = tx.send(Err(status)).await;
                    return false;
                }
                Some(Outcome::Created(_)) | None => {}
            }
            let Some(front) = self.held.front() else {
                return true;
            };
            if front.created {
                // Its create's outcome has not arrived yet: wait for it.
                let Some(Outcome::Created(options)) = self.outcomes.pop_front() else {
                    return true;
                };
                if !front.canceled {
                    self.watchers.insert(front.watch_id, options);
                }
            }
            let Some(response) = self.held.pop_front() else {
                return true;
            };
            if !self.send(response, tx).await {
                return false;
            }
        }
    }

    /// Sends one backend response, fragmented if its watcher asked for it.
    async fn send(
        &mut self,
        response: kv::WatchResponse,
        tx: &mpsc::Sender<Result<pb::WatchResponse, Status>>,
    ) -> Alive {
        let options = self
            .watchers
            .get(&response.watch_id)
            .copied()
            .unwrap_or_default();
        // A refused create (duplicate id) answers `created` + `canceled`
        // and leaves the watcher that holds the id alone.
        if response.canceled && !response.created {
            self.watchers.remove(&response.watch_id);
        }
        if !response.events.is_empty() {
            self.active = true;
        }
        let mut response = pb::WatchResponse::from(response);
        response.header = self.config.header.fill(response.header);
        let pieces = if options.fragment {
            fragments(response, self.config.max_response_bytes)
        } else {
            vec![response]
        };
        for piece in pieces {
            if tx.send(Ok(piece)).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// etcd's `sendFragments`: a response of at least `limit` encoded bytes
/// with two or more events goes out in pieces, each below `limit` (or a
/// single event), all but the last flagged `fragment`.
fn fragments(response: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    use prost::Message;
    if response.encoded_len() < limit || response.events.len() < 2 {
        return vec![response];
    }
    let mut shell = response.clone();
    shell.events = Vec::new();
    shell.fragment = true;
    let base = shell.encoded_len();
    let mut pieces = Vec::new();
    let mut current = shell.clone();
    let mut size = base;
    for event in response.events {
        let event_size = prost::encoding::message::encoded_len(11, &event);
        if !current.events.is_empty() && size + event_size >= limit {
            pieces.push(std::mem::replace(&mut current, shell.clone()));
            size = base;
        }
        size += event_size;
        current.events.push(event);
    }
    current.fragment = false;
    pieces.push(current);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb;

    fn event(i: u8, value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: 0,
            kv: Some(mvccpb::KeyValue {
                key: vec![i],
                value: vec![i; value_len],
                mod_revision: i64::from(i),
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn fragments_split_below_the_limit_and_flag_all_but_the_last() {
        let response = pb::WatchResponse {
            watch_id: 4,
            events: (0..10).map(|i| event(i, 100)).collect(),
            ..Default::default()
        };
        let pieces = fragments(response.clone(), 350);
        assert!(pieces.len() > 1);
        let (last, rest) = pieces.split_last().expect("pieces");
        assert!(rest.iter().all(|p| p.fragment));
        assert!(!last.fragment);
        for p in &pieces {
            assert!(p.events.len() == 1 || prost::Message::encoded_len(p) < 350);
            assert_eq!(p.watch_id, 4);
        }
        let events: Vec<_> = pieces.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(events, response.events);
        // Small responses and single events are left alone.
        assert_eq!(fragments(response.clone(), 1 << 20), vec![response]);
        let single = pb::WatchResponse {
            events: vec![event(1, 1000)],
            ..Default::default()
        };
        assert_eq!(fragments(single.clone(), 10), vec![single]);
    }

    #[test]
    fn empty_ranges_follow_etcds_rewriting() {
        let req = |key: &[u8], end: &[u8]| pb::WatchCreateRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            ..Default::default()
        };
        assert!(!empty_range(&req(b"a", b"")));
        assert!(!empty_range(&req(b"a", b"\0")));
        assert!(!empty_range(&req(b"", b"\0")));
        assert!(!empty_range(&req(b"a", b"b")));
        assert!(empty_range(&req(b"b", b"a")));
        assert!(empty_range(&req(b"a", b"a")));
        // An empty key is `[0]`: a range ending at `[0]`..., and `[0, 0]` is above it.
        assert!(!empty_range(&req(b"", b"\0\0")));
    }
}
