//! Integration tests of skyhouse-sources: real loopback WebSocket servers
//! (`skyhouse_testkit::ws`), the real corpus captures in `testdata/`.

mod config;
mod replay;
mod ws;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use skyhouse_sources::{Message, SourceConfig, SourceKind};
use tokio::sync::mpsc;

/// Upper bound for anything a test waits for; only reached when the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The corpus Jetstream lines, as in the file.
pub(crate) fn corpus_lines() -> Vec<String> {
    std::fs::read_to_string(testdata("corpus.jsonl"))
        .expect("corpus.jsonl")
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The corpus frames, read independently of the crate's reader.
pub(crate) fn corpus_frames() -> Vec<Vec<u8>> {
    let raw = std::fs::read(testdata("corpus.frames")).expect("corpus.frames");
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let len = u32::from_be_bytes(raw[pos..pos + 4].try_into().expect("len")) as usize;
        out.push(raw[pos + 4..pos + 4 + len].to_vec());
        pos += 4 + len;
    }
    out
}

pub(crate) fn time_us(line: &[u8]) -> i64 {
    let v: serde_json::Value = serde_json::from_slice(line).expect("json line");
    v["time_us"].as_i64().expect("time_us")
}

/// A config for loopback tests: fast retries, patient liveness.
pub(crate) fn config(kind: SourceKind, endpoints: &[String]) -> SourceConfig {
    let mut cfg = SourceConfig::new(kind);
    cfg.endpoints = endpoints.to_vec();
    cfg.backoff_base = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(50);
    cfg
}

/// Receive one message or fail the test.
pub(crate) async fn recv(rx: &mut mpsc::Receiver<Message>) -> Message {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a message within the test's patience")
        .expect("the source is still running")
}

/// A running source.
pub(crate) struct Running {
    pub rx: mpsc::Receiver<Message>,
    pub resume: Arc<AtomicI64>,
    pub acked: skyhouse_sources::Acked,
    pub shutdown: skyhouse_sources::CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), skyhouse_sources::SourceError>>,
}

pub(crate) fn start(cfg: SourceConfig, capacity: usize, resume: i64) -> Running {
    let (tx, rx) = mpsc::channel(capacity);
    let resume = Arc::new(AtomicI64::new(resume));
    let shutdown = skyhouse_sources::CancellationToken::new();
    let acked = skyhouse_sources::Acked::default();
    let task = tokio::spawn(skyhouse_sources::run_with_status(
        cfg,
        resume.clone(),
        tx,
        shutdown.clone(),
        skyhouse_sources::Connected::default(),
        acked.clone(),
    ));
    Running {
        rx,
        resume,
        acked,
        shutdown,
        task,
    }
}

impl Running {
    /// Cancel and check that `run` ends with `Ok` (no panic, no error).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run did not panic");
        r.expect("run ends with Ok");
    }

    pub fn set_resume(&self, position: i64) {
        self.resume.store(position, Ordering::SeqCst);
    }
}

/// A metrics recorder that keeps counter and gauge values, for one test.
#[derive(Default)]
pub(crate) struct Metrics {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Metrics {
    fn key(name: &str, labels: &[(&str, &str)]) -> String {
        let mut k = name.to_string();
        for (l, v) in labels {
            k.push_str(&format!(",{l}={v}"));
        }
        k
    }

    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
        let k = Metrics::key(key.name(), &labels);
        self.values
            .lock()
            .expect("metrics lock")
            .entry(k)
            .or_default()
            .clone()
    }

    /// A counter's value (0 if never registered).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let k = Metrics::key(name, labels);
        self.values
            .lock()
            .expect("metrics lock")
            .get(&k)
            .map_or(0, |v| v.load(Ordering::SeqCst))
    }

    /// A gauge's value.
    pub fn gauge(&self, name: &str) -> f64 {
        let k = Metrics::key(name, &[]);
        self.values
            .lock()
            .expect("metrics lock")
            .get(&k)
            .map_or(0.0, |v| f64::from_bits(v.load(Ordering::SeqCst)))
    }
}

impl Recorder for Metrics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Run `test` on a current-thread runtime (so every task of the test, the source's too,
/// runs on this thread) with `metrics` as the thread's recorder.
pub(crate) fn with_metrics<F: Future>(test: impl FnOnce(Arc<Metrics>) -> F) -> F::Output {
    let metrics = Arc::new(Metrics::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let recorder = metrics.clone();
    metrics::with_local_recorder(&*recorder, || rt.block_on(test(metrics.clone())))
}
