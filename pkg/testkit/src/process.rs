//! Starting a server binary as a watched child process on spare loopback ports.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to answer its readiness probe.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a start is retried when another process grabbed one of
/// the ports between picking it and the server binding it.
pub(crate) const ATTEMPTS: u32 = 5;

/// The one-line hint shown when a server binary is missing.
const INSTALL_HINT: &str = "run `just deps` or `apt-get install -y clickhouse-server \
     clickhouse-client redis-server zookeeper postgresql chromium chromium-driver`";

/// The watchdog run by `/bin/sh -c`: `$1` is the server's directory, `$2`
/// `remove` (delete the directory at the end: a throwaway server) or `keep`
/// (a cluster's server, whose data must survive a restart), the rest is the
/// server's command line. It runs in a process group of its own, so Ctrl-C
/// or a signal to the test's process group never reaches it or the server
/// directly.
///
/// Standard input is a pipe whose write end only the test process holds and
/// never writes to, so reading it returns end-of-file exactly when the test
/// process is gone. A watcher subshell blocks on that read and then kills
/// the server (`SIGKILL`: the data is throwaway). The main shell records the
/// server's pid in `server.pid` (for tests that kill or stop the server
/// itself) and waits for it; whenever and however it ends, the main shell
/// records its status in `server.exit` (how the test process notices a
/// server that died), stops the watcher (so it can never signal a reused
/// pid), itself waits for end-of-file, and then removes the directory if
/// told to. The test process closes the pipe early (drops [`Watched`]) to
/// stop a server that failed to start.
///
/// `$SKYHOUSE_STOP_SIGNAL` (default `KILL`) is the signal sent first; any
/// other signal is followed by `SIGKILL` 5 s later if the server still runs
/// (PostgreSQL gets `QUIT`, an immediate shutdown that, unlike `SIGKILL`,
/// removes its System V shared memory segment).
const WATCHDOG: &str = r#"
dir=$1
remove=$2
shift 2
exec 3<&0 </dev/null
"$@" 3<&- >>"$dir/stdout.log" 2>&1 &
server=$!
echo "$server" >"$dir/server.pid"
{
    read -r line <&3
    signal=${SKYHOUSE_STOP_SIGNAL:-KILL}
    kill -s "$signal" "$server" 2>/dev/null
    if [ "$signal" != KILL ]; then
        sleep 5
        kill -9 "$server" 2>/dev/null
    fi
} &
watcher=$!
trap '' INT HUP
wait "$server"
echo "$?" >"$dir/server.exit"
kill "$watcher" 2>/dev/null
read -r line <&3
if [ "$remove" = remove ]; then rm -rf "$dir"; fi
"#;

/// A watchdog without a server, for a directory several watched servers
/// share (a cluster's): on end-of-file of its standard input (the test
/// process is gone, or dropped the handle) it removes `$1`, trying again for
/// a few seconds while the servers' own watchdogs are still killing them.
const JANITOR: &str = r#"
trap '' INT HUP
read -r line
i=0
until rm -rf "$1" 2>/dev/null || [ "$i" -ge 50 ]; do
    sleep 0.1
    i=$((i + 1))
done
"#;

/// Where the watchdog records the server's exit status.
pub(crate) const EXIT_FILE: &str = "server.exit";

/// Where the watchdog records the server's pid.
pub(crate) const PID_FILE: &str = "server.pid";

/// A server child process under the watchdog. Dropping it (or ending the
/// process) kills the server and, for a throwaway server, removes its
/// directory.
#[derive(Debug)]
pub(crate) struct Watched {
    /// The watchdog shell (not the server itself).
    child: Child,
    /// The write end of the watchdog's standard input: closing it stops the server.
    _lifeline: ChildStdin,
}

impl Watched {
    /// How the server ended, if it did: its exit status from the
    /// watchdog's `server.exit` in `dir`, or the watchdog's own end.
    pub(crate) fn exited(&mut self, dir: &Path) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("its watchdog shell exited, {status}")),
            Ok(None) => fs::read_to_string(dir.join(EXIT_FILE))
                .ok()
                .map(|code| format!("exit status {}", code.trim())),
            Err(e) => Some(format!("cannot check the watchdog: {e}")),
        }
    }

    /// Closes the lifeline and waits for the watchdog to end (it kills the
    /// server if it still runs, and removes the directory if it was told to).
    pub(crate) fn finish(self) {
        let Watched {
            mut child,
            _lifeline: lifeline,
        } = self;
        drop(lifeline);
        let _ = child.wait();
    }
}

/// Writes a server's configuration into its directory (given its ports) and
/// returns the server's arguments.
pub(crate) type Prepare<'a> = dyn Fn(&Path, &[u16]) -> io::Result<Vec<String>> + 'a;

/// What a caller needs to start one kind of server.
pub(crate) struct ServerSpec<'a> {
    /// Binary name, e.g. `clickhouse-server`.
    pub binary: &'a str,
    /// Short name for the temporary directory, e.g. `clickhouse`.
    pub kind: &'a str,
    /// How many distinct spare ports the server needs.
    pub ports: usize,
    /// Writes the configuration into the directory and returns the arguments.
    pub prepare: &'a Prepare<'a>,
    /// True once the server answers on its ports.
    pub ready: &'a dyn Fn(&[u16]) -> bool,
    /// What the readiness probe is, for the timeout message.
    pub probe: &'a str,
    /// Log files (relative to the directory) worth showing when it fails.
    pub logs: &'a [&'a str],
    /// How long the server may take to answer its probe (default [`START_TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// Run the watchdog and the server as this `(uid, gid)` (PostgreSQL
    /// refuses to run as root); `prepare` must give it the directory.
    pub run_as: Option<(u32, u32)>,
    /// The watchdog's first signal to the server (see [`WATCHDOG`]); `None`
    /// for `SIGKILL`.
    pub stop_signal: Option<&'a str>,
}

/// A running, answering server.
#[derive(Debug)]
pub(crate) struct Started {
    /// Held only for its lifetime: the server lives as long as this does.
    pub _watched: Watched,
    pub ports: Vec<u16>,
    pub dir: PathBuf,
}

/// Starts the server described by `spec`, retrying on port collisions.
pub(crate) fn start(spec: &ServerSpec<'_>) -> Result<Started, String> {
    let binary = find_binary(spec.binary)?;
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        let ports = free_ports(spec.ports)
            .map_err(|e| format!("testkit: cannot find a spare loopback port: {e}"))?;
        match start_once(spec, &binary, attempt, ports)? {
            Ok(started) => return Ok(started),
            Err(port_taken) => last_error = port_taken, // try fresh ports
        }
    }
    Err(last_error)
}

/// Starts the server described by `spec` on exactly `ports` (e.g. again on
/// the ports of a server the test stopped), retrying for a while when one of
/// them is still taken (a killed server's socket may linger briefly).
pub(crate) fn start_on(spec: &ServerSpec<'_>, ports: &[u16]) -> Result<Started, String> {
    let binary = find_binary(spec.binary)?;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut attempt = 1;
    loop {
        match start_once(spec, &binary, attempt, ports.to_vec())? {
            Ok(started) => return Ok(started),
            Err(port_taken) if Instant::now() >= deadline => return Err(port_taken),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
        attempt += 1;
    }
}

/// One start on `ports`: `Ok(Ok(_))` running, `Ok(Err(message))` a port
/// was taken (worth another attempt), `Err(message)` any other failure.
fn start_once(
    spec: &ServerSpec<'_>,
    binary: &Path,
    attempt: u32,
    ports: Vec<u16>,
) -> Result<Result<Started, String>, String> {
    let dir = fresh_dir(spec.kind, attempt)
        .map_err(|e| format!("testkit: cannot create a temporary directory: {e}"))?;
    let args = (spec.prepare)(&dir, &ports)
        .map_err(|e| format!("testkit: cannot write {} config: {e}", spec.binary))?;
    let mut watched = spawn_with(
        &dir,
        binary,
        &args,
        true,
        &Launch {
            run_as: spec.run_as,
            stop_signal: spec.stop_signal,
        },
    )
    .map_err(|e| format!("testkit: cannot start {}: {e}", binary.display()))?;
    let timeout = spec.timeout.unwrap_or(START_TIMEOUT);
    let deadline = Instant::now() + timeout;
    loop {
        if (spec.ready)(&ports) {
            return Ok(Ok(Started {
                _watched: watched,
                ports,
                dir,
            }));
        }
        if let Some(how) = watched.exited(&dir) {
            let logs = log_tails(&dir, spec.logs);
            drop(watched); // the watchdog removes the directory
            let message = format!(
                "testkit: {} exited during startup ({how}) on ports {ports:?}; {logs}",
                binary.display()
            );
            if logs.contains("Address already in use") {
                return Ok(Err(message)); // someone took a port meanwhile
            }
            return Err(message);
        }
        if Instant::now() >= deadline {
            let logs = log_tails(&dir, spec.logs);
            drop(watched); // the watchdog kills the server and removes the directory
            return Err(format!(
                "testkit: {} did not answer {} on 127.0.0.1 ports {ports:?} within {} s; {logs}",
                binary.display(),
                spec.probe,
                timeout.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Finds a server binary on `PATH` or in the usual `sbin` directories
/// (which are not on a normal user's `PATH`).
///
/// Debian keeps PostgreSQL's server programs in `/usr/lib/postgresql/<major>/bin`,
/// off `PATH`: the newest major version there is searched last.
pub(crate) fn find_binary(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .chain(postgresql_bin_dirs())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{name} not found on PATH or in /usr/sbin: {INSTALL_HINT}"))
}

/// `/usr/lib/postgresql/<major>/bin`, newest major version first.
fn postgresql_bin_dirs() -> Vec<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    majors.sort_by_key(|m| std::cmp::Reverse(m.0));
    majors.into_iter().map(|(_, dir)| dir).collect()
}

/// A new, empty directory unique to this process, kind and attempt.
pub(crate) fn fresh_dir(kind: &str, attempt: u32) -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "skyhouse-testkit-{}-{kind}-{attempt}",
        std::process::id()
    ));
    // A leftover of an earlier process that had the same pid.
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The loopback ports handed out: below Linux's default ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768–60999), where the kernel picks the
/// local port of every outgoing connection. A port picked by binding port 0
/// comes from that range, and any connection made between the pick and the
/// server's bind (a client of ClickHouse, a replica fetching from another)
/// may take it: the server then fails with "Address already in use".
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The next port [`free_ports`] tries: starts at a place that depends on the
/// process id (test binaries of one `cargo test` run one after another,
/// but a leftover server may still hold a port of the last one), then walks
/// the range, so one process never hands out a port twice.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// `n` distinct loopback ports, free a moment ago and never handed out
/// before by this process (see [`PORTS`]).
pub(crate) fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    use std::sync::atomic::Ordering;
    let span = u32::from(PORTS.end - PORTS.start);
    let start = (std::process::id().wrapping_mul(7919)) % span;
    let _ = NEXT_PORT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        let i = NEXT_PORT.fetch_add(1, Ordering::SeqCst) % span;
        // In range: i < span = PORTS.end - PORTS.start.
        let port = PORTS.start + i as u16;
        // Nothing listens there (another process's server, a leftover).
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no {n} free loopback ports left in {PORTS:?}"),
        ));
    }
    Ok(ports)
}

/// One loopback port for a server a test starts (see [`free_ports`]).
pub fn spare_port() -> u16 {
    free_ports(1).expect("a free loopback port")[0]
}

/// Starts `binary args…` under the watchdog described at [`WATCHDOG`],
/// which removes `dir` at the end if `remove`.
pub(crate) fn spawn(
    dir: &Path,
    binary: &Path,
    args: &[String],
    remove: bool,
) -> io::Result<Watched> {
    spawn_with(dir, binary, args, remove, &Launch::default())
}

/// How [`spawn_with`] runs the watchdog besides the defaults.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Launch<'a> {
    /// `(uid, gid)` for the watchdog and the server (supplementary groups
    /// are dropped when the test process is root).
    pub run_as: Option<(u32, u32)>,
    /// The watchdog's first signal (see [`WATCHDOG`]).
    pub stop_signal: Option<&'a str>,
}

/// [`spawn`] with a user to run as and a stop signal.
pub(crate) fn spawn_with(
    dir: &Path,
    binary: &Path,
    args: &[String],
    remove: bool,
    launch: &Launch<'_>,
) -> io::Result<Watched> {
    let mut command = Command::new("/bin/sh");
    if let Some((uid, gid)) = launch.run_as {
        command.uid(uid).gid(gid);
    }
    if let Some(signal) = launch.stop_signal {
        command.env("SKYHOUSE_STOP_SIGNAL", signal);
    }
    command
        .arg("-c")
        .arg(WATCHDOG)
        .arg("skyhouse-testkit-watchdog")
        .arg(dir)
        .arg(if remove { "remove" } else { "keep" })
        .arg(binary)
        .args(args)
        .current_dir(dir);
    watch(&mut command)
}

/// Starts the janitor described at [`JANITOR`] for `dir`: the directory is
/// removed when the returned handle is dropped or the test process ends.
pub(crate) fn janitor(dir: &Path) -> io::Result<Watched> {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(JANITOR)
        .arg("skyhouse-testkit-janitor")
        .arg(dir);
    watch(&mut command)
}

/// Spawns `command` in a process group of its own with a lifeline on its
/// standard input.
fn watch(command: &mut Command) -> io::Result<Watched> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let lifeline = child
        .stdin
        .take()
        .expect("testkit: the watchdog's stdin was requested as a pipe");
    Ok(Watched {
        child,
        _lifeline: lifeline,
    })
}

/// The last lines of each log file, labelled, for a panic message.
pub(crate) fn log_tails(dir: &Path, logs: &[&str]) -> String {
    let mut out = String::new();
    for name in logs {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(bytes) if !bytes.is_empty() => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                let _ = write!(out, "\n--- tail of {} ---\n{tail}", path.display());
            }
            Ok(_) => {
                let _ = write!(out, "\n--- {} is empty ---", path.display());
            }
            Err(e) => {
                let _ = write!(out, "\n--- {}: {e} ---", path.display());
            }
        }
    }
    if out.is_empty() {
        out.push_str("no logs");
    }
    out
}

/// Turns a free-form hint into `[a-z0-9_]`, at most 40 characters, never
/// empty and never starting with a digit.
pub(crate) fn sanitize(hint: &str) -> String {
    let mut out: String = hint
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "t_");
    }
    out
}

/// A suffix unique within this machine for as long as this process lives:
/// `<pid>_<counter>`.
pub(crate) fn unique_suffix(separator: char) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}{separator}{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_identifiers_safe() {
        assert_eq!(sanitize("Records.Posts-v2"), "records_posts_v2");
        assert_eq!(sanitize(""), "t_");
        assert_eq!(sanitize("9lives"), "t_9lives");
        assert_eq!(sanitize("é"), "_");
        assert_eq!(sanitize(&"x".repeat(100)).len(), 40);
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let message = find_binary("skyhouse-no-such-server").expect_err("not installed");
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("just deps"), "{message}");
        assert!(message.contains("apt-get install"), "{message}");
    }

    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let ports = free_ports(3).expect("bind loopback ports");
        assert_eq!(ports.len(), 3);
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
        let more: Vec<u16> = (0..50).map(|_| spare_port()).collect();
        let all: std::collections::BTreeSet<u16> = ports.iter().chain(&more).copied().collect();
        assert_eq!(all.len(), 53, "a port handed out twice: {ports:?} {more:?}");
        assert!(all.iter().all(|p| PORTS.contains(p)), "{all:?}");
    }
}
