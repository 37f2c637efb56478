//! A real AT Protocol network on loopback: `node e2e/network.mjs`, i.e.
//! `@atproto/dev-env`'s in-memory PLC directory and reference PDS, and with
//! `--appview` also the reference AppView and Ozone on PostgreSQL.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::appview::AppView;
use crate::postgres::Postgres;
use crate::process::{self, ServerSpec, Started};
use crate::xrpc::{self, Pds, XrpcError};

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
        let started = start_node(
            "network",
            2,
            &|ports| {
                vec![
                    "--pds-port".into(),
                    ports[0].to_string(),
                    "--plc-port".into(),
                    ports[1].to_string(),
                ]
            },
            &|ports| http_ok(ports[0], "/xrpc/_health"),
            "GET /xrpc/_health",
            None,
        )?;
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
        firehose_url(&self.info.pds, cursor)
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

/// How long an AppView network may take to come up: about 10–15 s on an
/// idle 2-core machine (PostgreSQL migrations of the AppView and Ozone, a
/// third PDS for Ozone's service account), much longer under load.
const APPVIEW_START_TIMEOUT: Duration = Duration::from_secs(300);

/// How long [`AppViewNetwork::process_all`] lets the AppView catch up.
const PROCESS_ALL_TIMEOUT: Duration = Duration::from_secs(120);

/// What `e2e/network.mjs --appview` prints once everything answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppViewInfo {
    /// The PLC directory and PDS, as for [`Network`].
    #[serde(flatten)]
    pub network: NetworkInfo,
    /// The AppView (`@atproto/bsky`), `http://127.0.0.1:B`.
    pub appview: String,
    /// The AppView's DID (`did:plc:…`, the `aud` of service-auth tokens for it).
    pub appview_did: String,
    /// The AppView's admin password (dev-env's fixed `admin-pass`).
    pub appview_admin_password: String,
    /// Ozone, the moderation service the PDS and AppView are wired to.
    pub ozone: String,
    /// Ozone's DID.
    pub ozone_did: String,
    /// The PostgreSQL schema suffix of this network (tables live in
    /// `appview_<schema>` and `ozone_<schema>`).
    pub postgres_schema: String,
    /// The script's control server, `http://127.0.0.1:C` (see
    /// [`AppViewNetwork::process_all`]).
    pub control: String,
}

/// A running `@atproto/dev-env` `TestNetwork` on loopback: PLC, the
/// reference PDS, the reference AppView (`@atproto/bsky`, indexing the PDS's
/// firehose into PostgreSQL) and Ozone, so that what skyhouse computes can
/// be compared with what Bluesky's own code computes on the same data.
///
/// [`AppViewNetwork::start`] starts one per call (10–15 s here, ~400 MB of
/// Node), on the test binary's shared [`Postgres`] (each network in schemas
/// of its own); [`AppViewNetwork::shared`] starts one per test binary.
/// Writes go to the PDS ([`AppViewNetwork::pds`]); the AppView indexes them
/// asynchronously, so call [`AppViewNetwork::process_all`] before reading
/// from it ([`AppViewNetwork::appview`]).
///
/// Dropping it, or the test process ending in any way, kills the node
/// process (as for [`Network`]); its PostgreSQL schemas go with the server.
#[derive(Debug)]
pub struct AppViewNetwork {
    started: Started,
    info: AppViewInfo,
    http: reqwest::Client,
}

static SHARED_APPVIEW: OnceLock<Result<AppViewNetwork, String>> = OnceLock::new();

impl AppViewNetwork {
    /// Starts a fresh network (and the test binary's PostgreSQL if it is
    /// not running yet) and waits until everything answers.
    ///
    /// # Panics
    ///
    /// If Node.js, `e2e/node_modules` or PostgreSQL is missing (the message
    /// says what to install), or the network does not come up within 300 s
    /// (the message has the tail of its log).
    pub fn start() -> AppViewNetwork {
        AppViewNetwork::try_start().unwrap_or_else(|message| panic!("{message}"))
    }

    /// One network shared by every test of this test binary, started on
    /// first use and killed when the process exits.
    ///
    /// # Panics
    ///
    /// As [`AppViewNetwork::start`]; the failure is remembered and repeated.
    pub fn shared() -> &'static AppViewNetwork {
        match SHARED_APPVIEW.get_or_init(AppViewNetwork::try_start) {
            Ok(network) => network,
            Err(message) => panic!("{message}"),
        }
    }

    fn try_start() -> Result<AppViewNetwork, String> {
        let url = Postgres::try_shared()?.url();
        let started = start_node(
            "appview",
            5,
            &move |ports| {
                let mut args = vec![
                    "--appview".to_string(),
                    "--postgres-url".into(),
                    url.clone(),
                ];
                for (flag, port) in [
                    "--pds-port",
                    "--plc-port",
                    "--bsky-port",
                    "--ozone-port",
                    "--control-port",
                ]
                .iter()
                .zip(ports)
                {
                    args.push((*flag).to_string());
                    args.push(port.to_string());
                }
                args
            },
            &|ports| http_ok(ports[4], "/health"),
            "GET /health on the control port",
            Some(APPVIEW_START_TIMEOUT),
        )?;
        let info = read_info(&started.dir)?;
        let http = reqwest::Client::builder()
            .timeout(PROCESS_ALL_TIMEOUT + Duration::from_secs(30))
            .build()
            .map_err(|e| format!("testkit: reqwest client: {e}"))?;
        Ok(AppViewNetwork {
            started,
            info,
            http,
        })
    }

    /// What the network printed: URLs, DIDs and passwords.
    pub fn info(&self) -> &AppViewInfo {
        &self.info
    }

    /// The PDS, `http://127.0.0.1:P`.
    pub fn pds_url(&self) -> &str {
        &self.info.network.pds
    }

    /// The PLC directory, `http://127.0.0.1:Q`.
    pub fn plc_url(&self) -> &str {
        &self.info.network.plc
    }

    /// The AppView, `http://127.0.0.1:B`.
    pub fn appview_url(&self) -> &str {
        &self.info.appview
    }

    /// The AppView's DID.
    pub fn appview_did(&self) -> &str {
        &self.info.appview_did
    }

    /// The PDS's firehose (what the AppView subscribes to, and what
    /// skyhouse should index): `ws://127.0.0.1:P/xrpc/com.atproto.sync.subscribeRepos`,
    /// with `?cursor=N` when given.
    pub fn firehose_url(&self, cursor: Option<i64>) -> String {
        firehose_url(&self.info.network.pds, cursor)
    }

    /// An XRPC client for this network's PDS (with its admin password).
    pub fn pds(&self) -> Pds {
        Pds::new(&self.info.network.pds, &self.info.network.admin_password)
    }

    /// An XRPC client for the AppView.
    pub fn appview(&self) -> AppView {
        AppView::new(
            &self.info.appview,
            &self.info.appview_did,
            &self.info.appview_admin_password,
        )
    }

    /// What the node process has written so far (dev-env's and the
    /// AppView's messages, and a `blocked a DNS query` line for each attempt
    /// to reach a non-local host).
    pub fn log(&self) -> String {
        fs::read_to_string(self.started.dir.join("stdout.log")).unwrap_or_default()
    }

    /// Waits until the AppView has indexed everything the PDS has sequenced
    /// so far, including the background work that updates its counts
    /// (dev-env's `network.processAll()`); returns how long that took.
    /// Call it after the writes and before reading from the AppView.
    pub async fn process_all(&self) -> Result<Duration, XrpcError> {
        #[derive(Deserialize)]
        struct Done {
            ms: u64,
        }
        let req = self.http.post(format!(
            "{}/process-all?timeout_ms={}",
            self.info.control,
            PROCESS_ALL_TIMEOUT.as_millis()
        ));
        let response = xrpc::send("control /process-all", req).await?;
        let done: Done = xrpc::json_body("control /process-all", response).await?;
        Ok(Duration::from_millis(done.ms))
    }

    /// A service-auth JWT issued by `iss` (an account of this PDS, signed
    /// with its repository key, whatever its status) for audience `aud`
    /// (default: the AppView's DID) and method `lxm`, as dev-env's
    /// `network.serviceHeaders()` makes it.
    pub async fn service_auth(
        &self,
        iss: &str,
        aud: Option<&str>,
        lxm: Option<&str>,
    ) -> Result<String, XrpcError> {
        #[derive(Deserialize)]
        struct Token {
            token: String,
        }
        let mut params = vec![("iss", iss)];
        if let Some(aud) = aud {
            params.push(("aud", aud));
        }
        if let Some(lxm) = lxm {
            params.push(("lxm", lxm));
        }
        let req = self
            .http
            .post(format!("{}/service-auth", self.info.control))
            .query(&params);
        let response = xrpc::send("control /service-auth", req).await?;
        let token: Token = xrpc::json_body("control /service-auth", response).await?;
        Ok(token.token)
    }

    /// Creates a `did:plc` in this network's PLC directory whose document
    /// names `endpoint` (a loopback `http://` URL) as its `#bsky_fg`
    /// `BskyFeedGenerator` service: the DID a feed generator record
    /// (`app.bsky.feed.generator`, field `did`) points at, which the AppView
    /// resolves to call `app.bsky.feed.getFeedSkeleton` on `endpoint`.
    pub async fn create_feedgen_did(&self, endpoint: &str) -> Result<String, XrpcError> {
        #[derive(Deserialize)]
        struct Did {
            did: String,
        }
        let req = self
            .http
            .post(format!("{}/feedgen-did", self.info.control))
            .query(&[("endpoint", endpoint)]);
        let response = xrpc::send("control /feedgen-did", req).await?;
        let did: Did = xrpc::json_body("control /feedgen-did", response).await?;
        Ok(did.did)
    }
}

/// `e2e/` at the workspace root.
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e")
}

fn script_path() -> PathBuf {
    e2e_dir().join("network.mjs")
}

fn firehose_url(pds: &str, cursor: Option<i64>) -> String {
    let base = pds.replacen("http://", "ws://", 1);
    match cursor {
        Some(c) => format!("{base}/xrpc/com.atproto.sync.subscribeRepos?cursor={c}"),
        None => format!("{base}/xrpc/com.atproto.sync.subscribeRepos"),
    }
}

fn http_ok(port: u16, path: &str) -> bool {
    crate::http::request(port, "GET", path, b"", Duration::from_secs(2))
        .is_ok_and(|r| r.status == 200)
}

/// Starts `node e2e/network.mjs <port args> --tmpdir <dir> --ignore-stdin`
/// under the watchdog on `ports` spare ports, until `ready`.
fn start_node(
    kind: &str,
    ports: usize,
    args: &dyn Fn(&[u16]) -> Vec<String>,
    ready: &dyn Fn(&[u16]) -> bool,
    probe: &str,
    timeout: Option<Duration>,
) -> Result<Started, String> {
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
    let kind = format!("{kind}{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    let script_arg = script.to_string_lossy().into_owned();
    process::start(&ServerSpec {
        binary: "node",
        kind: &kind,
        ports,
        prepare: &move |dir: &Path, ports: &[u16]| {
            let mut all = vec![script_arg.clone()];
            all.extend(args(ports));
            all.extend([
                "--tmpdir".into(),
                dir.to_string_lossy().into_owned(),
                // The watchdog keeps stdin at /dev/null and kills node itself.
                "--ignore-stdin".into(),
            ]);
            Ok(all)
        },
        ready,
        probe,
        logs: &["stdout.log"],
        timeout,
        run_as: None,
        stop_signal: None,
    })
}

/// Waits for the JSON line in the node process's log (stdout and stderr
/// together; the line is the only one starting with `{"pds"`).
fn read_info<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<T, String> {
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
