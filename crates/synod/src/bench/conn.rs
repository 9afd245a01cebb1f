//! The load generator's gRPC connection: one HTTP/2 connection that the
//! generated client stubs drive directly.
//!
//! tonic's `Channel` puts a buffer task between each call and the
//! connection, and sends a unary request as three HTTP/2 writes (headers,
//! data, then an empty end-of-stream frame), each waking the server. A
//! load generator that costs that much in hand-offs and wake-ups measures
//! itself as much as the server, and on a machine it shares with the
//! servers it takes their CPU. Here a call queues its headers and its whole
//! body (one data frame, marked end-of-stream) on the connection itself,
//! and the connection's task writes both at once.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use tonic::body::Body;

/// Errors of a call, boxed: transport failures and request-body failures.
pub type CallError = Box<dyn StdError + Send + Sync>;

/// Flow-control windows, as large as the usual gRPC clients' defaults, so
/// that a fast stream of watch events is not held back by the client.
const STREAM_WINDOW_BYTES: u32 = 2 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 5 << 20;

/// One HTTP/2 connection to an etcd v3 endpoint. Cheap to clone: clones
/// share the connection, each call on its own stream.
#[derive(Clone, Debug)]
pub struct Conn {
    send: SendRequest<Bytes>,
    /// The endpoint's host and port, put in each call's URI (with `http`).
    authority: http::uri::Authority,
}

/// Connects to `url` (`http://host:port`) within a few seconds.
pub async fn connect(url: &str) -> anyhow::Result<Conn> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a valid endpoint URL"))?;
    if uri.scheme_str() != Some("http") {
        anyhow::bail!("{url:?}: only http:// endpoints are supported");
    }
    let authority = uri
        .authority()
        .with_context(|| format!("{url:?} names no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let setup = async {
        let tcp = tokio::net::TcpStream::connect((authority.host(), port)).await?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>((send, connection))
    };
    let (send, connection) = tokio::time::timeout(Duration::from_secs(3), setup)
        .await
        .with_context(|| format!("cannot connect to {url}: timed out"))?
        .with_context(|| format!("cannot connect to {url}"))?;
    tokio::spawn(async move {
        // Ends when either side closes; calls then fail on their own.
        let _ = connection.await;
    });
    Ok(Conn { send, authority })
}

/// Methods whose request is a stream the caller keeps open.
fn streams_requests(path: &str) -> bool {
    path.starts_with("/etcdserverpb.Watch/") || path == "/etcdserverpb.Lease/LeaseKeepAlive"
}

impl tower_service::Service<http::Request<Body>> for Conn {
    type Response = http::Response<RecvBody>;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, CallError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.send.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let send = self.send.clone();
        let authority = self.authority.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let streaming = streams_requests(parts.uri.path());
            let mut uri = std::mem::take(&mut parts.uri).into_parts();
            uri.scheme = Some(http::uri::Scheme::HTTP);
            uri.authority = Some(authority);
            if uri.path_and_query.is_none() {
                uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            parts.uri = http::Uri::from_parts(uri)?;
            let head = http::Request::from_parts(parts, ());
            let mut send = send.ready().await?;
            let response = if streaming {
                let (response, stream) = send.send_request(head, false)?;
                tokio::spawn(pipe(body, stream));
                response
            } else {
                // A unary request's body is one encoded message, ready now.
                let whole = body.collect().await?.to_bytes();
                let (response, mut stream) = send.send_request(head, whole.is_empty())?;
                if !whole.is_empty() {
                    stream.send_data(whole, true)?;
                }
                response
            };
            Ok(response.await?.map(|recv| RecvBody {
                recv,
                data_done: false,
            }))
        })
    }
}

/// Streams a request body that stays open (a watch's requests) into its
/// HTTP/2 stream; a body error resets the stream.
async fn pipe(mut body: Body, mut stream: SendStream<Bytes>) {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            stream.send_reset(h2::Reason::CANCEL);
            return;
        };
        if let Ok(data) = frame.into_data()
            && stream.send_data(data, false).is_err()
        {
            return;
        }
    }
    let _ = stream.send_data(Bytes::new(), true);
}

/// A response body: the stream's data frames, then its trailers (where
/// gRPC puts the call's status). Received bytes are released to the flow
/// control window as they are handed on.
pub struct RecvBody {
    recv: RecvStream,
    data_done: bool,
}

impl HttpBody for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Only fails if the stream is gone, which the next poll reports.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
