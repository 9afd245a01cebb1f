//! The response streams of the streaming RPCs, and the header every
//! response carries.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tonic::Status;
use tonic::codegen::tokio_stream::Stream;

use crate::proto::etcdserverpb as pb;

/// A response stream fed by a task through a bounded channel: what the
/// Watch and LeaseKeepAlive RPCs return. When the client goes away tonic
/// drops the stream, the channel closes, and the feeding task sees it
/// (`Sender::closed`) and cleans up.
#[derive(Debug)]
pub struct ChannelStream<T> {
    rx: mpsc::Receiver<Result<T, Status>>,
}

impl<T> ChannelStream<T> {
    /// A stream and the sender that feeds it, with room for `capacity`
    /// responses in flight.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Result<T, Status>>, ChannelStream<T>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tx, ChannelStream { rx })
    }
}

impl<T> Stream for ChannelStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Who answers: the identity etcd puts in every top-level response header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderFill {
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
}

impl HeaderFill {
    /// `header` (or an empty one) with the cluster and member ids set; the
    /// revision and raft term it already holds are kept.
    pub fn fill(&self, header: Option<pb::ResponseHeader>) -> Option<pb::ResponseHeader> {
        let header = header.unwrap_or_default();
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            ..header
        })
    }

    /// A header at `revision`.
    pub fn at(&self, revision: i64) -> Option<pb::ResponseHeader> {
        self.fill(Some(pb::ResponseHeader {
            revision,
            ..pb::ResponseHeader::default()
        }))
    }
}
