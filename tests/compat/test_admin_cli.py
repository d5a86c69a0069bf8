"""The admin CLI (`berth queue|tenancy|user ...`) run as the real binary against the
session server: signed with the data dir's admin credentials or an OCI config file."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from berthlib import berth_bin, get, put, stats, counts, unique_name


def berth(server, *args, check=True, data_dir=None):
    # `queue` commands talk to the server; `tenancy` and `user` read its store.
    """Runs `berth ARGS --data-dir ... --endpoint ...`; the CompletedProcess."""
    cmd = [berth_bin(), *args, "--data-dir", str(data_dir or server.data_dir)]
    if args[0] == "queue":
        cmd += ["--endpoint", server.base]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=server.env)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def rows(out: str) -> list[list[str]]:
    """A printed table without its header, split on runs of two spaces."""
    lines = [l for l in out.splitlines() if l.strip()]
    return [re.split(r"\s{2,}", l.strip()) for l in lines[1:]]


def as_json(server, *args):
    return json.loads(berth(server, *args, "--json").stdout)


def test_a_queue_made_fed_looked_at_drained_and_deleted_from_the_cli(server, qc):
    name = unique_name("admin-cli")
    created = berth(server, "queue", "create", name, "--dead-letter-after", "3", "--retention", "3600")
    qid = created.stdout.strip()
    assert qid.startswith("ocid1.queue.")
    listed = as_json(server, "queue", "list")["items"]
    assert [q["id"] for q in listed if q["displayName"] == name] == [qid]
    assert [qid, name, "ACTIVE"] == rows(berth(server, "queue", "list").stdout)[
        [r[1] for r in rows(berth(server, "queue", "list").stdout)].index(name)][:3]
    shown = as_json(server, "queue", "get", name)
    assert (shown["id"], shown["deadLetterQueueDeliveryCount"], shown["retentionInSeconds"]) == (qid, 3, 3600)

    put_ids = [r[0] for r in rows(berth(server, "queue", "put", name, "first", "second", "--channel", "cli-c").stdout)]
    assert len(put_ids) == 2
    berth(server, "queue", "put", qid, "third")
    assert counts(stats(qc, qid)) == ((3, 0), (0, 0)), "the SDK sees what the CLI put"
    table = rows(berth(server, "queue", "stats", name).stdout)
    assert table[0][:3] == ["queue", "3", "0"] and table[1][:2] == ["dlq", "0"]

    peeked = as_json(server, "queue", "peek", name)["messages"]
    assert [m["content"] for m in peeked] == ["first", "second", "third"]
    assert [r[1] for r in rows(berth(server, "queue", "peek", name).stdout)] == ["VISIBLE"] * 3
    assert counts(stats(qc, qid)) == ((3, 0), (0, 0)), "peeking leased nothing"

    got = as_json(server, "queue", "get-messages", name, "--limit", "3", "--channel", "cli-c", "--delete")
    assert [m["content"] for m in got["messages"]] == ["first", "second"]
    assert counts(stats(qc, qid)) == ((1, 0), (0, 0)), "--delete consumed them"
    leased = rows(berth(server, "queue", "get-messages", name, "--visibility", "60").stdout)
    assert [r[-1] for r in leased] == ["third"] and leased[0][1] == "1"
    assert [m["state"] for m in as_json(server, "queue", "peek", name, "--in-flight")["messages"]] == ["IN_FLIGHT"]

    berth(server, "queue", "purge", name, "--type", "both")
    assert counts(stats(qc, qid)) == ((0, 0), (0, 0))
    assert "moved 0 messages back" in berth(server, "queue", "redrive", name).stdout
    berth(server, "queue", "delete", name)
    assert as_json(server, "queue", "get", qid)["lifecycleState"] == "DELETED"
    gone = berth(server, "queue", "get", name, check=False)
    assert gone.returncode == 1 and gone.stderr.strip() == f'berth: no queue named "{name}" in the tenancy ' \
        "(give its OCID if it is in another compartment)"


def test_redrive_from_the_cli_moves_dead_letters_back(server, qc, make_queue):
    qid = make_queue(dead_letter_queue_delivery_count=1)
    put(qc, qid, ["poison"])
    [m] = get(qc, qid, visibility_in_seconds=0)
    # A lease of 0 s ended at once: the next look settles it into the DLQ.
    assert [x["content"] for x in as_json(server, "queue", "peek", qid, "--dlq")["messages"]] == ["poison"]
    assert "moved 1 message back" in berth(server, "queue", "redrive", qid).stdout
    assert [x["deliveryCount"] for x in as_json(server, "queue", "peek", qid)["messages"]] == [0]


def test_errors_are_one_line_with_the_oci_code_and_request_id(server, make_queue):
    missing = "ocid1.queue.oc1.iad.amaaaaaamissing"
    res = berth(server, "queue", "stats", missing, check=False)
    assert res.returncode == 1
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("berth: 404 NotAuthorizedOrNotFound: ") and "opc-request-id" in line
    bad = berth(server, "queue", "peek", make_queue(), "--limit", "0", check=False)
    assert bad.returncode == 1 and "400 InvalidParameter" in bad.stderr


def test_an_oci_config_signs_as_its_own_tenancy(server, tenant_b, make_queue):
    theirs = make_queue(unique_name("admins"))
    cmd = [berth_bin(), "queue", "list", "--json", "--config", str(tenant_b.config_path), "--endpoint", server.base]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=server.env)
    assert res.returncode == 0, res.stderr
    assert theirs not in res.stdout, "another tenancy's queue must not be listed"
    cmd[2:4] = ["stats", theirs]
    denied = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=server.env)
    assert denied.returncode == 1 and "404 NotAuthorizedOrNotFound" in denied.stderr


def test_tenancies_and_users_are_listed_from_the_store(server, tenant_b):
    tenancies = json.loads(berth(server, "tenancy", "list", "--json").stdout)["items"]
    names = [t["name"] for t in tenancies]
    b_name = tenant_b.stomp_login.split("/")[0]
    assert "default" in names and b_name in names and names == sorted(names)
    users = json.loads(berth(server, "user", "list", "--tenancy", b_name, "--json").stdout)["items"]
    assert [(u["tenancy"], u["name"], u["id"]) for u in users] == [(b_name, "alice", tenant_b.creds["userId"])]
    table = rows(berth(server, "user", "list").stdout)
    assert ["default", "admin"] in [r[:2] for r in table]
    nobody = berth(server, "user", "list", "--tenancy", "no-such-tenancy", check=False)
    assert nobody.returncode == 1 and 'no tenancy named "no-such-tenancy"' in nobody.stderr


@pytest.mark.sqlite_only
def test_listing_a_data_dir_without_a_database_fails_and_creates_nothing(server, tmp_path):
    typo = tmp_path / "berth-dat"
    res = berth(server, "user", "list", check=False, data_dir=typo)
    assert res.returncode == 1
    [line] = res.stderr.strip().splitlines()
    assert line == f"berth: no Berth database in {typo} (give the server's --data-dir)"
    assert not typo.exists(), "a mistyped data dir must not get a new, empty store"


def test_more_than_one_request_of_messages_is_put_and_consumed_in_batches(server, qc, make_queue):
    qid = make_queue()
    contents = [f"m{i:02}" for i in range(45)]
    put_ids = rows(berth(server, "queue", "put", qid, *contents).stdout)
    assert len(put_ids) == 45, "three PutMessages requests of at most 20"
    got = as_json(server, "queue", "get-messages", qid, "--limit", "32", "--delete")["messages"]
    assert [m["content"] for m in got] == contents[:32]
    assert counts(stats(qc, qid)) == ((13, 0), (0, 0)), "all 32 deleted, in batches of 20"


def test_unsigned_needs_no_credentials_against_a_server_without_auth(fresh_server, tmp_path):
    open_server = fresh_server(["--insecure-no-auth"])
    tenancy = open_server.admin_creds()["tenancyId"]
    empty = tmp_path / "no-credentials"
    cmd = [berth_bin(), "queue", "--data-dir", str(empty), "--endpoint", open_server.base, "--unsigned"]
    made = subprocess.run([*cmd, "create", "unsigned-q", "--compartment-id", tenancy],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    listed = subprocess.run([*cmd, "list", "--json", "--compartment-id", tenancy],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "unsigned-q" in listed.stdout, listed.stderr
    by_name = subprocess.run([*cmd, "stats", "unsigned-q"], capture_output=True, text=True, timeout=60)
    assert by_name.returncode == 1
    assert "give --compartment-id or a queue's OCID" in by_name.stderr


def test_consumer_groups_are_listed_and_read_one_by_one_from_the_cli(server, tenant):
    from oci.queue.models import ConsumerGroupsCapabilityDetails, CreateConsumerGroupDetails
    qid = tenant.create_queue(
        capabilities=[ConsumerGroupsCapabilityDetails(primary_consumer_group_display_name="main")])
    tenant.admin.create_consumer_group(
        CreateConsumerGroupDetails(display_name="audit", queue_id=qid, dead_letter_queue_delivery_count=2))
    listed = rows(berth(server, "queue", "groups", qid).stdout)
    assert [r[1:4] for r in listed] == [["main", "ACTIVE", "queue's"], ["audit", "ACTIVE", "2"]], listed
    audit = listed[1][0]

    berth(server, "queue", "put", qid, "a", "b")
    peeked = as_json(server, "queue", "peek", qid, "--consumer-group", "AUDIT")["messages"]
    assert [m["content"] for m in peeked] == ["a", "b"], "names regardless of case"
    got = as_json(server, "queue", "get-messages", qid, "--limit", "2", "--consumer-group", "audit", "--delete")
    assert [m["content"] for m in got["messages"]] == ["a", "b"]
    assert rows(berth(server, "queue", "stats", qid, "--consumer-group", audit).stdout)[0][:3] == ["queue", "0", "0"]
    assert rows(berth(server, "queue", "stats", qid).stdout)[0][:3] == ["queue", "2", "0"], "the primary group's"
    # Delivered twice in audit (its threshold), the message goes to audit's DLQ only.
    berth(server, "queue", "put", qid, "twice")
    for _ in range(2):
        berth(server, "queue", "get-messages", qid, "--consumer-group", "audit", "--visibility", "0")
    assert "moved 0 messages back" in berth(server, "queue", "redrive", qid).stdout, "the primary group's DLQ"
    assert "moved 1 message back" in berth(server, "queue", "redrive", qid, "--consumer-group", "audit").stdout
    berth(server, "queue", "put", qid, "c")
    berth(server, "queue", "purge", qid, "--consumer-group", "all")
    for group in ("main", "audit"):
        left = rows(berth(server, "queue", "stats", qid, "--consumer-group", group).stdout)[0][:2]
        assert left == ["queue", "0"], (group, left)
    missing = berth(server, "queue", "stats", qid, "--consumer-group", "nobody", check=False)
    assert missing.returncode != 0 and "no consumer group named" in missing.stderr, missing.stderr
