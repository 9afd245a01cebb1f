//! The peer transport over loopback TCP: members exchange envelopes, and
//! strangers, garbage, oversized frames, dead peers and restarts are each
//! contained. Every wait is bounded by a count of short polls, so a broken
//! transport fails a test instead of hanging it; nothing asserts on time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use member::PeerMessage;
use member::wire::Frame;
use paxos::multi::codec::encode_envelope;
use paxos::multi::{Envelope, Message};
use paxos::{Ballot, NodeId};
use server::transport::wire;
use server::transport::{SendError, Transport, TransportConfig, TransportHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Polls before a wait gives up (each poll is `POLL`).
const POLLS_MAX: u32 = 1_000;
const POLL: Duration = Duration::from_millis(20);

fn heartbeat(from: NodeId, to: NodeId, round: u64) -> Envelope {
    Envelope {
        from,
        to,
        message: Message::Heartbeat {
            ballot: Ballot::new(1, from),
            commit_index: 0,
            round,
        },
    }
}

fn round_of(envelope: &Envelope) -> u64 {
    match envelope.message {
        Message::Heartbeat { round, .. } => round,
        _ => u64::MAX,
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

/// An address nobody listens on: bound, then released.
async fn dead_addr() -> SocketAddr {
    bind().await.local_addr().expect("local addr")
}

fn config(me: NodeId, peers: &BTreeMap<NodeId, SocketAddr>, token: &str) -> TransportConfig {
    let mut config = TransportConfig::new(me, peers[&me], peers.clone(), token);
    config.reconnect_backoff_ms_min = 10;
    config.reconnect_backoff_ms_max = 200;
    config.handshake_timeout_ms = 2_000;
    config
}

/// Starts members `ids` on fresh loopback ports; `extra` are members that
/// are in the configuration but not started.
async fn cluster(
    ids: &[NodeId],
    extra: &[(NodeId, SocketAddr)],
    token: &str,
) -> (
    BTreeMap<NodeId, SocketAddr>,
    Vec<(TransportHandle, mpsc::Receiver<Frame>)>,
) {
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in ids {
        let listener = bind().await;
        peers.insert(*id, listener.local_addr().expect("local addr"));
        listeners.push(listener);
    }
    peers.extend(extra.iter().copied());
    let mut nodes = Vec::new();
    for (id, listener) in ids.iter().zip(listeners) {
        let started = Transport::start_on(listener, config(*id, &peers, token))
            .await
            .expect("start transport");
        nodes.push(started);
    }
    (peers, nodes)
}

/// Waits for the next envelope, within the poll bound.
async fn recv(rx: &mut mpsc::Receiver<Frame>) -> Envelope {
    let frame = tokio::time::timeout(POLL * POLLS_MAX, rx.recv())
        .await
        .expect("an envelope within the bound")
        .expect("transport running");
    paxos_of(frame)
}

/// The envelope a frame carries; these tests send Paxos messages only.
fn paxos_of(frame: Frame) -> Envelope {
    match frame {
        Frame::Paxos(envelope) => envelope,
        other => panic!("expected a Paxos frame, got {other:?}"),
    }
}

/// Sends `from -> to` heartbeats until one with a round at or above `first`
/// arrives; returns it. Tolerates loss while connections come and go.
async fn send_until_received(
    sender: &TransportHandle,
    receiver: &mut mpsc::Receiver<Frame>,
    to: NodeId,
    first: u64,
) -> Envelope {
    for round in first..first + u64::from(POLLS_MAX) {
        sender
            .send(&heartbeat(sender.me(), to, round))
            .expect("send");
        if let Ok(Some(frame)) = tokio::time::timeout(POLL, receiver.recv()).await
            && let envelope = paxos_of(frame)
            && round_of(&envelope) >= first
        {
            return envelope;
        }
    }
    panic!("no envelope from {} reached {to}", sender.me());
}

/// Waits until `done` holds, within the poll bound.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..POLLS_MAX {
        if done() {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("gave up waiting for {what}");
}

/// Reads until the other side closes; true if it did within the bound.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    match tokio::time::timeout(POLL * POLLS_MAX, stream.read_to_end(&mut sink)).await {
        Ok(Ok(_)) => true,
        // A reset is a close too.
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_messages_share_the_connection_with_paxos_messages_in_order() {
    let (_, mut nodes) = cluster(&[1, 2], &[], "one-codec").await;
    let (ones, twos) = nodes.split_at_mut(1);
    let (one, rx_two) = (&ones[0].0, &mut twos[0].1);
    // Connected first: frames queued before the dial are not all kept.
    send_until_received(one, rx_two, 2, 1).await;
    let propose = PeerMessage::Propose {
        client: 7,
        seq: 3,
        command: vec![1, 2, 3],
    };
    one.send_peer(2, &propose).expect("send a peer message");
    one.send(&heartbeat(1, 2, 500)).expect("send");
    one.send_peer(2, &PeerMessage::ReadIndex { id: 9 })
        .expect("send a peer message");
    let mut got = Vec::new();
    while got.len() < 3 {
        let frame = tokio::time::timeout(POLL * POLLS_MAX, rx_two.recv())
            .await
            .expect("a frame within the bound")
            .expect("transport running");
        // Stray heartbeats of the connecting loop may still arrive first.
        if matches!(&frame, Frame::Paxos(e) if round_of(e) < 500) {
            continue;
        }
        got.push(frame);
    }
    assert_eq!(
        got[0],
        Frame::Peer {
            from: 1,
            to: 2,
            message: propose
        }
    );
    assert_eq!(got[1], Frame::Paxos(heartbeat(1, 2, 500)));
    assert!(matches!(
        got[2],
        Frame::Peer {
            from: 1,
            message: PeerMessage::ReadIndex { id: 9 },
            ..
        }
    ));
    assert!(matches!(
        one.send_peer(5, &PeerMessage::ReadIndex { id: 1 }),
        Err(SendError::UnknownPeer(5))
    ));
    for (handle, _) in &nodes {
        handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_exchange_envelopes_both_ways() {
    let (_, mut nodes) = cluster(&[1, 2, 3], &[], "three-members").await;
    let ids = [1u64, 2, 3];
    for (i, (handle, _)) in nodes.iter().enumerate() {
        for to in ids {
            if to != ids[i] {
                handle.send(&heartbeat(ids[i], to, 100 + to)).expect("send");
            }
        }
    }
    for (i, (_, rx)) in nodes.iter_mut().enumerate() {
        let mut from = Vec::new();
        for _ in 0..2 {
            let envelope = recv(rx).await;
            assert_eq!(envelope.to, ids[i]);
            assert_eq!(round_of(&envelope), 100 + ids[i]);
            from.push(envelope.from);
        }
        from.sort();
        let expected: Vec<NodeId> = ids.iter().copied().filter(|id| *id != ids[i]).collect();
        assert_eq!(from, expected);
    }
    // A second wave reuses the open connections.
    nodes[0].0.send(&heartbeat(1, 3, 7)).expect("send");
    let envelope = recv(&mut nodes[2].1).await;
    assert_eq!((envelope.from, round_of(&envelope)), (1, 7));
    let metrics = nodes[0].0.metrics();
    assert_eq!(metrics.peers[&3].connects, 1);
    assert_eq!(metrics.frames_received, 2);
    assert_eq!(metrics.handshakes_refused, 0);
    for (handle, _) in &nodes {
        handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_refuses_unknown_peers_and_forged_senders() {
    let dead = dead_addr().await;
    let (_, nodes) = cluster(&[1], &[(2, dead)], "send-errors").await;
    let handle = &nodes[0].0;
    assert_eq!(
        handle.send(&heartbeat(1, 9, 0)),
        Err(SendError::UnknownPeer(9))
    );
    assert_eq!(
        handle.send(&heartbeat(1, 1, 0)),
        Err(SendError::UnknownPeer(1))
    );
    assert_eq!(
        handle.send(&heartbeat(2, 1, 0)),
        Err(SendError::NotFromMe { from: 2, me: 1 })
    );
    handle.shutdown().await;
    assert_eq!(handle.send(&heartbeat(1, 2, 0)), Err(SendError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_their_frames_never_delivered() {
    let token = "strangers-right-token";
    let (peers, mut nodes) = cluster(&[1, 2], &[], token).await;
    let (first, rest) = nodes.split_at_mut(1);
    let (one, rx_one) = &mut first[0];
    let (two, rx_two) = &mut rest[0];

    // An impostor claiming member 2's id with the wrong token, and a
    // non-member (id 9) with the right token; both dial member 1.
    let mut impostor_peers = BTreeMap::new();
    impostor_peers.insert(1, peers[&1]);
    impostor_peers.insert(2, dead_addr().await);
    let (impostor, _impostor_rx) =
        Transport::start(config(2, &impostor_peers, "strangers-wrong-token"))
            .await
            .expect("start impostor");
    let mut outsider_peers = impostor_peers.clone();
    outsider_peers.remove(&2);
    outsider_peers.insert(9, dead_addr().await);
    let (outsider, _outsider_rx) = Transport::start(config(9, &outsider_peers, token))
        .await
        .expect("start outsider");
    for round in 0..50 {
        impostor
            .send(&heartbeat(2, 1, 666_000 + round))
            .expect("send");
        outsider
            .send(&heartbeat(9, 1, 999_000 + round))
            .expect("send");
    }

    wait_for("both strangers refused", || {
        one.metrics().handshakes_refused >= 2
            && impostor.metrics().peers[&1].connect_failures >= 1
            && outsider.metrics().peers[&1].connect_failures >= 1
    })
    .await;
    assert_eq!(impostor.metrics().peers[&1].connects, 0);
    assert_eq!(outsider.metrics().peers[&1].connects, 0);

    // The members keep talking, both ways, while the strangers keep trying.
    let got = send_until_received(two, rx_one, 1, 1).await;
    assert_eq!(got.from, 2);
    let got = send_until_received(one, rx_two, 2, 1).await;
    assert_eq!(got.from, 1);

    // Nothing member 1 ever received came from a stranger.
    while let Ok(frame) = rx_one.try_recv() {
        let envelope = paxos_of(frame);
        assert_eq!(envelope.from, 2);
        assert!(
            round_of(&envelope) < 666_000,
            "a stranger's frame was delivered"
        );
    }
    assert_eq!(one.metrics().peers[&2].connects, 1);

    impostor.shutdown().await;
    outsider.shutdown().await;
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_only_that_connection() {
    let token = "garbage-token";
    // Member 3 is configured but never started; the test speaks as it.
    let (peers, mut nodes) = cluster(&[1, 2], &[(3, dead_addr().await)], token).await;
    let (first, rest) = nodes.split_at_mut(1);
    let (one, rx_one) = &mut first[0];
    let (two, rx_two) = &mut rest[0];
    let target = peers[&1];
    send_until_received(two, rx_one, 1, 1).await;

    // Before the handshake: random bytes, then a huge length prefix.
    let mut garbage = TcpStream::connect(target).await.expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert!(
        closed_by_peer(&mut garbage).await,
        "garbage connection not closed"
    );
    let mut oversized = TcpStream::connect(target).await.expect("connect");
    oversized
        .write_all(&u32::MAX.to_le_bytes())
        .await
        .expect("write");
    assert!(
        closed_by_peer(&mut oversized).await,
        "oversized prefix not closed"
    );

    // After an honest handshake as member 3: an oversized prefix, a frame
    // that does not decode, and an envelope claiming another sender.
    let mut misaddressed = Vec::new();
    encode_envelope(&heartbeat(2, 1, 5), &mut misaddressed);
    let cases: [(&str, Vec<u8>); 3] = [
        ("oversized", u32::MAX.to_le_bytes().to_vec()),
        (
            "undecodable",
            [&7u32.to_le_bytes()[..], b"garbage"].concat(),
        ),
        (
            "misaddressed",
            [
                &(misaddressed.len() as u32).to_le_bytes()[..],
                &misaddressed,
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in cases {
        let mut stream = TcpStream::connect(target).await.expect("connect");
        wire::dial(&mut stream, 3, 1, token.as_bytes())
            .await
            .expect("member 3 handshake");
        stream.write_all(&bytes).await.expect("write");
        assert!(
            closed_by_peer(&mut stream).await,
            "{what} frame did not close"
        );
    }

    let metrics = one.metrics();
    assert!(metrics.handshakes_refused >= 2, "{metrics:?}");
    assert_eq!(metrics.frame_errors, 1, "{metrics:?}");
    assert_eq!(metrics.decode_errors, 1, "{metrics:?}");
    assert_eq!(metrics.misaddressed, 1, "{metrics:?}");

    // The members' own connections were untouched.
    let got = send_until_received(two, rx_one, 1, 1_000).await;
    assert_eq!(got.from, 2);
    let got = send_until_received(one, rx_two, 2, 1_000).await;
    assert_eq!(got.from, 1);
    assert_eq!(
        two.metrics().peers[&1].connects,
        1,
        "member 2 had to redial"
    );
    while let Ok(frame) = rx_one.try_recv() {
        let envelope = paxos_of(frame);
        assert_eq!(envelope.from, 2);
    }
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_keeps_its_queue_at_the_bound() {
    let dead = dead_addr().await;
    let listener = bind().await;
    let mut peers = BTreeMap::new();
    peers.insert(1, listener.local_addr().expect("local addr"));
    peers.insert(2, dead);
    let mut config = config(1, &peers, "dead-peer-token");
    config.queue_frames_max = 16;
    let (handle, _rx) = Transport::start_on(listener, config)
        .await
        .expect("start transport");

    let mut depth_max = 0;
    let sends = 5_000u64;
    for round in 0..sends {
        handle
            .send(&heartbeat(1, 2, round))
            .expect("send never blocks or fails");
        depth_max = depth_max.max(handle.queue_depths()[&2]);
        if round % 500 == 0 {
            // Let the dialer fail a few times meanwhile.
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(depth_max, 16);
    let metrics = handle.metrics();
    let peer = &metrics.peers[&2];
    assert_eq!(peer.queue_frames, 16);
    assert_eq!(peer.frames_dropped, sends - 16);
    assert_eq!(peer.frames_sent, 0);
    assert!(!peer.connected);
    let mut text = String::new();
    metrics.write_prometheus(&mut text);
    assert!(
        text.contains("synod_peer_queue_frames{peer=\"2\"} 16"),
        "{text}"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_peer_restarts() {
    let token = "restart-token";
    let (peers, mut nodes) = cluster(&[1, 2], &[], token).await;
    let (two, mut rx_two) = nodes.pop().expect("member 2");
    let (one, mut rx_one) = nodes.pop().expect("member 1");
    send_until_received(&one, &mut rx_two, 2, 1).await;
    send_until_received(&two, &mut rx_one, 1, 1).await;

    two.shutdown().await;
    drop(rx_two);
    // Member 1 keeps sending into the void meanwhile; its queue absorbs it.
    for round in 0..10 {
        one.send(&heartbeat(1, 2, 500 + round)).expect("send");
    }

    // The same member comes back on the same address.
    let mut listener = None;
    for _ in 0..POLLS_MAX {
        if let Ok(bound) = TcpListener::bind(peers[&2]).await {
            listener = Some(bound);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let listener = listener.expect("rebind member 2's address");
    let (two, mut rx_two) = Transport::start_on(listener, config(2, &peers, token))
        .await
        .expect("restart member 2");

    let got = send_until_received(&one, &mut rx_two, 2, 1_000).await;
    assert_eq!(got.from, 1);
    let got = send_until_received(&two, &mut rx_one, 1, 1_000).await;
    assert_eq!(got.from, 2);
    assert!(one.metrics().peers[&2].connects >= 2);
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_connections_it_dialed() {
    let token = "shutdown-token";
    let listener = bind().await;
    // Member 2 is played by hand: its side of member 1's connection.
    let member_two = bind().await;
    let mut peers = BTreeMap::new();
    peers.insert(1, listener.local_addr().expect("local addr"));
    peers.insert(2, member_two.local_addr().expect("local addr"));
    let (one, _rx) = Transport::start_on(listener, config(1, &peers, token))
        .await
        .expect("start member 1");
    let (mut stream, _) = tokio::time::timeout(POLL * POLLS_MAX, member_two.accept())
        .await
        .expect("member 1 dials within the bound")
        .expect("accept");
    let members = [1].into_iter().collect();
    let from = wire::accept(&mut stream, 2, &members, token.as_bytes())
        .await
        .expect("member 1's handshake");
    assert_eq!(from, server::transport::wire::Dialer::Member(1));
    // The connection carries member 1's frames (written by the sender
    // itself while the connection is idle).
    one.send(&heartbeat(1, 2, 42)).expect("send");
    let mut frame = Vec::new();
    tokio::time::timeout(
        POLL * POLLS_MAX,
        wire::read_frame(&mut stream, 1 << 20, &mut frame),
    )
    .await
    .expect("a frame within the bound")
    .expect("a whole frame");
    assert!(!frame.is_empty());

    one.shutdown().await;
    assert!(
        closed_by_peer(&mut stream).await,
        "a stopped transport leaves no connection open"
    );
}
