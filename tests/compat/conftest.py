"""Fixtures for the Berth compatibility suite.

- `server`: ONE berth server for the whole session (most tests; each test
  makes its own queue with a unique name).
- `fresh_server`: factory for function-scoped servers on their own data dir,
  for tests that restart, kill -9 or SIGTERM the process.
- `tenant` (admin credentials written on first start) with `admin`, `qc`
  (SDK clients), `raw` / `signed_request` (raw signed HTTP), `make_queue`.
- `tenant_b`: a second tenancy made with `berth credentials create`.
- `stomp_client` (stomp.py sessions) and `raw_stomp` (raw-socket STOMP),
  both factories whose connections are closed after the test.

Run: BERTH_BIN=/path/to/berth pytest tests/compat
"""

from __future__ import annotations

import time

import pytest

import berthlib
from berthlib import BerthServer, RawStomp, StompSession, Tenant, berth_bin, unique_name


# --------------------------------------------------------------------------
# Attach server logs to failing tests
# --------------------------------------------------------------------------

def pytest_runtest_setup(item):
    item._berth_started = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    started = getattr(item, "_berth_started", 0)
    for srv in berthlib.ALL_SERVERS:
        relevant = srv.running or (srv.stopped_at is not None and srv.stopped_at >= started)
        if relevant:
            rep.sections.append((f"berth server log ({srv.data_dir})", srv.log_tail()))


def pytest_collection_modifyitems(config, items):
    if not berthlib.POSTGRES_URL:
        return
    skip = pytest.mark.skip(reason="about the embedded SQLite store; this run is on PostgreSQL")
    for item in items:
        if item.get_closest_marker("sqlite_only"):
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    # Backstop: never leave a server process behind.
    for srv in berthlib.ALL_SERVERS:
        if srv.running:
            try:
                srv.kill()
            except Exception:
                pass


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def server(tmp_path_factory) -> BerthServer:
    root = tmp_path_factory.mktemp("berth-session")
    srv = BerthServer(berth_bin(), root / "data", root / "logs")
    srv.start()
    yield srv
    if srv.running:
        rc = srv.stop()
        if rc != 0:
            print(f"session berth server exited with {rc}\n{srv.log_tail()}")


@pytest.fixture
def fresh_server(tmp_path):
    """Factory: fresh_server(extra_args=()) -> a started BerthServer on a new data dir."""
    made: list[BerthServer] = []

    def make(extra_args=()) -> BerthServer:
        n = len(made)
        srv = BerthServer(berth_bin(), tmp_path / f"data{n}", tmp_path / f"logs{n}", extra_args)
        made.append(srv)
        return srv.start()

    yield make
    for srv in made:
        if srv.running:
            try:
                srv.stop(timeout=10)
            except AssertionError:
                pass  # stop() already killed it; the test outcome stands


# --------------------------------------------------------------------------
# Tenants and clients (session server)
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tenant(server) -> Tenant:
    return server.tenant()


@pytest.fixture(scope="session")
def admin(tenant):
    return tenant.admin


@pytest.fixture(scope="session")
def qc(tenant):
    return tenant.qc


@pytest.fixture(scope="session")
def raw(tenant):
    return tenant.raw


@pytest.fixture(scope="session")
def signed_request(raw):
    """signed_request(method, path, body=None, params=None, headers=None) -> requests.Response

    `path` is the full path, e.g. berthlib.qpath(queue_id, "messages") or "/20210201/queues".
    `body` may be a dict/list (sent as JSON), str or bytes (sent as is).
    """
    return raw.request


@pytest.fixture(scope="session")
def tenant_b(server, tmp_path_factory) -> Tenant:
    out = tmp_path_factory.mktemp("tenant-b")
    return server.create_credentials(unique_name("tenancy-b"), "alice", out)


@pytest.fixture
def make_queue(tenant):
    """make_queue(display_name=None, compartment_id=None, **CreateQueueDetails fields) -> queue OCID
    (in the admin tenant of the session server)."""
    return tenant.create_queue


@pytest.fixture
def queue_id(make_queue) -> str:
    """A fresh queue with default settings."""
    return make_queue()


# --------------------------------------------------------------------------
# STOMP clients
# --------------------------------------------------------------------------

@pytest.fixture
def stomp_client(server, tenant):
    """stomp_client(who=tenant, version="1.2", srv=server, connect=True, heartbeats=(0, 0)) -> StompSession

    A stomp.py connection to srv's STOMP port (TLS when srv was started with
    --stomp-tls-cert), logged in as `who` unless connect=False. Closed after
    the test.
    """
    sessions: list[StompSession] = []

    def make(who: Tenant = None, version: str = "1.2", srv: BerthServer = None, connect: bool = True,
             heartbeats=(0, 0)) -> StompSession:
        srv = srv or server
        s = StompSession(srv.stomp_addr, version=version, ca_file=srv.stomp_ca, heartbeats=heartbeats)
        sessions.append(s)
        if connect:
            who = who or tenant
            s.connect(who.stomp_login, who.stomp_passcode)
        return s

    yield make
    for s in sessions:
        s.close()


@pytest.fixture
def raw_stomp(server):
    """raw_stomp(srv=server, ssl_context=None) -> RawStomp (plain socket to srv's STOMP port), closed after the test."""
    socks: list[RawStomp] = []

    def make(srv: BerthServer = None, ssl_context=None) -> RawStomp:
        s = RawStomp((srv or server).stomp_addr, ssl_context=ssl_context)
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close()
