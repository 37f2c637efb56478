//! A real AT Protocol network on loopback: `node e2e/network.mjs`, i.e.
//! `@atproto/dev-env`'s in-memory PLC directory and reference PDS.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::process::{self, ServerSpec, Started};
use crate::xrpc::Pds;

/// How long the network may take to print its JSON line once its PDS
/// answers (it prints right after).
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// What `e2e/network.mjs` prints once both servers answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    /// The PDS, `http://127.0.0.1:P`.
    pub pds: String,
    /// The PLC directory, `http://127.0.0.1:Q`.
    pub plc: String,
    /// The PDS's admin password (HTTP Basic, user `admin`), random per run.
    pub admin_password: String,
    /// The PDS URL written into DID documents: `http://localhost:P`.
    pub pds_public_url: String,
    /// The PDS's own DID (`did:web:localhost`).
    pub pds_did: String,
    /// The handle domain accounts are created under (`.test`).
    pub handle_domain: String,
}

/// A running `@atproto/dev-env` network (PLC + PDS) on loopback ports.
///
/// [`Network::start`] starts one per call (≈ 2.3 s here, ~150 MB of Node);
/// [`Network::shared`] starts one per test binary. Prefer `start` for tests
/// that count firehose frames or compare a whole network with ClickHouse:
/// each then sees only its own accounts. Everything lives in memory or in a
/// temporary directory, so DIDs differ on every run.
///
/// The node process runs under the same watchdog as the servers (see the
/// crate documentation): dropping the `Network`, or the test process ending
/// in any way, kills it and removes its directory.
#[derive(Debug)]
pub struct Network {
    started: Started,
    info: NetworkInfo,
}

static SHARED: OnceLock<Result<Network, String>> = OnceLock::new();

impl Network {
    /// Starts a fresh network and waits until its PDS answers.
    ///
    /// # Panics
    ///
    /// If Node.js or `e2e/node_modules` is missing (the message says to run
    /// `just deps-node`), or the network does not come up within 60 s (the
    /// message has the tail of its log).
    pub fn start() -> Network {
        Network::try_start().unwrap_or_else(|message| panic!("{message}"))
    }

    /// One network shared by every test of this test binary, started on
    /// first use and killed when the process exits.
    ///
    /// # Panics
    ///
    /// As [`Network::start`]; the failure is remembered and repeated.
    pub fn shared() -> &'static Network {
        match SHARED.get_or_init(Network::try_start) {
            Ok(network) => network,
            Err(message) => panic!("{message}"),
        }
    }

    fn try_start() -> Result<Network, String> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if !std::env::split_paths(&path).any(|dir| dir.join("node").is_file()) {
            return Err(
                "testkit: `node` is not on PATH: the e2e network needs Node.js 20 \
                        (then `just deps-node`)"
                    .to_string(),
            );
        }
        let script = script_path();
        let modules = e2e_dir().join("node_modules/@atproto/dev-env/package.json");
        if !modules.is_file() {
            return Err(format!(
                "testkit: {} is missing: run `just deps-node` (npm ci in e2e/)",
                modules.display()
            ));
        }
        // Each network needs its own directory name: the watchdog's directory
        // is keyed by pid, kind and attempt.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let kind = format!("network{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        let script_arg = script.to_string_lossy().into_owned();
        let started = process::start(&ServerSpec {
            binary: "node",
            kind: &kind,
            ports: 2,
            prepare: &move |dir: &Path, ports: &[u16]| {
                Ok(vec![
                    script_arg.clone(),
                    "--pds-port".into(),
                    ports[0].to_string(),
                    "--plc-port".into(),
                    ports[1].to_string(),
                    "--tmpdir".into(),
                    dir.to_string_lossy().into_owned(),
                    // The watchdog keeps stdin at /dev/null and kills node itself.
                    "--ignore-stdin".into(),
                ])
            },
            ready: &|ports| {
                crate::http::request(
                    ports[0],
                    "GET",
                    "/xrpc/_health",
                    b"",
                    Duration::from_secs(2),
                )
                .is_ok_and(|r| r.status == 200)
            },
            probe: "GET /xrpc/_health",
            logs: &["stdout.log"],
        })?;
        let info = read_info(&started.dir)?;
        Ok(Network { started, info })
    }

    /// What the network printed: URLs and the admin password.
    pub fn info(&self) -> &NetworkInfo {
        &self.info
    }

    /// The PDS, `http://127.0.0.1:P`.
    pub fn pds_url(&self) -> &str {
        &self.info.pds
    }

    /// The PLC directory, `http://127.0.0.1:Q`.
    pub fn plc_url(&self) -> &str {
        &self.info.plc
    }

    /// The PDS's admin password.
    pub fn admin_password(&self) -> &str {
        &self.info.admin_password
    }

    /// `ws://127.0.0.1:P/xrpc/com.atproto.sync.subscribeRepos`, with
    /// `?cursor=N` when given (`Some(0)` replays everything the PDS kept).
    pub fn firehose_url(&self, cursor: Option<i64>) -> String {
        let base = self.info.pds.replacen("http://", "ws://", 1);
        match cursor {
            Some(c) => format!("{base}/xrpc/com.atproto.sync.subscribeRepos?cursor={c}"),
            None => format!("{base}/xrpc/com.atproto.sync.subscribeRepos"),
        }
    }

    /// What the node process has written so far (its stdout and stderr):
    /// dev-env's messages, and a `blocked a DNS query` line for each attempt
    /// to reach a non-local host.
    pub fn log(&self) -> String {
        fs::read_to_string(self.started.dir.join("stdout.log")).unwrap_or_default()
    }

    /// An XRPC client for this network's PDS (with its admin password).
    pub fn pds(&self) -> Pds {
        Pds::new(&self.info.pds, &self.info.admin_password)
    }
}

/// `e2e/` at the workspace root.
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e")
}

fn script_path() -> PathBuf {
    e2e_dir().join("network.mjs")
}

/// Waits for the JSON line in the node process's log (stdout and stderr
/// together; the line is the only one starting with `{"pds"`).
fn read_info(dir: &Path) -> Result<NetworkInfo, String> {
    let log = dir.join("stdout.log");
    let deadline = Instant::now() + LINE_TIMEOUT;
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("{\"pds\"")) {
            return serde_json::from_str(line)
                .map_err(|e| format!("testkit: e2e/network.mjs printed a bad line ({e}): {line}"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "testkit: e2e/network.mjs answered but printed no JSON line within {} s; log:\n{text}",
                LINE_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}
