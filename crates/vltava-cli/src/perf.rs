//! `vltava perf produce|consume`: throughput and latency, like Kafka's
//! `kafka-producer-perf-test` and `kafka-consumer-perf-test`.
//!
//! The produce loop is one thread per `BaseProducer`: one reused payload buffer, the send
//! time carried in the delivery opaque (no allocation per record), delivery reports served
//! by `poll` between sends, latency = send to delivery report, in an HDR histogram.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::client::{
    self, admin_options, block_on, ClientArgs, Compression, LogContext, Output, Settings,
};
use crate::output::{print, print_json};
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava perf produce --topic bench --num-records 1000000 --record-size 1024
  vltava perf produce --topic bench --partitions 8 --throughput 50000 --acks 1 -o json
  vltava perf consume --topic bench --num-records 1000000")]
pub struct PerfArgs {
    #[command(subcommand)]
    pub command: PerfCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum PerfCommand {
    /// Send records as fast as allowed and report throughput and latency percentiles
    #[command(after_help = "Examples:
  vltava perf produce --topic bench --num-records 1000000 --record-size 1024
  vltava perf produce --topic bench --partitions 8 --acks all --compression lz4
  vltava perf produce --topic bench --throughput 10000 --num-records 100000

Defaults tuned for throughput: linger.ms=5, batch.size=1000000,
queue.buffering.max.messages=1000000, queue.buffering.max.kbytes=32768 (Kafka's
buffer.memory); --linger-ms, --batch-size and -X override them. Latency is the time from
send to delivery report, so it includes time spent waiting in that queue.")]
    Produce(ProduceArgs),
    /// The same produce against librdkafka's in-memory mock broker in this process: a
    /// yardstick for the figures of a real broker on the same machine
    #[command(after_help = "Examples:
  vltava perf mock --num-records 1000000 --record-size 1024 --acks all
  vltava perf mock --partitions 8 --record-size 100 -o json

Prints the same report as `perf produce`. The mock keeps data in memory and never persists
it; the client runs in the same process and competes with it for the CPU, as it does with a
local broker. There is no consume yardstick: the mock keeps only the last few megabytes of
each partition.")]
    Mock(MockArgs),
    /// Read records as fast as possible and report throughput
    #[command(after_help = "Examples:
  vltava perf consume --topic bench
  vltava perf consume --topic bench --num-records 1000000 -o json")]
    Consume(ConsumeArgs),
    /// Time the disk's own write + fdatasync, the floor under acks=all latency
    #[command(after_help = "Examples:
  vltava perf fsync --dir ./vltava-data
  vltava perf fsync --dir /var/lib/vltava --count 2000 --size 16384 -o json
  vltava perf fsync --dir ./vltava-data --count 1000 --size 1000000 --interval-ms 2.9

Appends --size bytes and calls fdatasync, --count times, to a scratch file in --dir (removed
afterwards), and reports the latency percentiles of each write + fdatasync. Point --dir at
the broker's data directory so both measure the same disk. With --interval-ms the rounds
keep a broker's pace (its bytes per fsync and fsyncs per second), so the disk is timed at
the load it carried during a produce.")]
    Fsync(FsyncArgs),
    /// Measure the CPU this machine's kernel charges per GB for the work a broker cannot
    /// avoid: the floor under a broker's CPU per GB
    #[command(after_help = "Examples:
  vltava perf floor --dir ./vltava-data
  vltava perf floor --dir /var/lib/vltava --size-mb 4096 -o json

Times, with the working thread's own CPU clock, in 1 MiB pieces: reading produce requests
off a loopback TCP socket into one reused buffer; CRC-32C over them; writing them to a new
file in --dir through the page cache; sending that file from the page cache to a loopback
socket with sendfile; writing a new file again, into the page-cache memory the first one
just freed (as a broker with a full page cache does), and once more with an fdatasync after
each piece; and a minimal broker that does all of a produce on one thread (receive, CRC,
write, and for acks=all fdatasync, per piece), alone and again beside a client: a librdkafka
producer sending flat out to its in-process mock cluster, whose copies compete for the same
caches, as a benchmark's client does. A spliced broker, acks=1, alone and beside the client,
is the floor of a design without the receive copy: socket to pipe to file with splice, the
CRC read back from the page cache. The produce floors are the minimal broker's alone;
the consume floor is sendfile's. The client's side of each socket is not counted. Every
probe runs --rounds times and the least is kept, except the run's first write, reported on
its own: on a virtual machine that returns free memory to its host, it can cost far more
than the reused one.")]
    Floor(FloorArgs),
}

#[derive(Debug, Args)]
pub struct FloorArgs {
    /// Directory on the disk to measure (the broker's data dir); a scratch file is written
    /// there and removed
    #[arg(long, value_name = "DIR")]
    pub dir: std::path::PathBuf,
    /// MiB moved by each probe (at most 1 TiB)
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub size_mb: u64,
    /// Rounds of every probe; each figure is the least of them
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

#[derive(Debug, Serialize)]
pub struct FloorReport {
    #[serde(flatten)]
    pub floor: crate::floor::Floor,
    pub produce_acks_1: f64,
    pub produce_acks_all: f64,
    pub consume: f64,
}

fn floor_probe(settings: &Settings, a: FloorArgs) -> Result<(), Error> {
    let bar = if settings.output == Output::Table && std::io::stdout().is_terminal() {
        let steps = crate::floor::STEPS_PER_ROUND * u64::from(a.rounds);
        let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} probes").expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let floor = crate::floor::measure(
        &a.dir,
        a.size_mb << 20,
        a.rounds,
        || bar.inc(1),
        MockLoad::start,
    );
    bar.finish_and_clear();
    let floor = floor.map_err(|e| Error::Refused {
        resource: a.dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let report = FloorReport {
        produce_acks_1: floor.produce_acks_1(),
        produce_acks_all: floor.produce_acks_all(),
        consume: floor.consume(),
        floor,
    };
    match settings.output {
        Output::Json => print_json(&report),
        Output::Table => {
            let f = &report.floor;
            let rows = [
                ("TCP receive (loopback)", f.tcp_receive),
                ("CRC-32C", f.crc32c),
                ("page-cache write, first", f.page_cache_write_first),
                ("page-cache write, reused", f.page_cache_write),
                ("write + fdatasync per MiB", f.write_fdatasync),
                ("sendfile (loopback)", f.sendfile),
                ("minimal broker, acks=1", f.minimal_acks_1),
                ("minimal broker, acks=all", f.minimal_acks_all),
                ("  beside a client, acks=1", f.minimal_acks_1_beside_client),
                (
                    "  beside a client, acks=all",
                    f.minimal_acks_all_beside_client,
                ),
                ("spliced broker, acks=1", f.spliced_acks_1),
                ("  beside a client, acks=1", f.spliced_acks_1_beside_client),
                ("produce floor, acks=1", report.produce_acks_1),
                ("produce floor, acks=all", report.produce_acks_all),
                ("consume floor", report.consume),
            ];
            let mut out = format!(
                "CPU-seconds per GB, {} MiB per probe in {}, the least of {} rounds:\n",
                f.bytes >> 20,
                f.dir,
                f.rounds
            );
            for (name, v) in rows {
                out.push_str(&format!("  {name:<28}{v:>6.3}\n"));
            }
            print(&out)
        }
    }
}

/// A librdkafka producer sending 1 KiB records flat out to librdkafka's mock cluster in
/// this process, on threads of its own, until dropped: the client `perf floor`'s minimal
/// broker runs beside, as a broker in the bench runs beside `perf produce`.
struct MockLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockLoad {
    /// Starts the load and returns once it has been sending for a moment, connected.
    fn start() -> std::io::Result<Self> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::channel::<Result<(), String>>();
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // The mock cluster is not Send: it lives and dies on this thread.
            let setup = || -> Result<_, KafkaError> {
                let cluster = rdkafka::mocking::MockCluster::new(1)?;
                cluster.create_topic("load", 1, 1)?;
                let producer: BaseProducer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", cluster.bootstrap_servers())
                    .set("log_level", "0")
                    .create()?;
                Ok((cluster, producer))
            };
            let (cluster, producer) = match setup() {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let value = payload(1024);
            let mut ready = Some(ready_tx);
            let began = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                match producer.send(BaseRecord::<(), _>::to("load").payload(&value)) {
                    Ok(()) => {
                        producer.poll(Duration::ZERO);
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // As `perf produce` waits: sleeping, not spinning (see `serve_reports`).
                        for _ in 0..8 {
                            producer.poll(Duration::ZERO);
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err((e, _)) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Err(e.to_string()));
                        }
                        return;
                    }
                }
                if ready.is_some() && began.elapsed() >= Duration::from_millis(300) {
                    let _ = ready.take().map(|r| r.send(Ok(())));
                }
            }
            producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            drop(producer);
            drop(cluster);
        });
        let started = ready
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the mock producer did not start".to_string())
            .and_then(|r| r);
        let load = Self {
            stop,
            thread: Some(thread),
        };
        started.map_err(std::io::Error::other)?;
        Ok(load)
    }
}

impl Drop for MockLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Args)]
pub struct FsyncArgs {
    /// Directory on the disk to measure (the broker's data dir)
    #[arg(long, value_name = "DIR")]
    pub dir: std::path::PathBuf,
    /// How many write + fdatasync rounds
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Bytes appended before each fdatasync
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Start a round every this many milliseconds (0: back to back). Paced as a broker's
    /// fsyncs were, the disk is measured at the write rate it had then: a disk's p99 at
    /// 350 MB/s sustained can be twice its p99 in a short burst.
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    pub interval_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct FsyncReport {
    pub dir: String,
    pub count: u64,
    pub size: usize,
    pub interval_ms: f64,
    pub latency_ms: LatencyMs,
}

/// Appends and fdatasyncs a scratch file `count` times, timing each round.
fn fsync_probe(settings: &Settings, a: FsyncArgs) -> Result<(), Error> {
    use std::io::Write;
    if a.count == 0 {
        return Err(Error::usage("--count must be at least 1"));
    }
    // An hour apart is no benchmark; the bound also keeps the schedule's arithmetic finite.
    if !(a.interval_ms.is_finite() && (0.0..=3_600_000.0).contains(&a.interval_ms)) {
        return Err(Error::usage(
            "--interval-ms must be a number of milliseconds from 0 to 3600000",
        ));
    }
    let path = a
        .dir
        .join(format!(".vltava-fsync-probe-{}", std::process::id()));
    let io = |e: std::io::Error| Error::Refused {
        resource: format!("{}", path.display()),
        reason: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let block = vec![0x5a_u8; a.size];
    let mut h = Histogram::<u64>::new_with_max(MAX_LATENCY_US, 3).expect("histogram bounds");
    let bar = progress(Some(a.count), settings);
    let result = (|| {
        let start = Instant::now();
        for i in 0..a.count {
            // Rounds are due on a fixed schedule; one that is late starts at once, so a slow
            // fsync is followed by the rounds that queued behind it, as a broker's would be.
            let due = Duration::try_from_secs_f64(a.interval_ms * i as f64 / 1000.0)
                .ok()
                .and_then(|d| start.checked_add(d));
            if let Some(wait) = due.and_then(|d| d.checked_duration_since(Instant::now())) {
                std::thread::sleep(wait);
            }
            let t = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            h.saturating_record(t.elapsed().as_micros() as u64);
            bar.inc(1);
        }
        Ok(())
    })();
    bar.finish_and_clear();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result.map_err(io)?;
    let report = FsyncReport {
        dir: a.dir.display().to_string(),
        count: a.count,
        size: a.size,
        interval_ms: a.interval_ms,
        latency_ms: LatencyMs::from_histogram(&h),
    };
    match settings.output {
        Output::Json => print_json(&report),
        Output::Table => {
            let l = &report.latency_ms;
            let pace = if report.interval_ms > 0.0 {
                format!(", one every {} ms", report.interval_ms)
            } else {
                String::new()
            };
            print(&format!(
                "{} x ({} bytes + fdatasync){pace} in {}: {:.2} ms avg, {:.2} ms 50th, {:.2} ms 99th, {:.2} ms 99.9th, {:.2} ms max.\n",
                report.count, report.size, report.dir, l.avg, l.p50, l.p99, l.p999, l.max
            ))
        }
    }
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to
    #[arg(long)]
    pub topic: String,
    /// Records to send
    #[arg(long, default_value_t = 1_000_000)]
    pub num_records: u64,
    /// Bytes per record value
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per second at most; -1 for no limit
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub throughput: i64,
    /// Acknowledgements: 0, 1 or all [default: all]
    #[arg(long, value_parser = client::parse_acks, allow_hyphen_values = true)]
    pub acks: Option<String>,
    /// librdkafka batch.size in bytes [default: 1000000]
    #[arg(long)]
    pub batch_size: Option<u64>,
    /// linger.ms [default: 5]
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// Compression codec
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,
    /// Create the topic with this many partitions if it does not exist
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Idempotent producer (enable.idempotence; implies acks=all)
    #[arg(long)]
    pub idempotent: bool,
    /// Produce in transactions with this transactional.id (implies --idempotent)
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// Records per transaction with --transactional-id
    #[arg(long, default_value_t = 10_000, requires = "transactional_id")]
    pub transaction_size: u64,
    /// Producers, each its own client, connections and thread, sending an equal share
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
}

#[derive(Debug, Args)]
pub struct MockArgs {
    /// Records to send
    #[arg(long, default_value_t = 1_000_000)]
    pub num_records: u64,
    /// Bytes per record value
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Partitions of the mock topic
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Acknowledgements: 0, 1 or all [default: all]
    #[arg(long, value_parser = client::parse_acks, allow_hyphen_values = true)]
    pub acks: Option<String>,
    /// Compression codec
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,
    /// Producers (each its own client) taking the records in turn
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read
    #[arg(long)]
    pub topic: String,
    /// Records to read [default: everything up to the end of every partition]
    #[arg(long)]
    pub num_records: Option<u64>,
    /// Give up when no record arrives for this long (ms, or 5s, 1m)
    #[arg(long, default_value = "10s", value_parser = client::parse_duration)]
    pub timeout: Duration,
    /// Consume in this group (commits nothing); default: assign all partitions directly
    #[arg(long)]
    pub group: Option<String>,
    /// Consumers (each its own client) sharing the partitions in one group
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
}

pub fn run(args: PerfArgs) -> Result<(), Error> {
    match args.command {
        PerfCommand::Produce(a) => produce(&args.client, a),
        PerfCommand::Consume(a) => consume(&args.client, a),
        PerfCommand::Mock(a) => mock(&args.client, a),
        PerfCommand::Fsync(a) => fsync_probe(&Settings::new(&args.client, &[])?, a),
        PerfCommand::Floor(a) => floor_probe(&Settings::new(&args.client, &[])?, a),
    }
}

/// Produce against librdkafka's mock cluster, with the same settings as `perf produce`.
fn mock(client_args: &ClientArgs, a: MockArgs) -> Result<(), Error> {
    if a.partitions < 1 {
        return Err(Error::usage("--partitions must be at least 1"));
    }
    let cluster = rdkafka::mocking::MockCluster::new(1)
        .map_err(Error::kafka("cannot start the mock cluster"))?;
    let topic = "vltava-perf-mock";
    cluster
        .create_topic(topic, a.partitions, 1)
        .map_err(Error::kafka("cannot create the mock topic"))?;
    let mut args = client_args.clone();
    args.bootstrap_server = Some(cluster.bootstrap_servers());
    produce(
        &args,
        ProduceArgs {
            topic: topic.into(),
            num_records: a.num_records,
            record_size: a.record_size,
            throughput: -1,
            acks: a.acks,
            batch_size: None,
            linger_ms: None,
            compression: a.compression,
            partitions: None,
            idempotent: false,
            transactional_id: None,
            transaction_size: 10_000,
            clients: a.clients,
        },
    )
}

const MIB: f64 = 1024.0 * 1024.0;
/// Latencies above this (in µs) are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

struct PerfContext {
    log: LogContext,
    start: Instant,
    latency_us: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for PerfContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        self.log.log(level, fac, msg)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason)
    }
}

impl ProducerContext for PerfContext {
    /// Nanoseconds since `start` when the record was sent.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        match result {
            Ok(_) => {
                let now_ns = self.start.elapsed().as_nanos() as u64;
                let us = now_ns.saturating_sub(sent_ns as u64) / 1_000;
                self.latency_us
                    .lock()
                    .unwrap()
                    .saturating_record(us.clamp(1, MAX_LATENCY_US));
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap();
                if first.is_none() {
                    *first = Some(e.to_string());
                }
            }
        }
    }
}

/// A payload of uppercase letters, as Kafka's perf test sends: compressible like text.
pub fn payload(size: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b'A' + (x % 26) as u8
        })
        .collect()
}

#[derive(Debug, Serialize, PartialEq)]
pub struct LatencyMs {
    pub avg: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencyMs {
    pub fn from_histogram(h: &Histogram<u64>) -> LatencyMs {
        let ms = |us: u64| us as f64 / 1_000.0;
        LatencyMs {
            avg: h.mean() / 1_000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ProduceReport {
    pub topic: String,
    pub partitions: usize,
    pub records: u64,
    pub failed: u64,
    pub record_size: usize,
    pub elapsed_s: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_ms: LatencyMs,
}

/// Kafka's perf-test summary line.
pub fn produce_line(r: &ProduceReport) -> String {
    let l = &r.latency_ms;
    format!(
        "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, \
         {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th.\n",
        r.records, r.records_per_sec, r.mb_per_sec, l.avg, l.max, l.p50, l.p95, l.p99, l.p999
    )
}

fn progress(total: Option<u64>, settings: &Settings) -> ProgressBar {
    let show = settings.output == Output::Table && std::io::stdout().is_terminal();
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let style = match total {
        Some(_) => "{bar:40} {human_pos}/{human_len} records  {rate}  eta {eta}",
        None => "{spinner} {human_pos} records  {rate}",
    };
    pb.set_style(
        ProgressStyle::with_template(style)
            .expect("valid template")
            .with_key(
                "rate",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} records/s", s.per_sec());
                },
            ),
    );
    pb
}

/// Makes sure the topic exists, creating it when `--partitions` is given; returns its
/// partition count.
fn ensure_topic(settings: &Settings, topic: &str, partitions: Option<i32>) -> Result<usize, Error> {
    let admin = settings.admin()?;
    match client::topic_metadata(admin.inner(), settings, topic) {
        Ok(info) => {
            if let Some(p) = partitions {
                if p as usize != info.partitions.len() {
                    eprintln!(
                        "note: topic {topic} exists with {} partitions; --partitions {p} ignored",
                        info.partitions.len()
                    );
                }
            }
            Ok(info.partitions.len())
        }
        Err(Error::UnknownTopic { .. }) => {
            let Some(p) = partitions else {
                // As a producer would: its metadata request asks the cluster to create the
                // topic on first use, which it does if auto.create.topics.enable is set.
                let producer: BaseProducer<LogContext> = settings.create(settings.log_context())?;
                return match client::topic_metadata(producer.client(), settings, topic) {
                    Ok(info) => Ok(info.partitions.len()),
                    Err(Error::UnknownTopic { .. }) => Err(Error::Refused {
                        resource: format!("topic '{topic}'"),
                        reason: "does not exist and the cluster does not create topics on first use; create it first or pass --partitions N".into(),
                    }),
                    Err(e) => Err(e),
                };
            };
            let t = NewTopic::new(topic, p, TopicReplication::Fixed(-1));
            let results = block_on(admin.create_topics([&t], &admin_options()))
                .map_err(Error::kafka(format!("cannot create topic '{topic}'")))?;
            for r in results {
                if let Err((name, code)) = r {
                    if code != RDKafkaErrorCode::TopicAlreadyExists {
                        return Err(Error::Refused {
                            resource: format!("cannot create topic '{name}'"),
                            reason: code.to_string(),
                        });
                    }
                }
            }
            Ok(client::topic_metadata(admin.inner(), settings, topic)?
                .partitions
                .len())
        }
        Err(e) => Err(e),
    }
}

fn produce(client_args: &ClientArgs, a: ProduceArgs) -> Result<(), Error> {
    if a.record_size == 0 {
        return Err(Error::usage("--record-size must be at least 1"));
    }
    if a.throughput == 0 || a.throughput < -1 {
        return Err(Error::usage(
            "--throughput must be positive, or -1 for no limit",
        ));
    }
    let mut settings = Settings::new(
        client_args,
        &[
            ("linger.ms", "5"),
            ("batch.size", "1000000"),
            ("queue.buffering.max.messages", "1000000"),
            // Kafka's buffer.memory: a bigger queue adds latency, not throughput.
            ("queue.buffering.max.kbytes", "32768"),
            ("message.timeout.ms", "60000"),
        ],
    )?;
    if let Some(acks) = &a.acks {
        settings.set("acks", acks.as_str());
    }
    if let Some(b) = a.batch_size {
        settings.set("batch.size", b.to_string());
    }
    if let Some(l) = a.linger_ms {
        settings.set("linger.ms", l.to_string());
    }
    if let Some(c) = a.compression {
        settings.set("compression.type", c.as_str());
    }
    let transactional = a.transactional_id.is_some();
    if a.idempotent || transactional {
        if a.acks
            .as_deref()
            .is_some_and(|acks| acks != "all" && acks != "-1")
        {
            return Err(Error::usage(
                "--idempotent and --transactional-id require --acks all",
            ));
        }
        settings.set("enable.idempotence", "true");
    }
    if let Some(id) = &a.transactional_id {
        settings.set("transactional.id", id.as_str());
    }
    if a.transaction_size == 0 {
        return Err(Error::usage("--transaction-size must be at least 1"));
    }
    if a.clients == 0 || (a.clients > 1 && transactional) {
        return Err(Error::usage(
            "--clients must be at least 1, and 1 with --transactional-id",
        ));
    }
    let partitions = ensure_topic(&settings, &a.topic, a.partitions)?;

    let start = Instant::now();
    let context = || PerfContext {
        log: settings.log_context(),
        start,
        latency_us: Mutex::new(
            Histogram::new_with_max(MAX_LATENCY_US, 3).expect("histogram bounds"),
        ),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let producers: Vec<BaseProducer<PerfContext>> = (0..a.clients)
        .map(|_| settings.create(context()))
        .collect::<Result<_, _>>()?;
    let producer = &producers[0];
    let delivered = || {
        producers
            .iter()
            .map(|p| p.context().delivered.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let txn_timeout = Duration::from_secs(60);
    let txn_error = |context: &str, e: KafkaError| Error::Kafka {
        context: context.to_string(),
        source: e,
    };
    if transactional {
        producer
            .init_transactions(txn_timeout)
            .map_err(|e| txn_error("cannot initialise transactions", e))?;
        producer
            .begin_transaction()
            .map_err(|e| txn_error("cannot begin a transaction", e))?;
    }
    let payload = payload(a.record_size);
    let stop = client::stop_flag();
    let pb = progress(Some(a.num_records), &settings);
    let rate = (a.throughput > 0).then_some(a.throughput as f64 / a.clients as f64);
    let topic = a.topic.as_str();
    let share = |i: usize| {
        a.num_records / a.clients as u64 + u64::from((i as u64) < a.num_records % a.clients as u64)
    };
    let begin = Instant::now();
    let shared = Shared {
        topic,
        payload: &payload,
        rate,
        stop: &stop,
        failed: std::sync::atomic::AtomicBool::new(false),
        begin,
    };
    let (sent, send_error, ended) = if transactional || producers.len() == 1 {
        let txn = transactional.then_some((a.transaction_size, txn_timeout));
        match send_share(producer, a.num_records, &shared, txn, &|| {
            pb.set_position(delivered())
        }) {
            Ok(sent) => (sent, None, Instant::now()),
            Err(SendFailure::Kafka(e, sent)) => (sent, Some(e), Instant::now()),
            Err(SendFailure::Transaction(context, e)) => return Err(txn_error(context, e)),
        }
    } else {
        // One thread per producer, as separate applications would run: one thread taking
        // every producer in turn spent its time switching between their clients' threads.
        let shared = &shared;
        std::thread::scope(|scope| {
            let handles: Vec<_> = producers
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    scope.spawn(move || {
                        let r = send_share(p, share(i), shared, None, &|| {});
                        (r, Instant::now())
                    })
                })
                .collect();
            while !handles.iter().all(|h| h.is_finished()) {
                pb.set_position(delivered());
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut total = 0;
            let mut first = None;
            // The rate is the producers' own: not rounded up to this thread's next look.
            let mut ended = begin;
            for h in handles {
                let (result, end) = h.join().expect("a producer thread panicked");
                ended = ended.max(end);
                match result {
                    Ok(sent) => total += sent,
                    Err(SendFailure::Kafka(e, sent)) => {
                        total += sent;
                        first.get_or_insert(e);
                    }
                    // Only a lone producer runs transactions.
                    Err(SendFailure::Transaction(_, e)) => {
                        first.get_or_insert(e);
                    }
                }
            }
            (total, first, ended)
        })
    };
    let settled = |p: &BaseProducer<PerfContext>| {
        p.context().delivered.load(Ordering::Relaxed) + p.context().failed.load(Ordering::Relaxed)
    };
    // A producer that stopped early left records unsettled: the run then ends now. (Its
    // in-flight count also counts events waiting, such as a log line, which are not records.)
    let ended = (producers.iter().map(settled).sum::<u64>() >= sent).then_some(ended);
    for p in &producers {
        client::drain(p, &|| false);
    }
    let elapsed = ended
        .unwrap_or_else(Instant::now)
        .duration_since(begin)
        .as_secs_f64();
    pb.finish_and_clear();
    if let Some(e) = send_error {
        return Err(Error::Kafka {
            context: format!("cannot send to '{topic}'"),
            source: e,
        });
    }
    let ctx = producer.context();
    let failed: u64 = producers
        .iter()
        .map(|p| p.context().failed.load(Ordering::Relaxed))
        .sum();
    let mut latency_us = ctx.latency_us.lock().unwrap().clone();
    for p in &producers[1..] {
        latency_us
            .add(&*p.context().latency_us.lock().unwrap())
            .expect("histograms of the same bounds");
    }
    let first_error = producers
        .iter()
        .find_map(|p| p.context().first_error.lock().unwrap().clone());
    let delivered = delivered();
    let report = ProduceReport {
        topic: a.topic.clone(),
        partitions,
        records: delivered,
        failed,
        record_size: a.record_size,
        elapsed_s: elapsed,
        records_per_sec: delivered as f64 / elapsed,
        mb_per_sec: delivered as f64 * a.record_size as f64 / MIB / elapsed,
        latency_ms: LatencyMs::from_histogram(&latency_us),
    };
    match settings.output {
        Output::Json => print_json(&report)?,
        Output::Table => print(&produce_line(&report))?,
    }
    if failed > 0 {
        if let Some(e) = first_error {
            eprintln!("error: first delivery failure: {e}");
        }
        return Err(Error::Delivery {
            failed,
            total: sent,
        });
    }
    Ok(())
}

/// What every producer thread of a run shares.
struct Shared<'a> {
    topic: &'a str,
    payload: &'a [u8],
    /// Records per second for this producer, if limited.
    rate: Option<f64>,
    stop: &'a std::sync::atomic::AtomicBool,
    /// Set by the first producer whose send fails, so the others stop too.
    failed: std::sync::atomic::AtomicBool,
    begin: Instant,
}

impl Shared<'_> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.failed.load(Ordering::Relaxed)
    }
}

enum SendFailure {
    /// A send failed after this many records were sent.
    Kafka(KafkaError, u64),
    Transaction(&'static str, KafkaError),
}

/// Sends `count` records through one producer, serving its delivery reports between sends;
/// with `txn` = (records per transaction, timeout), commits every that many records.
fn send_share(
    producer: &BaseProducer<PerfContext>,
    count: u64,
    s: &Shared,
    txn: Option<(u64, Duration)>,
    tick: &dyn Fn(),
) -> Result<u64, SendFailure> {
    let start = producer.context().start;
    let mut sent = 0u64;
    while sent < count {
        if s.stopping() {
            break;
        }
        if sent & 1023 == 0 {
            tick();
        }
        if let Some(rate) = s.rate {
            // Kafka's ThroughputThrottler: never ahead of sent/rate seconds.
            let due = s.begin + Duration::from_secs_f64(sent as f64 / rate);
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                client::serve_reports(producer);
                // With nothing in flight there is no report to time: sleep until due (at
                // most 10 ms, so a stop is seen).
                let nap = if producer.in_flight_count() > 0 {
                    PACE_NAP
                } else {
                    Duration::from_millis(10)
                };
                std::thread::sleep((due - now).min(nap));
            }
        }
        let sent_ns = start.elapsed().as_nanos() as usize;
        let mut record = BaseRecord::with_opaque_to(s.topic, sent_ns).payload(s.payload);
        let mut nap = client::Nap::default();
        loop {
            match producer.send::<(), [u8]>(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    nap.wait(producer);
                }
                Err((e, _)) => {
                    s.failed.store(true, Ordering::Relaxed);
                    return Err(SendFailure::Kafka(e, sent));
                }
            }
        }
        sent += 1;
        if sent & 63 == 0 {
            producer.poll(Duration::ZERO);
        }
        if let Some((size, timeout)) = txn {
            if sent.is_multiple_of(size) || sent == count {
                // rust-rdkafka's commit flushes first, by `poll`s of 100 ms that each run
                // their whole length: the reports are served here as they come instead.
                client::drain(producer, &|| s.stopping());
                producer
                    .commit_transaction(timeout)
                    .map_err(|e| SendFailure::Transaction("cannot commit a transaction", e))?;
                if sent < count {
                    producer
                        .begin_transaction()
                        .map_err(|e| SendFailure::Transaction("cannot begin a transaction", e))?;
                }
            }
        }
    }
    // Delivery reports are served here, on the producer's own thread, so a report's latency
    // is its own and not its turn in a queue of producers.
    client::drain(producer, &|| s.stopping());
    Ok(sent)
}

/// The longest a paced producer sleeps between looks at the clock and its delivery reports:
/// a report waits at most this long (plus the kernel's timer slack) to be timed.
const PACE_NAP: Duration = Duration::from_micros(100);

#[derive(Debug, Serialize)]
pub struct ConsumeReport {
    pub topic: String,
    pub partitions: usize,
    pub records: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
}

pub fn consume_line(r: &ConsumeReport) -> String {
    format!(
        "{} records consumed ({:.2} MB) in {:.2} s, {:.1} records/sec ({:.2} MB/sec).\n",
        r.records,
        r.bytes as f64 / MIB,
        r.elapsed_s,
        r.records_per_sec,
        r.mb_per_sec
    )
}

fn consume(client_args: &ClientArgs, a: ConsumeArgs) -> Result<(), Error> {
    let mut settings = Settings::new(
        client_args,
        &[
            ("fetch.wait.max.ms", "100"),
            ("queued.min.messages", "1000000"),
            ("fetch.message.max.bytes", "4194304"),
        ],
    )?;
    settings.set("enable.auto.commit", "false");
    settings.set("enable.auto.offset.store", "false");
    settings.set(
        "enable.partition.eof",
        if a.num_records.is_none() {
            "true"
        } else {
            "false"
        },
    );
    settings.set_default("allow.auto.create.topics", "false");
    match &a.group {
        Some(g) => {
            settings.set("group.id", g.as_str());
            settings.set("auto.offset.reset", "earliest");
        }
        // librdkafka's assign() needs a group id; this one never joins or commits.
        None => settings.set_default("group.id", format!("vltava-perf-{}", std::process::id())),
    }
    if a.clients == 0 || (a.clients > 1 && a.group.is_none()) {
        return Err(Error::usage(
            "--clients must be at least 1, and more than 1 only with --group",
        ));
    }
    let consumers: Vec<BaseConsumer<LogContext>> = (0..a.clients)
        .map(|_| settings.create(settings.log_context()))
        .collect::<Result<_, _>>()?;
    let consumer = &consumers[0];
    let info = client::topic_metadata(consumer.client(), &settings, &a.topic)?;
    let partitions = info.partitions.len();
    if a.group.is_some() {
        for c in &consumers {
            c.subscribe(&[&a.topic])
                .map_err(Error::kafka(format!("cannot subscribe to '{}'", a.topic)))?;
        }
    } else {
        let mut tpl = TopicPartitionList::new();
        for p in &info.partitions {
            tpl.add_partition_offset(&a.topic, p.id, Offset::Beginning)
                .map_err(Error::kafka("cannot build assignment"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(Error::kafka(format!("cannot assign '{}'", a.topic)))?;
    }
    let stop = client::stop_flag();
    let pb = progress(a.num_records, &settings);
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut at_end = std::collections::HashSet::new();
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut last_record = Instant::now();
    let mut timed_out = false;
    // One consumer waits in poll; several are polled in turn and the loop naps when none
    // has a record.
    let wait = if consumers.len() == 1 {
        Duration::from_millis(100)
    } else {
        Duration::ZERO
    };
    let mut turn = 0usize;
    let mut idle_turns = 0usize;
    loop {
        if a.num_records.is_some_and(|n| records >= n) || stop.load(Ordering::Relaxed) {
            break;
        }
        let consumer = &consumers[turn % consumers.len()];
        turn = turn.wrapping_add(1);
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                idle_turns = 0;
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                last_record = now;
                records += 1;
                bytes += m.payload_len() as u64 + m.key().map_or(0, |k| k.len() as u64);
                at_end.remove(&m.partition());
                if records & 4095 == 0 {
                    pb.set_position(records);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                if a.num_records.is_none() && at_end.len() >= partitions {
                    break;
                }
            }
            Some(Err(e)) => {
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
                    return Err(Error::UnknownTopic {
                        topic: a.topic.clone(),
                    });
                }
                eprintln!("warning: {e}");
            }
            None => {
                idle_turns += 1;
                if idle_turns >= consumers.len() && consumers.len() > 1 {
                    idle_turns = 0;
                    std::thread::sleep(Duration::from_millis(1));
                }
                if last_record.elapsed() >= a.timeout {
                    timed_out = true;
                    break;
                }
            }
        }
    }
    pb.finish_and_clear();
    // Time from the first record to the last: connection set-up is not throughput.
    let elapsed = first
        .map_or(0.0, |f| last.duration_since(f).as_secs_f64())
        .max(1e-9);
    let report = ConsumeReport {
        topic: a.topic.clone(),
        partitions,
        records,
        bytes,
        elapsed_s: elapsed,
        records_per_sec: if records > 1 {
            records as f64 / elapsed
        } else {
            0.0
        },
        mb_per_sec: if records > 1 {
            bytes as f64 / MIB / elapsed
        } else {
            0.0
        },
    };
    match settings.output {
        Output::Json => print_json(&report)?,
        Output::Table => print(&consume_line(&report))?,
    }
    if timed_out {
        if let Some(n) = a.num_records {
            if records < n {
                return Err(Error::Timeout {
                    what: format!("waiting for records ({records} of {n} consumed)"),
                    timeout_ms: a.timeout.as_millis() as u64,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_letters_and_sized() {
        let p = payload(1000);
        assert_eq!(p.len(), 1000);
        assert!(p.iter().all(u8::is_ascii_uppercase));
        assert_eq!(payload(1000), p, "deterministic");
    }

    #[test]
    fn latency_summary() {
        let mut h = Histogram::<u64>::new_with_max(MAX_LATENCY_US, 3).unwrap();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap(); // 1..=1000 ms
        }
        let l = LatencyMs::from_histogram(&h);
        assert!((l.avg - 500.5).abs() < 1.0, "{l:?}");
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 1.5, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0, "{l:?}");
    }

    #[test]
    fn summary_lines() {
        let r = ProduceReport {
            topic: "t".into(),
            partitions: 1,
            records: 1000,
            failed: 0,
            record_size: 100,
            elapsed_s: 0.5,
            records_per_sec: 2000.0,
            mb_per_sec: 0.19073,
            latency_ms: LatencyMs {
                avg: 1.0,
                p50: 1.0,
                p95: 2.0,
                p99: 3.0,
                p999: 4.0,
                max: 5.0,
            },
        };
        assert_eq!(
            produce_line(&r),
            "1000 records sent, 2000.0 records/sec (0.19 MB/sec), 1.00 ms avg latency, 5.00 ms max latency, \
             1.00 ms 50th, 2.00 ms 95th, 3.00 ms 99th, 4.00 ms 99.9th.\n"
        );
    }
}
