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
LISTEN_RE = re.compile(r"listening http=(\S+) stomp=(\S+)")

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


def qpath(queue_id: str, *rest: str) -> str:
    """/20210201/queues/<id>/<rest...> with every segment percent-encoded."""
    segs = [quote(queue_id, safe="")] + [quote(s, safe="") for s in rest]
    return f"{API}/queues/" + "/".join(segs)


# --------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------

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
    never block.
    """

    def __init__(self, binary: str, data_dir: Path, log_dir: Path, extra_args: Iterable[str] = ()):
        self.binary = binary
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.extra_args = list(extra_args)
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
        ALL_SERVERS.append(self)

    # -- properties -------------------------------------------------------
    @property
    def base(self) -> str:
        assert self.http_addr, "server not started"
        return f"http://{self.http_addr}"

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
        cmd = [self.binary, "serve", "--data-dir", str(self.data_dir),
               "--http-addr", "127.0.0.1:0", "--stomp-addr", "127.0.0.1:0", *self.extra_args]
        for p in (self.stdout_log, self.stderr_log):
            with open(p, "a") as f:
                f.write(f"\n===== start #{self.starts}: {' '.join(cmd)} =====\n")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
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
        return Tenant.load(self.config_path, self.admin_json_path, self.base)

    def create_credentials(self, tenancy: str, user: str, out_dir: Path) -> "Tenant":
        """`berth credentials create` for tenancy/user (tenancy created if new)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary, "credentials", "create", "--data-dir", str(self.data_dir),
               "--tenancy", tenancy, "--user", user, "--out", str(out_dir)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        cfg, js = out_dir / "oci-config", out_dir / f"{user}.json"
        assert cfg.is_file() and js.is_file(), f"credentials create did not write {cfg} and {js}: {list(out_dir.iterdir())}"
        return Tenant.load(cfg, js, self.base)

    def health(self) -> requests.Response:
        return requests.get(self.base + "/health", timeout=10)

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


def admin_client(config: dict, base: str, default_retries: bool = False) -> oci.queue.QueueAdminClient:
    return oci.queue.QueueAdminClient(config, **client_kwargs(base, default_retries))


def queue_client(config: dict, base: str, default_retries: bool = False) -> oci.queue.QueueClient:
    return oci.queue.QueueClient(config, **client_kwargs(base, default_retries))


_DEFAULT = object()


class RawClient:
    """Signed raw HTTP requests (for Berth extensions and wire-level checks)."""

    def __init__(self, base: str, config: dict):
        self.base = base
        self.config = config
        self.signer = oci.signer.Signer(config["tenancy"], config["user"], config["fingerprint"],
                                        config["key_file"])
        self.session = requests.Session()

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
    """A set of credentials (one user of one tenancy) with its clients."""
    config_path: Path
    config: dict
    creds: dict
    base: str
    _admin: Any = field(default=None, repr=False)
    _qc: Any = field(default=None, repr=False)
    _raw: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, config_path: Path, creds_path: Path, base: str) -> "Tenant":
        config = oci.config.from_file(str(config_path), "DEFAULT")
        creds = json.loads(Path(creds_path).read_text())
        return cls(Path(config_path), config, creds, base)

    @property
    def tenancy_id(self) -> str:
        return self.config["tenancy"]

    @property
    def compartment_id(self) -> str:
        """The root compartment (= tenancy OCID, as in OCI)."""
        return self.config["tenancy"]

    @property
    def admin(self) -> oci.queue.QueueAdminClient:
        if self._admin is None:
            self._admin = admin_client(self.config, self.base)
        return self._admin

    @property
    def qc(self) -> oci.queue.QueueClient:
        if self._qc is None:
            self._qc = queue_client(self.config, self.base)
        return self._qc

    @property
    def raw(self) -> RawClient:
        if self._raw is None:
            self._raw = RawClient(self.base, self.config)
        return self._raw

    def new_queue_client(self) -> oci.queue.QueueClient:
        """A separate client (own HTTP session), e.g. for another thread."""
        return queue_client(self.config, self.base)

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
