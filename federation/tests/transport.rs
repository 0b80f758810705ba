//! Transport integration tests on loopback (`127.0.0.1:0`), named by what
//! they exercise.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use federact_config::NodeKey;
use federact_federation::frame::{self, EnvelopeRef, Kind};
use federact_federation::{
    codes, FrameErrorKind, Incoming, Member, Membership, RefusalReason, RemoteRefusal,
    TraceContext, Transport, TransportError, TransportOptions, WhenFull,
};
use sha2::{Digest, Sha256};

fn options() -> TransportOptions {
    TransportOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n2_request_response_and_one_way() {
    let c = cluster(2, options()).await;
    let _rx0 = echo(&c.nodes[0], "echo", b"0:");
    let mut rx1 = echo(&c.nodes[1], "echo", b"1:");
    let out = c.nodes[0]
        .request(c.id(1), "echo", Bytes::from_static(b"ping"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(&out[..], b"1:ping");
    let back = c.nodes[1]
        .request(c.id(0), "echo", Bytes::from_static(b"pong"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(&back[..], b"0:pong");

    c.nodes[0]
        .send(c.id(1), "echo", Bytes::from_static(b"fire"))
        .await
        .unwrap();
    let (from, body) = rx1.recv().await.unwrap();
    assert_eq!(from, c.id(0), "from is the authenticated sender");
    assert_eq!(&body[..], b"fire");

    let m = c.nodes[0].metrics().snapshot();
    assert_eq!(m.requests_ok, 1);
    assert!(m.peers[&c.id(1)].bytes_out > 0 && m.peers[&c.id(1)].bytes_in > 0);
    assert!(m.request_latency.count() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n5_every_pair_requests_and_sends_concurrently() {
    let c = cluster(5, options()).await;
    let mut inboxes: Vec<_> = c.nodes.iter().map(|t| echo(t, "echo", b"ok:")).collect();
    let mut tasks = Vec::new();
    for i in 0..5 {
        for j in 0..5 {
            if i == j {
                continue;
            }
            let t = c.nodes[i].clone();
            let to = c.id(j);
            tasks.push(tokio::spawn(async move {
                for k in 0..20u32 {
                    let body = Bytes::from(format!("{i}->{j}#{k}"));
                    let out = t.request(to, "echo", body.clone(), TIMEOUT).await.unwrap();
                    assert_eq!(&out[3..], &body[..]);
                }
                t.send(to, "echo", Bytes::from(format!("{i}")))
                    .await
                    .unwrap();
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (j, rx) in inboxes.iter_mut().enumerate() {
        let mut senders = Vec::new();
        for _ in 0..4 {
            let (from, body) = rx.recv().await.unwrap();
            let i: usize = std::str::from_utf8(&body).unwrap().parse().unwrap();
            assert_eq!(from, c.id(i));
            senders.push(i);
        }
        senders.sort();
        let expected: Vec<usize> = (0..5).filter(|i| *i != j).collect();
        assert_eq!(senders, expected);
    }
    // One connection per pair survives the simultaneous dials.
    for (i, t) in c.nodes.iter().enumerate() {
        eventually("one connection per peer", || {
            let m = t.metrics().snapshot();
            m.connections_opened - m.connections_closed == 4
        })
        .await;
        for j in 0..5 {
            if i != j {
                assert!(t.is_connected(&c.id(j)));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_actor_dropped_responder_and_actor_error_are_distinct() {
    let c = cluster(2, options()).await;
    let mut inbox = c.nodes[1].register("svc", 16).unwrap();
    assert!(matches!(
        c.nodes[1].register("svc", 16),
        Err(TransportError::AlreadyRegistered { .. })
    ));
    tokio::spawn(async move {
        while let Some(Incoming::Request {
            body, responder, ..
        }) = inbox.recv().await
        {
            match &body[..] {
                b"drop" => drop(responder),
                _ => responder.fail("no such thing").await.unwrap(),
            }
        }
    });
    let err = c.nodes[0]
        .request(c.id(1), "nobody", Bytes::new(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Refused {
                reason: RemoteRefusal::UnknownActor,
                ..
            }
        ),
        "{err}"
    );
    let err = c.nodes[0]
        .request(c.id(1), "svc", Bytes::from_static(b"drop"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Refused {
                reason: RemoteRefusal::NoResponse,
                ..
            }
        ),
        "{err}"
    );
    let err = c.nodes[0]
        .request(c.id(1), "svc", Bytes::from_static(b"x"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Remote { message, .. } if message == "no such thing"),
        "{err}"
    );
    assert_eq!(c.nodes[1].metrics().snapshot().inbound_unknown_actor, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_refused_during_the_handshake() {
    let c = cluster(2, options()).await;
    let _rx = echo(&c.nodes[0], "echo", b"");
    // An outsider that believes node 0 is its peer.
    let outsider = NodeKey::from_seed(&[99; 32]);
    let its_view =
        c.membership
            .clone()
            .with_member(outsider.id(), "127.0.0.1:9".parse().unwrap(), "outsider");
    let t = Transport::bind(
        &outsider,
        its_view,
        options(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let err = t
        .request(c.id(0), "echo", Bytes::from_static(b"let me in"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::HandshakeRefused { .. }),
        "{err}"
    );
    eventually("refusal counted", || {
        c.nodes[0]
            .metrics()
            .snapshot()
            .refused(RefusalReason::UnknownKey)
            >= 1
    })
    .await;
    assert_eq!(c.nodes[0].metrics().snapshot().inbound_delivered, 0);
    // Members are unaffected.
    c.nodes[1]
        .request(c.id(0), "echo", Bytes::new(), TIMEOUT)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_key_at_another_members_address_is_refused() {
    // Node 0 believes node 1 lives at node 2's address: node 2 (a valid
    // member) answers, but with the wrong key.
    let c = cluster(3, options()).await;
    let _rx = echo(&c.nodes[2], "echo", b"");
    let lie = c.membership.clone().with_member(c.id(1), c.addr(2), "n1");
    c.nodes[0].update_membership(lie);
    let err = c.nodes[0]
        .request(c.id(1), "echo", Bytes::new(), TIMEOUT)
        .await
        .unwrap_err();
    match err {
        TransportError::WrongPeer { peer, found, .. } => {
            assert_eq!(peer, c.id(1));
            assert_eq!(found, Some(c.id(2)));
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        c.nodes[0]
            .metrics()
            .snapshot()
            .refused(RefusalReason::WrongPeer),
        1
    );
    assert_eq!(c.nodes[2].metrics().snapshot().inbound_delivered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_alpn_and_missing_client_certificate_are_refused() {
    let c = cluster(1, options()).await;
    let _rx = echo(&c.nodes[0], "echo", b"");
    let member = key(0);
    for (client, reason) in [
        (
            raw_client(Some(&member), b"other/1"),
            RefusalReason::AlpnMismatch,
        ),
        (
            raw_client(None, b"federact/1"),
            RefusalReason::NoClientCertificate,
        ),
    ] {
        // The client may think the handshake succeeded (TLS 1.3 client auth
        // fails late); it must not get an answer.
        let result = async {
            let conn = client.connect(c.addr(0), "federact")?.await?;
            let (mut s, mut r) = conn.open_bi().await?;
            s.write_all(b"\0\0\0\x01x").await?;
            s.finish()?;
            let mut buf = [0u8; 1];
            r.read_exact(&mut buf).await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        }
        .await;
        assert!(result.is_err(), "{reason:?}");
        eventually("refusal counted", || {
            c.nodes[0].metrics().snapshot().refused(reason) == 1
        })
        .await;
    }
    assert_eq!(c.nodes[0].metrics().snapshot().inbound_delivered, 0);
}

/// Opens a request stream on a raw connection, writes `bytes`, and returns
/// the stream code the node answered with (or the response).
async fn raw_exchange(conn: &quinn::Connection, bytes: Vec<u8>) -> Result<Vec<u8>, u64> {
    let (mut s, mut r) = conn.open_bi().await.unwrap();
    // The node may stop the stream before we are done writing.
    let _ = s.write_all(&bytes).await;
    let _ = s.finish();
    match r.read_to_end(1 << 20).await {
        Ok(v) => Ok(v),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => Err(code.into_inner()),
        Err(e) => panic!("unexpected {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_malformed_and_forged_frames_close_only_their_stream() {
    let mut opts = options();
    opts.limits.max_frame_bytes = 64 * 1024;
    let c = cluster(3, opts).await;
    let _rx = echo(&c.nodes[0], "echo", b"ok:");
    // A member (node 1's key) speaking the framing wrongly on a raw client.
    let client = raw_client(Some(&c.keys[1]), b"federact/1");
    let conn = client
        .connect(c.addr(0), "federact")
        .unwrap()
        .await
        .unwrap();
    let good = |from: &NodeKey, corr: u64| {
        frame::encode(
            &EnvelopeRef {
                from: &from.id(),
                to: "echo",
                correlation: corr,
                kind: Kind::Request,
                trace: &TraceContext::default(),
                body: b"hi",
            },
            1 << 20,
        )
        .unwrap()
    };
    // 1. Oversized: only the prefix is sent; the node refuses on it.
    let mut big = (1u32 << 30).to_be_bytes().to_vec();
    big.extend_from_slice(&[0; 100]);
    assert_eq!(
        raw_exchange(&conn, big).await,
        Err(codes::FRAME_TOO_LARGE as u64)
    );
    // 2. Malformed payload.
    assert_eq!(
        raw_exchange(&conn, vec![0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).await,
        Err(codes::FRAME_MALFORMED as u64)
    );
    // 3. Truncated frame.
    let mut cut = good(&c.keys[1], 1);
    cut.truncate(cut.len() - 1);
    assert_eq!(
        raw_exchange(&conn, cut).await,
        Err(codes::FRAME_MALFORMED as u64)
    );
    // 4. Forged sender: node 1 claims to be node 2.
    assert_eq!(
        raw_exchange(&conn, good(&c.keys[2], 2)).await,
        Err(codes::FORGED_SENDER as u64)
    );
    // The same connection still works...
    let ok = raw_exchange(&conn, good(&c.keys[1], 3)).await.unwrap();
    let env = frame::decode(&ok, 1 << 20, &c.id(0)).unwrap().unwrap().0;
    assert_eq!(
        (env.kind, env.correlation, &env.body[..]),
        (Kind::Response, 3, &b"ok:hi"[..])
    );
    // ...and so do other peers.
    c.nodes[2]
        .request(c.id(0), "echo", Bytes::from_static(b"x"), TIMEOUT)
        .await
        .unwrap();
    let m = c.nodes[0].metrics().snapshot();
    assert_eq!(m.frames(FrameErrorKind::TooLarge), 1);
    assert_eq!(m.frames(FrameErrorKind::Malformed), 1);
    assert_eq!(m.frames(FrameErrorKind::Truncated), 1);
    assert_eq!(m.frames(FrameErrorKind::ForgedSender), 1);
    // Our own oversized message is refused before sending.
    let err = c.nodes[2]
        .request(c.id(0), "echo", Bytes::from(vec![0; 128 * 1024]), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::TooLarge { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_peer_restart_is_reconnected_transparently() {
    let c = cluster(2, options()).await;
    let _rx = echo(&c.nodes[1], "echo", b"v1:");
    let out = c.nodes[0]
        .request(c.id(1), "echo", Bytes::new(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(&out[..], b"v1:");
    let Cluster {
        keys,
        mut nodes,
        membership,
    } = c;
    let old = nodes.pop().unwrap();
    let addr = old.local_addr().unwrap();
    old.close().await;
    drop(old);
    let restarted = rebind(&keys[1], &membership, addr).await;
    let _rx = echo(&restarted, "echo", b"v2:");
    let out = nodes[0]
        .request(keys[1].id(), "echo", Bytes::new(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(&out[..], b"v2:");
}

async fn rebind(key: &NodeKey, membership: &Membership, addr: std::net::SocketAddr) -> Transport {
    // The old socket is released when its endpoint driver notices; retry a
    // bounded number of times rather than sleeping a guessed amount.
    for _ in 0..1000 {
        match Transport::bind(key, membership.clone(), options(), addr).await {
            Ok(t) => return t,
            Err(TransportError::Io { .. }) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("could not rebind {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_peer_restart_is_reconnected_transparently() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let keys = [key(0), key(1)];
    let sockets = [
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
    ];
    let membership = Membership::new((0..2).map(|i| Member {
        id: keys[i].id(),
        addr: sockets[i].local_addr().unwrap(),
        name: format!("n{i}"),
    }));
    let addr1 = sockets[1].local_addr().unwrap();
    let [s0, s1] = sockets;
    let a = Transport::bind_socket(&keys[0], membership.clone(), options(), s0)
        .await
        .unwrap();
    // Node 1 lives in its own runtime so it can crash: shutting the runtime
    // down drops its tasks without sending CONNECTION_CLOSE.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (k1, m1) = (key(1), membership.clone());
    let b = rt
        .spawn(async move {
            let t = Transport::bind_socket(&k1, m1, options(), s1)
                .await
                .unwrap();
            let rx = echo(&t, "echo", b"v1:");
            (t, rx)
        })
        .await
        .unwrap();
    let out = a
        .request(keys[1].id(), "echo", Bytes::new(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(&out[..], b"v1:");
    rt.shutdown_background();
    drop(b);
    assert!(a.is_connected(&keys[1].id()), "a has not noticed the crash");
    let restarted = rebind(&keys[1], &membership, addr1).await;
    let _rx = echo(&restarted, "echo", b"v2:");
    // The first request goes out on the stale connection; the restarted
    // node answers with a stateless reset (same reset key), and the request
    // is retried on a fresh connection.
    let out = a
        .request(keys[1].id(), "echo", Bytes::new(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(&out[..], b"v2:");
}

/// Deterministic pseudo-random chunk `i` of a transfer.
fn chunk(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn transfer(c: &Cluster, total: u64, chunk_len: usize) {
    let mut inbox = c.nodes[1].register("images", 4).unwrap();
    let receiver = tokio::spawn(async move {
        let Some(Incoming::Transfer {
            header,
            mut receiver,
            ..
        }) = inbox.recv().await
        else {
            panic!("expected a transfer");
        };
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(c) = receiver.chunk(1 << 20).await.unwrap() {
            n += c.len() as u64;
            h.update(&c);
        }
        (header, n, h.finalize().to_vec())
    });
    let mut tx = c.nodes[0]
        .open_transfer(c.id(1), "images", Bytes::from_static(b"vm-42"))
        .await
        .unwrap();
    let mut h = Sha256::new();
    let mut sent = 0u64;
    let mut i = 0;
    while sent < total {
        let len = chunk_len.min((total - sent) as usize);
        let data = chunk(i, len);
        h.update(&data);
        tx.write_chunk(Bytes::from(data)).await.unwrap();
        sent += len as u64;
        i += 1;
    }
    assert_eq!(tx.finish().await.unwrap(), total);
    let (header, n, digest) = receiver.await.unwrap();
    assert_eq!(&header[..], b"vm-42");
    assert_eq!(n, total);
    assert_eq!(digest, h.finalize().to_vec(), "sha256 differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_of_256_mib_arrives_intact() {
    let c = cluster(2, options()).await;
    transfer(&c, 256 << 20, 1 << 20).await;
    let m = c.nodes[1].metrics().snapshot();
    assert!(m.peers[&c.id(0)].bytes_in >= 256 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_segmentation_offload_sends_still_work() {
    let mut opts = options();
    opts.segmentation_offload = false;
    let c = cluster(2, opts).await;
    let _rx = echo(&c.nodes[1], "echo", b"");
    c.nodes[0]
        .request(c.id(1), "echo", Bytes::from(vec![1; 10_000]), TIMEOUT)
        .await
        .unwrap();
    transfer(&c, 8 << 20, 64 << 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_transfer_fails_at_the_sender() {
    let c = cluster(2, options()).await;
    let _rx = echo(&c.nodes[1], "images", b""); // rejects every transfer
    let mut tx = c.nodes[0]
        .open_transfer(c.id(1), "images", Bytes::from_static(b"bad"))
        .await
        .unwrap();
    let mut result = Ok(());
    for i in 0..64 {
        result = tx.write_chunk(Bytes::from(chunk(i, 1 << 20))).await;
        if result.is_err() {
            break;
        }
    }
    let err = match result {
        Err(e) => e,
        Ok(()) => tx.finish().await.unwrap_err(),
    };
    assert!(
        matches!(
            err,
            TransportError::Refused {
                reason: RemoteRefusal::TransferRejected,
                ..
            }
        ),
        "{err}"
    );
}

/// A timeout says whether the request had been sent: a peer that got it
/// and never answered may have acted on it (a gateway must not report its
/// transaction refused), one that was never reached cannot have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_tells_a_request_the_peer_got_from_one_it_never_reached() {
    let c = cluster(3, options()).await;
    // The actor never reads its inbox: the request arrives, no answer.
    let _inbox = c.nodes[1].register("stalled", 4).unwrap();
    let err = c.nodes[0]
        .request(
            c.id(1),
            "stalled",
            Bytes::from_static(b"x"),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { sent: true, .. }),
        "{err:?}"
    );
    // Node 2 is gone: the time goes on dialing it, nothing is sent.
    c.nodes[2].close().await;
    let err = c.nodes[0]
        .request(
            c.id(2),
            "echo",
            Bytes::from_static(b"x"),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { sent: false, .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_receiver_fail_fast_keeps_queues_bounded() {
    let mut opts = options();
    opts.when_full = WhenFull::FailFast;
    opts.limits.max_in_flight_per_peer = 8;
    let c = cluster(2, opts).await;
    // The actor never reads its inbox.
    let inbox = c.nodes[1].register("stalled", 4).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let t = c.nodes[0].clone();
        let to = c.id(1);
        tasks.push(tokio::spawn(async move {
            t.request(
                to,
                "stalled",
                Bytes::from_static(&[0; 256]),
                Duration::from_secs(2),
            )
            .await
        }));
    }
    let mut backpressure = 0;
    let mut inbox_full = 0;
    let mut timeouts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(TransportError::Backpressure { in_flight: 8, .. }) => backpressure += 1,
            Err(TransportError::Refused {
                reason: RemoteRefusal::InboxFull,
                ..
            }) => inbox_full += 1,
            Err(TransportError::Timeout { .. }) => timeouts += 1,
            other => panic!("{other:?}"),
        }
    }
    // At most 8 requests were ever in flight; at most 4 were queued; the
    // rest were refused at once.
    assert_eq!(inbox.len(), 4);
    assert_eq!(timeouts, 4, "the 4 queued requests wait for an answer");
    assert_eq!(backpressure + inbox_full + timeouts, 200);
    assert!(backpressure >= 200 - 8 - 8 * 25, "{backpressure}");
    let m0 = c.nodes[0].metrics().snapshot();
    assert_eq!(m0.requests_backpressured, backpressure as u64);
    assert_eq!(m0.peers[&c.id(1)].in_flight, 0);
    assert_eq!(
        c.nodes[1].metrics().snapshot().inbound_inbox_full,
        inbox_full as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_receiver_wait_mode_holds_in_flight_at_the_limit() {
    let mut opts = options();
    opts.limits.max_in_flight_per_peer = 8;
    let c = cluster(2, opts).await;
    let mut inbox = c.nodes[1].register("slow", 4).unwrap();
    let peak = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let t = c.nodes[0].clone();
        let to = c.id(1);
        tasks.push(tokio::spawn(async move {
            t.request(to, "slow", Bytes::from(i.to_be_bytes().to_vec()), TIMEOUT)
                .await
        }));
    }
    // Stalled: the queue fills, the rest wait on the sender's slots.
    let sender = c.nodes[0].clone();
    let to = c.id(1);
    eventually("inbox full", || inbox.len() == 4).await;
    eventually("all slots taken", || {
        sender.metrics().snapshot().peers[&to].in_flight == 8
    })
    .await;
    // Unstall: answer everything, watching the in-flight gauge and the inbox.
    let mut answered = 0;
    while answered < 100 {
        let p = sender.metrics().snapshot().peers[&to].in_flight;
        peak.fetch_max(p, Ordering::Relaxed);
        assert!(inbox.len() <= 4);
        let Some(Incoming::Request {
            body, responder, ..
        }) = inbox.recv().await
        else {
            panic!()
        };
        responder.respond(body).await.unwrap();
        answered += 1;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(peak.load(Ordering::Relaxed) <= 8);
    assert_eq!(sender.metrics().snapshot().requests_ok, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_is_dialed_with_backoff_and_then_reached() {
    let mut opts = options();
    opts.connect_timeout = Duration::from_millis(300);
    let c = cluster(2, opts.clone()).await;
    let Cluster {
        keys,
        mut nodes,
        membership,
    } = c;
    let dead = nodes.pop().unwrap();
    let addr = dead.local_addr().unwrap();
    dead.close().await;
    drop(dead);
    let err = nodes[0]
        .request(keys[1].id(), "echo", Bytes::new(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    let failed = nodes[0].metrics().snapshot().dials_failed;
    assert!(failed >= 1, "{failed}");
    let back = rebind(&keys[1], &membership, addr).await;
    let _rx = echo(&back, "echo", b"up");
    let out = nodes[0]
        .request(keys[1].id(), "echo", Bytes::new(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(&out[..], b"up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n2_simultaneous_dials_resolve_to_one_connection() {
    for round in 0..10 {
        let c = cluster(2, options()).await;
        let _rx0 = echo(&c.nodes[0], "echo", b"");
        let _rx1 = echo(&c.nodes[1], "echo", b"");
        // Both sides dial at once, with several requests each in flight.
        let mut tasks = Vec::new();
        for (from, to) in [(0, 1), (1, 0)] {
            for _ in 0..8 {
                let t = c.nodes[from].clone();
                let to = c.id(to);
                tasks.push(tokio::spawn(async move {
                    t.request(to, "echo", Bytes::from_static(b"x"), TIMEOUT)
                        .await
                }));
            }
        }
        for t in tasks {
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        for t in &c.nodes {
            eventually("duplicates closed", || {
                let m = t.metrics().snapshot();
                m.connections_opened - m.connections_closed == 1
            })
            .await;
        }
        // Whatever survived is the same connection on both ends and works.
        assert!(c.nodes[0].is_connected(&c.id(1)) && c.nodes[1].is_connected(&c.id(0)));
        c.nodes[1]
            .request(c.id(0), "echo", Bytes::new(), TIMEOUT)
            .await
            .unwrap();
        let m = c.nodes[0].metrics().snapshot();
        assert_eq!(m.connections_opened - m.connections_closed, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_member_is_disconnected_and_refused() {
    let c = cluster(2, options()).await;
    let _rx = echo(&c.nodes[0], "echo", b"");
    c.nodes[1]
        .request(c.id(0), "echo", Bytes::new(), TIMEOUT)
        .await
        .unwrap();
    let without = Membership::new(c.membership.iter().filter(|m| m.id != c.id(1)).cloned());
    c.nodes[0].update_membership(without);
    eventually("connection closed", || !c.nodes[0].is_connected(&c.id(1))).await;
    let err = c.nodes[1]
        .request(c.id(0), "echo", Bytes::new(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::HandshakeRefused { .. }),
        "{err}"
    );
    assert!(matches!(
        c.nodes[0]
            .request(c.id(1), "echo", Bytes::new(), TIMEOUT)
            .await,
        Err(TransportError::NotMember { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_transfer_receiver_bounds_what_the_sender_buffers() {
    let mut opts = options();
    opts.stream_window_bytes = 1 << 20;
    let c = cluster(2, opts).await;
    let mut inbox = c.nodes[1].register("images", 1).unwrap();
    let total: u64 = 16 << 20;
    let writer = {
        let t = c.nodes[0].clone();
        let to = c.id(1);
        tokio::spawn(async move {
            let mut tx = t.open_transfer(to, "images", Bytes::new()).await.unwrap();
            let mut i = 0;
            while tx.sent() < total {
                tx.write_chunk(Bytes::from(chunk(i, 64 << 10)))
                    .await
                    .unwrap();
                i += 1;
            }
            tx.finish().await.unwrap()
        })
    };
    // The receiver takes the transfer but does not read: QUIC flow control
    // stops the writer at the stream window.
    let Some(Incoming::Transfer { mut receiver, .. }) = inbox.recv().await else {
        panic!("expected a transfer");
    };
    let sender = c.nodes[0].clone();
    let to = c.id(1);
    let out = move || sender.metrics().snapshot().peers[&to].bytes_out;
    // (Counters move per whole 64 KiB chunk, so "full" is within a chunk or
    // two of the window.)
    eventually("window filled", || out() >= (1 << 20) - (128 << 10)).await;
    for _ in 0..50 {
        tokio::task::yield_now().await;
        assert!(
            out() <= (1 << 20) + (128 << 10),
            "sender buffered {} bytes",
            out()
        );
    }
    assert!(!writer.is_finished());
    // Draining lets it finish, intact.
    let mut n = 0;
    while let Some(c) = receiver.chunk(usize::MAX).await.unwrap() {
        n += c.len() as u64;
    }
    assert_eq!(n, total);
    assert_eq!(writer.await.unwrap(), total);
}
