//! The client port: gRPC and plain HTTP on one address.
//!
//! etcd serves its gRPC API, `/health` and `/metrics` on the same client
//! URL, and tools expect that (`curl http://host:2379/health` next to
//! `etcdctl --endpoints host:2379`). Each accepted connection is served by
//! hyper's automatic HTTP/1 + HTTP/2 builder: gRPC clients open with the
//! HTTP/2 preface (cleartext, prior knowledge) and reach the tonic services;
//! HTTP/1.1 requests reach the plain routes.
//!
//! [`router`] joins the gRPC services and the plain routes; [`serve`] runs the
//! accept loop, bounded by [`ClientPortConfig::connections_max`], until its
//! shutdown future completes.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use http::{StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

mod gather;

pub use gather::BurstHint;
use gather::Gather;

/// Renders the Prometheus text served at `/metrics`; supplied by the node.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Tells whether the member is healthy, for `/health`; supplied by the node.
pub type HealthFn = Arc<dyn Fn() -> Health + Send + Sync>;

/// The answer of `/health`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// The member can serve requests (it has a leader and no alarm).
    pub healthy: bool,
    /// Why not, when not healthy.
    pub reason: String,
}

impl Health {
    /// Healthy, with no reason.
    pub fn ok() -> Self {
        Health {
            healthy: true,
            reason: String::new(),
        }
    }

    /// etcd's JSON body: `{"health":"true","reason":""}`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"health\":\"");
        out.push_str(if self.healthy { "true" } else { "false" });
        out.push_str("\",\"reason\":\"");
        for c in self.reason.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push_str("\"}");
        out
    }
}

/// Bounds of the client port.
#[derive(Clone, Debug)]
pub struct ClientPortConfig {
    /// Connections served at once; the listener stops accepting at the
    /// bound until one closes.
    pub connections_max: usize,
    /// Time an HTTP/1 client may take to send its request headers.
    pub header_read_timeout_ms: u64,
    /// On shutdown, time open connections get to finish their requests
    /// before they are cut.
    pub drain_timeout_ms: u64,
    /// Serves the first few connections on another runtime (the node's
    /// driver thread); none without it.
    pub lane: Option<Lane>,
}

impl Default for ClientPortConfig {
    fn default() -> Self {
        ClientPortConfig {
            connections_max: 1024,
            header_read_timeout_ms: 30_000,
            drain_timeout_ms: 5_000,
            lane: None,
        }
    }
}

/// A runtime that serves up to `connections_max` connections at once, and
/// the accept loop's runtime the rest.
///
/// The node passes its driver's single-threaded runtime: a request on such
/// a connection reaches the protocol core, and its answer leaves, without a
/// hand-off between threads, each of which costs tens of microseconds when
/// it wakes an idle core. Only a few connections: that thread also runs the
/// core and blocks on its fsyncs, so the connections of many clients are
/// served by the worker threads, in parallel with it.
#[derive(Clone, Debug)]
pub struct Lane {
    /// Where the lane's connections are served.
    pub runtime: tokio::runtime::Handle,
    /// Connections the lane serves at once; the next go to the workers.
    pub connections_max: usize,
}

/// Why the client port stopped serving.
#[derive(Debug, Error)]
pub enum ServeError {
    /// `connections_max` is zero: nothing could ever be served.
    #[error("connections_max must be at least 1")]
    NoConnections,
}

/// Per gRPC method, calls started and calls handled by status code, under
/// the names and labels of the Prometheus gRPC middleware etcd uses, so
/// dashboards written for etcd find them. Counting a call takes a shared
/// lock and two atomic increments: no allocation on the request path.
#[derive(Debug, Default)]
pub struct GrpcMetrics {
    /// By request path (`/etcdserverpb.KV/Put`).
    methods: std::sync::RwLock<std::collections::HashMap<String, Arc<MethodCounts>>>,
}

#[derive(Debug, Default)]
struct MethodCounts {
    started: AtomicU64,
    /// By gRPC status code number.
    handled: [AtomicU64; GRPC_CODES.len()],
}

/// Distinct methods counted at most: a client sending made-up paths must
/// not grow the table without bound.
const GRPC_METHODS_MAX: usize = 256;

/// gRPC status codes by number, as the middleware names them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

impl GrpcMetrics {
    /// The counters of the method at `path`, created on its first call
    /// (none once the table is full).
    fn method(&self, path: &str) -> Option<Arc<MethodCounts>> {
        {
            let methods = self
                .methods
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(counts) = methods.get(path) {
                return Some(Arc::clone(counts));
            }
        }
        let mut methods = self
            .methods
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if methods.len() >= GRPC_METHODS_MAX && !methods.contains_key(path) {
            return None;
        }
        Some(Arc::clone(methods.entry(path.to_string()).or_default()))
    }

    /// The kind of call, as the middleware labels it.
    fn grpc_type(method: &str) -> &'static str {
        match method {
            "Watch" | "LeaseKeepAlive" => "bidi_stream",
            "Snapshot" => "server_stream",
            _ => "unary",
        }
    }

    /// Appends the counters in Prometheus' text format.
    pub fn write_prometheus(&self, out: &mut String) {
        let methods = self
            .methods
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut sorted: Vec<(&str, &str, &MethodCounts)> = methods
            .iter()
            .filter_map(|(path, counts)| {
                let (service, method) = path.trim_start_matches('/').split_once('/')?;
                Some((service, method, counts.as_ref()))
            })
            .collect();
        sorted.sort_by_key(|(service, method, _)| (*service, *method));
        let _ = writeln!(
            out,
            "# HELP grpc_server_started_total Total number of RPCs started on the server.\n# TYPE grpc_server_started_total counter"
        );
        for (service, method, c) in &sorted {
            let t = Self::grpc_type(method);
            let _ = writeln!(
                out,
                "grpc_server_started_total{{grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{t}\"}} {}",
                c.started.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n# TYPE grpc_server_handled_total counter"
        );
        for (service, method, c) in &sorted {
            let t = Self::grpc_type(method);
            let mut by_name: Vec<(&str, u64)> = GRPC_CODES
                .iter()
                .zip(&c.handled)
                .map(|(code, n)| (*code, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect();
            by_name.sort();
            for (code, n) in by_name {
                let _ = writeln!(
                    out,
                    "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{t}\"}} {n}"
                );
            }
        }
    }
}

/// Counts a gRPC call around the inner service. The status code is read
/// from the response headers (a trailers-only answer, which is how errors
/// come back); a call answered with a body counts as OK (a streaming call
/// that fails after its first message is counted as OK).
async fn count_grpc(
    grpc: Arc<GrpcMetrics>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path = request.uri().path();
    let counts = if is_grpc && path.trim_start_matches('/').contains('/') {
        grpc.method(path)
    } else {
        None
    };
    if let Some(counts) = &counts {
        counts.started.fetch_add(1, Ordering::Relaxed);
    }
    let response = next.run(request).await;
    if let Some(counts) = counts {
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n < GRPC_CODES.len())
            .unwrap_or(0);
        counts.handled[code].fetch_add(1, Ordering::Relaxed);
    }
    response
}

/// The client port's routes: the gRPC services in `grpc`, plus `/health`
/// and `/metrics` over plain HTTP.
pub fn router(grpc: tonic::service::Routes, health: HealthFn, metrics: MetricsFn) -> Router {
    let counters = Arc::new(GrpcMetrics::default());
    let counted = Arc::clone(&counters);
    let metrics: MetricsFn = Arc::new(move || {
        let mut body = String::new();
        counters.write_prometheus(&mut body);
        body.push_str(&metrics());
        body
    });
    grpc.into_axum_router()
        .layer(axum::middleware::from_fn(move |request, next| {
            count_grpc(Arc::clone(&counted), request, next)
        }))
        .route(
            "/health",
            get(move || {
                let health = health();
                let status = if health.healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                async move {
                    (
                        status,
                        [(header::CONTENT_TYPE, "application/json")],
                        health.to_json(),
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics();
                async move {
                    Ok::<_, Infallible>((
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    ))
                }
            }),
        )
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting, lets open connections finish for up to `drain_timeout_ms`, and
/// cuts the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ClientPortConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if config.connections_max == 0 {
        return Err(ServeError::NoConnections);
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms));
    builder.http2().timer(TokioTimer::new());
    let slots = Arc::new(Semaphore::new(config.connections_max));
    let lane = config
        .lane
        .filter(|lane| lane.connections_max > 0)
        .map(|lane| (Arc::new(Semaphore::new(lane.connections_max)), lane.runtime));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "client port serving gRPC and HTTP");
    }
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so their results do not pile up.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: wait rather than spin.
                    warn!(%error, "client accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Not fatal: only latency suffers.
        let _ = stream.set_nodelay(true);
        // A free place in the lane moves the connection to the lane's
        // runtime: registered with its reactor, its tasks spawned there.
        let lane_slot = lane.as_ref().and_then(|(places, runtime)| {
            let place = Arc::clone(places).try_acquire_owned().ok()?;
            Some((place, runtime))
        });
        let (stream, lane_slot) = match lane_slot {
            Some((place, runtime)) => match move_to(stream, runtime) {
                Ok(stream) => (stream, Some((place, runtime))),
                Err(error) => {
                    // The lane's runtime is shutting down with its node.
                    debug!(%addr, %error, "cannot serve a connection in the lane");
                    continue;
                }
            },
            None => (stream, None),
        };
        // A connection on the worker threads gathers its writes once a
        // watch on it marks its hint (see `Gather`); one in the lane never.
        let (service, hint) = match lane_slot {
            Some(_) => (router.clone(), None),
            None => {
                let hint = BurstHint::default();
                (router.clone().layer(Extension(hint.clone())), Some(hint))
            }
        };
        let service = TowerToHyperService::new(service);
        let stream = Gather::new(stream, hint);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let serve = async move {
            if let Err(error) = connection.await {
                debug!(%addr, %error, "client connection ended with an error");
            }
            drop(slot);
        };
        match lane_slot {
            Some((place, runtime)) => {
                connections.spawn_on(
                    async move {
                        serve.await;
                        drop(place);
                    },
                    runtime,
                );
            }
            None => {
                connections.spawn(serve);
            }
        }
    }
    drop(listener);
    let drain = Duration::from_millis(config.drain_timeout_ms);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "client connections did not drain in time: cutting them"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// Re-registers an accepted connection with `runtime`'s reactor.
fn move_to(
    stream: tokio::net::TcpStream,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<tokio::net::TcpStream> {
    let stream = stream.into_std()?;
    let _entered = runtime.enter();
    tokio::net::TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_json_matches_etcd_and_escapes_the_reason() {
        assert_eq!(Health::ok().to_json(), r#"{"health":"true","reason":""}"#);
        let sick = Health {
            healthy: false,
            reason: "no \"leader\"\n".into(),
        };
        assert_eq!(
            sick.to_json(),
            r#"{"health":"false","reason":"no \"leader\"\u000a"}"#
        );
    }
}
