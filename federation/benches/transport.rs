//! Transport benchmark: two endpoints on loopback.
//!
//! Measures request/response round trips per second with 256-byte bodies at
//! 1, 16 and 256 requests in flight (with p50/p99 latency), and bulk
//! transfer throughput. Prints a table; a custom harness (not criterion)
//! because throughput under concurrency is what matters here.
//!
//! `cargo bench -p federact-federation --bench transport`
//! (`FEDERACT_BENCH_SECS` sets the seconds per row, default 3;
//! `FEDERACT_BENCH_MTU` the MTU discovery upper bound, default the
//! transport's 1452; `FEDERACT_BENCH_IN_FLIGHT=1,16,256` the rows;
//! `FEDERACT_BENCH_TRANSFER_MIB=1024` the transfer size, 0 to skip;
//! `FEDERACT_BENCH_RAW=0` skips the bare-quinn baseline row).
//!
//! Besides wall-clock rates it prints the process CPU time each row used
//! (both endpoints run in this process on a 2-thread runtime), so figures
//! from a machine shared with other work can be compared: "per CPU-s" is
//! requests (or MiB) per second of CPU actually consumed.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use federact_config::NodeKey;
use federact_federation::{Incoming, Member, Membership, Transport, TransportOptions};

const BODY: usize = 256;

async fn pair(options: TransportOptions) -> (Transport, Transport, federact_config::NodeId) {
    let keys = [NodeKey::from_seed(&[1; 32]), NodeKey::from_seed(&[2; 32])];
    let sockets = [
        UdpSocket::bind("127.0.0.1:0").expect("bind"),
        UdpSocket::bind("127.0.0.1:0").expect("bind"),
    ];
    let membership = Membership::new((0..2).map(|i| Member {
        id: keys[i].id(),
        addr: sockets[i].local_addr().expect("addr"),
        name: format!("n{i}"),
    }));
    let [s0, s1] = sockets;
    let a = Transport::bind_socket(&keys[0], membership.clone(), options.clone(), s0)
        .await
        .expect("bind a");
    let b = Transport::bind_socket(&keys[1], membership, options, s1)
        .await
        .expect("bind b");
    (a, b, keys[1].id())
}

fn serve(b: &Transport) {
    let mut inbox = b.register("bench", 4096).expect("register");
    tokio::spawn(async move {
        while let Some(item) = inbox.recv().await {
            match item {
                Incoming::Request {
                    body, responder, ..
                } => {
                    let _ = responder.respond(body).await;
                }
                Incoming::Transfer { mut receiver, .. } => {
                    tokio::spawn(async move {
                        while let Ok(Some(_)) = receiver.chunk(usize::MAX).await {}
                    });
                }
                Incoming::OneWay { .. } => {}
            }
        }
    });
}

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

struct Row {
    in_flight: usize,
    rps: f64,
    per_cpu_s: f64,
    p50: Duration,
    p99: Duration,
}

async fn requests(a: &Transport, to: federact_config::NodeId, in_flight: usize, secs: f64) -> Row {
    let body = Bytes::from(vec![7u8; BODY]);
    // Warm up (connection, windows, allocator).
    for _ in 0..200 {
        a.request(to, "bench", body.clone(), Duration::from_secs(5))
            .await
            .expect("warm-up");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let cpu = cpu_time();
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (a, body, stop) = (a.clone(), body.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                a.request(to, "bench", body.clone(), Duration::from_secs(5))
                    .await
                    .expect("request");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu).as_secs_f64();
    all.sort_unstable();
    let q = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Row {
        in_flight,
        rps: all.len() as f64 / elapsed,
        per_cpu_s: all.len() as f64 / cpu,
        p50: q(0.50),
        p99: q(0.99),
    }
}

async fn transfer(a: &Transport, to: federact_config::NodeId, total: usize) -> (f64, f64) {
    let chunk = Bytes::from(vec![0x5au8; 1 << 20]);
    let start = Instant::now();
    let cpu = cpu_time();
    let mut tx = a
        .open_transfer(to, "bench", Bytes::from_static(b"image"))
        .await
        .expect("open");
    let mut sent = 0;
    while sent < total {
        tx.write_chunk(chunk.clone()).await.expect("write");
        sent += chunk.len();
    }
    tx.finish().await.expect("finish");
    let mib = total as f64 / (1 << 20) as f64;
    let cpu = (cpu_time() - cpu).as_secs_f64();
    (mib / start.elapsed().as_secs_f64(), mib / cpu)
}

/// Baseline: bare quinn, one bidirectional stream per 256-byte echo, no
/// envelope, routing or mutual authentication — the floor this transport
/// builds on.
mod raw {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{
        CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
    };
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("tls12".into()))
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    }

    /// A connected client and a server echoing every stream.
    pub async fn pair() -> quinn::Connection {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = federact_config::NodeKey::from_seed(&[3; 32]);
        let pkcs8 = PrivatePkcs8KeyDer::from(key.to_pkcs8_der());
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .expect("key");
        let cert = rcgen::CertificateParams::new(vec!["raw".into()])
            .expect("params")
            .self_signed(&pair)
            .expect("cert");
        let mut stls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(pkcs8))
            .expect("server tls");
        stls.alpn_protocols = vec![b"raw".to_vec()];
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(1024u32.into());
        let transport = Arc::new(transport);
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(stls).expect("quic server"),
        ));
        sc.transport_config(transport.clone());
        let server =
            quinn::Endpoint::server(sc, "127.0.0.1:0".parse().expect("addr")).expect("server");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Some(inc) = server.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = inc.await else { return };
                    while let Ok((mut s, mut r)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            if let Ok(body) = r.read_to_end(1 << 16).await {
                                let _ = s.write_all(&body).await;
                                let _ = s.finish();
                            }
                        });
                    }
                });
            }
        });
        let mut ctls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth();
        ctls.alpn_protocols = vec![b"raw".to_vec()];
        let mut cc = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(ctls).expect("quic client"),
        ));
        cc.transport_config(transport);
        let mut client =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
        client.set_default_client_config(cc);
        client
            .connect(addr, "raw")
            .expect("connect")
            .await
            .expect("handshake")
    }

    pub async fn echo(conn: &quinn::Connection, body: &[u8]) {
        let (mut s, mut r) = conn.open_bi().await.expect("open");
        s.write_all(body).await.expect("write");
        let _ = s.finish();
        r.read_to_end(1 << 16).await.expect("read");
    }
}

async fn raw_requests(in_flight: usize, secs: f64) -> (f64, f64) {
    let conn = raw::pair().await;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let cpu = cpu_time();
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (conn, stop) = (conn.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let body = [7u8; BODY];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                raw::echo(&conn, &body).await;
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.expect("worker");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu).as_secs_f64();
    conn.close(0u32.into(), b"done");
    (total as f64 / elapsed, total as f64 / cpu)
}

fn main() {
    let secs: f64 = std::env::var("FEDERACT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut options = TransportOptions::default();
        if let Some(mtu) = std::env::var("FEDERACT_BENCH_MTU").ok().and_then(|s| s.parse().ok()) {
            options.mtu_upper_bound = mtu;
        }
        let (a, b, to) = pair(options).await;
        serve(&b);
        println!("federact-federation transport benchmark (loopback, {BODY}-byte bodies, {secs} s per row)");
        println!(
            "{:>10} {:>12} {:>10} {:>10} {:>14}",
            "in flight", "req/s", "p50 µs", "p99 µs", "req per CPU-s"
        );
        let rows: Vec<usize> = std::env::var("FEDERACT_BENCH_IN_FLIGHT")
            .ok()
            .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 16, 256]);
        for in_flight in rows {
            let r = requests(&a, to, in_flight, secs).await;
            println!(
                "{:>10} {:>12.0} {:>10} {:>10} {:>14.0}",
                r.in_flight,
                r.rps,
                r.p50.as_micros(),
                r.p99.as_micros(),
                r.per_cpu_s
            );
        }
        if std::env::var("FEDERACT_BENCH_RAW").map_or(true, |v| v != "0") {
            let (rps, per_cpu) = raw_requests(256, secs).await;
            println!(
                "{:>10} {:>12.0} {:>10} {:>10} {:>14.0}   (bare quinn baseline)",
                256, rps, "-", "-", per_cpu
            );
        }
        let total: usize = std::env::var("FEDERACT_BENCH_TRANSFER_MIB")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1024usize)
            << 20;
        if total == 0 {
            return;
        }
        transfer(&a, to, 64 << 20).await; // warm-up
        let (mibs, per_cpu) = transfer(&a, to, total).await;
        println!(
            "transfer: {} MiB at {:.0} MiB/s ({:.0} MiB per CPU-s)",
            total >> 20,
            mibs,
            per_cpu
        );
        a.close().await;
        b.close().await;
    });
}
