#!/usr/bin/env python3
"""Runs our ClickHouse SQL on a current ClickHouse (chDB, in-process) and compares its answers
with those of the ClickHouse 18.16 server that produced them.

Driven by the `analyzer_chdb` end-to-end test (tests/tests/analyzer_chdb.rs), which prepares on
18.16: a database with generated raw rows, the analyzer's migrations applied, and a log of every
query the analyzer sent while answering a matrix of API requests (FLEETPULSE_ANALYZER_SQL_LOG).
This script then, in a fresh chDB session:

1. runs every collector migration (collector/migrations/clickhouse/*.sql, `{db}` filled in);
2. copies the raw tables' rows from 18.16 (TabSeparated over HTTP, read back with `file()`);
3. runs the analyzer's migrations as rendered for chDB's version (--migrations: one statement
   per block ending in a line `;;`, version-gated settings included);
4. replays every SELECT of the log on chDB and on 18.16 and compares the answers (rows sorted,
   numbers compared with a relative tolerance of 1e-6 so that float formatting differences do
   not count); the analyzer's finalize passes (`INSERT INTO .. rollup_closed_series`) and
   insight snapshot refreshes (`INSERT INTO .. insight_snapshot*`, `ALTER .. DROP PARTITION`)
   in the log run on chDB where they appear, so both sides hold the same stored answers;
5. checks the materialized-view double-count trap: with insert deduplication enabled on the
   raw table, one batch inserted three times with the same `insert_deduplication_token` must
   be counted once by every rollup, and a different batch whose rollup rows are identical must
   still be counted.

Prints one JSON object (queries compared, mismatches, trap results) and exits non-zero on any
mismatch or error. Usage:
  chdb-compat.py --clickhouse-url http://127.0.0.1:PORT --database DB \
      --migrations FILE --sql-log FILE [--repo DIR]
"""

import argparse
import glob
import json
import os
import sys
import tempfile
import urllib.parse
import urllib.request

import chdb
from chdb import session as chdb_session

RAW_TABLES = ["enrollment_events", "device_states", "agent_heartbeats"]


def statements(text):
    """Splits a migration file the way the Rust runners do: comment lines dropped, `;` at a
    line end ends a statement."""
    out, cur = [], []
    for line in text.splitlines():
        t = line.strip()
        if not t or t.startswith("--"):
            continue
        cur.append(line)
        if t.endswith(";"):
            out.append("\n".join(cur).strip().rstrip(";"))
            cur = []
    if "".join(cur).strip():
        out.append("\n".join(cur).strip())
    return out


def blocks(path):
    """Statements separated by lines holding only `;;` (the SQL log and --migrations format)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out, cur = [], []
    for line in text.split("\n"):
        if line == ";;":
            if cur:
                out.append("\n".join(cur).strip())
            cur = []
        else:
            cur.append(line)
    if "\n".join(cur).strip():
        out.append("\n".join(cur).strip())
    return out


class Server:
    """ClickHouse 18.16 over HTTP."""

    def __init__(self, url):
        self.url = url.rstrip("/") + "/"

    def query(self, sql):
        params = urllib.parse.urlencode({"max_query_size": "16777216"})
        req = urllib.request.Request(self.url + "?" + params, data=sql.encode("utf-8"))
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode("utf-8", "replace")) from None


class Chdb:
    def __init__(self, path):
        self.s = chdb_session.Session(path)

    def query(self, sql, fmt="TabSeparated"):
        res = self.s.query(sql, fmt)
        return res.bytes().decode("utf-8") if hasattr(res, "bytes") else str(res)


def rows(tsv):
    return sorted(line for line in tsv.split("\n") if line != "")


def same_cell(a, b):
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y))


def same(a, b):
    ra, rb = rows(a), rows(b)
    if len(ra) != len(rb):
        return False
    for la, lb in zip(ra, rb):
        ca, cb = la.split("\t"), lb.split("\t")
        if len(ca) != len(cb) or not all(same_cell(x, y) for x, y in zip(ca, cb)):
            return False
    return True


def copy_raw_tables(server, ch, db, tmp):
    copied = {}
    for table in RAW_TABLES:
        cols = server.query(
            f"SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}' "
            "FORMAT TabSeparated"
        )
        structure = ", ".join(
            f"`{name}` {typ}" for name, typ in (l.split("\t") for l in cols.split("\n") if l)
        )
        path = os.path.join(tmp, f"{table}.tsv")
        with open(path, "w", encoding="utf-8") as f:
            f.write(server.query(f"SELECT * FROM {db}.{table} FORMAT TabSeparated"))
        ch.query(
            f"INSERT INTO {db}.{table} SELECT * FROM file('{path}', 'TabSeparated', '{structure}')"
        )
        copied[table] = int(ch.query(f"SELECT count() FROM {db}.{table}").strip())
        want = int(server.query(f"SELECT count() FROM {db}.{table}").strip())
        if copied[table] != want:
            raise RuntimeError(f"{table}: copied {copied[table]} rows of {want}")
    return copied


def rollup_tables(ch, db):
    """The rollups fed by materialized views (the week spans of migration 0011 are built by
    the analyzer from the daily rollups, not by views: an insert does not reach them)."""
    names = ch.query(
        f"SELECT name FROM system.tables WHERE database = '{db}' AND name LIKE 'rollup\\\\_%' "
        "AND engine = 'AggregatingMergeTree' ORDER BY name"
    )
    return [n for n in names.split("\n") if n and not n.endswith(("_heads", "_tails"))]


def rollup_counts(ch, db, tables):
    """Events per rollup; a facet rollup holds every event once per facet, so one facet's rows;
    a per-device failure rollup (0008) counts failed events in `failures`."""
    def where(t):
        return " WHERE facet = 'platform'" if "_facets_" in t else ""
    def count(t):
        return "failures" if "_device_failures_" in t else "events"
    return {
        t: int(ch.query(f"SELECT countMerge({count(t)}) FROM {db}.{t}{where(t)}").strip() or 0)
        for t in tables
    }


def dedup_trap(ch, db):
    """Insert-token deduplication must not make the views count a retried batch again, and
    must not drop a different batch whose rollup rows look the same."""
    ch.query(f"ALTER TABLE {db}.enrollment_events MODIFY SETTING non_replicated_deduplication_window = 100")
    tables = rollup_tables(ch, db)
    before = rollup_counts(ch, db, tables)
    raw_before = int(ch.query(f"SELECT count() FROM {db}.enrollment_events").strip())

    def batch(first_id, token):
        values = ", ".join(
            f"('trap', toUUID('00000000-0000-4000-8000-{first_id + i:012d}'), 'trap-agent', 1, 'trap-dev', "
            f"toDateTime('2024-03-02 10:00:00', 'UTC'), 0, now(), 'windows', 'windows', 'failed', "
            f"2149056532, 1, 'complete', 'simulator', 'u@trap')"
            for i in range(3)
        )
        ch.query(
            f"INSERT INTO {db}.enrollment_events (tenant, event_id, agent_id, batch_seq, device_id, "
            "occurred_at, occurred_ms, received_at, platform, os_version, outcome, error_code, "
            "error_has_code, stage, source_kind, user_principal_name) "
            f"SETTINGS insert_deduplication_token = '{token}' VALUES {values}"
        )

    for _ in range(3):
        batch(1, "trap-batch-1")
    # Other event ids, same rollup rows: a real second batch, which must be counted.
    batch(101, "trap-batch-2")
    raw_after = int(ch.query(f"SELECT count() FROM {db}.enrollment_events").strip())
    after = rollup_counts(ch, db, tables)
    problems = []
    if raw_after - raw_before != 6:
        problems.append(f"raw table grew by {raw_after - raw_before}, want 6")
    for t in tables:
        if after[t] - before[t] != 6:
            problems.append(f"{t} grew by {after[t] - before[t]}, want 6")
    return {"rollups_checked": len(tables), "problems": problems}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clickhouse-url", required=True)
    ap.add_argument("--database", required=True)
    ap.add_argument("--migrations", required=True)
    ap.add_argument("--sql-log", required=True)
    ap.add_argument("--repo", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args = ap.parse_args()
    db = args.database
    server = Server(args.clickhouse_url)
    report = {"server_version": server.query("SELECT version()").strip()}
    with tempfile.TemporaryDirectory() as tmp:
        ch = Chdb(os.path.join(tmp, "chdb"))
        report["chdb_version"] = ch.query("SELECT version()").strip()
        ch.query(f"CREATE DATABASE {db}")
        collector = sorted(glob.glob(os.path.join(args.repo, "collector/migrations/clickhouse/*.sql")))
        n = 0
        for path in collector:
            with open(path, encoding="utf-8") as f:
                for stmt in statements(f.read()):
                    ch.query(stmt.replace("{db}", db))
                    n += 1
        report["collector_statements"] = n
        report["raw_rows"] = copy_raw_tables(server, ch, db, tmp)
        migrations = blocks(args.migrations)
        for stmt in migrations:
            ch.query(stmt)
        report["analyzer_statements"] = len(migrations)

        compared, mismatches, errors, finalized = 0, [], [], 0
        for sql in blocks(args.sql_log):
            head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            # The analyzer's finalize passes (closed time-series buckets): run them on chDB at
            # the same point of the log, so the series queries after them read the same
            # finalized buckets on both sides.
            # Likewise the insight snapshot refreshes (INSERT into the snapshot tables, ALTER ..
            # DROP PARTITION of old generations): the snapshot reads after them compare the
            # stored answers of both sides.
            # And the week span builds (INSERT into and ALTER .. DROP PARTITION of the `_heads`
            # and `_tails` tables), so that a question reading a span after its build reads the
            # same span on both sides.
            span_table = "_heads " in sql or "_tails " in sql or "_heads_local " in sql or "_tails_local " in sql
            if (
                head == "INSERT" and (".rollup_closed_series " in sql or ".insight_snapshot" in sql or span_table)
            ) or (head == "ALTER" and (".insight_snapshot" in sql or span_table)):
                try:
                    ch.query(sql)
                    finalized += 1
                except Exception as e:  # chDB raises its own error types
                    errors.append({"sql": sql[:300], "side": "chdb", "error": str(e)[:300]})
                continue
            if head not in ("SELECT", "WITH"):
                continue
            # The span builder's and the span check's counts depend on when they ran (before or
            # after a build): 18.16 answers them now, with every build done. Not compared.
            if "AS day, countMerge(events) AS n" in sql or "toUInt8(0) AS side" in sql:
                continue
            try:
                want = server.query(sql + "\nFORMAT TabSeparated")
            except RuntimeError as e:
                errors.append({"sql": sql[:300], "side": "18.16", "error": str(e)[:300]})
                continue
            try:
                got = ch.query(sql)
            except Exception as e:  # chDB raises its own error types
                errors.append({"sql": sql[:300], "side": "chdb", "error": str(e)[:300]})
                continue
            compared += 1
            if not same(want, got):
                mismatches.append({"sql": sql[:300], "18.16": rows(want)[:5], "chdb": rows(got)[:5]})
        report["queries_compared"] = compared
        report["finalize_statements"] = finalized
        report["mismatches"] = mismatches
        report["errors"] = errors
        report["dedup_trap"] = dedup_trap(ch, db)
    print(json.dumps(report))
    ok = compared > 0 and not mismatches and not errors and not report["dedup_trap"]["problems"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
