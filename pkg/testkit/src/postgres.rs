//! A real PostgreSQL server per test process, for the reference AppView.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{self, ServerSpec, Started};

/// The superuser `initdb` creates (trust authentication on loopback, so no
/// password).
const SUPERUSER: &str = "postgres";

/// A `postgres` child process on a spare loopback port, with a cluster made
/// by `initdb` in a temporary directory, shared by every test of a test
/// binary (see [`Postgres::shared`]).
///
/// It runs with durability off (`fsync`, `synchronous_commit` and
/// `full_page_writes` off: the data is thrown away), no Unix socket, and
/// trust authentication for the superuser `postgres`. When the test process
/// runs as root (CI does), `initdb` and `postgres` refuse to run, so both
/// run as the `postgres` user that Debian's `postgresql` package creates,
/// and the cluster's directory belongs to that user.
///
/// The watchdog stops it with `SIGQUIT` (an immediate shutdown), then
/// `SIGKILL`: a `SIGKILL` alone would leave its System V shared memory
/// segment behind.
#[derive(Debug)]
pub struct Postgres {
    started: Started,
    version: String,
}

static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();

impl Postgres {
    /// The server of this test process, started on first use (`initdb` and
    /// startup take about a second) and stopped when the process exits.
    ///
    /// # Panics
    ///
    /// If PostgreSQL is not installed (the message says `just deps`), if the
    /// test process is root and there is no `postgres` user, or if the
    /// server does not start and accept a connection within 60 s (the
    /// message has the tail of its log). The failure is remembered: every
    /// later call panics with the same message.
    pub fn shared() -> &'static Postgres {
        Postgres::try_shared().unwrap_or_else(|message| panic!("{message}"))
    }

    /// [`Postgres::shared`], with the failure as a message.
    pub(crate) fn try_shared() -> Result<&'static Postgres, String> {
        SHARED
            .get_or_init(Postgres::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn start() -> Result<Postgres, String> {
        let postgres = process::find_binary("postgres")?;
        let initdb = process::find_binary("initdb")?;
        let run_as = run_as()?;
        let started = process::start(&ServerSpec {
            // As root the watchdog itself runs as `postgres` (see `run_as`),
            // so the server is started directly either way.
            binary: "postgres",
            kind: "postgres",
            ports: 1,
            prepare: &|dir, ports| {
                let data = dir.join("data");
                fs::create_dir_all(&data)?;
                if let Some((uid, gid)) = run_as {
                    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
                    std::os::unix::fs::chown(&data, Some(uid), Some(gid))?;
                }
                run_initdb(&initdb, dir, &data, run_as)?;
                Ok(server_args(&data, ports[0]))
            },
            ready: &|ports| accepts_connections(ports[0]),
            probe: "a startup message as user postgres",
            logs: &["stdout.log", "initdb.log"],
            timeout: None,
            run_as,
            stop_signal: Some("QUIT"),
        })?;
        let version = version(&postgres)?;
        Ok(Postgres { started, version })
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.started.ports[0]
    }

    /// `postgresql://postgres@127.0.0.1:<port>/postgres`: the superuser and
    /// the default database (no password: trust authentication).
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A URL for `database` on this server, as the superuser.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/{database}",
            self.port()
        )
    }

    /// The server's version, from `postgres --version` (e.g.
    /// `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The server's temporary directory (the cluster in `data/`, the log in
    /// `stdout.log`); removed when the test process exits.
    pub fn dir(&self) -> &Path {
        &self.started.dir
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.started.dir.join("stdout.log")).unwrap_or_default()
    }
}

/// `Some((uid, gid))` of the `postgres` user when this process is root
/// (PostgreSQL refuses to run as root), `None` otherwise.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    if !is_root() {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("testkit: cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != SUPERUSER {
                return None;
            }
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some(Some((uid, gid)))
        })
        .ok_or_else(|| {
            "testkit: running as root, PostgreSQL refuses to run as root and there is no \
             `postgres` user: run `just deps` (Debian's postgresql package creates it)"
                .to_string()
        })
}

/// Whether this process runs as root (the owner of `/proc/self` is our uid).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `initdb` of a throwaway cluster in `data`, its output in `dir/initdb.log`.
fn run_initdb(
    initdb: &Path,
    dir: &Path,
    data: &Path,
    run_as: Option<(u32, u32)>,
) -> io::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let log = fs::File::create(dir.join("initdb.log"))?;
    let mut command = Command::new(initdb);
    command
        .arg("--pgdata")
        .arg(data)
        .args([
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    let status = command.status()?;
    if status.success() {
        return Ok(());
    }
    let output = fs::read_to_string(dir.join("initdb.log")).unwrap_or_default();
    Err(io::Error::other(format!(
        "{} failed ({status}): {}",
        initdb.display(),
        output.trim()
    )))
}

/// The server's command line: loopback only, no Unix socket, no durability.
fn server_args(data: &Path, port: u16) -> Vec<String> {
    let mut args = vec![
        "-D".to_string(),
        data.to_string_lossy().into_owned(),
        "-p".to_string(),
        port.to_string(),
    ];
    for setting in [
        "listen_addresses=127.0.0.1",
        "unix_socket_directories=",
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        // Each AppView network holds a few dozen connections (the AppView's
        // pool, its data plane's, Ozone's); leave room for several.
        "max_connections=300",
        "shared_buffers=64MB",
        "log_min_messages=warning",
    ] {
        args.push("-c".to_string());
        args.push(setting.to_string());
    }
    args
}

/// `postgres --version`, trimmed.
fn version(postgres: &Path) -> Result<String, String> {
    let out = Command::new(postgres)
        .arg("--version")
        .output()
        .map_err(|e| format!("testkit: {} --version: {e}", postgres.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the server completes a startup handshake as the superuser: it
/// answers `AuthenticationOk` (trust) rather than an error such as "the
/// database system is starting up".
fn accepts_connections(port: u16) -> bool {
    handshake(port).unwrap_or(false)
}

fn handshake(port: u16) -> io::Result<bool> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    // StartupMessage: length, protocol 3.0, then name/value pairs.
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for part in ["user", SUPERUSER, "database", "postgres"] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    stream.write_all(&message)?;
    // The first reply: 'R' + length + 0 (AuthenticationOk), or 'E' (an error).
    let mut head = [0u8; 9];
    stream.read_exact(&mut head)?;
    let ok = head[0] == b'R' && head[5..9] == [0, 0, 0, 0];
    // Terminate.
    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_args_bind_loopback_only() {
        let args = server_args(Path::new("/tmp/x/data"), 5555);
        assert_eq!(&args[..4], ["-D", "/tmp/x/data", "-p", "5555"]);
        assert!(args.contains(&"listen_addresses=127.0.0.1".to_string()));
        assert!(args.contains(&"unix_socket_directories=".to_string()));
    }
}
