//! `skyhouse relay` as a real process: tokens and their refusals, TLS,
//! consumer groups with members killed and joining, restarts after
//! `kill -9` with the retention on disk, a truncated segment repaired on
//! start, hostile requests. Clients are the crate's own gRPC client
//! (`skyhouse_relay::ClientConfig`) over loopback; nothing else is needed
//! (no ClickHouse, no Redis).
#![allow(clippy::unwrap_used)] // a panic is the failure report

mod auth;
mod disk;
mod examples;
mod groups;
/// The Rust ingester example, run by `examples`.
#[path = "../../../../pkg/relay/examples/ingester.rs"]
#[allow(dead_code, unreachable_pub)]
mod ingester;

pub use skyhouse_testkit::spare_port;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use skyhouse_relay::pb::HealthCheckRequest;
use skyhouse_relay::{AuthedClient, ClientConfig};

/// How long any wait may take before the test fails: a guard against a
/// hang, never a performance expectation.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The bundled production Jetstream capture.
pub fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../pkg/sources/testdata/corpus.jsonl")
        .canonicalize()
        .unwrap()
}

/// A fresh directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skyhouse-relay-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `skyhouse ARGS` to completion (empty environment); (success, stdout, stderr).
pub fn skyhouse(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .env_clear()
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `skyhouse relay token create`: the token printed.
pub fn create_token(tokens: &Path, name: &str, scopes: &str) -> String {
    let file = tokens.to_str().unwrap();
    let (ok, out, err) = skyhouse(&[
        "relay",
        "token",
        "create",
        "--tokens-file",
        file,
        "--name",
        name,
        "--scope",
        scopes,
    ]);
    assert!(ok, "token create failed: {err}");
    let token = out.trim().to_owned();
    assert!(token.starts_with("shr_"), "{out}");
    token
}

/// One `skyhouse relay` process (restartable on the same ports and flags).
#[derive(Debug)]
pub struct Relay {
    child: Option<Child>,
    pub args: Vec<String>,
    pub grpc: u16,
    pub metrics: u16,
    log: PathBuf,
    rust_log: String,
    /// Runs so far (each appends to the log).
    runs: u32,
}

impl Relay {
    /// Start `skyhouse relay --listen 127.0.0.1:… --metrics-addr 127.0.0.1:… EXTRA`.
    pub fn start(dir: &Path, extra: &[&str]) -> Relay {
        Relay::start_with_log(dir, extra, "info")
    }

    /// The same with `RUST_LOG=rust_log`.
    pub fn start_with_log(dir: &Path, extra: &[&str], rust_log: &str) -> Relay {
        let (grpc, metrics) = (spare_port(), spare_port());
        let mut args: Vec<String> = vec![
            "relay".into(),
            "--listen".into(),
            format!("127.0.0.1:{grpc}"),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics}"),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut relay = Relay {
            child: None,
            args,
            grpc,
            metrics,
            log: dir.join("relay.log"),
            rust_log: rust_log.to_owned(),
            runs: 0,
        };
        relay.spawn();
        relay
    }

    fn spawn(&mut self) {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.runs += 1;
        let child = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
            .env_clear()
            .env("RUST_LOG", &self.rust_log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// `kill -9`, then reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start it again with the same flags and ports.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Its exit status, if it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// A client (with `token`), once the relay answers HealthCheck.
    pub async fn client(&mut self, token: Option<&str>) -> AuthedClient {
        self.client_with(ClientConfig::new(self.url(), token.map(str::to_owned)))
            .await
    }

    /// A client from `cfg`, once the relay answers HealthCheck.
    pub async fn client_with(&mut self, cfg: ClientConfig) -> AuthedClient {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.exited() {
                panic!("the relay exited ({s}):\n{}", self.log());
            }
            if let Ok(mut c) = cfg.connect().await {
                if c.health_check(HealthCheckRequest {}).await.is_ok() {
                    return c;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the relay never answered:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/metrics` now.
    pub async fn scrape(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("relay log: {}", self.log.display());
        }
    }
}
