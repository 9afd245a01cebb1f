//! etcd's `Watch` service: one bidirectional stream carries many watchers.
//!
//! Each gRPC stream is one backend watch session ([`Backend::watch_open`]),
//! served by two parts:
//! - the *session task* reads the client's requests and turns them into
//!   backend calls (create, cancel, progress), sends periodic progress
//!   notifications for watchers that asked for those, and closes the session
//!   at the end;
//! - the *response stream* ([`WatchResponses`]), which hyper polls for the
//!   next message, takes the session's responses from the backend's queue
//!   itself and passes them on converted, with the member's header, split into
//!   fragments for watchers that asked for it. No task sits between the
//!   backend's queue and the connection: an event wakes one task per stream,
//!   not two.
//!
//! etcd's clients match a `created` response to the oldest create they are
//! waiting for, so `created` responses must go out in the order of the
//! creates, including the ones answered here without the backend (a bad
//! filter, an empty key range). The session task tells the stream the
//! outcome of each create in order; the stream holds backend responses
//! behind a `created` until it knows which create that `created` answers.
//!
//! When the client goes away (the response stream is dropped) or its request
//! stream breaks, the session is closed with [`Backend::watch_close`]. A
//! client that only half-closes (ends its requests) keeps its watchers, as
//! with etcd.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use kv::{Limits, WatchId};
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::backend::{ApiError, Backend};
use super::stream::HeaderFill;
use crate::client_port::BurstHint;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::watch_server::Watch;

/// etcd's default `--experimental-watch-progress-notify-interval`.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10 * 60);

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
    type WatchStream = WatchResponses;

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
        let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
        let (closer, dropped) = oneshot::channel();
        let shared = Arc::new(Shared::default());
        let responses = WatchResponses {
            forwarder: Forwarder::new(self.config, Arc::clone(&shared)),
            responses: stream.responses,
            outcomes,
            ready: VecDeque::new(),
            done: false,
            closer: Some(closer),
        };
        let backend = Arc::clone(&self.backend);
        let progress_interval = self.config.progress_interval;
        tokio::spawn(async move {
            let reader = read_requests(backend.as_ref(), session, inbound, outcomes_tx);
            let progress = send_progress(backend.as_ref(), session, progress_interval, &shared);
            tokio::select! {
                () = reader => {}
                () = progress => {}
                // The stream was dropped (the client went away) or has ended.
                _ = dropped => {}
            }
            shared.closed_here.store(true, Ordering::Release);
            backend.watch_close(session).await;
        });
        Ok(Response::new(responses))
    }
}

/// What the response stream and the session task both look at.
#[derive(Debug, Default)]
struct Shared {
    /// Events were sent since the last progress tick.
    active: AtomicBool,
    /// A live watcher asked for progress notifications.
    wants_progress: AtomicBool,
    /// The session task closed the session: the end of the backend's queue
    /// is not the node stopping.
    closed_here: AtomicBool,
}

/// Every `interval`, asks for a progress notification if a watcher wants
/// them and no event went out since the last tick; never returns.
async fn send_progress<B: Backend>(
    backend: &B,
    session: u64,
    interval: Option<Duration>,
    shared: &Shared,
) {
    let Some(period) = interval else {
        return std::future::pending().await;
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticker.tick().await;
        let active = shared.active.swap(false, Ordering::AcqRel);
        if shared.wants_progress.load(Ordering::Acquire) && !active {
            backend.watch_progress(session).await;
        }
    }
}

/// The response stream of one Watch RPC.
#[derive(Debug)]
pub struct WatchResponses {
    forwarder: Forwarder,
    /// The session's responses, from the backend.
    responses: mpsc::Receiver<kv::WatchResponse>,
    /// Outcomes of the creates, in order, from the session task.
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    /// Messages ready for the client, in order (the fragments of one
    /// response, or an ending error).
    ready: VecDeque<Result<pb::WatchResponse, Status>>,
    /// Nothing follows `ready`.
    done: bool,
    /// Dropped when the stream ends or is dropped: the session task then
    /// closes the session.
    closer: Option<oneshot::Sender<()>>,
}

impl Stream for WatchResponses {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(message) = this.ready.pop_front() {
                return Poll::Ready(Some(message));
            }
            if this.done {
                this.closer = None;
                return Poll::Ready(None);
            }
            // Outcomes first: a create's outcome is queued before the
            // backend's `created` for it can be looked at.
            while let Poll::Ready(Some(outcome)) = this.outcomes.poll_recv(cx) {
                this.forwarder.outcomes.push_back(outcome);
            }
            let received = match this.responses.poll_recv(cx) {
                Poll::Ready(Some(response)) => {
                    this.forwarder.held.push_back(response);
                    true
                }
                Poll::Ready(None) => {
                    // The backend ended the session: the node is stopping,
                    // unless the session task closed it.
                    if !this.forwarder.shared.closed_here.load(Ordering::Acquire) {
                        this.ready.push_back(Err(ApiError::Stopped.into()));
                    }
                    this.done = true;
                    continue;
                }
                Poll::Pending => false,
            };
            this.done = !this.forwarder.flush(&mut this.ready);
            if this.ready.is_empty() && !this.done && !received {
                return Poll::Pending;
            }
        }
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
/// fatal error, it waits for the response stream to end the session.
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

/// The response stream's state: what it has sent and holds back.
#[derive(Debug)]
struct Forwarder {
    config: SessionConfig,
    /// Outcomes of creates not yet matched with their `created` response.
    outcomes: VecDeque<Outcome>,
    /// Backend responses waiting behind a `created` whose create outcome
    /// has not arrived yet, in backend order.
    held: VecDeque<kv::WatchResponse>,
    /// Live watchers and what they asked of the stream.
    watchers: BTreeMap<WatchId, StreamOptions>,
    shared: Arc<Shared>,
}

/// Whether the stream goes on after a flush.
type Alive = bool;

impl Forwarder {
    fn new(config: SessionConfig, shared: Arc<Shared>) -> Self {
        Forwarder {
            config,
            outcomes: VecDeque::new(),
            held: VecDeque::new(),
            watchers: BTreeMap::new(),
            shared,
        }
    }

    /// Moves everything that can go out, in order, to `ready`.
    fn flush(&mut self, ready: &mut VecDeque<Result<pb::WatchResponse, Status>>) -> Alive {
        loop {
            // Refusals of creates older than any unanswered one go first.
            match self.outcomes.front() {
                Some(Outcome::Refused(_)) => {
                    let Some(Outcome::Refused(reason)) = self.outcomes.pop_front() else {
                        unreachable!("just looked")
                    };
                    ready.push_back(Ok(pb::WatchResponse {
                        header: self.config.header.fill(None),
                        watch_id: INVALID_WATCH_ID,
                        created: true,
                        canceled: true,
                        cancel_reason: reason,
                        ..pb::WatchResponse::default()
                    }));
                    continue;
                }
                Some(Outcome::Fatal(_)) => {
                    let Some(Outcome::Fatal(status)) = self.outcomes.pop_front() else {
                        unreachable!("just looked")
                    };
                    ready.push_back(Err(status));
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
                    self.note_watchers();
                }
            }
            let Some(response) = self.held.pop_front() else {
                return true;
            };
            self.send(response, ready);
        }
    }

    /// Converts one backend response, fragmented if its watcher asked for it.
    fn send(
        &mut self,
        response: kv::WatchResponse,
        ready: &mut VecDeque<Result<pb::WatchResponse, Status>>,
    ) {
        let options = self
            .watchers
            .get(&response.watch_id)
            .copied()
            .unwrap_or_default();
        // A refused create (duplicate id) answers `created` + `canceled`
        // and leaves the watcher that holds the id alone.
        if response.canceled && !response.created {
            self.watchers.remove(&response.watch_id);
            self.note_watchers();
        }
        if !response.events.is_empty() {
            self.shared.active.store(true, Ordering::Release);
        }
        let mut response = pb::WatchResponse::from(response);
        response.header = self.config.header.fill(response.header);
        if options.fragment {
            ready.extend(
                fragments(response, self.config.max_response_bytes)
                    .into_iter()
                    .map(Ok),
            );
        } else {
            ready.push_back(Ok(response));
        }
    }

    /// Tells the session task whether a live watcher wants progress
    /// notifications.
    fn note_watchers(&self) {
        let wanted = self.watchers.values().any(|w| w.progress_notify);
        self.shared.wants_progress.store(wanted, Ordering::Release);
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

    /// A response stream with the ends the backend and the session task hold.
    struct Harness {
        stream: WatchResponses,
        responses: mpsc::Sender<kv::WatchResponse>,
        outcomes: mpsc::UnboundedSender<Outcome>,
        dropped: oneshot::Receiver<()>,
        shared: Arc<Shared>,
    }

    fn harness() -> Harness {
        let config = SessionConfig {
            header: HeaderFill {
                cluster_id: 1,
                member_id: 2,
            },
            max_response_bytes: 1 << 20,
            progress_interval: None,
        };
        let shared = Arc::new(Shared::default());
        let (responses, responses_rx) = mpsc::channel(16);
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        let (closer, dropped) = oneshot::channel();
        Harness {
            stream: WatchResponses {
                forwarder: Forwarder::new(config, Arc::clone(&shared)),
                responses: responses_rx,
                outcomes: outcomes_rx,
                ready: VecDeque::new(),
                done: false,
                closer: Some(closer),
            },
            responses,
            outcomes,
            dropped,
            shared,
        }
    }

    type Polled = Poll<Option<Result<pb::WatchResponse, Status>>>;

    /// One poll, as hyper's task for the stream would make it.
    fn poll(stream: &mut WatchResponses) -> Polled {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(stream).poll_next(&mut cx)
    }

    fn next_ok(stream: &mut WatchResponses) -> pb::WatchResponse {
        match poll(stream) {
            Poll::Ready(Some(Ok(response))) => response,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    fn next_err(stream: &mut WatchResponses) -> Status {
        match poll(stream) {
            Poll::Ready(Some(Err(status))) => status,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// The stream has ended, and the session task was told to close the
    /// session.
    fn assert_ended_and_closing(stream: &mut WatchResponses, dropped: &mut oneshot::Receiver<()>) {
        assert!(matches!(poll(stream), Poll::Ready(None)));
        assert!(
            dropped
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
    }

    fn kv_event(revision: i64) -> kv::Event {
        kv::Event {
            r#type: kv::EventType::Put,
            kv: kv::KeyValue {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                mod_revision: revision,
                ..Default::default()
            },
            prev_kv: None,
        }
    }

    #[test]
    fn a_created_response_waits_for_its_creates_outcome_and_events_follow_it() {
        let mut h = harness();
        let created = kv::WatchResponse {
            watch_id: 0,
            created: true,
            ..Default::default()
        };
        let events = kv::WatchResponse {
            watch_id: 0,
            events: vec![kv_event(5)],
            ..Default::default()
        };
        h.responses.try_send(created).expect("room");
        h.responses.try_send(events).expect("room");
        assert!(poll(&mut h.stream).is_pending(), "no outcome yet");

        let options = StreamOptions {
            fragment: false,
            progress_notify: true,
        };
        h.outcomes.send(Outcome::Created(options)).expect("open");
        let first = next_ok(&mut h.stream);
        assert!(first.created && first.watch_id == 0 && first.events.is_empty());
        let header = first.header.expect("header");
        assert_eq!((header.cluster_id, header.member_id), (1, 2));
        assert!(h.shared.wants_progress.load(Ordering::Acquire));

        let second = next_ok(&mut h.stream);
        assert_eq!(second.events.len(), 1);
        assert!(h.shared.active.load(Ordering::Acquire));
        assert!(poll(&mut h.stream).is_pending());
        assert!(
            h.dropped
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
    }

    #[test]
    fn a_refusal_goes_out_in_create_order_before_a_later_created() {
        let mut h = harness();
        h.responses
            .try_send(kv::WatchResponse {
                watch_id: 7,
                created: true,
                ..Default::default()
            })
            .expect("room");
        h.outcomes
            .send(Outcome::Refused("bad filter".to_owned()))
            .expect("open");
        h.outcomes
            .send(Outcome::Created(StreamOptions::default()))
            .expect("open");
        let refusal = next_ok(&mut h.stream);
        assert!(refusal.created && refusal.canceled);
        assert_eq!(refusal.watch_id, INVALID_WATCH_ID);
        assert_eq!(refusal.cancel_reason, "bad filter");
        assert_eq!(next_ok(&mut h.stream).watch_id, 7);
        assert!(!h.shared.wants_progress.load(Ordering::Acquire));
    }

    #[test]
    fn the_backend_ending_the_session_is_server_stopped_and_ends_the_stream() {
        let mut h = harness();
        drop(h.responses);
        let stopped = Status::from(ApiError::Stopped);
        let status = next_err(&mut h.stream);
        assert_eq!(status.code(), stopped.code());
        assert_eq!(status.message(), stopped.message());
        assert_ended_and_closing(&mut h.stream, &mut h.dropped);
    }

    #[test]
    fn a_session_closed_here_ends_the_stream_without_an_error() {
        let mut h = harness();
        h.shared.closed_here.store(true, Ordering::Release);
        drop(h.responses);
        assert!(matches!(poll(&mut h.stream), Poll::Ready(None)));
    }

    #[test]
    fn a_fatal_create_ends_the_stream_with_its_status() {
        let mut h = harness();
        h.outcomes
            .send(Outcome::Fatal(Status::unavailable("no leader")))
            .expect("open");
        assert_eq!(next_err(&mut h.stream).message(), "no leader");
        assert_ended_and_closing(&mut h.stream, &mut h.dropped);
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
