#!/usr/bin/env python3
"""Check the migrations (and the store's queries) on current ClickHouse, in-process.

Usage: python3 scripts/chdb_check.py [--migrations DIR] [--queries FILE]...

Runs on chdb (the `chdb-core` package: ClickHouse as a Python library), in a
temporary on-disk session, against the database `skyhouse_chdb_check`:

1. every migration's up file in order, every down file in reverse order, then
   every up file again (up/down/up); after the downs the database must hold
   no table the migrations made, and after the second up the large tables'
   strings must have ZSTD codecs (0013);
2. every table of the database answers `SHOW CREATE TABLE`;
3. a create (version 10) and a tombstone (version 11) of one record plus a
   second live record go into `records`, and `FINAL ... deleted = 0` must
   count 1;
4. with --queries, every statement of FILE runs without error (the
   interaction refresh once per table and kind), and the interaction refresh
   and post_counts give the right counts for replayed, deleted and
   deleted-before-created likes;
5. with --statements, every rendered statement of FILE (the store's catalog:
   `-- name: X` then the SQL exactly as sent) runs without error, in order.

Files are split exactly as pkg/store/src/migrate.rs `render()` does: `--`
comment lines and blank lines dropped, a statement ends with `;` at the end of
a line, `{db}` is the database. A `-- min_server_version: X.Y` gate at the top
of an up file is honoured as the Rust runner does (a migration the server is
too old for is skipped), which on a current ClickHouse skips nothing.

Prints one summary line and exits 0, or prints the failing migration or
statement with the server's error on one line and exits 1.
"""

import argparse
import os
import re
import sys
import tempfile

DB = "skyhouse_chdb_check"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CheckFailed(Exception):
    """A step failed; the message is the one line to print."""


def one_line(text):
    return " ".join(str(text).split())


def fail(what, err):
    raise CheckFailed(f"FAIL {what}: {one_line(err)}")


# --- migration files, as migrate.rs reads them -------------------------------


def parse_version(text):
    """`18.16.1` or `26.9.2.1` -> (18, 16, 1); None when malformed."""
    parts = text.strip().split(".")
    try:
        nums = [int(p) for p in parts[:3]]
    except ValueError:
        return None
    if not nums:
        return None
    while len(nums) < 3:
        nums.append(0)
    return tuple(nums)


def gate(sql):
    """The `min_server_version` of a file's leading comment block, if any."""
    for line in sql.splitlines():
        line = line.strip()
        if not (line.startswith("--") or line == ""):
            break
        rest = line.lstrip("-").strip()
        if rest.startswith("min_server_version:"):
            return rest[len("min_server_version:"):].strip()
    return None


def one_server(stmt, db):
    """`{db}` replaced; `{global}` and `{local}` empty, as skyhouse-store
    renders them for one server (their cluster text runs on a real cluster
    in pkg/store/tests/cluster.rs)."""
    return stmt.replace("{db}", db).replace("{global}", "").replace("{local}", "")


def render(sql, db):
    """Split into statements, without comment lines, with `{db}` replaced
    (and `{global}`, `{local}` as on one server)."""
    out = []
    current = []
    for line in sql.splitlines():
        trimmed = line.strip()
        if trimmed.startswith("--") or trimmed == "":
            continue
        current.append(line)
        if trimmed.endswith(";"):
            stmt = one_server("\n".join(current).strip().rstrip(";").strip(), db)
            out.append(stmt)
            current = []
    rest = "\n".join(current).strip()
    if rest:
        out.append(one_server(rest, db))
    return out


def load_migrations(directory):
    """[(version, label, up_sql, down_sql, gate)] sorted by version."""
    by_version = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise CheckFailed(f"FAIL reading {directory}: {one_line(e)}")
    for name in names:
        if not name.endswith(".sql"):
            continue
        if name.endswith(".up.sql"):
            stem, kind = name[: -len(".up.sql")], "up"
        elif name.endswith(".down.sql"):
            stem, kind = name[: -len(".down.sql")], "down"
        else:
            raise CheckFailed(f"FAIL migration file {name}: name must end in .up.sql or .down.sql")
        num, sep, label = stem.partition("_")
        if not sep or not num.isdigit():
            raise CheckFailed(f"FAIL migration file {name}: name must be NNNN_name")
        version = int(num)
        entry = by_version.setdefault(version, {"name": label})
        if entry["name"] != label:
            raise CheckFailed(
                f"FAIL migration file {name}: number {version} is also used by {entry['name']!r}"
            )
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            entry[kind] = f.read()
    out = []
    for version in sorted(by_version):
        entry = by_version[version]
        label = f"{version:04}_{entry['name']}"
        for kind in ("up", "down"):
            if kind not in entry:
                raise CheckFailed(f"FAIL migration {label}: has no .{kind}.sql")
        g = gate(entry["up"])
        min_version = None
        if g is not None:
            min_version = parse_version(g)
            if min_version is None:
                raise CheckFailed(f"FAIL migration {label}: bad min_server_version {g!r}")
        out.append((version, label, entry["up"], entry["down"], min_version))
    return out


# --- chdb ----------------------------------------------------------------------


class Server:
    def __init__(self, path):
        try:
            import chdb
            from chdb import session as chs
        except ImportError as e:
            raise CheckFailed(
                f"FAIL import chdb: {one_line(e)} (chdb-core is not installed: run `just deps`)"
            )
        self.package_version = getattr(chdb, "__version__", "?")
        self.session = chs.Session(path)

    def query(self, sql):
        """Run one statement; return its rows (TabSeparated, unescaped only
        as far as the checks need). Raises on a server error."""
        res = self.session.query(sql, "TabSeparated")
        # Older chdb builds report errors on the result instead of raising.
        err = getattr(res, "error_message", None)
        if callable(err):
            err = err()
        if err:
            raise RuntimeError(err)
        text = res.bytes().decode("utf-8") if hasattr(res, "bytes") else str(res)
        return [line.split("\t") for line in text.splitlines()]

    def scalar(self, sql):
        rows = self.query(sql)
        if not rows or not rows[0]:
            raise RuntimeError(f"no result from {sql!r}")
        return rows[0][0]

    def close(self):
        close = getattr(self.session, "close", None) or getattr(self.session, "cleanup", None)
        if close:
            close()


def tables(srv):
    return [r[0] for r in srv.query(f"SELECT name FROM system.tables WHERE database = '{DB}' ORDER BY name")]


CREATE_RE = re.compile(
    r"^\s*CREATE\s+(?:TABLE|(?:MATERIALIZED\s+)?VIEW|DICTIONARY)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    + re.escape(DB)
    + r"\.`?([A-Za-z0-9_.]+)`?",
    re.IGNORECASE,
)
DROP_RE = re.compile(
    r"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + re.escape(DB) + r"\.`?([A-Za-z0-9_.]+)`?",
    re.IGNORECASE,
)


def apply(srv, migrations, direction, server_version, pass_name):
    """Apply every migration's up (in order) or down (in reverse order)."""
    done = 0
    seq = migrations if direction == "up" else list(reversed(migrations))
    for _version, label, up, down, min_version in seq:
        if min_version is not None and server_version < min_version:
            continue  # the Rust runner records it as skipped
        for stmt in render(up if direction == "up" else down, DB):
            try:
                srv.query(stmt)
            except Exception as e:  # noqa: BLE001 - any server error fails the check
                fail(f"migration {label} {direction} ({pass_name}): {one_line(stmt)[:300]}", e)
        done += 1
    return done


def check(args):
    with tempfile.TemporaryDirectory(prefix="skyhouse-chdb-") as tmp:
        srv = Server(os.path.join(tmp, "data"))
        try:
            return run_checks(srv, args)
        finally:
            srv.close()


def run_checks(srv, args):
    version_text = srv.scalar("SELECT version()")
    server_version = parse_version(version_text) or (0, 0, 0)
    migrations = load_migrations(args.migrations)
    if not migrations:
        raise CheckFailed(f"FAIL no migrations in {args.migrations}")

    # What the Rust runner's ensure_bookkeeping() does first.
    bookkeeping = [
        f"CREATE DATABASE IF NOT EXISTS {DB}",
        f"CREATE TABLE IF NOT EXISTS {DB}.schema_migrations (version UInt32, name String, "
        "checksum String, state String, server_version String, applied_at DateTime, seq UInt64) "
        "ENGINE = ReplacingMergeTree(seq) ORDER BY version",
    ]
    for stmt in bookkeeping:
        try:
            srv.query(stmt)
        except Exception as e:  # noqa: BLE001
            fail(f"bookkeeping: {one_line(stmt)}", e)

    applied = apply(srv, migrations, "up", server_version, "first up")
    apply(srv, migrations, "down", server_version, "down")
    left = [t for t in tables(srv) if t != "schema_migrations"]
    if left:
        raise CheckFailed(f"FAIL down files left tables behind: {', '.join(left)}")
    apply(srv, migrations, "up", server_version, "second up")

    # Every table the up files create exists, and every table answers SHOW CREATE.
    expected = set()
    for _v, _l, up, _d, min_version in migrations:
        if min_version is not None and server_version < min_version:
            continue
        for stmt in render(up, DB):
            m = CREATE_RE.match(stmt)
            if m:
                expected.add(m.group(1))
            # A later migration may replace a table or view (0012's views).
            m = DROP_RE.match(stmt)
            if m:
                expected.discard(m.group(1))
    present = tables(srv)
    missing = sorted(expected - set(present))
    if missing:
        raise CheckFailed(f"FAIL tables missing after up/down/up: {', '.join(missing)}")
    for name in present:
        try:
            srv.query(f"SHOW CREATE TABLE {DB}.`{name}`")
        except Exception as e:  # noqa: BLE001
            fail(f"SHOW CREATE TABLE {DB}.{name}", e)

    # Migration 0013's column codecs: on a current server every plain String
    # column of the tables that grow with the network is ZSTD-compressed.
    bare = [
        f"{t}.{c}"
        for t, c in srv.query(
            f"SELECT table, name FROM system.columns WHERE database = '{DB}' "
            "AND table IN ('records', 'posts', 'likes', 'interactions', 'record_days', 'interaction_keys') "
            "AND type = 'String' AND default_kind = '' AND compression_codec NOT LIKE '%ZSTD%'"
        )
    ]
    if bare:
        raise CheckFailed(f"FAIL columns without a ZSTD codec after up/down/up: {', '.join(bare)}")

    # A tombstone collapses the row it replaces. Separate INSERTs make separate
    # parts, so FINAL (not an already-merged part) does the collapsing.
    cols = "(did, collection, rkey, cid, version, deleted, created_at, indexed_at, sort_at, record)"
    rows = [
        "('did:plc:alice', 'app.bsky.feed.post', '3kpost1', 'bafycid1', 10, 0, "
        "'2024-05-01 10:00:00', '2024-05-01 10:00:01', '2024-05-01 10:00:00', '{\"text\":\"hello\"}')",
        "('did:plc:alice', 'app.bsky.feed.post', '3kpost1', '', 11, 1, "
        "'2024-05-01 10:00:00', '2024-05-01 11:00:00', '2024-05-01 10:00:00', '')",
        "('did:plc:bob', 'app.bsky.feed.like', '3klike1', 'bafycid2', 12, 0, "
        "'2024-05-02 09:00:00', '2024-05-02 09:00:01', '2024-05-02 09:00:00', '{}')",
    ]
    seed = [f"INSERT INTO {DB}.records {cols} VALUES {r}" for r in rows] + [
        f"INSERT INTO {DB}.identities (did, handle, version, indexed_at) VALUES "
        "('did:plc:alice', 'old.example.com', 1, '2024-05-01 00:00:00')",
        f"INSERT INTO {DB}.identities (did, handle, version, indexed_at) VALUES "
        "('did:plc:alice', 'alice.example.com', 2, '2024-05-02 00:00:00')",
        f"INSERT INTO {DB}.accounts (did, active, status, version, indexed_at) VALUES "
        "('did:plc:bob', 1, 'active', 1, '2024-05-02 00:00:00')",
    ]
    for stmt in seed:
        try:
            srv.query(stmt)
        except Exception as e:  # noqa: BLE001
            fail(f"seeding: {one_line(stmt)[:300]}", e)
    live_sql = f"SELECT count() FROM {DB}.records FINAL WHERE deleted = 0"
    try:
        live = srv.scalar(live_sql)
    except Exception as e:  # noqa: BLE001
        fail(live_sql, e)
    if live != "1":
        raise CheckFailed(f"FAIL {live_sql}: got {live}, want 1 (the tombstone did not collapse its row)")

    views = check_views(srv)
    examples = check_page_examples(srv)

    queries = 0
    # The store's named parameters, given sample values (the Rust side fills
    # them with validated, quoted literals).
    samples = {
        "{did}": "'did:plc:alice'",
        "{since}": "'2024-01-01'",
        "{limit}": "100",
        "{version}": "2",
        "{after}": "0",
        "{before}": "4294967295",
        "{levels}": "0.5",
        "{upto}": "1714521600",
        "{uris}": "'at://did:plc:alice/app.bsky.feed.post/3kpost1'",
        # On a cluster, `cluster('<name>', system, replicas)`.
        "{replicas}": "system.replicas",
    }
    for path in args.queries:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise CheckFailed(f"FAIL reading {path}: {one_line(e)}")
        for template in render(text, DB):
            # An INSERT … FORMAT RowBinary takes its rows from the request
            # body: the catalog (--statements) runs it per table.
            if template.endswith("FORMAT RowBinary"):
                continue
            stmt = template
            for k, v in samples.items():
                stmt = stmt.replace(k, v)
            try:
                srv.query(stmt)
            except Exception as e:  # noqa: BLE001
                fail(f"query in {path}: {one_line(stmt)[:300]}", e)
            queries += 1
    if args.queries or args.semantics:
        check_interaction_counts(srv, args.queries + args.semantics)
        check_random_interleavings(srv, args.queries + args.semantics)
    for path in args.statements:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise CheckFailed(f"FAIL reading {path}: {one_line(e)}")
        for chunk in text.split("-- name: ")[1:]:
            name, _, body = chunk.partition("\n")
            stmt = body.strip().rstrip(";").strip()
            if "{" in re.sub(r"'(\\.|[^'\\])*'", "", stmt) and re.search(r"\{[a-z_]+\}", stmt):
                fail(f"statement {name.strip()}", "a placeholder is left unfilled")
            # An INSERT … FORMAT RowBinary has its rows in the request body
            # (current ClickHouse refuses one without): its table and columns
            # are checked with a SELECT of them.
            binary = re.fullmatch(r"INSERT INTO (\S+) \((.*)\) FORMAT RowBinary", stmt, re.S)
            if binary:
                stmt = f"SELECT {binary.group(2)} FROM {binary.group(1)} LIMIT 0"
            try:
                srv.query(stmt)
            except Exception as e:  # noqa: BLE001
                fail(f"statement {name.strip()}: {one_line(stmt)[:300]}", e)
            queries += 1

    return (
        f"chdb {version_text} (chdb-core {srv.package_version}): {applied} migrations up/down/up OK, "
        f"{len(present)} tables, {views} views cheap and right, {examples} query page examples, {queries} queries OK"
    )


# --- the exploration views (migration 0010) ----------------------------------------

# Rows each view may read when asked for one account or for its window: far
# fewer than the tables hold (VIEW_ROWS), so a view that scanned a table
# would fail the check.
VIEW_LIMIT = 20000
VIEW_ROWS = 200000


PAGE_SCRIPT = os.path.join(ROOT, "pkg", "api", "page", "query.js")


def page_examples(path=PAGE_SCRIPT):
    """The query page's examples: `[label, SQL]` pairs of EXAMPLES in its
    script (JSON string literals)."""
    import json

    with open(path, encoding="utf-8") as f:
        text = f.read()
    start = text.index("const EXAMPLES = [")
    body = text[start : text.index("\n];", start)]
    pairs = re.findall(r'\[\s*("(?:\\.|[^"\\])*"),\s*("(?:\\.|[^"\\])*")\s*\]', body)
    return [(json.loads(a), json.loads(b)) for a, b in pairs]


def check_page_examples(srv):
    """Every example of the query page runs (tables named bare, as the
    explorer runs them in the database). Returns how many."""
    examples = page_examples()
    if not examples:
        raise CheckFailed(f"FAIL no examples found in {PAGE_SCRIPT}")
    srv.query(f"USE {DB}")
    for label, sql in examples:
        try:
            srv.query(sql)
        except Exception as e:  # noqa: BLE001
            fail(f"query page example {label!r}", e)
    return len(examples)


def check_views(srv):
    """Every view answers; a tombstone and a hidden account are left out;
    and on current ClickHouse (which pushes the caller's WHERE into a view)
    a per-account read of a `_live` or count view and a read of a windowed
    view stay far below the tables' size: `max_rows_to_read` fails the
    query otherwise. Returns how many views it checked."""
    names = [t for t in tables(srv) if t.endswith("_live")] + [
        "recent_posts_72h",
        "recent_posts_with_score",
        "following_counts",
        "follower_counts",
    ]
    for name in names:
        try:
            srv.query(f"SELECT * FROM {DB}.{name} LIMIT 1")
        except Exception as e:  # noqa: BLE001
            fail(f"view {name}", e)
    # The seeded records: alice's post tombstoned, bob's like live.
    got = srv.scalar(f"SELECT count() FROM {DB}.records_live")
    if got != "1":
        raise CheckFailed(f"FAIL records_live: got {got} rows, want 1 (the tombstone shows)")

    seed = [
        # VIEW_ROWS follows by 5,000 accounts of 300 accounts; one hidden.
        f"INSERT INTO {DB}.follows (did, rkey, subject_did, version, deleted) SELECT "
        f"concat('did:plc:v', toString(number % 5000)), toString(number), "
        f"concat('did:plc:v', toString(number % 300)), 1, 0 FROM numbers({VIEW_ROWS})",
        f"INSERT INTO {DB}.interactions (subject_uri, kind, did, rkey, version, deleted) "
        f"SELECT subject_did, 'follow', did, rkey, version, deleted FROM {DB}.follows",
        f"INSERT INTO {DB}.hidden_accounts (did, hidden, version) VALUES ('did:plc:v7', 1, 1)",
        # VIEW_ROWS posts 10-20 days old, 100 of the last hour with likes.
        f"INSERT INTO {DB}.recent_posts (tid_time, did, rkey, version, deleted) SELECT "
        f"now() - 864000 - number * 4, concat('did:plc:v', toString(number % 5000)), "
        f"toString(number), 1, 0 FROM numbers({VIEW_ROWS})",
        f"INSERT INTO {DB}.recent_posts (tid_time, did, rkey, version, deleted, sort_at) SELECT "
        f"now() - number * 30, concat('did:plc:v', toString(number % 10)), "
        f"concat('new', toString(number)), 1, 0, now() - number * 30 FROM numbers(100)",
        f"INSERT INTO {DB}.recent_interactions (subject_time, subject_uri, kind, did, rkey, version, deleted) "
        f"SELECT now() - 60, concat('at://did:plc:v', toString(number % 10), '/app.bsky.feed.post/new', toString(number % 100)), "
        f"if(number % 3 = 0, 'repost', 'like'), concat('did:plc:v', toString(number % 50)), toString(number), 1, 0 "
        f"FROM numbers(1000)",
    ]
    for stmt in seed:
        try:
            srv.query(stmt)
        except Exception as e:  # noqa: BLE001
            fail(f"seeding the views: {one_line(stmt)[:300]}", e)

    limit = f" SETTINGS max_rows_to_read = {VIEW_LIMIT}"
    # The same rows in Python: what each view must answer.
    hidden = "did:plc:v7"
    follows = [(f"did:plc:v{n % 5000}", f"did:plc:v{n % 300}") for n in range(VIEW_ROWS)]
    new_posts = {f"new{n}": f"did:plc:v{n % 10}" for n in range(100)}
    liked = {f"new{n % 100}" for n in range(1000) if f"did:plc:v{n % 50}" != hidden}
    want = {
        f"SELECT count() FROM {DB}.follows_live WHERE did = 'did:plc:v42'": sum(
            1 for d, _ in follows if d == "did:plc:v42"
        ),
        f"SELECT count() FROM {DB}.follows_live WHERE did = '{hidden}'": 0,
        f"SELECT follows FROM {DB}.following_counts WHERE did = 'did:plc:v42'": len(
            {s for d, s in follows if d == "did:plc:v42"}
        ),
        f"SELECT count() FROM {DB}.following_counts WHERE did = '{hidden}'": 0,
        f"SELECT followers FROM {DB}.follower_counts WHERE did = 'did:plc:v42'": len(
            {d for d, s in follows if s == "did:plc:v42" and d != hidden}
        ),
        f"SELECT count() FROM {DB}.follower_counts WHERE did = '{hidden}'": 0,
        f"SELECT count() FROM {DB}.recent_posts_72h": sum(1 for d in new_posts.values() if d != hidden),
        f"SELECT count() FROM {DB}.recent_posts_with_score WHERE likes + reposts > 0": sum(
            1 for k, d in new_posts.items() if d != hidden and k in liked
        ),
    }
    want = {sql: str(n) for sql, n in want.items()}
    for sql, expected in want.items():
        try:
            got = srv.scalar(sql + limit)
        except Exception as e:  # noqa: BLE001
            fail(f"view read within {VIEW_LIMIT} rows: {sql}", e)
        if got != expected:
            raise CheckFailed(f"FAIL {sql}: got {got}, want {expected}")
    # The limit is real: a read of a whole table through a view breaks it.
    try:
        srv.scalar(f"SELECT count() FROM {DB}.follows_live" + limit)
    except Exception:  # noqa: BLE001 - the expected refusal
        pass
    else:
        raise CheckFailed("FAIL max_rows_to_read did not stop a whole-table read of follows_live")
    return len(names)


# --- interaction counts (migration 0004, queries/store.sql) ----------------------

def named_statements(paths):
    """`-- name: X` statements of the query files, as queries.rs reads them."""
    out = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for chunk in text.split("-- name: ")[1:]:
            name, _, body = chunk.partition("\n")
            stmts = render(body, DB)
            if stmts:
                out[name.strip()] = stmts[0]
    return out


def refresh_interactions_once(srv, named, what):
    """One refresh window over everything, in the order src/counts.rs runs
    it. The gate pass's verdicts are Rust's (src/counts.rs); the data here
    has no threadgates, so each candidate reply is written with its flags at
    0, as the gate pass writes a reply without a gate."""

    def window(name):
        return named[name].replace("{after}", "0").replace("{before}", "4294967295")

    def run(stmt):
        try:
            return srv.query(stmt)
        except Exception as e:  # noqa: BLE001
            fail(f"{what}: {one_line(stmt)[:300]}", e)

    for name in ["interaction_live", "interaction_keys_add", "refresh_interactions"]:
        run(window(name))
    candidates = window("gate_candidates")
    gated = run(f"SELECT count() FROM ({candidates}) WHERE allow_set = 1 OR notEmpty(hidden_replies)")
    if gated != [["0"]]:
        raise CheckFailed(f"FAIL {what}: the check's data has no threadgates, the gate pass found {gated}")
    run(
        f"INSERT INTO {DB}.interactions (subject_uri, kind, did, rkey, version, deleted, sort_at) "
        f"SELECT parent, 'reply', did, rkey, version, 0, toDateTime(sort_at) FROM ({candidates})"
    )
    for name in ["pending_deletes_add", "interaction_pending_matches"]:
        run(window(name))


def check_interaction_counts(srv, paths):
    """The refresh + post_counts SQL gives the right counts on this server:
    a like counted, a replayed like counted once, a deleted like (delete
    refreshed after the create) and a like whose delete arrived first not
    counted, plus one reply."""
    named = named_statements(paths)
    needed = ["interaction_keys_add", "interaction_live", "refresh_interactions", "gate_candidates",
              "pending_deletes_add", "interaction_pending_matches", "post_counts"]
    missing = [n for n in needed if n not in named]
    if missing:
        raise CheckFailed(f"FAIL the query files have no statement named {', '.join(missing)}")
    post = "at://did:plc:alice/app.bsky.feed.post/3kpost9"
    common = "created_at, indexed_at, sort_at"
    times = "'2024-05-02 09:00:00', '2024-05-02 09:00:01', '2024-05-02 09:00:00'"

    def like(did, rkey, version, deleted):
        subject = "" if deleted else post
        cid = "" if deleted else "bafylike"
        return (
            f"INSERT INTO {DB}.likes (did, rkey, cid, version, deleted, {common}, subject_uri, "
            f"subject_cid, subject_did, via_uri) VALUES ('{did}', '{rkey}', '{cid}', {version}, "
            f"{deleted}, {times}, '{subject}', '', 'did:plc:alice', '')"
        )

    def refresh():
        refresh_interactions_once(srv, named, "interaction refresh")

    steps = [
        [like("did:plc:bob", "3kl1", 10, 0), like("did:plc:bob", "3kl1", 10, 0)],  # replayed
        [like("did:plc:carol", "3kl2", 11, 0)],
        [like("did:plc:dave", "3kl3", 21, 1)],  # delete first...
        [like("did:plc:carol", "3kl2", 12, 1), like("did:plc:dave", "3kl3", 20, 0)],  # ...then its create
        [
            f"INSERT INTO {DB}.posts (did, rkey, cid, version, deleted, {common}, reply_parent_uri) "
            f"VALUES ('did:plc:erin', '3kp1', 'bafypost', 30, 0, {times}, '{post}')"
        ],
    ]
    for inserts in steps:
        for stmt in inserts:
            try:
                srv.query(stmt)
            except Exception as e:  # noqa: BLE001
                fail(f"seeding interactions: {one_line(stmt)[:300]}", e)
        refresh()
    stmt = named["post_counts"].replace("{uris}", f"'{post}'")
    try:
        # (likes, reposts, replies, replies_visible, replies_all, quotes)
        rows = [tuple(r[1:]) for r in srv.query(stmt)]
    except Exception as e:  # noqa: BLE001
        fail(f"post_counts: {one_line(stmt)[:300]}", e)
    want = [("1", "0", "1", "1", "1", "0")]
    if rows != want:
        raise CheckFailed(f"FAIL post_counts after the refreshes: got {rows}, want {want}")


def check_random_interleavings(srv, paths):
    """Random interleavings of creates, updates, duplicate creates (one
    account, several like records of one post), deletes and replays,
    refreshed at random points: post_counts' likes equal a direct recomputation (distinct accounts
    whose newest version of some key is a live like of the post). The same
    property runs on 18.16 in pkg/store/tests/it/counts.rs."""
    import random

    named = named_statements(paths)
    rng = random.Random(20261205)
    posts = [f"at://did:plc:rnd/app.bsky.feed.post/3krnd{i}" for i in range(3)]
    accounts = [f"did:plc:rndacct{i}" for i in range(6)]
    common = "created_at, indexed_at, sort_at"
    times = "'2024-05-02 09:00:00', '2024-05-02 09:00:01', '2024-05-02 09:00:00'"

    def refresh():
        refresh_interactions_once(srv, named, "random interleavings: refresh")

    ops = []
    versions = {}
    live = {}
    for _ in range(80):
        who = rng.choice(accounts)
        rkey = f"3krnd{rng.randrange(8):08}"
        v = versions.get((who, rkey), 1000) + 1 + rng.randrange(3)
        versions[(who, rkey)] = v
        subject = None if rng.randrange(4) == 0 else rng.choice(posts)
        # As the firehose says: 3 delete, 2 update (a key holding a record), 1 create.
        action = 3 if subject is None else (2 if live.get((who, rkey)) else 1)
        live[(who, rkey)] = subject is not None
        ops.append((who, rkey, v, subject, action))
    arrivals = ops + [rng.choice(ops) for _ in range(15)]
    rng.shuffle(arrivals)
    for who, rkey, v, subject, action in arrivals:
        deleted = 1 if subject is None else 0
        stmt = (
            f"INSERT INTO {DB}.likes (did, rkey, cid, version, deleted, {common}, subject_uri, "
            f"subject_cid, subject_did, via_uri, action) VALUES ('{who}', '{rkey}', "
            f"'{'' if deleted else 'bafyrnd'}', {v}, {deleted}, {times}, '{subject or ''}', '', "
            f"'did:plc:rnd', '', {action})"
        )
        try:
            srv.query(stmt)
        except Exception as e:  # noqa: BLE001
            fail(f"random interleavings: {one_line(stmt)[:300]}", e)
        if rng.randrange(5) == 0:
            refresh()
    refresh()
    newest = {}
    for who, rkey, v, subject, _ in ops:
        if v >= newest.get((who, rkey), (0, None))[0]:
            newest[(who, rkey)] = (v, subject)
    uris = ", ".join(f"'{p}'" for p in posts)
    stmt = named["post_counts"].replace("{uris}", uris)
    try:
        got = {r[0]: r[1] for r in srv.query(stmt)}
    except Exception as e:  # noqa: BLE001
        fail(f"random interleavings: post_counts: {one_line(stmt)[:300]}", e)
    for p in posts:
        want = len({who for (who, _), (_, subject) in newest.items() if subject == p})
        if got.get(p, "0") != str(want):
            raise CheckFailed(
                f"FAIL random interleavings: {p} has {got.get(p, '0')} likes, a recomputation says {want}"
            )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--migrations", default=os.path.join(ROOT, "migrations"), help="migrations folder")
    p.add_argument(
        "--queries",
        action="append",
        default=[],
        help="a file of ;-terminated statements to run after the migrations (repeatable)",
    )
    p.add_argument(
        "--semantics",
        action="append",
        default=[],
        help="a query file whose named interaction statements the count check uses, "
        "without running every template of it (its placeholders are filled by the store)",
    )
    p.add_argument(
        "--statements",
        action="append",
        default=[],
        help="a file of rendered statements (`-- name:` headers, no placeholders), run in order "
        "after the queries: the store's catalog, exactly as the services send it (repeatable)",
    )
    args = p.parse_args()
    try:
        print(check(args))
    except CheckFailed as e:
        print(str(e))
        sys.exit(1)


if __name__ == "__main__":
    main()
