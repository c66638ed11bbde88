//! Shared helpers for end-to-end tests: brokers in-process or as `vltava` processes on
//! ephemeral 127.0.0.1 ports, a raw protocol client, and rdkafka clients.
#![allow(dead_code)]

pub mod netns;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::{Arc, Mutex};
use vltava_broker::{BrokerConfig, BrokerHandle};
use vltava_protocol::{decode_response, encode_request, ApiKey};

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a broker inside this process on an ephemeral port.
pub fn start_broker(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    extra: &[(&str, &str)],
) -> BrokerHandle {
    // Broker logs for debugging a test: RUST_LOG=debug cargo nextest run ... --no-capture
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let mut props: BTreeMap<String, String> = [
        ("listeners", "PLAINTEXT://127.0.0.1:0"),
        ("log.dirs", dir.to_str().unwrap()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        props.insert(k.to_string(), v.to_string());
    }
    let config = BrokerConfig::from_props(props).unwrap();
    rt.block_on(vltava_broker::start(config)).unwrap()
}

/// The client address a started `vltava broker` prints once it serves (its stdout's first
/// line); panics with what it printed instead if it did not start.
pub fn ready_addr(child: &mut Child) -> SocketAddr {
    // Byte by byte, leaving the pipe with the child: a broker that announces more lines
    // (its metrics address) must not find the pipe closed and stop on EPIPE.
    let out = child.stdout.as_mut().expect("stdout piped");
    let mut bytes = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        bytes.push(b[0]);
    }
    let line = String::from_utf8_lossy(&bytes);
    line.trim()
        .strip_prefix("vltava: listening on ")
        .unwrap_or_else(|| panic!("the broker did not start: {line:?}"))
        .parse()
        .unwrap()
}

/// A `vltava broker` child process.
pub struct BrokerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl BrokerProcess {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(dir, 0, extra)
    }

    /// Starts on a given port (0: any), e.g. to restart where clients already point.
    pub fn start_on(dir: &Path, port: u16, extra: &[&str]) -> Self {
        let mut child = Self::spawn(dir, port, extra);
        let addr = ready_addr(&mut child);
        Self { child, addr }
    }

    /// Starts with `--override`s that turn on the HTTP services, and returns the `n` lines
    /// the broker prints after its listening line (each service's address).
    pub fn start_announcing(dir: &Path, extra: &[&str], n: usize) -> (Self, Vec<String>) {
        let mut child = Self::spawn(dir, 0, extra);
        let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        let mut next = || {
            lines
                .next()
                .expect("the broker printed too little")
                .unwrap()
        };
        let first = next();
        let addr = first
            .strip_prefix("vltava: listening on ")
            .unwrap_or_else(|| panic!("the broker did not start: {first:?}"))
            .parse()
            .unwrap();
        let announced = (0..n).map(|_| next()).collect();
        (Self { child, addr }, announced)
    }

    fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vltava"));
        cmd.args(["broker", "--listeners"])
            .arg(format!("PLAINTEXT://127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for o in extra {
            cmd.args(["--override", o]);
        }
        cmd.spawn().expect("spawn vltava")
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn terminate(mut self) {
        unsafe_sigterm(self.child.id());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "broker exited with {status}");
    }
}

fn unsafe_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client_config(addr: SocketAddr) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr.to_string())
        .set("log_level", "3");
    c
}

/// Each delivery's partition and offset, or its error.
type DeliveryLog = Vec<Result<(i32, i64), KafkaError>>;

/// A producer context that keeps every delivery report. rdkafka's `flush` succeeds once
/// nothing is in flight, also when deliveries failed, so tests check each report.
#[derive(Clone, Default)]
pub struct Deliveries(Arc<Mutex<DeliveryLog>>);

impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let report = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        self.0.lock().unwrap().push(report);
    }
}

impl Deliveries {
    /// Takes the reports received so far: partition and offset, or the error.
    pub fn take(&self) -> Vec<Result<(i32, i64), KafkaError>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Sends `record`, serving delivery reports while librdkafka's queue is full.
pub fn send_retrying<C, K, P>(
    producer: &BaseProducer<C>,
    mut record: rdkafka::producer::BaseRecord<'_, K, P>,
) where
    C: ProducerContext<DeliveryOpaque = ()>,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}

/// A producer whose delivery reports are kept, for [`flush_delivered`].
pub fn checked_producer(config: &ClientConfig) -> BaseProducer<Deliveries> {
    config.create_with_context(Deliveries::default()).unwrap()
}

/// Flushes `producer` and checks that exactly `n` records were reported since the last check,
/// every one delivered. Returns their partitions and offsets in report order.
#[track_caller]
pub fn flush_delivered(
    producer: &BaseProducer<Deliveries>,
    n: usize,
    timeout: Duration,
) -> Vec<(i32, i64)> {
    if let Err(e) = producer.flush(timeout) {
        panic!(
            "flush: {e}, {} records still in flight",
            producer.in_flight_count()
        );
    }
    let reports = producer.context().take();
    let failed: Vec<&KafkaError> = reports.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} deliveries failed, the first: {}",
        failed.len(),
        reports.len(),
        failed[0]
    );
    assert_eq!(reports.len(), n, "delivery reports");
    reports.into_iter().map(Result::unwrap).collect()
}

/// A minimal blocking Kafka client for raw protocol checks.
pub struct RawClient {
    pub stream: TcpStream,
    correlation: i32,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            correlation: 0,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one response frame body; `None` if the read failed: the broker closed the
    /// connection, or nothing came within the read timeout.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    pub fn call<Req, Resp>(&mut self, key: ApiKey, version: i16, req: &Req) -> Resp
    where
        Req: vltava_protocol::Encodable,
        Resp: vltava_protocol::Decodable,
    {
        self.correlation += 1;
        let frame = encode_request(key, version, self.correlation, Some("raw-test"), req).unwrap();
        self.send_raw(&frame);
        let body = self.read_frame().expect("response");
        let (corr, resp) = decode_response::<Resp>(key, version, body).unwrap();
        assert_eq!(corr, self.correlation);
        resp
    }

    /// CreateTopics for one topic with replication factor 1.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
    ) -> vltava_protocol::messages::CreateTopicsResponse {
        use vltava_protocol::messages::create_topics_request::CreatableTopic;
        use vltava_protocol::messages::{CreateTopicsRequest, TopicName};
        let t = CreatableTopic::default()
            .with_name(TopicName(vltava_protocol::StrBytes::from_string(
                name.into(),
            )))
            .with_num_partitions(partitions)
            .with_replication_factor(1);
        self.call(
            ApiKey::CreateTopics,
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![t])
                .with_timeout_ms(5000),
        )
    }

    /// Produces one uncompressed batch of `values` (timestamped now) to partition 0; returns
    /// the partition's error code and base offset.
    pub fn produce_values(&mut self, topic: &str, acks: i16, values: &[&[u8]]) -> (i16, i64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let recs: Vec<vltava_record::RecordSpec<'_>> =
            values.iter().map(|v| (None, Some(*v), now)).collect();
        self.produce_batch(
            topic,
            acks,
            Bytes::from(vltava_record::build_batch(0, &recs)),
        )
    }

    /// Produces `records` as they are (one or more batches, or bytes that are not) to
    /// partition 0; returns the partition's error code and base offset.
    pub fn produce_batch(&mut self, topic: &str, acks: i16, records: Bytes) -> (i16, i64) {
        use vltava_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use vltava_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
        let pd = PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(records));
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(vltava_protocol::StrBytes::from_string(
                    topic.into(),
                )))
                .with_partition_data(vec![pd])]);
        let resp: ProduceResponse = self.call(ApiKey::Produce, 9, &req);
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// Checks that the broker closes this connection within `within`: EOF or a reset, with no
    /// bytes before it. A read that times out means the connection is still open, and bytes
    /// mean the broker answered; both are an error naming what was seen.
    pub fn closed_within(&mut self, within: Duration) -> Result<(), String> {
        use std::io::ErrorKind;
        let deadline = std::time::Instant::now() + within;
        let mut unexpected = 0usize;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(format!("connection still open after {within:?}"));
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut b = [0u8; 4096];
            match self.stream.read(&mut b) {
                Ok(0) if unexpected == 0 => return Ok(()),
                Ok(0) => return Err(format!("closed, but only after {unexpected} bytes")),
                Ok(n) => unexpected += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(format!(
                        "connection still open after {within:?} ({unexpected} bytes read)"
                    ));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) && unexpected == 0 =>
                {
                    return Ok(())
                }
                Err(e) => return Err(format!("read failed after {unexpected} bytes: {e}")),
            }
        }
    }

    /// Panics unless the broker closes this connection within [`CLOSE_TIMEOUT`].
    #[track_caller]
    pub fn assert_closed(&mut self, what: &str) {
        if let Err(e) = self.closed_within(CLOSE_TIMEOUT) {
            panic!("{what}: the broker should close the connection, but {e}");
        }
    }
}

/// How long a broker may take to close a connection it must close. Generous for a loaded
/// machine, yet far below any timeout that would close the connection for another reason.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A free port below the kernel's ephemeral range, for a node that restarts on the port it
/// had. A port the kernel handed out for `:0` is also the kind it hands out as a
/// connection's source port, so while the node is down any process's outgoing connection
/// can take it and the restart fails with "address in use". Ports below the range are
/// never handed out; they are picked at random, as other tests pick them too.
pub fn stable_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    const FROM: u16 = 10_000;
    if low > FROM + 1_000 {
        for _ in 0..1_000 {
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let port = FROM + (random % u64::from(low - FROM)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP proxy between clients and one broker that can cut a connection right after the
/// broker answered a Produce, before the client sees the answer: the client must retry a
/// batch the broker already appended. Point the broker's `advertised.listeners` at
/// [`CutProxy::addr`] so clients reach it only through the proxy.
pub struct CutProxy {
    pub addr: SocketAddr,
    listener: Option<std::net::TcpListener>,
    /// Produce answers still to swallow (each one cuts its connection).
    pub cuts_left: Arc<std::sync::atomic::AtomicUsize>,
}

impl CutProxy {
    pub fn bind(cuts: usize) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self {
            addr: listener.local_addr().unwrap(),
            listener: Some(listener),
            cuts_left: Arc::new(std::sync::atomic::AtomicUsize::new(cuts)),
        }
    }

    /// Starts forwarding to `broker`.
    pub fn run(&mut self, broker: SocketAddr) {
        let listener = self.listener.take().expect("run once");
        let cuts = Arc::clone(&self.cuts_left);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(broker) else {
                    continue;
                };
                let cuts = Arc::clone(&cuts);
                std::thread::spawn(move || proxy_connection(client, upstream, cuts));
            }
        });
    }
}

fn read_frame_from(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    s.read_exact(&mut body).ok()?;
    let mut frame = len.to_vec();
    frame.extend_from_slice(&body);
    Some(frame)
}

fn proxy_connection(
    mut client: TcpStream,
    mut upstream: TcpStream,
    cuts: Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    // correlation id -> api key of the requests in flight on this connection
    let inflight: Arc<Mutex<std::collections::HashMap<i32, i16>>> = Arc::default();
    let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let requests = Arc::clone(&inflight);
    std::thread::spawn(move || {
        while let Some(frame) = read_frame_from(&mut c2) {
            if frame.len() >= 12 {
                let key = i16::from_be_bytes([frame[4], frame[5]]);
                let corr = i32::from_be_bytes(frame[8..12].try_into().unwrap());
                requests.lock().unwrap().insert(corr, key);
            }
            if u2.write_all(&frame).is_err() {
                break;
            }
        }
        let _ = u2.shutdown(std::net::Shutdown::Both);
    });
    while let Some(frame) = read_frame_from(&mut upstream) {
        let corr = i32::from_be_bytes(frame[4..8].try_into().unwrap());
        let key = inflight.lock().unwrap().remove(&corr);
        let produce = key == Some(ApiKey::Produce as i16);
        if produce
            && cuts
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        {
            break;
        }
        if client.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = upstream.shutdown(std::net::Shutdown::Both);
}
