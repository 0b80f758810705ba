//! A real OTLP receiver for tests, on the official protobuf definitions
//! (`opentelemetry-proto`): the gRPC `TraceService` and `MetricsService` as a
//! tonic server, or the same messages over HTTP/1.1 (`POST /v1/traces`,
//! `POST /v1/metrics`, protobuf bodies) from a minimal hand-written handler.
//! Both listen on `127.0.0.1:0` and keep what they receive in memory;
//! [`OtlpReceiver::wait_until`] waits for a condition on it with a deadline,
//! woken by each arrival (no polling sleeps).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Resource attributes of the sender (`service.name`, ...).
    pub resource: HashMap<String, String>,
    /// Trace id, lowercase hex.
    pub trace_id: String,
    /// Span id, lowercase hex.
    pub span_id: String,
    /// Parent span id, lowercase hex; empty for a root span.
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// Span attributes.
    pub attributes: HashMap<String, String>,
    /// Status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// Status message.
    pub status_message: String,
    /// Names of the span's events.
    pub events: Vec<String>,
}

/// One received metric data point (sums and gauges; histograms report
/// their count as the value).
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    /// Resource attributes of the sender.
    pub resource: HashMap<String, String>,
    /// Instrument name.
    pub name: String,
    /// Point attributes.
    pub attributes: HashMap<String, String>,
    /// The value (histogram: the count).
    pub value: f64,
}

/// Everything received so far.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Spans, in arrival order.
    pub spans: Vec<ReceivedSpan>,
    /// Metric points, in arrival order.
    pub points: Vec<ReceivedPoint>,
    /// Export requests received (traces + metrics).
    pub requests: usize,
}

impl Received {
    /// Spans named `name`.
    pub fn spans_named(&self, name: &str) -> Vec<&ReceivedSpan> {
        self.spans.iter().filter(|s| s.name == name).collect()
    }

    /// Points of the instrument `name`.
    pub fn points_named(&self, name: &str) -> Vec<&ReceivedPoint> {
        self.points.iter().filter(|p| p.name == name).collect()
    }
}

#[derive(Clone)]
struct Store {
    received: Arc<Mutex<Received>>,
    // Bumped after every request; waiters wake on change.
    version: Arc<watch::Sender<u64>>,
}

impl Store {
    fn new() -> Store {
        Store {
            received: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }

    fn add_traces(&self, req: ExportTraceServiceRequest) {
        let mut r = self.received.lock().unwrap();
        r.requests += 1;
        for rs in req.resource_spans {
            let resource = attrs(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            for ss in rs.scope_spans {
                for s in ss.spans {
                    r.spans.push(ReceivedSpan {
                        resource: resource.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        name: s.name,
                        attributes: attrs(&s.attributes),
                        status_code: s.status.as_ref().map_or(0, |st| st.code),
                        status_message: s
                            .status
                            .as_ref()
                            .map_or_else(String::new, |st| st.message.clone()),
                        events: s.events.iter().map(|e| e.name.clone()).collect(),
                    });
                }
            }
        }
        drop(r);
        self.version.send_modify(|v| *v += 1);
    }

    fn add_metrics(&self, req: ExportMetricsServiceRequest) {
        let mut r = self.received.lock().unwrap();
        r.requests += 1;
        for rm in req.resource_metrics {
            let resource = attrs(rm.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let mut push = |attributes: &[KeyValue], value: f64| {
                        r.points.push(ReceivedPoint {
                            resource: resource.clone(),
                            name: m.name.clone(),
                            attributes: attrs(attributes),
                            value,
                        })
                    };
                    let number = |v: &Option<number_data_point::Value>| match v {
                        Some(number_data_point::Value::AsInt(i)) => *i as f64,
                        Some(number_data_point::Value::AsDouble(d)) => *d,
                        None => f64::NAN,
                    };
                    match &m.data {
                        Some(metric::Data::Sum(s)) => {
                            for p in &s.data_points {
                                push(&p.attributes, number(&p.value));
                            }
                        }
                        Some(metric::Data::Gauge(g)) => {
                            for p in &g.data_points {
                                push(&p.attributes, number(&p.value));
                            }
                        }
                        Some(metric::Data::Histogram(h)) => {
                            for p in &h.data_points {
                                push(&p.attributes, p.count as f64);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        drop(r);
        self.version.send_modify(|v| *v += 1);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add_traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.add_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    store: Store,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OtlpReceiver {
    /// Starts an OTLP/gRPC receiver on `127.0.0.1:0` (call inside a tokio
    /// runtime).
    pub async fn start_grpc() -> std::io::Result<OtlpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Store::new();
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(store.clone()))
            .add_service(MetricsServiceServer::new(store.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tokio::spawn(async move {
            let _ = router.serve_with_incoming(incoming).await;
        });
        Ok(OtlpReceiver {
            addr,
            store,
            server,
        })
    }

    /// Starts an OTLP/HTTP (protobuf) receiver on `127.0.0.1:0`.
    pub async fn start_http() -> std::io::Result<OtlpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Store::new();
        let accept_store = store.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = accept_store.clone();
                tokio::spawn(async move {
                    let _ = serve_http(stream, store).await;
                });
            }
        });
        Ok(OtlpReceiver {
            addr,
            store,
            server,
        })
    }

    /// `http://127.0.0.1:port`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of everything received so far.
    pub fn received(&self) -> Received {
        self.store.received.lock().unwrap().clone()
    }

    /// Waits until `cond` holds on what was received, or `timeout` passes;
    /// returns the final snapshot either way (`Err` on timeout).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        cond: impl Fn(&Received) -> bool,
    ) -> Result<Received, Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut version = self.store.version.subscribe();
        loop {
            version.borrow_and_update();
            let snapshot = self.received();
            if cond(&snapshot) {
                return Ok(snapshot);
            }
            match tokio::time::timeout_at(deadline, version.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Err(self.received()),
            }
        }
    }
}

/// Serves OTLP/HTTP requests on one keep-alive connection. Just enough
/// HTTP/1.1 for the OTLP exporter: `Content-Length` bodies, no chunking,
/// no compression.
async fn serve_http(stream: tokio::net::TcpStream, store: Store) -> std::io::Result<()> {
    const MAX_BODY: usize = 16 << 20;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if read.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if read.read_line(&mut header).await? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        if content_length > MAX_BODY {
            return Ok(());
        }
        let mut body = vec![0; content_length];
        read.read_exact(&mut body).await?;
        let (status, response) = match path.as_str() {
            "/v1/traces" => match ExportTraceServiceRequest::decode(&body[..]) {
                Ok(req) => {
                    store.add_traces(req);
                    (
                        "200 OK",
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
                Err(_) => ("400 Bad Request", Vec::new()),
            },
            "/v1/metrics" => match ExportMetricsServiceRequest::decode(&body[..]) {
                Ok(req) => {
                    store.add_metrics(req);
                    (
                        "200 OK",
                        ExportMetricsServiceResponse::default().encode_to_vec(),
                    )
                }
                Err(_) => ("400 Bad Request", Vec::new()),
            },
            _ => ("404 Not Found", Vec::new()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            response.len()
        );
        write.write_all(head.as_bytes()).await?;
        write.write_all(&response).await?;
        write.flush().await?;
    }
}
