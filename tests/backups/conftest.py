"""Fixtures of the backup tests: each test stores its backups in a folder of its own, and gets
throwaway source databases (PostgreSQL on the local server, SQLite in a temporary folder).

Every database a test creates carries the test's random label in its name: the clean-up drops
those and only those, since other test runs may use the same server at the same time.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from controlplane.audit import Actor
from tests.conftest import service_url

SYSTEM = Actor.system("tests")

PG_SCHEMA = """
CREATE SCHEMA billing;
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers,
    total numeric(10, 2) NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE TABLE billing.invoices (id serial PRIMARY KEY, order_id integer NOT NULL REFERENCES orders, paid boolean);
CREATE TABLE audit_log (id bigserial PRIMARY KEY, message text);
-- What Django makes of UniqueConstraint(condition=Q(status__in=[...])): PostgreSQL prints it differently
-- once dumped and restored.
CREATE TABLE jobs (id serial PRIMARY KEY, queue integer NOT NULL, status varchar(20) NOT NULL);
CREATE UNIQUE INDEX jobs_one_active_per_queue ON jobs (queue) WHERE status IN ('queued', 'running');
INSERT INTO jobs (queue, status) VALUES (1, 'queued'), (1, 'done'), (2, 'running');
INSERT INTO customers (email, name) SELECT 'c' || g || '@example.test', 'Customer ' || g FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, total) SELECT 1 + g % 300, g * 1.5 FROM generate_series(1, 1000) g;
INSERT INTO billing.invoices (order_id, paid) SELECT g, g % 2 = 0 FROM generate_series(1, 50) g;
"""
PG_ROWS = {
    "billing.invoices": 50,
    "public.audit_log": 0,
    "public.customers": 300,
    "public.jobs": 3,
    "public.orders": 1000,
}

SQLITE_SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers, total REAL);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE TABLE audit_log (id INTEGER PRIMARY KEY, message TEXT);
"""
SQLITE_ROWS = {"audit_log": 0, "customers": 300, "orders": 1000}


# --- Where backups go ----------------------------------------------------------------------------


@dataclass
class BackupDirs:
    backups: Path  # BACKUP_DIR, the backups storage's location
    partial: Path  # BACKUP_TMP_DIR

    def files(self) -> list[str]:
        """Every file left in either folder (relative paths)."""
        return files_in(self.backups) + files_in(self.partial)


def files_in(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def point_backups_at(settings, backups: Path, partial: Path) -> None:
    """BACKUP_DIR, BACKUP_TMP_DIR and the backups storage's location. Assigning STORAGES through the
    ``settings`` fixture sends setting_changed, which makes Django forget its cached storages."""
    settings.BACKUP_DIR = backups
    settings.BACKUP_TMP_DIR = partial
    backend = settings.STORAGES["backups"]
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {**backend, "OPTIONS": {**backend.get("OPTIONS", {}), "location": str(backups)}},
    }


@pytest.fixture(autouse=True)
def backup_dirs(settings, tmp_path) -> BackupDirs:
    dirs = BackupDirs(tmp_path / "backups", tmp_path / "partial")
    point_backups_at(settings, dirs.backups, dirs.partial)
    settings.BACKUP_SCRATCH_DATABASE_URL = ""
    settings.PG_BIN_DIR = ""
    return dirs


# --- PostgreSQL sources --------------------------------------------------------------------------


def pg_url(dbname: str) -> str:
    """A URL for database ``dbname`` on the test PostgreSQL server."""
    return urlunsplit(urlsplit(service_url("postgres"))._replace(path=f"/{dbname}"))


def pg_admin() -> psycopg.Connection:
    return psycopg.connect(pg_url("postgres"), autocommit=True)


class PgServer:
    """Databases of one test on the local server, all named with the test's ``label``."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.created: list[str] = []

    def create(self, prefix: str, schema: str = "") -> str:
        name = f"{prefix}_{self.label}"
        with pg_admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        if schema:
            with psycopg.connect(pg_url(name), autocommit=True) as conn:
                conn.execute(schema)
        return name

    def databases(self, pattern: str) -> list[str]:
        """Names LIKE ``pattern`` that carry this test's label (other runs' databases are not ours)."""
        with pg_admin() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s AND strpos(datname, %s) > 0 ORDER BY 1",
                [pattern, self.label],
            ).fetchall()
        return [row[0] for row in rows]

    def scratch_left(self) -> list[str]:
        return self.databases("verify\\_%")

    def drop_all(self) -> None:
        for name in [*self.created, *self.scratch_left()]:
            with pg_admin() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# Other URLs for one database: each reaches the same database as ``url`` does.
SPELLINGS = ["localhost", "127.1", "postgresql-scheme", "query-parameter", "other-user"]


def spell(url: str, how: str, *, user: str = "", password: str = "") -> str:
    """``url`` written another way (``SPELLINGS``); ``user``/``password`` for "other-user"."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if how in {"localhost", "127.1"}:
        if host not in {"127.0.0.1", "localhost"}:
            pytest.skip(f"the test server is at {host}, not on this machine's loopback")
        host = {"localhost": "127.0.0.1" if host == "localhost" else "localhost", "127.1": "127.1"}[how]
    userinfo = parts.netloc.rpartition("@")[0]
    if how == "other-user":
        userinfo = f"{user}:{password}"
    netloc = f"{userinfo}@{host}:{parts.port or 5432}" if userinfo else f"{host}:{parts.port or 5432}"
    scheme = "postgresql" if how == "postgresql-scheme" else parts.scheme
    query = "application_name=x" if how == "query-parameter" else parts.query
    return urlunsplit((scheme, netloc, parts.path, query, ""))


@pytest.fixture
def pg_other_user(pg_server):
    """A second login role on the test server: (name, password); dropped after the test."""
    name, password = f"bk_user_{pg_server.label}", secrets.token_hex(8)
    with pg_admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
    yield name, password
    with pg_admin() as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@dataclass
class PgSource:
    server: PgServer
    name: str
    url: str
    env: str
    target: object

    def query(self, statement: str, params: list | None = None) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def rows(self) -> dict[str, int]:
        counts = {}
        for table in PG_ROWS:
            counts[table] = self.query(f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608 - our names
        return counts


@pytest.fixture
def pg_server():
    server = PgServer(secrets.token_hex(4))
    yield server
    server.drop_all()


@pytest.fixture
def pg_source(db, pg_server, monkeypatch) -> PgSource:
    """A PostgreSQL database with four tables (one in another schema, one empty) and an index, its URL
    in an environment variable, and a target ``pg-<label>`` naming that variable."""
    from backups.services import target_create

    name = pg_server.create("bk_src", PG_SCHEMA)
    env = f"BK_SRC_{pg_server.label.upper()}"
    monkeypatch.setenv(env, pg_url(name))
    target = target_create(data={"name": f"pg-{pg_server.label}", "url_env": env}, actor=SYSTEM)
    return PgSource(pg_server, name, pg_url(name), env, target)


# --- SQLite sources ------------------------------------------------------------------------------


@dataclass
class SqliteSource:
    path: Path
    url: str
    env: str
    target: object

    def rows(self) -> dict[str, int]:
        with sqlite3.connect(self.path) as conn:
            return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in SQLITE_ROWS}  # noqa: S608


def make_sqlite(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(SQLITE_SCHEMA)
    conn.executemany(
        "INSERT INTO customers (email, name) VALUES (?, ?)", [(f"c{i}@x.test", f"C {i}") for i in range(300)]
    )
    conn.executemany(
        "INSERT INTO orders (customer_id, total) VALUES (?, ?)", [(1 + i % 300, i * 1.5) for i in range(1000)]
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def sqlite_source(db, tmp_path, monkeypatch) -> SqliteSource:
    from backups.services import target_create

    label = secrets.token_hex(4)
    path = make_sqlite(tmp_path / "source" / "app.sqlite3")
    env = f"SQ_SRC_{label.upper()}"
    monkeypatch.setenv(env, f"sqlite:///{path}")
    target = target_create(data={"name": f"sq-{label}", "url_env": env}, actor=SYSTEM)
    return SqliteSource(path, f"sqlite:///{path}", env, target)


@pytest.fixture(params=["postgresql", "sqlite"])
def source(request):
    """Each engine in turn; the PostgreSQL round is skipped when the server does not answer."""
    if request.param == "postgresql":
        request.applymarker(pytest.mark.service("postgres"))
        from tests.conftest import _service_problem

        if problem := _service_problem("postgres"):
            pytest.skip(problem)
        return request.getfixturevalue("pg_source")
    return request.getfixturevalue("sqlite_source")
