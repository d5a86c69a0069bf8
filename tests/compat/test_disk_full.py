"""A full disk, on a real (small) tmpfs: puts are refused with a retryable 503 before SQLite
fails, gets and deletes go on, the server recovers by itself once space comes back (messages
consumed, or files removed), and every acknowledged message is still delivered after kill -9.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import oci
import pytest

from berthlib import BerthServer, RawStomp, berth_bin, error_text, raises_service_error, unique_name, wait_for

pytestmark = pytest.mark.sqlite_only

BODY = "x" * 100_000  # 5 of these make one put of ~500 KB, near the 512 KiB limit


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode}); "
                    "the disk-full tests need root and mount permission")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def put_batch(qc, queue_id: str, n: int = 5):
    entries = [oci.queue.models.PutMessagesDetailsEntry(content=BODY) for _ in range(n)]
    return qc.put_messages(queue_id, oci.queue.models.PutMessagesDetails(messages=entries)).data.messages


def fill(qc, queue_id: str) -> tuple[set, oci.exceptions.ServiceError]:
    """Puts until refused; returns the acknowledged ids and the refusal."""
    acked: set = set()
    for _ in range(400):
        try:
            acked.update(m.id for m in put_batch(qc, queue_id))
        except oci.exceptions.ServiceError as e:
            return acked, e
    raise AssertionError("a 48 MB disk took 400 puts of 500 KB")


def drain(qc, queue_id: str, count: int) -> set:
    """Gets and deletes `count` messages; returns their ids."""
    done: set = set()
    while len(done) < count:
        got = qc.get_messages(queue_id, limit=min(20, count - len(done)), timeout_in_seconds=2).data.messages
        assert got, f"only {len(done)} of {count} messages could be got"
        for m in got:
            qc.delete_message(queue_id, m.receipt)
            done.add(m.id)
    return done


def test_a_full_disk_refuses_puts_keeps_gets_and_deletes_and_recovers_by_itself(small_disk, tmp_path):
    srv = BerthServer(berth_bin(), small_disk / "data", tmp_path / "logs", ["--min-free-space", "16MiB"]).start()
    t = srv.tenant()
    qc = t.new_queue_client()
    queue_id = t.create_queue(unique_name("full"))

    acked, refusal = fill(qc, queue_id)
    assert acked, "nothing fit at all"
    assert refusal.status == 503 and refusal.code == "ServiceUnavailable", refusal
    assert "storage space" in refusal.message, refusal.message
    assert refusal.headers.get("opc-request-id")
    assert shutil.disk_usage(small_disk).free > 4 << 20, "refused before the disk itself was full"
    stomp = RawStomp(srv.stomp_addr)
    stomp.login(t)
    stomp.send_frame("SEND", {"destination": queue_id, "receipt": "full-1"}, BODY)
    error = stomp.read_frame()
    assert error.command == "ERROR" and error.headers.get("receipt-id") == "full-1"
    assert "storage space" in error_text(error)
    stomp.close()

    # Consumers go on while full, and what they delete makes room for new puts.
    deleted = drain(qc, queue_id, 100)
    acked.update(m.id for m in put_batch(qc, queue_id))
    assert qc.get_stats(queue_id).data.queue.visible_messages == len(acked) - len(deleted)

    # Fill the disk to the last byte with another file: even SQLite's own writes fail.
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert shutil.disk_usage(small_disk).free == 0
    with raises_service_error(503, "ServiceUnavailable"):
        put_batch(qc, queue_id, 1)

    # Space comes back: the server recovers without a restart.
    filler.unlink()
    def accepted():
        try:
            return bool(put_batch(qc, queue_id, 1))
        except oci.exceptions.ServiceError as e:
            assert e.status == 503, e
            return False

    wait_for(accepted, timeout=10, desc="puts accepted again")
    acked_after = set(m.id for m in put_batch(qc, queue_id, 1))
    acked |= acked_after
    assert srv.health().status_code == 200

    # Nothing acknowledged is lost, kill -9 included.
    srv.kill()
    srv.start()
    t = srv.tenant()
    qc = t.new_queue_client()
    remaining = qc.get_stats(queue_id).data.queue.visible_messages
    assert remaining >= len(acked) - len(deleted)
    seen = drain(qc, queue_id, remaining)
    assert acked - deleted <= seen, f"{len(acked - deleted - seen)} acknowledged messages were lost"
    assert srv.stop() == 0
    assert os.path.exists(small_disk / "data" / "berth.sqlite3")
