#!/usr/bin/env bash
# A local ClickHouse cluster for development, everything under ./.local/cluster/:
# a standalone ZooKeeper and four ClickHouse servers, 2 shards x 2 replicas,
# cluster `skyhouse`, all on 127.0.0.1.
#
#   .local/cluster/zookeeper/{zoo.cfg,data/,log/zookeeper.log,zookeeper.pid}
#   .local/cluster/s1r1/{config.xml,users.xml,config.d/,data/,log/,clickhouse-server.pid}
#   .local/cluster/s1r2/ s2r1/ s2r2/   (the same for the other servers)
#
# Usage: scripts/local-cluster.sh up|down|status|clean
#
# Ports (each server i = 0..3 in the order s1r1 s1r2 s2r1 s2r2 adds i):
#   CLUSTER_HTTP_PORT (8201..8204), CLUSTER_TCP_PORT (9201..9204),
#   CLUSTER_INTERSERVER_PORT (9301..9304, replicas fetch parts here),
#   CLUSTER_ZK_PORT (2181).
#
# The configuration comes from the templates in scripts/cluster/ (the same
# ones the test kit's Cluster uses) and scripts/clickhouse/compression.xml
# (config.d/); it is regenerated on every `up`. Data
# stays across `down`/`up`; `clean` deletes it. ZooKeeper is Debian's
# (`zookeeper` package), run in the foreground of its own process with a
# generated zoo.cfg rather than as the system service.
set -euo pipefail

cd "$(dirname "$0")/.."
templates="$PWD/scripts/cluster"
root="$PWD/.local/cluster"
cluster=skyhouse
nodes=(s1r1 s1r2 s2r1 s2r2)
http_base=${CLUSTER_HTTP_PORT:-8201}
tcp_base=${CLUSTER_TCP_PORT:-9201}
interserver_base=${CLUSTER_INTERSERVER_PORT:-9301}
zk_port=${CLUSTER_ZK_PORT:-2181}
zk_dir="$root/zookeeper"
zk_pidfile="$zk_dir/zookeeper.pid"
zk_jar=/usr/share/java/zookeeper.jar
start_timeout=60

die() {
    echo "error: $*" >&2
    exit 1
}

for v in http_base tcp_base interserver_base zk_port; do
    [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] && [ "${!v}" -le 65530 ] ||
        die "port ${!v} is not a port number (CLUSTER_HTTP_PORT, CLUSTER_TCP_PORT, CLUSTER_INTERSERVER_PORT, CLUSTER_ZK_PORT)"
done
# The generated XML and zoo.cfg take the path as is.
[[ $root != *[\&\<\>\|\\]* ]] || die "the checkout's path $PWD has one of & < > | \\ in it; move it"

# Server $1's index (0..3), ports, shard and directory.
index_of() {
    local i
    for i in "${!nodes[@]}"; do
        if [ "${nodes[$i]}" = "$1" ]; then
            echo "$i"
            return
        fi
    done
    die "no server $1"
}
http_port() { echo $((http_base + $(index_of "$1"))); }
tcp_port() { echo $((tcp_base + $(index_of "$1"))); }
interserver_port() { echo $((interserver_base + $(index_of "$1"))); }
shard_of() { echo "${1:1:1}"; }
ch_pidfile() { echo "$root/$1/clickhouse-server.pid"; }

find_bin() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return
    fi
    for dir in /usr/sbin /usr/local/sbin; do
        if [ -x "$dir/$name" ]; then
            echo "$dir/$name"
            return
        fi
    done
    die "$name not found: run \`just deps\` (apt-get install -y clickhouse-server clickhouse-client zookeeper)"
}

# The pid in pidfile $1 if that process is alive and its command line has $2.
live_pid() {
    local pidfile=$1 name=$2 pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/cmdline" ]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name" || return 1
    fi
    echo "$pid"
}

# Sends $2 to 127.0.0.1:$1 and prints the reply (bash /dev/tcp: no curl needed).
ask() {
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf '%b' "$2" >&3
    timeout 2 cat <&3 || true
    exec 3<&- 3>&-
} 2>/dev/null

ch_ping() { [[ $(ask "$1" 'GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n') == *$'\r\n\r\nOk.'* ]]; }
# Serving, not just listening: `ruok` says imok before ZooKeeper accepts
# sessions, and a ClickHouse 18.16 server that cannot open its ON CLUSTER
# session at startup crashes on its first ON CLUSTER query.
zk_ok() { [[ $(ask "$1" srvr) == *$'\nMode: '* ]]; }

check_port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        die "port $1 is already in use on 127.0.0.1 (another server?); pick other ports with $2=..."
    fi
}

show_logs() {
    local f
    for f in "$@"; do
        if [ -s "$f" ]; then
            echo "--- tail of $f ---" >&2
            tail -n 20 "$f" >&2
        fi
    done
}

# Waits until probe $1 answers on port $2 for server $3 (pid file $4, command
# line matching $5); fails early when that process is gone.
wait_ready() {
    local probe=$1 port=$2 name=$3 pidfile=$4 match=$5 started=$SECONDS
    until "$probe" "$port"; do
        if [ $((SECONDS - started)) -ge "$start_timeout" ]; then
            echo "$name did not answer on 127.0.0.1:$port within ${start_timeout}s" >&2
            return 1
        fi
        if [ $((SECONDS - started)) -ge 3 ] && ! live_pid "$pidfile" "$match" >/dev/null; then
            echo "$name exited during startup" >&2
            return 1
        fi
        sleep 0.05
    done
}

# Writes template $1 to $2 with @DIR@ = $3 and this server's ports and macros.
render() {
    local template=$1 out=$2 dir=$3 node=${4:-}
    local args=(
        -e "s|@DIR@|$dir|g"
        -e "s|@CLUSTER@|$cluster|g"
        -e "s|@ZK_PORT@|$zk_port|g"
    )
    local n
    for n in "${nodes[@]}"; do
        args+=(-e "s|@TCP_PORT_${n^^}@|$(tcp_port "$n")|g")
    done
    if [ -n "$node" ]; then
        args+=(
            -e "s|@HTTP_PORT@|$(http_port "$node")|g"
            -e "s|@TCP_PORT@|$(tcp_port "$node")|g"
            -e "s|@INTERSERVER_PORT@|$(interserver_port "$node")|g"
            -e "s|@SHARD@|$(shard_of "$node")|g"
            -e "s|@REPLICA@|$node|g"
        )
    fi
    sed "${args[@]}" "$template" >"$out"
    if grep -q '@[A-Z0-9_]*@' "$out"; then
        die "$out: placeholders left: $(grep -o '@[A-Z0-9_]*@' "$out" | sort -u | tr '\n' ' ')"
    fi
}

zk_up() {
    local pid java cp
    if pid=$(live_pid "$zk_pidfile" ZooKeeperServerMain); then
        echo "zookeeper: already running (pid $pid), port $zk_port"
        return
    fi
    java=$(find_bin java)
    [ -f "$zk_jar" ] || die "$zk_jar not found: run \`just deps\` (apt-get install -y zookeeper)"
    check_port_free "$zk_port" CLUSTER_ZK_PORT
    mkdir -p "$zk_dir/data" "$zk_dir/log"
    render "$templates/zoo.cfg" "$zk_dir/zoo.cfg" "$zk_dir"
    cp=$zk_jar
    # Its log lines (warnings and up) go to log/zookeeper.log through slf4j-simple.
    if [ -f /usr/share/java/slf4j-simple.jar ]; then cp="$cp:/usr/share/java/slf4j-simple.jar"; fi
    rm -f "$zk_pidfile"
    # setsid: its own session, so Ctrl-C in this terminal later does not reach it.
    setsid "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -Dzookeeper.jmx.log4j.disable=true \
        -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$zk_dir/zoo.cfg" \
        </dev/null >>"$zk_dir/log/zookeeper.log" 2>&1 &
    echo $! >"$zk_pidfile"
    if ! wait_ready zk_ok "$zk_port" zookeeper "$zk_pidfile" ZooKeeperServerMain; then
        show_logs "$zk_dir/log/zookeeper.log"
        die "zookeeper did not start (log: $zk_dir/log/zookeeper.log)"
    fi
    echo "zookeeper: started (pid $(cat "$zk_pidfile")), port $zk_port"
}

# Starts every ClickHouse server that is not running, all at once, then
# waits for each.
ch_up() {
    local bin node dir pid started=()
    bin=$(find_bin clickhouse-server)
    for node in "${nodes[@]}"; do
        if pid=$(live_pid "$(ch_pidfile "$node")" clickhouse-server); then
            echo "$node: already running (pid $pid)"
            continue
        fi
        check_port_free "$(http_port "$node")" CLUSTER_HTTP_PORT
        check_port_free "$(tcp_port "$node")" CLUSTER_TCP_PORT
        check_port_free "$(interserver_port "$node")" CLUSTER_INTERSERVER_PORT
        dir="$root/$node"
        mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log,config.d}
        render "$templates/clickhouse.xml" "$dir/config.xml" "$dir" "$node"
        cp scripts/clickhouse/compression.xml "$dir/config.d/skyhouse-compression.xml"
        cp "$templates/users.xml" "$dir/users.xml"
        rm -f "$(ch_pidfile "$node")"
        # --daemon forks into the background and writes the pid file.
        (cd "$dir" && "$bin" --config-file="$dir/config.xml" --daemon --pid-file="$(ch_pidfile "$node")" </dev/null)
        started+=("$node")
    done
    for node in "${started[@]}"; do
        dir="$root/$node"
        if ! wait_ready ch_ping "$(http_port "$node")" "$node" "$(ch_pidfile "$node")" clickhouse-server; then
            show_logs "$dir/log/clickhouse-server.err.log" "$dir/log/stderr.log"
            die "$node did not start (logs in $dir/log/)"
        fi
        echo "$node: started (pid $(cat "$(ch_pidfile "$node")")), shard $(shard_of "$node"), http $(http_port "$node"), native $(tcp_port "$node")"
    done
}

# Stops the process of pidfile $1 (command line matching $2, shown as $3):
# SIGTERM, SIGKILL after 30 s. With $4 = nowait only sends SIGTERM.
stop() {
    local pidfile=$1 match=$2 name=$3 pid i
    if ! pid=$(live_pid "$pidfile" "$match"); then
        echo "$name: not running"
        rm -f "$pidfile"
        return
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name: still running after 30 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    echo "$name: stopped (pid $pid)"
}

down() {
    local node
    # The servers stop in parallel, ZooKeeper after them (they flush to it).
    for node in "${nodes[@]}"; do
        stop "$(ch_pidfile "$node")" clickhouse-server "$node" &
    done
    wait
    stop "$zk_pidfile" ZooKeeperServerMain zookeeper
}

# clickhouse-client against server $1; the rest are its arguments.
client() {
    local node=$1
    shift
    clickhouse-client --host 127.0.0.1 --port "$(tcp_port "$node")" "$@"
}

status() {
    local ok=0 pid node mode line
    if pid=$(live_pid "$zk_pidfile" ZooKeeperServerMain); then
        mode=$(ask "$zk_port" srvr | sed -n 's/^Mode: //p')
        if [ -n "$mode" ]; then
            echo "zookeeper: running (pid $pid), port $zk_port, mode $mode"
        else
            echo "zookeeper: running (pid $pid) but not answering on 127.0.0.1:$zk_port"
            ok=1
        fi
    else
        echo "zookeeper: not running"
        ok=1
    fi
    for node in "${nodes[@]}"; do
        if ! pid=$(live_pid "$(ch_pidfile "$node")" clickhouse-server); then
            echo "$node: not running"
            ok=1
            continue
        fi
        if ! ch_ping "$(http_port "$node")"; then
            echo "$node: running (pid $pid) but not answering on 127.0.0.1:$(http_port "$node")"
            ok=1
            continue
        fi
        # Replicated tables: how many, how many read-only (ZooKeeper lost),
        # and the replication queue still to do.
        if line=$(client "$node" --query "SELECT count(), countIf(is_readonly), sum(queue_size) FROM system.replicas" 2>&1); then
            read -r tables readonly queue <<<"$line"
            line="$tables replicated tables, $readonly read-only, queue $queue"
        else
            line="system.replicas: ${line%%$'\n'*}"
            ok=1
        fi
        echo "$node: running (pid $pid), shard $(shard_of "$node"), http://127.0.0.1:$(http_port "$node"), native $(tcp_port "$node"); $line"
    done
    return "$ok"
}

urls() {
    echo "cluster $cluster: CLICKHOUSE_ADDRESS=http://127.0.0.1:$(http_port s1r1) CLICKHOUSE_CLUSTER=$cluster"
    echo "  (any server takes queries: http $http_base..$((http_base + 3)), native $tcp_base..$((tcp_base + 3)))"
}

case "${1:-}" in
up)
    start=$(date +%s%N)
    zk_up
    ch_up
    echo "cluster up in $((($(date +%s%N) - start) / 1000000)) ms"
    urls
    ;;
down)
    down
    ;;
status)
    status
    ;;
clean)
    down
    rm -rf "$root"
    echo "removed $root"
    ;;
*)
    echo "usage: $0 up|down|status|clean" >&2
    exit 2
    ;;
esac
