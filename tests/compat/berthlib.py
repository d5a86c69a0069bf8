"""Shared helpers for the Berth OCI-Queue compatibility suite.

Everything that more than one test module needs lives here: the server
process wrapper, tenants (credentials + SDK clients), raw signed requests,
work-request waiting, queue creation, message helpers, polling and error
assertions. Test modules import from here (pytest puts this directory on
sys.path because tests/compat has no __init__.py and uses the default
"prepend" import mode).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import quote

import oci
import pytest
import requests
import stomp

# --------------------------------------------------------------------------
# Constants (the limits decided for Berth; see the brief / API reference)
# --------------------------------------------------------------------------

API = "/20210201"

MAX_MESSAGE_BYTES = 128 * 1024          # 131072
MAX_PUT_MESSAGES = 20
MAX_PUT_TOTAL_BYTES = 512 * 1024        # 524288
MAX_GET_LIMIT = 32                      # GetMessages `limit` 1..32, default 1
MAX_VISIBILITY = 43200
MAX_TIMEOUT = 30
MIN_RETENTION, MAX_RETENTION = 10, 604800
MAX_DLQ_DELIVERY_COUNT = 20
MAX_CHANNELS = 256
MAX_DELIVERY_DELAY = 604800

DEFAULT_RETENTION = 86400
DEFAULT_VISIBILITY = 30
DEFAULT_TIMEOUT = 30
DEFAULT_CHANNEL_CONSUMPTION_LIMIT = 100

NOT_FOUND = "NotAuthorizedOrNotFound"

START_TIMEOUT = 60.0
LISTEN_RE = re.compile(r"listening https?=(\S+) stomp(?:\+tls)?=(\S+)")

# Every server ever started in this pytest process; conftest uses it to attach
# logs to failing test reports and to clean up at exit.
ALL_SERVERS: list["BerthServer"] = []


# --------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------

def unique_name(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def fake_compartment_id() -> str:
    """A well-formed compartment OCID that no one created (Berth has no
    compartment API; it is expected to accept any compartment id)."""
    return "ocid1.compartment.oc1..aaaaaaaa" + "".join(secrets.choice(_B32) for _ in range(52))


def fake_queue_id() -> str:
    return "ocid1.queue.oc1.iad.amaaaaaa" + "".join(secrets.choice(_B32) for _ in range(52))


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def wait_for(fn: Callable[[], Any], timeout: float, interval: float = 0.1, desc: str = "condition"):
    """Call fn until it returns something truthy; return that value.
    Raises AssertionError with the last value seen when the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {desc}; last value: {last!r}")
        time.sleep(interval)


def sleep_until(t: datetime, margin: float = 0.0) -> None:
    """Sleep until wall-clock time t (+margin seconds). Used only where the
    semantics under test need time to pass (lease / retention ends)."""
    delay = (t - now_utc()).total_seconds() + margin
    if delay > 0:
        time.sleep(delay)


def arg_value(args: Iterable[str], flag: str) -> Optional[str]:
    """The value of `--flag VALUE` or `--flag=VALUE` in an argument list."""
    args = list(args)
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a[len(flag) + 1:]
    return None


def split_addr(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host.strip("[]"), int(port)


def use_ca(session: requests.Session, ca_file: Optional[str]) -> requests.Session:
    """Make a requests session trust exactly ca_file (None: leave it alone).
    trust_env is turned off because REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in
    the environment would otherwise override session.verify."""
    if ca_file:
        session.verify = ca_file
        session.trust_env = False
    return session


def qpath(queue_id: str, *rest: str) -> str:
    """/20210201/queues/<id>/<rest...> with every segment percent-encoded."""
    segs = [quote(queue_id, safe="")] + [quote(s, safe="") for s in rest]
    return f"{API}/queues/" + "/".join(segs)


# --------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------

# Set (by scripts/test for its second run): every server runs on this PostgreSQL server,
# each in a new schema of its own, as a store of its own.
POSTGRES_URL = os.environ.get("BERTH_COMPAT_POSTGRES_URL")


def store_env(postgres_url: Optional[str] = None) -> dict[str, str]:
    """The environment a server (and its tools) run with: a new PostgreSQL store on
    postgres_url (default BERTH_COMPAT_POSTGRES_URL) if any, else the embedded store
    of its data dir."""
    env = dict(os.environ)
    postgres_url = postgres_url or POSTGRES_URL
    if not postgres_url:
        return env
    schema = "c" + secrets.token_hex(8)
    subprocess.run(["psql", postgres_url, "-q", "-c", f"CREATE SCHEMA {schema}"], check=True, capture_output=True)
    sep = "&" if "?" in postgres_url else "?"
    env.update(BERTH_STORE="postgres", BERTH_POSTGRES_URL=f"{postgres_url}{sep}options=-csearch_path%3D{schema}")
    return env


def berth_bin() -> str:
    b = os.environ.get("BERTH_BIN")
    if not b:
        pytest.fail("BERTH_BIN is not set: point it at the berth server binary", pytrace=False)
    if not os.access(b, os.X_OK):
        pytest.fail(f"BERTH_BIN={b!r} is not an executable file", pytrace=False)
    return b


class BerthServer:
    """One berth server process over one data dir.

    start() / stop() (SIGTERM) / kill() (SIGKILL) / restart() on the same
    data dir. Ports are picked by the OS (127.0.0.1:0) and read from the
    `listening http=... stomp=...` line on stdout, so they change on every
    start. stdout/stderr are drained into files under log_dir so the pipes
    never block. With `--http-tls-cert` in extra_args the HTTP port is HTTPS
    (base is https://, clients trust that certificate); with
    `--stomp-tls-cert` the STOMP port is TLS (see stomp_ca).
    """

    def __init__(self, binary: str, data_dir: Path, log_dir: Path, extra_args: Iterable[str] = (),
                 env: Optional[dict[str, str]] = None, wrapper: Iterable[str] = ()):
        self.binary = binary
        # A command the server runs under (e.g. faketime).
        self.wrapper = list(wrapper)
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.extra_args = list(extra_args)
        # Self-signed certificates double as the CA file clients must trust.
        self.http_ca: Optional[str] = arg_value(self.extra_args, "--http-tls-cert")
        self.stomp_ca: Optional[str] = arg_value(self.extra_args, "--stomp-tls-cert")
        self.proc: Optional[subprocess.Popen] = None
        self.http_addr: Optional[str] = None
        self.stomp_addr: Optional[str] = None
        self.starts = 0
        self.stopped_at: Optional[float] = None
        self.stdout_log = self.log_dir / "server.stdout.log"
        self.stderr_log = self.log_dir / "server.stderr.log"
        self._threads: list[threading.Thread] = []
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Nodes of one store share their env (store_env() makes a new store).
        self.env = env if env is not None else store_env()
        ALL_SERVERS.append(self)

    # -- properties -------------------------------------------------------
    @property
    def base(self) -> str:
        assert self.http_addr, "server not started"
        return f"{'https' if self.http_ca else 'http'}://{self.http_addr}"

    @property
    def credentials_dir(self) -> Path:
        return self.data_dir / "credentials"

    @property
    def config_path(self) -> Path:
        return self.credentials_dir / "oci-config"

    @property
    def admin_json_path(self) -> Path:
        return self.credentials_dir / "admin.json"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle --------------------------------------------------------
    def start(self) -> "BerthServer":
        assert not self.running, "already running"
        self.starts += 1
        self.http_addr = self.stomp_addr = None
        cmd = [*self.wrapper, self.binary, "serve", "--data-dir", str(self.data_dir),
               "--http-addr", "127.0.0.1:0", "--stomp-addr", "127.0.0.1:0", *self.extra_args]
        for p in (self.stdout_log, self.stderr_log):
            with open(p, "a") as f:
                f.write(f"\n===== start #{self.starts}: {' '.join(cmd)} =====\n")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True, env=self.env)
        listening = threading.Event()
        found: dict[str, str] = {}

        def drain_stdout(stream, path):
            with open(path, "ab") as f:
                for line in iter(stream.readline, b""):
                    f.write(line)
                    f.flush()
                    if not listening.is_set():
                        m = LISTEN_RE.search(line.decode("utf-8", "replace"))
                        if m:
                            found["http"], found["stomp"] = m.group(1), m.group(2)
                            listening.set()
            stream.close()

        def drain_stderr(stream, path):
            with open(path, "ab") as f:
                for chunk in iter(lambda: stream.read1(65536), b""):
                    f.write(chunk)
                    f.flush()
            stream.close()

        self._threads = [
            threading.Thread(target=drain_stdout, args=(self.proc.stdout, self.stdout_log), daemon=True),
            threading.Thread(target=drain_stderr, args=(self.proc.stderr, self.stderr_log), daemon=True),
        ]
        for t in self._threads:
            t.start()

        deadline = time.monotonic() + START_TIMEOUT
        while not listening.wait(0.05):
            if self.proc.poll() is not None:
                self._join_drains()
                raise RuntimeError(f"berth exited with code {self.proc.returncode} before listening\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"berth did not print 'listening http=...' within {START_TIMEOUT}s\n{self.log_tail()}")
        self.http_addr, self.stomp_addr = found["http"], found["stomp"]
        self.stopped_at = None
        return self

    def _join_drains(self, timeout: float = 5.0) -> None:
        for t in self._threads:
            t.join(timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        rc = self.proc.wait(timeout=timeout)
        self._join_drains()
        self.stopped_at = time.time()
        return rc

    def terminate(self) -> None:
        """Send SIGTERM and return at once (see wait())."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code. Kills (and raises) if the
        process does not exit within timeout."""
        if not self.running:
            return self.proc.returncode if self.proc else 0
        self.terminate()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"berth did not exit within {timeout}s of SIGTERM\n{self.log_tail()}")

    def kill(self) -> int:
        """kill -9 and reap."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.wait(30)

    def restart(self) -> "BerthServer":
        if self.running:
            self.stop()
        return self.start()

    # -- credentials / clients -------------------------------------------
    def admin_creds(self) -> dict:
        return json.loads(self.admin_json_path.read_text())

    def tenant(self) -> "Tenant":
        """The admin tenant written on first start, bound to the current port."""
        return Tenant.load(self.config_path, self.admin_json_path, self.base, self.http_ca)

    def create_credentials(self, tenancy: str, user: str, out_dir: Path) -> "Tenant":
        """`berth credentials create` for tenancy/user (tenancy created if new)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary, "credentials", "create", "--data-dir", str(self.data_dir),
               "--tenancy", tenancy, "--user", user, "--out", str(out_dir)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=self.env)
        assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        cfg, js = out_dir / "oci-config", out_dir / f"{user}.json"
        assert cfg.is_file() and js.is_file(), f"credentials create did not write {cfg} and {js}: {list(out_dir.iterdir())}"
        return Tenant.load(cfg, js, self.base, self.http_ca)

    def health(self) -> requests.Response:
        return requests.get(self.base + "/health", timeout=10, verify=self.http_ca or True)

    # -- logs -------------------------------------------------------------
    def log_tail(self, lines: int = 150) -> str:
        out = []
        for p in (self.stdout_log, self.stderr_log):
            try:
                text = p.read_text(errors="replace").splitlines()
            except FileNotFoundError:
                text = []
            out.append(f"--- {p} (last {lines} lines) ---")
            out.extend(text[-lines:])
        return "\n".join(out)


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

CLIENT_TIMEOUT = (10, 50)  # connect, read: long polls wait at most 30 s


def client_kwargs(base: str, default_retries: bool = False) -> dict:
    kw: dict[str, Any] = {"service_endpoint": base, "timeout": CLIENT_TIMEOUT}
    if not default_retries:
        # Tests want each server answer as it is: no retries, no circuit breaker.
        kw["retry_strategy"] = oci.retry.NoneRetryStrategy()
        kw["circuit_breaker_strategy"] = oci.circuit_breaker.NoCircuitBreakerStrategy()
    return kw


def admin_client(config: dict, base: str, default_retries: bool = False,
                 ca_file: Optional[str] = None) -> oci.queue.QueueAdminClient:
    c = oci.queue.QueueAdminClient(config, **client_kwargs(base, default_retries))
    use_ca(c.base_client.session, ca_file)
    return c


def queue_client(config: dict, base: str, default_retries: bool = False,
                 ca_file: Optional[str] = None) -> oci.queue.QueueClient:
    c = oci.queue.QueueClient(config, **client_kwargs(base, default_retries))
    use_ca(c.base_client.session, ca_file)
    return c


_DEFAULT = object()


class RawClient:
    """Signed raw HTTP requests (for Berth extensions and wire-level checks)."""

    def __init__(self, base: str, config: dict, ca_file: Optional[str] = None):
        self.base = base
        self.config = config
        self.signer = oci.signer.Signer(config["tenancy"], config["user"], config["fingerprint"],
                                        config["key_file"])
        self.session = use_ca(requests.Session(), ca_file)

    def url(self, path: str) -> str:
        return self.base + (path if path.startswith("/") else "/" + path)

    @staticmethod
    def encode_body(body) -> Optional[bytes]:
        if body is None:
            return None
        if isinstance(body, bytes):
            return body
        if isinstance(body, str):
            return body.encode()
        return json.dumps(body).encode()

    def request(self, method: str, path: str, body=None, params=None, headers=None, auth=_DEFAULT,
                timeout: float = 60) -> requests.Response:
        h = {"content-type": "application/json", "accept": "application/json"}
        h.update(headers or {})
        return self.session.request(method.upper(), self.url(path), data=self.encode_body(body), params=params,
                                    headers=h, auth=self.signer if auth is _DEFAULT else auth, timeout=timeout)

    def prepare(self, method: str, path: str, body=None, params=None, headers=None, auth=_DEFAULT):
        """A signed PreparedRequest the caller may tamper with before send()."""
        h = {"content-type": "application/json", "accept": "application/json"}
        h.update(headers or {})
        return requests.Request(method.upper(), self.url(path), data=self.encode_body(body), params=params,
                                headers=h, auth=self.signer if auth is _DEFAULT else auth).prepare()

    def send(self, prepared, timeout: float = 60) -> requests.Response:
        return self.session.send(prepared, timeout=timeout)

    # -- control-plane conveniences for extension fields -------------------
    def wait_work_request(self, wr_id: str, timeout: float = 30) -> dict:
        def poll():
            r = self.request("GET", f"{API}/workRequests/{quote(wr_id, safe='')}")
            assert r.status_code == 200, f"GetWorkRequest {wr_id}: {r.status_code} {r.text}"
            wr = r.json()
            assert wr["status"] != "FAILED", f"work request failed: {wr}"
            return wr if wr["status"] == "SUCCEEDED" else None
        return wait_for(poll, timeout, desc=f"work request {wr_id} SUCCEEDED")

    def create_queue(self, compartment_id: str, display_name: Optional[str] = None, **fields) -> str:
        body = {"displayName": display_name or unique_name("rawq"), "compartmentId": compartment_id, **fields}
        r = self.request("POST", f"{API}/queues", body)
        assert r.status_code == 202, f"CreateQueue: {r.status_code} {r.text}"
        wr = self.wait_work_request(r.headers["opc-work-request-id"])
        return queue_id_from_resources(wr["resources"], camel=True)

    def get_queue(self, queue_id: str) -> dict:
        r = self.request("GET", qpath(queue_id))
        assert r.status_code == 200, f"GetQueue: {r.status_code} {r.text}"
        return r.json()


@dataclass
class Tenant:
    """A set of credentials (one user of one tenancy) with its clients.
    ca_file: the certificate to trust when base is https:// (self-signed)."""
    config_path: Path
    config: dict
    creds: dict
    base: str
    ca_file: Optional[str] = None
    _admin: Any = field(default=None, repr=False)
    _qc: Any = field(default=None, repr=False)
    _raw: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, config_path: Path, creds_path: Path, base: str, ca_file: Optional[str] = None) -> "Tenant":
        config = oci.config.from_file(str(config_path), "DEFAULT")
        creds = json.loads(Path(creds_path).read_text())
        return cls(Path(config_path), config, creds, base, ca_file)

    @property
    def tenancy_id(self) -> str:
        return self.config["tenancy"]

    @property
    def compartment_id(self) -> str:
        """The root compartment (= tenancy OCID, as in OCI)."""
        return self.config["tenancy"]

    @property
    def stomp_login(self) -> str:
        """`<tenancy-name>/<user-name>` (stompLogin of the credentials JSON)."""
        return self.creds["stompLogin"]

    @property
    def stomp_passcode(self) -> str:
        return self.creds["stompPasscode"]

    @property
    def admin(self) -> oci.queue.QueueAdminClient:
        if self._admin is None:
            self._admin = admin_client(self.config, self.base, ca_file=self.ca_file)
        return self._admin

    @property
    def qc(self) -> oci.queue.QueueClient:
        if self._qc is None:
            self._qc = queue_client(self.config, self.base, ca_file=self.ca_file)
        return self._qc

    @property
    def raw(self) -> RawClient:
        if self._raw is None:
            self._raw = RawClient(self.base, self.config, self.ca_file)
        return self._raw

    def new_queue_client(self) -> oci.queue.QueueClient:
        """A separate client (own HTTP session), e.g. for another thread."""
        return queue_client(self.config, self.base, ca_file=self.ca_file)

    def create_queue(self, display_name: Optional[str] = None, compartment_id: Optional[str] = None, **details) -> str:
        return create_queue(self.admin, compartment_id or self.compartment_id, display_name, **details)


# --------------------------------------------------------------------------
# Work requests and queues (SDK)
# --------------------------------------------------------------------------

def queue_id_from_resources(resources, camel: bool = False) -> str:
    for r in resources:
        et = r["entityType"] if camel else r.entity_type
        if et == "queue":
            return r["identifier"] if camel else r.identifier
    raise AssertionError(f"no queue resource in work request resources: {resources!r}")


def wait_work_request(admin: oci.queue.QueueAdminClient, wr_id: str, timeout: float = 30):
    """Poll GetWorkRequest until SUCCEEDED; returns the WorkRequest model."""
    def poll():
        wr = admin.get_work_request(wr_id).data
        assert wr.status != "FAILED", f"work request {wr_id} FAILED: {wr}"
        return wr if wr.status == "SUCCEEDED" else None
    return wait_for(poll, timeout, desc=f"work request {wr_id} SUCCEEDED")


def wait_async(admin: oci.queue.QueueAdminClient, response, timeout: float = 30):
    """For a 202 response of an async operation: wait for its work request."""
    assert response.status == 202, f"expected 202, got {response.status}"
    wr_id = response.headers.get("opc-work-request-id")
    assert wr_id, f"no opc-work-request-id header in {dict(response.headers)}"
    return wait_work_request(admin, wr_id, timeout)


def create_queue(admin: oci.queue.QueueAdminClient, compartment_id: str, display_name: Optional[str] = None,
                 **details) -> str:
    """CreateQueue, wait for its work request and return the new queue's OCID."""
    d = oci.queue.models.CreateQueueDetails(display_name=display_name or unique_name("q"),
                                            compartment_id=compartment_id, **details)
    resp = admin.create_queue(d)
    wr = wait_async(admin, resp)
    return queue_id_from_resources(wr.resources)


def update_queue(admin, queue_id: str, **details):
    resp = admin.update_queue(queue_id, oci.queue.models.UpdateQueueDetails(**details))
    return wait_async(admin, resp)


def purge_queue(admin, queue_id: str, purge_type: str = "NORMAL", channel_ids=None):
    resp = admin.purge_queue(queue_id, oci.queue.models.PurgeQueueDetails(purge_type=purge_type,
                                                                           channel_ids=channel_ids))
    return wait_async(admin, resp)


def delete_queue(admin, queue_id: str):
    return wait_async(admin, admin.delete_queue(queue_id))


# --------------------------------------------------------------------------
# Messages (SDK)
# --------------------------------------------------------------------------

def entry(content: str, channel_id: Optional[str] = None, custom_properties: Optional[dict] = None):
    md = None
    if channel_id is not None or custom_properties is not None:
        md = oci.queue.models.MessageMetadata(channel_id=channel_id, custom_properties=custom_properties)
    return oci.queue.models.PutMessagesDetailsEntry(content=content, metadata=md)


def put(qc, queue_id: str, contents: Iterable[str], channel_id: Optional[str] = None,
        custom_properties: Optional[dict] = None):
    """PutMessages (batches of <= 20); returns the list of PutMessage results."""
    contents = list(contents)
    out = []
    for i in range(0, len(contents), MAX_PUT_MESSAGES):
        batch = [entry(c, channel_id, custom_properties) for c in contents[i:i + MAX_PUT_MESSAGES]]
        resp = qc.put_messages(queue_id, oci.queue.models.PutMessagesDetails(messages=batch))
        assert len(resp.data.messages) == len(batch)
        out.extend(resp.data.messages)
    return out


def get(qc, queue_id: str, **kw):
    """GetMessages returning the list; defaults to timeout 0 (no long poll)."""
    kw.setdefault("timeout_in_seconds", 0)
    return qc.get_messages(queue_id, **kw).data.messages


def collect(qc, queue_id: str, count: int, timeout: float, **kw):
    """Get messages until `count` were received (or fail at the deadline)."""
    got = []
    kw.setdefault("visibility_in_seconds", 60)
    kw.setdefault("limit", MAX_GET_LIMIT)

    def poll():
        got.extend(get(qc, queue_id, **kw))
        return len(got) >= count
    wait_for(poll, timeout, desc=f"{count} messages (have {len(got)})")
    return got


def get_one_when_visible(qc, queue_id: str, timeout: float, **kw):
    """Poll (timeout 0) until exactly one message is delivered; return it with
    the wall-clock time at which it was received."""
    kw.setdefault("limit", 1)

    def poll():
        msgs = get(qc, queue_id, **kw)
        return (msgs, now_utc()) if msgs else None
    msgs, at = wait_for(poll, timeout, interval=0.05, desc="message to become visible")
    assert len(msgs) == 1
    return msgs[0], at


def channel_of(m) -> Optional[str]:
    """The channel id of a GetMessage (None for queue-level messages)."""
    return (m.metadata.channel_id if m.metadata else None) or None


def stats(qc, queue_id: str, channel_id: Optional[str] = None):
    kw = {"channel_id": channel_id} if channel_id is not None else {}
    return qc.get_stats(queue_id, **kw).data


def counts(st) -> tuple:
    """((queue visible, queue in-flight), (dlq visible, dlq in-flight))."""
    return ((st.queue.visible_messages, st.queue.in_flight_messages),
            (st.dlq.visible_messages, st.dlq.in_flight_messages))


def wait_for_counts(qc, queue_id: str, queue=None, dlq=None, channel_id=None, timeout: float = 10):
    """Poll GetStats until the (visible, in-flight) pairs match."""
    def poll():
        c = counts(stats(qc, queue_id, channel_id))
        ok = (queue is None or c[0] == tuple(queue)) and (dlq is None or c[1] == tuple(dlq))
        return c if ok else None
    try:
        return wait_for(poll, timeout, interval=0.1, desc=f"stats queue={queue} dlq={dlq}")
    except AssertionError as e:
        raise AssertionError(f"{e}; actual={counts(stats(qc, queue_id, channel_id))}") from None


def approx_seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()


# --------------------------------------------------------------------------
# Error assertions
# --------------------------------------------------------------------------

@contextmanager
def raises_service_error(status: int, code: Optional[str] = None):
    """Expect an oci ServiceError with this HTTP status (and code)."""
    with pytest.raises(oci.exceptions.ServiceError) as ei:
        yield ei
    e = ei.value
    assert e.status == status, f"expected HTTP {status}/{code}, got {e.status}/{e.code}: {e.message}"
    if code is not None:
        assert e.code == code, f"expected code {code}, got {e.code} (HTTP {e.status}): {e.message}"
    assert e.headers.get("opc-request-id"), "error response lacks opc-request-id"


def assert_error(resp: requests.Response, status: int, code: Optional[str] = None) -> dict:
    """Raw error response: status, JSON {"code","message"} body, opc-request-id."""
    assert resp.status_code == status, f"expected {status}/{code}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("opc-request-id"), f"no opc-request-id on {resp.status_code} response"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {resp.text[:500]!r}")
    assert isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str), \
        f"error body must be {{code, message}}: {body!r}"
    if code is not None:
        assert body["code"] == code, f"expected code {code}, got {body!r}"
    return body


# --------------------------------------------------------------------------
# The oci CLI
# --------------------------------------------------------------------------

def oci_cli_path() -> str:
    p = Path(sys.executable).parent / "oci"
    if not p.exists():
        pytest.skip(f"oci CLI not found next to {sys.executable}")
    return str(p)


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self):
        assert self.stdout.strip(), f"CLI printed nothing on stdout; stderr:\n{self.stderr}"
        return json.loads(self.stdout)

    @property
    def data(self):
        return self.json["data"]


class Cli:
    def __init__(self, config_path: Path, endpoint: str):
        self.config_path = str(config_path)
        self.endpoint = endpoint
        self.exe = oci_cli_path()
        self.env = dict(os.environ, OCI_CLI_SUPPRESS_FILE_PERMISSIONS_WARNING="True")

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> CliResult:
        cmd = [self.exe, "--config-file", self.config_path, "--endpoint", self.endpoint, "--no-retry",
               "--output", "json", *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env,
                           stdin=subprocess.DEVNULL)
        res = CliResult(p.returncode, p.stdout, p.stderr)
        if check:
            assert p.returncode == 0, f"oci {' '.join(args)} -> rc {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
        return res


def cli_items(data) -> list:
    """List output is {"items": [...]} or (with --all on some versions) a list."""
    if isinstance(data, dict) and "items" in data:
        return data["items"]
    assert isinstance(data, list), f"unexpected list output: {data!r}"
    return data


def b64url(n: int = 48) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(n)).decode().rstrip("=")


# --------------------------------------------------------------------------
# STOMP (contract: docs of the STOMP interface; reference section 7)
# --------------------------------------------------------------------------

STOMP_MAX_FRAME_BYTES = 1024 * 1024     # whole frame, headers included
STOMP_MAX_HEADERS = 64
STOMP_DEFAULT_PREFETCH = 20
STOMP_MAX_PREFETCH = 1000
STOMP_VERSIONS = ("1.0", "1.1", "1.2")
STOMP_ACK_MODE = "client-individual"    # the only ack mode Berth accepts
SERVER_HEADER_RE = re.compile(r"^Berth/\S+$")
HEART_BEAT_RE = re.compile(r"^\d+,\d+$")


def destination(queue_id: str, channel_id: Optional[str] = None) -> str:
    """SEND / SUBSCRIBE destination: the queue OCID, or `<queueOCID>/<channelId>`."""
    return queue_id if channel_id is None else f"{queue_id}/{channel_id}"


def error_text(frame) -> str:
    """`message` header + body of an ERROR frame (RawFrame or stomp.py Frame)."""
    body = frame.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return f"{frame.headers.get('message', '')}\n{body or ''}"


def assert_error_frame(frame, *patterns: str) -> str:
    """An ERROR frame with a non-empty `message` header whose message+body
    matches at least one of the (case-insensitive) regex patterns."""
    assert frame is not None, "no ERROR frame"
    assert frame_command(frame) == "ERROR", f"expected ERROR, got {frame_command(frame)}: {frame.headers}"
    assert frame.headers.get("message"), f"ERROR frame without a message header: {frame.headers}"
    text = error_text(frame)
    if patterns:
        assert any(re.search(p, text, re.I) for p in patterns), \
            f"ERROR text does not say what was wrong (expected one of {patterns}): {text!r}"
    return text


def frame_command(frame) -> str:
    return getattr(frame, "command", None) or getattr(frame, "cmd", "")


def epoch_ms_now() -> int:
    return int(time.time() * 1000)


def assert_message_headers(frame, queue_id: str, sub_id: str, channel_id: Optional[str] = None,
                           delivery_count: int = 1, version: str = "1.2") -> dict:
    """The MESSAGE headers every version carries; returns them."""
    h = frame.headers
    for k in ("subscription", "destination", "message-id", "delivery-count", "visible-after", "expire-after",
              "content-length", "oci-message-id"):
        assert h.get(k), f"MESSAGE lacks {k}: {h}"
    assert h["subscription"] == sub_id, h
    assert h["destination"] == destination(queue_id, channel_id), h
    assert int(h["delivery-count"]) == delivery_count, h
    assert int(h["oci-message-id"]) > 0, h
    body = frame.body.encode() if isinstance(frame.body, str) else frame.body
    assert int(h["content-length"]) == len(body), h
    if version == "1.2":
        assert h["message-id"] == h["oci-message-id"], f"1.2 message-id must be the numeric id: {h}"
        assert h.get("ack"), f"1.2 MESSAGE lacks ack: {h}"
    else:
        assert h["message-id"] != h["oci-message-id"], f"{version} message-id must be the receipt: {h}"
        assert "ack" not in h, f"{version} MESSAGE must not carry ack: {h}"
    return h


# -- stomp.py -------------------------------------------------------------

class StompListener(stomp.ConnectionListener):
    """Collects everything a stomp.py connection receives, with waits that
    end at a deadline (never a fixed sleep)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.connected = None
        self.messages: list = []
        self.errors: list = []
        self.receipts: dict[str, Any] = {}
        self.disconnected = False
        self.heartbeats: list[float] = []

    def on_connected(self, frame):
        with self.cond:
            self.connected = frame
            self.cond.notify_all()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts[frame.headers.get("receipt-id")] = frame
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def on_heartbeat(self):
        with self.cond:
            self.heartbeats.append(time.monotonic())
            self.cond.notify_all()

    def summary(self) -> str:
        return (f"connected={self.connected is not None} messages={len(self.messages)} "
                f"receipts={list(self.receipts)} disconnected={self.disconnected} "
                f"errors={[error_text(e) for e in self.errors]}")

    def wait(self, pred: Callable[[], Any], timeout: float, desc: str):
        with self.cond:
            if not self.cond.wait_for(pred, timeout):
                raise AssertionError(f"timed out after {timeout}s waiting for {desc}; {self.summary()}")
            return pred()


class StompSession:
    """A stomp.py connection (1.0, 1.1 or 1.2) plus its StompListener.

    ACK/NACK take the MESSAGE frame and use the right header for the
    version (1.2: `id` = the frame's `ack`; 1.0/1.1: `message-id`).
    send/ack/nack ask for a RECEIPT by default and wait for it."""

    CLASSES = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}

    def __init__(self, addr: str, version: str = "1.2", ca_file: Optional[str] = None,
                 heartbeats: tuple[int, int] = (0, 0)):
        self.version = version
        self.host_port = split_addr(addr)
        kw: dict[str, Any] = {"reconnect_attempts_max": 1, "timeout": 10}
        if version != "1.0":
            kw["heartbeats"] = heartbeats
        self.conn = self.CLASSES[version]([self.host_port], **kw)
        if ca_file:
            self.conn.set_ssl(for_hosts=[self.host_port], ca_certs=ca_file)
        self.listener = StompListener()
        self.conn.set_listener("berth-compat", self.listener)
        self._subs = 0

    @property
    def messages(self) -> list:
        return self.listener.messages

    # -- connection ---------------------------------------------------------
    def start_connect(self, login: Optional[str], passcode: Optional[str], **headers) -> None:
        """Send CONNECT (1.0) or STOMP (1.1/1.2) and return at once."""
        self.conn.connect(login, passcode, wait=False, headers={k: str(v) for k, v in headers.items()})

    def connect(self, login: Optional[str], passcode: Optional[str], timeout: float = 10, **headers):
        """Connect and return the CONNECTED frame (fails on ERROR)."""
        self.start_connect(login, passcode, **headers)
        l = self.listener
        l.wait(lambda: l.connected is not None or l.errors or l.disconnected, timeout, "CONNECTED")
        assert l.connected is not None, f"CONNECT as {login!r} failed; {l.summary()}"
        return l.connected

    def connect_expect_error(self, login: Optional[str], passcode: Optional[str], timeout: float = 10, **headers):
        """Connect; expect an ERROR frame (no CONNECTED) and then the server
        closing the connection. Returns the ERROR frame."""
        self.start_connect(login, passcode, **headers)
        err = self.expect_error_and_close(timeout)
        assert self.listener.connected is None, f"got CONNECTED as well as ERROR: {self.listener.connected.headers}"
        return err

    # -- frames -------------------------------------------------------------
    def _receipt(self, receipt: bool) -> Optional[str]:
        return f"r-{uuid.uuid4().hex[:10]}" if receipt else None

    def wait_receipt(self, rid: str, timeout: float = 10):
        l = self.listener
        l.wait(lambda: rid in l.receipts or l.errors or l.disconnected, timeout, f"RECEIPT {rid}")
        assert rid in l.receipts, f"no RECEIPT {rid}; {l.summary()}"
        return l.receipts[rid]

    def send(self, dest: str, body: str, receipt: bool = True, timeout: float = 10, **headers) -> Optional[str]:
        rid = self._receipt(receipt)
        h = {k: str(v) for k, v in headers.items()}
        if rid:
            h["receipt"] = rid
        self.conn.send(dest, body, headers=h)
        if rid:
            self.wait_receipt(rid, timeout)
        return rid

    def wait_receipts(self, rids: list[str], timeout: float = 30) -> list[str]:
        """Wait for all the receipts; returns every receipt id received so far, in arrival order."""
        l = self.listener
        l.wait(lambda: all(r in l.receipts for r in rids) or l.errors or l.disconnected, timeout,
               f"{len(rids)} RECEIPTs")
        missing = [r for r in rids if r not in l.receipts]
        assert not missing, f"{len(missing)} of {len(rids)} RECEIPTs missing; {l.summary()}"
        return list(l.receipts)

    def subscribe(self, dest: str, sub_id: Optional[str] = None, ack: str = STOMP_ACK_MODE, **headers) -> str:
        """SUBSCRIBE (no receipt: Berth's contract promises RECEIPTs for SEND,
        ACK, NACK and DISCONNECT). Extra headers, e.g. visibility=2, prefetch=3."""
        self._subs += 1
        sub_id = sub_id or f"sub-{self._subs}"
        self.conn.subscribe(dest, sub_id, ack=ack, headers={k: str(v) for k, v in headers.items()})
        return sub_id

    def unsubscribe(self, sub_id: str) -> None:
        self.conn.unsubscribe(id=sub_id)

    def ack_id(self, msg) -> str:
        return msg.headers["ack"] if self.version == "1.2" else msg.headers["message-id"]

    def _ack_or_nack(self, command: str, msg, receipt: bool, timeout: float):
        rid = self._receipt(receipt)
        if self.version == "1.2":
            h = {"id": msg.headers["ack"]}
        else:
            h = {"message-id": msg.headers["message-id"], "subscription": msg.headers.get("subscription")}
            if self.version == "1.0":
                h.pop("subscription")
        if rid:
            h["receipt"] = rid
        self.conn.send_frame(command, h)
        if rid:
            self.wait_receipt(rid, timeout)

    def ack(self, msg, receipt: bool = True, timeout: float = 10) -> None:
        self._ack_or_nack("ACK", msg, receipt, timeout)

    def nack(self, msg, receipt: bool = True, timeout: float = 10) -> None:
        self._ack_or_nack("NACK", msg, receipt, timeout)

    # -- waiting ------------------------------------------------------------
    def wait_messages(self, n: int, timeout: float = 10) -> list:
        """Wait until at least n MESSAGE frames arrived in total; returns the first n."""
        l = self.listener
        l.wait(lambda: len(l.messages) >= n or l.errors or l.disconnected, timeout, f"{n} MESSAGE frames")
        assert len(l.messages) >= n, f"expected {n} MESSAGE frames; {l.summary()}"
        return l.messages[:n]

    def messages_after(self, seconds: float) -> list:
        """All MESSAGE frames received once `seconds` have passed (for checks
        that nothing more arrives)."""
        time.sleep(seconds)
        with self.listener.cond:
            return list(self.listener.messages)

    def wait_error(self, timeout: float = 10):
        l = self.listener
        l.wait(lambda: l.errors or l.disconnected, timeout, "ERROR frame")
        assert l.errors, f"connection closed without an ERROR frame; {l.summary()}"
        return l.errors[0]

    def wait_disconnected(self, timeout: float = 5) -> None:
        self.listener.wait(lambda: self.listener.disconnected, timeout, "the server to close the connection")

    def expect_error_and_close(self, timeout: float = 10):
        err = self.wait_error(timeout)
        self.wait_disconnected(5)
        return err

    def disconnect(self, timeout: float = 5):
        """DISCONNECT with a receipt; returns the RECEIPT once the server closed.
        (Sent as a plain frame: stomp.py's own disconnect(receipt=...) can
        block forever if the server never answers.)"""
        rid = self._receipt(True)
        self.conn.send_frame("DISCONNECT", {"receipt": rid})
        r = self.wait_receipt(rid, timeout)
        self.wait_disconnected(timeout)
        return r

    def drop(self) -> None:
        """Close the socket abruptly: no DISCONNECT, no ACK."""
        self.conn.transport.disconnect_socket()

    def close(self) -> None:
        """Best-effort cleanup for fixtures."""
        try:
            if self.conn.is_connected() and not self.listener.disconnected:
                self.conn.disconnect()
                with self.listener.cond:
                    self.listener.cond.wait_for(lambda: self.listener.disconnected, 3)
        except Exception:
            pass
        try:
            self.conn.transport.disconnect_socket()
        except Exception:
            pass


# -- raw frames over a socket ----------------------------------------------

_UNESCAPE = {b"\\n": b"\n", b"\\r": b"\r", b"\\c": b":", b"\\\\": b"\\"}
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


@dataclass
class RawFrame:
    command: str
    headers: dict          # first occurrence of a repeated header wins (STOMP 1.2)
    body: bytes
    header_list: list

    def __repr__(self) -> str:
        return f"RawFrame({self.command}, {self.headers}, {self.body[:200]!r})"


class StompClosed(AssertionError):
    """The server closed the connection (EOF or reset) before a full frame."""


class RawStomp:
    """A STOMP client that writes exactly the bytes a test gives it and
    parses what comes back. Lone EOLs between frames are heart-beats; the
    monotonic time each one arrived is kept in `heartbeats`."""

    def __init__(self, addr: str, ssl_context: Optional[ssl.SSLContext] = None, timeout: float = 10):
        host, port = split_addr(addr)
        sock = socket.create_connection((host, port), timeout=timeout)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.buf = b""
        self.eof = False
        self.heartbeats: list[float] = []
        self.frames: list[RawFrame] = []   # every frame read, in order

    # -- writing ------------------------------------------------------------
    @staticmethod
    def encode(command: str, headers=(), body: bytes | str = b"", content_length: Optional[bool] = None) -> bytes:
        """headers: dict or list of (name, value) pairs, str or bytes, written
        as is (no escaping). content-length is added when the body is not
        empty unless content_length=False (or already given)."""
        if isinstance(body, str):
            body = body.encode()
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
        names = {(k if isinstance(k, str) else k.decode("latin-1")).lower() for k, _ in pairs}
        if content_length or (content_length is None and body and "content-length" not in names):
            pairs.append(("content-length", str(len(body))))
        out = [command.encode() + b"\n"]
        for k, v in pairs:
            k = k.encode() if isinstance(k, str) else k
            v = str(v).encode() if not isinstance(v, bytes) else v
            out.append(k + b":" + v + b"\n")
        out.append(b"\n")
        return b"".join(out) + body + b"\x00"

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, command: str, headers=(), body: bytes | str = b"", content_length: Optional[bool] = None):
        self.send_raw(self.encode(command, headers, body, content_length))

    def send_frame_ignoring_reset(self, command: str, headers=(), body: bytes | str = b"", **kw) -> None:
        """For frames the server may refuse part-way (too large): a reset or
        broken pipe while writing is not a failure, the reply is read after."""
        try:
            self.send_frame(command, headers, body, **kw)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- reading ------------------------------------------------------------
    def _recv(self, deadline: float) -> bool:
        """Read more into buf; False on EOF/reset; TimeoutError at deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            data = b""
        except socket.timeout:
            raise TimeoutError from None
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _parse(self) -> Optional[RawFrame]:
        while True:  # heart-beats: EOLs outside a frame
            if self.buf.startswith(b"\n"):
                self.buf = self.buf[1:]
            elif self.buf.startswith(b"\r\n"):
                self.buf = self.buf[2:]
            else:
                break
            self.heartbeats.append(time.monotonic())
        m = _BLANK_LINE.search(self.buf)
        if not m:
            return None
        lines = [ln.rstrip(b"\r") for ln in self.buf[:m.start()].split(b"\n")]
        command = lines[0].decode("utf-8", "replace")
        pairs = []
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            if command != "CONNECTED":
                v = re.sub(rb"\\[nrc\\]", lambda x: _UNESCAPE[x.group(0)], v)
            pairs.append((k.decode("utf-8", "replace"), v.decode("utf-8", "replace")))
        headers: dict[str, str] = {}
        for k, v in pairs:
            headers.setdefault(k, v)
        start = m.end()
        if "content-length" in headers:
            n = int(headers["content-length"])
            if len(self.buf) < start + n + 1:
                return None
            assert self.buf[start + n:start + n + 1] == b"\x00", \
                f"{command} frame body is not followed by NUL after content-length {n}"
            end = start + n
        else:
            end = self.buf.find(b"\x00", start)
            if end < 0:
                return None
        frame = RawFrame(command, headers, self.buf[start:end], pairs)
        self.buf = self.buf[end + 1:]
        self.frames.append(frame)
        return frame

    def read_frame(self, timeout: float = 10) -> RawFrame:
        """The next frame. StompClosed on EOF; TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            f = self._parse()
            if f is not None:
                return f
            if not self._recv(deadline):
                f = self._parse()
                if f is not None:
                    return f
                raise StompClosed(f"server closed the connection; unparsed bytes: {self.buf[:300]!r}")

    def expect(self, command: str, timeout: float = 10) -> RawFrame:
        """The next frame, which must be `command`."""
        try:
            f = self.read_frame(timeout)
        except TimeoutError:
            raise AssertionError(f"no {command} frame within {timeout}s") from None
        if f.command != command:
            detail = error_text(f) if f.command == "ERROR" else f.headers
            raise AssertionError(f"expected {command}, got {f.command}: {detail}")
        return f

    def listen(self, seconds: float) -> list[RawFrame]:
        """Read for `seconds` (heart-beats are recorded); returns the frames
        read meanwhile. Stops early if the server closes (see eof)."""
        deadline = time.monotonic() + seconds
        got = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(self.read_frame(remaining))
            except (TimeoutError, StompClosed):
                break
        return got

    def assert_closed(self, timeout: float = 5) -> None:
        """The server closes the connection within timeout, sending nothing but
        EOLs meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self._parse()
                assert f is None, f"server sent {f} instead of closing the connection"
                if not self._recv(deadline):
                    assert not self.buf.strip(b"\r\n"), f"trailing bytes before close: {self.buf[:200]!r}"
                    return
            except TimeoutError:
                raise AssertionError(f"server did not close the connection within {timeout}s") from None

    def expect_error_and_close(self, timeout: float = 10) -> RawFrame:
        """Read frames until an ERROR (earlier RECEIPT/MESSAGE frames are kept
        in `frames`), then require the server to close the connection."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.read_frame(max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"no ERROR frame within {timeout}s; frames: {self.frames}") from None
            except StompClosed as e:
                raise AssertionError(f"connection closed without an ERROR frame ({e}); frames: {self.frames}") \
                    from None
            if f.command == "ERROR":
                break
        self.assert_closed(5)
        return f

    # -- conveniences ---------------------------------------------------------
    def connect(self, login: Optional[str], passcode: Optional[str], accept_version: Optional[str] = "1.2",
                command: str = "CONNECT", heart_beat: Optional[str] = None, host: str = "127.0.0.1",
                timeout: float = 10, extra=()) -> RawFrame:
        """Send CONNECT/STOMP; returns the first frame back (CONNECTED or ERROR)."""
        h: list = []
        if accept_version is not None:
            h.append(("accept-version", accept_version))
        if host is not None:
            h.append(("host", host))
        if login is not None:
            h.append(("login", login))
        if passcode is not None:
            h.append(("passcode", passcode))
        if heart_beat is not None:
            h.append(("heart-beat", heart_beat))
        h.extend(extra)
        self.send_frame(command, h)
        return self.read_frame(timeout)

    def login(self, who: "Tenant", **kw) -> RawFrame:
        """CONNECT as who; returns CONNECTED (fails on anything else)."""
        f = self.connect(who.stomp_login, who.stomp_passcode, **kw)
        assert f.command == "CONNECTED", f"CONNECT failed: {f.command} {error_text(f) if f.command == 'ERROR' else f}"
        return f

    def request(self, command: str, headers=(), body: bytes | str = b"", timeout: float = 10,
                content_length: Optional[bool] = None) -> RawFrame:
        """Send a frame with a receipt header; return the RECEIPT (fails on ERROR)."""
        rid = f"r-{uuid.uuid4().hex[:10]}"
        pairs = (list(headers.items()) if isinstance(headers, dict) else list(headers)) + [("receipt", rid)]
        self.send_frame(command, pairs, body, content_length)
        while True:
            f = self.read_frame(timeout)
            if f.command == "RECEIPT":
                assert f.headers.get("receipt-id") == rid, f"RECEIPT for {rid} has {f.headers}"
                return f
            if f.command == "ERROR":
                raise AssertionError(f"{command} got ERROR: {error_text(f)}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def read_raw_until_closed(addr: str, data: bytes, timeout: float = 5) -> bytes:
    """Connect with plain TCP, write data, return everything read until the
    server closes, resets, or timeout passes."""
    host, port = split_addr(addr)
    out = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            return out
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


# -- TLS ---------------------------------------------------------------------

def make_self_signed_cert(out_dir: Path, ip: str = "127.0.0.1") -> tuple[str, str]:
    """A self-signed certificate (IP SAN `ip`, DNS SAN localhost) and its
    PKCS#8 key, as PEM files; the certificate is also the CA file clients trust."""
    import ipaddress
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth-compat-test")])
    now = now_utc()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / "cert.pem", out_dir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def client_ssl_context(ca_file: str) -> ssl.SSLContext:
    """Verifies the server against ca_file only, hostname (IP SAN) included."""
    return ssl.create_default_context(cafile=ca_file)
