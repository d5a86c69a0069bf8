"""The data dir and its database know each other (store-id): start-up refuses a missing,
empty, foreign or swapped database with a clear error and exit 1, instead of quietly
serving an empty store that no credential fits; --start-fresh begins a new store.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess

import pytest

from berthlib import BerthServer, berth_bin, put, unique_name

pytestmark = pytest.mark.sqlite_only


def start_fails(srv: BerthServer, *needles: str) -> str:
    with pytest.raises(RuntimeError) as ei:
        srv.start()
    text = str(ei.value)
    assert "exited with code 1" in text, text[-2000:]
    for needle in needles:
        assert needle in text, text[-2000:]
    return text


def new_server(tmp_path, name: str, extra=()) -> BerthServer:
    return BerthServer(berth_bin(), tmp_path / name, tmp_path / f"{name}-logs", extra)


def drop_database(srv: BerthServer, keep_empty: bool) -> None:
    for suffix in ("", "-wal", "-shm"):
        (srv.data_dir / f"berth.sqlite3{suffix}").unlink(missing_ok=True)
    if keep_empty:
        (srv.data_dir / "berth.sqlite3").write_bytes(b"")


@pytest.mark.parametrize("keep_empty", [False, True], ids=["deleted", "zero-length"])
def test_a_lost_database_stops_start_up_until_told_to_start_fresh(tmp_path, keep_empty):
    srv = new_server(tmp_path, "a").start()
    t = srv.tenant()
    put(t.qc, t.create_queue(unique_name("lost")), ["kept?"])
    assert srv.stop() == 0
    old_config = srv.config_path.read_text()
    drop_database(srv, keep_empty)

    start_fails(srv, "berth.sqlite3 is " + ("empty" if keep_empty else "missing"), "--start-fresh")
    assert srv.config_path.read_text() == old_config, "a refused start changes nothing"

    srv.extra_args.append("--start-fresh")
    srv.start()
    assert srv.config_path.read_text() != old_config, "new credentials for the new store"
    assert list(srv.data_dir.glob("credentials.before-*/oci-config")), "old credentials moved aside"
    fresh = srv.tenant()
    assert fresh.admin.list_queues(compartment_id=fresh.compartment_id).data.items == []
    assert srv.stop() == 0
    srv.extra_args.remove("--start-fresh")
    srv.start()  # paired with the new store now
    assert srv.stop() == 0


def test_a_database_from_another_data_dir_is_refused(tmp_path):
    a, b = new_server(tmp_path, "a").start(), new_server(tmp_path, "b").start()
    assert a.stop() == 0 and b.stop() == 0
    shutil.copy(b.data_dir / "berth.sqlite3", a.data_dir / "berth.sqlite3")
    start_fails(a, "belongs to store")


def test_a_foreign_sqlite_database_is_refused_and_left_as_it_was(tmp_path):
    srv = new_server(tmp_path, "foreign")
    db = srv.data_dir / "berth.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (9.5)")
    start_fails(srv, "is not a Berth database")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete", "not switched to WAL"
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
    assert tables == ["invoices"]


def test_a_data_dir_from_before_store_ids_is_paired_on_its_first_start(tmp_path):
    srv = new_server(tmp_path, "old").start()
    t = srv.tenant()
    queue_id = t.create_queue(unique_name("old"))
    put(t.qc, queue_id, ["from before"])
    assert srv.stop() == 0
    # As an older Berth left it: no id in the database, no store-id file.
    with sqlite3.connect(srv.data_dir / "berth.sqlite3") as conn:
        conn.execute("DELETE FROM meta WHERE key = 'store_id'")
    (srv.data_dir / "store-id").unlink()
    srv.start()
    assert (srv.data_dir / "store-id").read_text().strip()
    t = srv.tenant()  # the same credentials, on the new port
    got = t.qc.get_messages(queue_id, limit=1, timeout_in_seconds=0).data.messages
    assert [m.content for m in got] == ["from before"]
    assert srv.stop() == 0


def test_a_port_in_use_fails_start_up_with_one_line_and_leaves_no_data_dir_behind(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    data_dir = tmp_path / "never"
    try:
        res = subprocess.run([berth_bin(), "serve", "--data-dir", str(data_dir), "--http-addr", f"127.0.0.1:{port}",
                              "--stomp-addr", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert res.returncode == 1, res.stderr
    errors = [l for l in res.stderr.splitlines() if l.startswith("berth: ")]
    assert errors == [f"berth: cannot bind 127.0.0.1:{port}: Address already in use (os error 98)"], res.stderr
    assert "Caused by" not in res.stderr
    assert not (data_dir / "berth.sqlite3").exists() and not (data_dir / "credentials").exists()

