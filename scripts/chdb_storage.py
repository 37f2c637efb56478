#!/usr/bin/env python3
"""Bytes per record of a skyhouse database on current ClickHouse (chdb).

Usage: python3 scripts/chdb_storage.py --clickhouse URL --database DB
           [--user U] [--records N] [--baseline] [--keep DIR]

Copies every table of DATABASE (its rows as they are, read over HTTP from
the server at URL, e.g. the ClickHouse 18.16 the scale benchmark loaded)
into a chdb session (ClickHouse as a Python library, the `chdb-core`
package) whose schema is the migrations' (applied as scripts/chdb_check.py
applies them, the materialized views then dropped so that each table gets
exactly the source's rows), lets the parts merge (OPTIMIZE ... FINAL), and
weighs them in `system.parts`: bytes on disk, compressed and uncompressed,
per table and in total, per record (RECORDS, default the rows of `records`).

The migrations give current servers column codecs (0013), so the first
weighing is with them. With --baseline it then removes every column's codec
(back to chdb's default, LZ4), merges again and weighs again: what the
codecs save.

Prints one JSON line: {"server": ..., "records": N, "tables": {name: {...}},
"total": {...}, "baseline": {...}}. Exits 1 with one line on failure.
The source password, if any, comes from CLICKHOUSE_PASSWORD.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chdb_check  # noqa: E402  (the migration runner and the chdb session)

DB = chdb_check.DB

def one_line(text):
    return " ".join(str(text).split())


class Source:
    """The ClickHouse server whose database is copied, over HTTP."""

    def __init__(self, url, user, database):
        self.url = url.rstrip("/")
        self.user = user
        self.password = os.environ.get("CLICKHOUSE_PASSWORD", "")
        self.database = database

    def params(self, query):
        p = {"database": self.database, "user": self.user, "query": query}
        if self.password:
            p["password"] = self.password
        return p

    def query_url(self, query):
        return f"{self.url}/?{urllib.parse.urlencode(self.params(query))}"

    def rows(self, query):
        try:
            with urllib.request.urlopen(self.query_url(query + " FORMAT TabSeparated"), timeout=600) as r:
                text = r.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")
            raise RuntimeError(f"{self.url}: {one_line(body)[:300]} (query: {query[:120]})") from None
        return [line.split("\t") for line in text.splitlines()]


def parts(srv, table_filter=""):
    """{table: {rows, parts, bytes_on_disk, compressed, uncompressed}} of active parts."""
    out = {}
    for t, n, rows, disk, comp, raw in srv.query(
        "SELECT table, count(), sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes), "
        f"sum(data_uncompressed_bytes) FROM system.parts WHERE active AND database = '{DB}' "
        f"{table_filter} GROUP BY table ORDER BY table"
    ):
        out[t] = {
            "parts": int(n),
            "rows": int(rows),
            "bytes_on_disk": int(disk),
            "compressed": int(comp),
            "uncompressed": int(raw),
        }
    return out


def per_record(tables, records):
    total = {k: sum(t[k] for t in tables.values()) for k in ("rows", "bytes_on_disk", "compressed", "uncompressed")}
    for t in list(tables.values()) + [total]:
        for k in ("bytes_on_disk", "compressed", "uncompressed"):
            t[f"{k}_per_record"] = round(t[k] / max(records, 1), 2)
    return total


def optimize(srv, names):
    for t in names:
        srv.query(f"OPTIMIZE TABLE {DB}.`{t}` FINAL")


def run(args):
    src = Source(args.clickhouse, args.user, args.database)
    # The source's tables with rows, and their columns (materialized views
    # hold no rows of their own: their targets are tables).
    src_tables = [
        r[0]
        for r in src.rows(
            "SELECT table FROM system.parts WHERE active AND database = currentDatabase() "
            "GROUP BY table HAVING sum(rows) > 0 ORDER BY table"
        )
    ]
    if not src_tables:
        raise chdb_check.CheckFailed(f"FAIL database {args.database} at {args.clickhouse} has no rows")
    records = args.records or int(src.rows("SELECT count() FROM records")[0][0])

    tmp = args.keep or tempfile.mkdtemp(prefix="skyhouse-chdb-storage-")
    srv = chdb_check.Server(os.path.join(tmp, "data"))
    try:
        server = srv.scalar("SELECT version()")
        version = chdb_check.parse_version(server) or (0, 0, 0)
        srv.query(f"CREATE DATABASE IF NOT EXISTS {DB}")
        migrations = chdb_check.load_migrations(os.path.join(chdb_check.ROOT, "migrations"))
        chdb_check.apply(srv, migrations, "up", version, "up")
        for (view,) in srv.query(
            f"SELECT name FROM system.tables WHERE database = '{DB}' AND engine = 'MaterializedView'"
        ):
            srv.query(f"DROP TABLE {DB}.`{view}`")
        copied = []
        started = time.monotonic()
        for t in src_tables:
            cols = src.rows(
                "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                f"AND table = '{t}'"
            )
            if t == "schema_migrations":
                continue  # the migration runner's bookkeeping
            # Columns an INSERT may name (not MATERIALIZED or ALIAS ones).
            mine = {
                r[0]
                for r in srv.query(
                    f"SELECT name FROM system.columns WHERE database = '{DB}' AND table = '{t}' "
                    "AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')"
                )
            }
            if not mine:
                print(f"chdb_storage: {t}: not made by the migrations, left out", file=sys.stderr)
                continue
            names = [c[0] for c in cols if c[0] in mine]
            structure = ", ".join(f"`{c[0]}` {c[1]}" for c in cols if c[0] in mine)
            select = "SELECT " + ", ".join(f"`{n}`" for n in names) + f" FROM `{t}` FORMAT Native"
            url = src.query_url(select).replace("'", "\\'")
            try:
                srv.query(
                    f"INSERT INTO {DB}.`{t}` ({', '.join(f'`{n}`' for n in names)}) "
                    f"SELECT * FROM url('{url}', 'Native', '{structure}') "
                    "SETTINGS max_insert_block_size = 1048576"
                )
            except Exception as e:  # noqa: BLE001 - say which table and go on
                print(f"chdb_storage: {t}: {one_line(e)[:300]}", file=sys.stderr)
                continue
            copied.append(t)
        copy_secs = round(time.monotonic() - started, 1)
        optimize(srv, copied)
        tables = parts(srv)
        total = per_record(tables, records)
        out = {
            "server": server,
            "records": records,
            "copy_secs": copy_secs,
            "tables": tables,
            "total": total,
        }
        if args.baseline:
            for t in copied:
                coded = [
                    r[0]
                    for r in srv.query(
                        f"SELECT name FROM system.columns WHERE database = '{DB}' AND table = '{t}' "
                        "AND compression_codec != ''"
                    )
                ]
                if coded:
                    removes = ", ".join(f"MODIFY COLUMN `{c}` REMOVE CODEC" for c in coded)
                    srv.query(f"ALTER TABLE {DB}.`{t}` {removes}")
            optimize(srv, copied)
            btables = parts(srv)
            out["baseline"] = {"tables": btables, "total": per_record(btables, records)}
        return out
    finally:
        srv.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clickhouse", required=True, help="source server's HTTP URL")
    p.add_argument("--database", required=True)
    p.add_argument("--user", default="default")
    p.add_argument("--records", type=int, default=0, help="records to divide by (default: rows of records)")
    p.add_argument("--baseline", action="store_true", help="also weigh with every column codec removed")
    p.add_argument("--keep", help="keep chdb's data in this directory")
    args = p.parse_args()
    try:
        out = run(args)
    except chdb_check.CheckFailed as e:
        print(str(e), file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one line for any failure
        print(f"FAIL chdb storage: {one_line(e)[:500]}", file=sys.stderr)
        return 1
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
