#!/usr/bin/env python3
"""Checks migrations/postgres/ against the SQLite schema migrations/*.sql produce.

Usage: python3 tests/pg/compare_schema.py [DATABASE_URL]   (default: $TETHER_TEST_DATABASE_URL,
set by `source tests/pg/start.sh`). Needs psql. Applies migrations/postgres/*.sql to a scratch
database on that server (dropped afterwards) and compares with SQLite's final schema: every table,
column, index and trigger is there; INTEGER is bigint, TEXT is text COLLATE "C"; NOT NULL, defaults,
primary keys, UNIQUE constraints, foreign keys, the number of CHECK constraints per table, and which indexes are unique
and partial agree. Prints each difference and exits 1 if there is any.
"""

import glob
import os
import re
import sqlite3
import subprocess
import sys
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Tables only the PostgreSQL schema has (multi-node operation), and the runner's own.
PG_ONLY_TABLES = {"audit_chain_lock", "tether_nodes", "schema_migrations"}


def sqlite_schema():
    conn = sqlite3.connect(":memory:")
    for path in sorted(glob.glob(os.path.join(ROOT, "migrations", "*.sql"))):
        with open(path) as f:
            conn.executescript(f.read())
    tables, indexes, triggers, extra = {}, set(), set(), {"fks": set(), "checks": {}, "index_kinds": {}, "uniques": set()}
    for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master"):
        if name.startswith("sqlite_"):
            continue
        if kind == "table":
            cols = {}
            for _, col, typ, notnull, default, pk in conn.execute(f'PRAGMA table_info("{name}")'):
                cols[col] = {"type": typ.upper(), "notnull": bool(notnull or pk), "default": default, "pk": pk > 0}
            tables[name] = cols
            for _, index, _, origin, _ in conn.execute(f'PRAGMA index_list("{name}")'):
                if origin == "u":  # a UNIQUE constraint
                    cols = tuple(r[2] for r in conn.execute(f'PRAGMA index_info("{index}")'))
                    extra["uniques"].add((name, cols))
            for row in conn.execute(f'PRAGMA foreign_key_list("{name}")'):
                extra["fks"].add((name, row[3], row[2], row[4]))
            # CHECK outside string literals and comments (no table here quotes "CHECK").
            stripped = re.sub(r"--[^\n]*", "", sql)
            extra["checks"][name] = len(re.findall(r"\bCHECK\s*\(", stripped, re.I))
        elif kind == "index":
            indexes.add(name)
            unique = bool(re.match(r"CREATE\s+UNIQUE", sql, re.I))
            extra["index_kinds"][name] = (unique, bool(re.search(r"\)\s*WHERE\s", sql, re.I)))
        elif kind == "trigger":
            triggers.add(name)
    return tables, indexes, triggers, extra


def psql(url, *args, stdin=None):
    out = subprocess.run(
        ["psql", url, "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", *args],
        input=stdin, capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.exit(f"psql failed: {out.stderr.strip()}")
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def pg_schema(url):
    tables = {}
    for table, col, typ, collation, nullable, default, identity in psql(url, "-c", """
        SELECT table_name, column_name, data_type, coalesce(collation_name, ''), is_nullable,
               coalesce(column_default, ''), is_identity
        FROM information_schema.columns WHERE table_schema = 'public'"""):
        tables.setdefault(table, {})[col] = {
            "type": typ, "collation": collation, "notnull": nullable == "NO",
            "default": default or None, "identity": identity == "YES",
        }
    for table, col in psql(url, "-c", """
        SELECT tc.table_name, kcu.column_name
        FROM information_schema.table_constraints tc
        JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
        WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = 'public'"""):
        tables[table][col]["pk"] = True
    indexes = {r[0] for r in psql(url, "-c", "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    triggers = {r[0] for r in psql(url, "-c", "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    extra = {"fks": set(), "checks": {}, "index_kinds": {}, "uniques": set()}
    for table, cols in psql(url, "-c", """
        SELECT c.conrelid::regclass::text,
               string_agg(a.attname, ',' ORDER BY array_position(c.conkey, a.attnum))
        FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
        WHERE c.contype = 'u' AND c.connamespace = 'public'::regnamespace GROUP BY c.oid, 1"""):
        extra["uniques"].add((table, tuple(cols.split(","))))
    for table, col, ftable, fcol in psql(url, "-c", """
        SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, fa.attname
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
        JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = ANY (c.confkey)
        WHERE c.contype = 'f'"""):
        extra["fks"].add((table, col, ftable, fcol))
    for table, count in psql(url, "-c", """
        SELECT conrelid::regclass::text, count(*) FROM pg_constraint
        WHERE contype = 'c' AND connamespace = 'public'::regnamespace GROUP BY 1"""):
        extra["checks"][table] = int(count)
    for name, unique, partial in psql(url, "-c", """
        SELECT c.relname, i.indisunique, i.indpred IS NOT NULL
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relnamespace = 'public'::regnamespace"""):
        extra["index_kinds"][name] = (unique == "t", partial == "t")
    # SQLite's `user_name TEXT COLLATE NOCASE UNIQUE` is the unique index on lower(user_name).
    if extra["index_kinds"].get("users_user_name_key") == (True, False):
        extra["uniques"].add(("users", ("user_name",)))
    return tables, indexes, triggers, extra


def normalize_default(value):
    if value is None:
        return None
    value = re.sub(r"::[a-z ]+$", "", value)  # '[]'::text -> '[]'
    return value


def compare(lite, pg):
    (lite_tables, lite_indexes, lite_triggers, lite_extra) = lite
    (pg_tables, pg_indexes, pg_triggers, pg_extra) = pg
    problems = []
    for table in sorted(set(lite_tables) - set(pg_tables)):
        problems.append(f"table {table}: missing in PostgreSQL")
    for table in sorted(set(pg_tables) - set(lite_tables) - PG_ONLY_TABLES):
        problems.append(f"table {table}: only in PostgreSQL")
    for table in sorted(set(lite_tables) & set(pg_tables)):
        lcols, pcols = lite_tables[table], pg_tables[table]
        for col in sorted(set(lcols) - set(pcols)):
            problems.append(f"{table}.{col}: missing in PostgreSQL")
        for col in sorted(set(pcols) - set(lcols)):
            problems.append(f"{table}.{col}: only in PostgreSQL")
        for col in sorted(set(lcols) & set(pcols)):
            l, p = lcols[col], pcols[col]
            where = f"{table}.{col}"
            if l["type"] == "INTEGER" and p["type"] != "bigint":
                problems.append(f"{where}: INTEGER is {p['type']}, not bigint")
            if l["type"] == "TEXT" and (p["type"], p["collation"]) != ("text", "C"):
                problems.append(f"{where}: TEXT is {p['type']} collation {p['collation'] or 'default'}, not text COLLATE \"C\"")
            if l["type"] not in ("INTEGER", "TEXT"):
                problems.append(f"{where}: SQLite type {l['type']} has no rule")
            if l["notnull"] != p["notnull"]:
                problems.append(f"{where}: NOT NULL {l['notnull']} in SQLite, {p['notnull']} in PostgreSQL")
            if l["pk"] != p.get("pk", False):
                problems.append(f"{where}: primary key {l['pk']} in SQLite, {p.get('pk', False)} in PostgreSQL")
            pdefault = None if p["identity"] else normalize_default(p["default"])
            if normalize_default(l["default"]) != pdefault:
                problems.append(f"{where}: default {l['default']!r} in SQLite, {p['default']!r} in PostgreSQL")
    for index in sorted(lite_indexes - pg_indexes):
        problems.append(f"index {index}: missing in PostgreSQL")
    for trigger in sorted(lite_triggers - pg_triggers):
        problems.append(f"trigger {trigger}: missing in PostgreSQL")
    for fk in sorted(lite_extra["fks"] - pg_extra["fks"]):
        problems.append("foreign key %s.%s -> %s(%s): missing in PostgreSQL" % fk)
    for fk in sorted(pg_extra["fks"] - lite_extra["fks"]):
        problems.append("foreign key %s.%s -> %s(%s): only in PostgreSQL" % fk)
    for table, cols in sorted(lite_extra["uniques"] - pg_extra["uniques"]):
        problems.append(f"UNIQUE {table} ({', '.join(cols)}): missing in PostgreSQL")
    for table, cols in sorted(pg_extra["uniques"] - lite_extra["uniques"]):
        if table not in PG_ONLY_TABLES:
            problems.append(f"UNIQUE {table} ({', '.join(cols)}): only in PostgreSQL")
    for table in sorted(lite_tables):
        lc, pc = lite_extra["checks"].get(table, 0), pg_extra["checks"].get(table, 0)
        if lc != pc:
            problems.append(f"table {table}: {lc} CHECK constraint(s) in SQLite, {pc} in PostgreSQL")
    for index in sorted(lite_indexes & pg_indexes):
        lk, pk = lite_extra["index_kinds"][index], pg_extra["index_kinds"][index]
        if lk != pk:
            problems.append(f"index {index}: (unique, partial) {lk} in SQLite, {pk} in PostgreSQL")
    return problems


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TETHER_TEST_DATABASE_URL")
    if not url:
        sys.exit("usage: compare_schema.py DATABASE_URL (or set TETHER_TEST_DATABASE_URL)")
    scratch = f"compare_schema_{os.getpid()}"
    parts = urllib.parse.urlsplit(url)
    scratch_url = urllib.parse.urlunsplit(parts._replace(path="/" + scratch))
    psql(url, "-c", f"CREATE DATABASE {scratch}")
    try:
        for path in sorted(glob.glob(os.path.join(ROOT, "migrations", "postgres", "*.sql"))):
            psql(scratch_url, "-f", path)
        problems = compare(sqlite_schema(), pg_schema(scratch_url))
    finally:
        psql(url, "-c", f"DROP DATABASE IF EXISTS {scratch}")
    for problem in problems:
        print(problem)
    lite_tables = sqlite_schema()[0]
    print(f"{len(lite_tables)} SQLite tables, {sum(map(len, lite_tables.values()))} columns compared: "
          + (f"{len(problems)} difference(s)" if problems else "no differences"))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
