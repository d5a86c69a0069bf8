"""The official `oci` CLI against Berth (JSON output, kebab-case keys)."""

from __future__ import annotations

import json

import pytest

from berthlib import Cli, cli_items, fake_compartment_id, unique_name, wait_for

WAIT = ("--wait-for-state", "SUCCEEDED", "--wait-interval-seconds", "1", "--max-wait-seconds", "60")


@pytest.fixture(scope="module")
def cli(server, tenant):
    return Cli(tenant.config_path, server.base)


def test_cli_queue_admin_lifecycle(cli):
    comp = fake_compartment_id()
    name = unique_name("cli")
    wr = cli.run("queue", "queue-admin", "queue", "create", "--display-name", name, "-c", comp,
                 "--visibility-in-seconds", "10", "--dlq-delivery-count", "3", *WAIT).data
    assert wr["status"] == "SUCCEEDED"
    assert wr["operation-type"] == "CREATE_QUEUE"
    res = wr["resources"][0]
    assert res["entity-type"] == "queue" and res["action-type"] == "CREATED"
    qid = res["identifier"]
    assert qid.startswith("ocid1.queue.")

    out = cli.run("queue", "queue-admin", "queue", "get", "--queue-id", qid).json
    assert out.get("etag")
    q = out["data"]
    assert q["display-name"] == name and q["lifecycle-state"] == "ACTIVE"
    assert q["visibility-in-seconds"] == 10 and q["dead-letter-queue-delivery-count"] == 3
    assert q["retention-in-seconds"] == 86400
    assert q["messages-endpoint"] == cli.endpoint

    listed = cli_items(cli.run("queue", "queue-admin", "queue", "list", "-c", comp, "--all").data)
    assert [x["id"] for x in listed] == [qid]
    listed = cli_items(cli.run("queue", "queue-admin", "queue", "list", "--display-name", name).data)
    assert [x["id"] for x in listed] == [qid]

    upd = cli.run("queue", "queue-admin", "queue", "update", "--queue-id", qid, "--visibility-in-seconds", "5",
                  "--force", *WAIT).data
    assert upd["status"] == "SUCCEEDED" and upd["operation-type"] == "UPDATE_QUEUE"
    assert cli.run("queue", "queue-admin", "queue", "get", "--queue-id", qid).data["visibility-in-seconds"] == 5

    got = cli.run("queue", "queue-admin", "work-request", "get", "--work-request-id", wr["id"]).data
    assert got["id"] == wr["id"] and got["status"] == "SUCCEEDED"
    wrs = cli_items(cli.run("queue", "queue-admin", "work-request", "list", "-c", comp, "--all",
                            "--page-size", "1").data)
    assert {w["id"] for w in wrs} == {wr["id"], upd["id"]}

    dele = cli.run("queue", "queue-admin", "queue", "delete", "--queue-id", qid, "--force", *WAIT).data
    assert dele["status"] == "SUCCEEDED" and dele["operation-type"] == "DELETE_QUEUE"
    assert cli.run("queue", "queue-admin", "queue", "get", "--queue-id", qid).data["lifecycle-state"] == "DELETED"
    r = cli.run("queue", "messages", "get-stats", "--queue-id", qid, check=False)
    assert r.rc != 0
    assert "NotAuthorizedOrNotFound" in r.stderr


def test_cli_message_commands(cli, make_queue):
    qid = make_queue()
    msgs = [{"content": "c1"},
            {"content": "c2", "metadata": {"channelId": "cli-ch", "customProperties": {"a": "b"}}},
            {"content": "c3"}]
    put = cli.run("queue", "messages", "put-messages", "--queue-id", qid, "--messages", json.dumps(msgs)).data
    assert len(put["messages"]) == 3
    assert all(isinstance(m["id"], int) and m["expire-after"] for m in put["messages"])

    st = cli.run("queue", "messages", "get-stats", "--queue-id", qid).data
    assert st["queue"]["visible-messages"] == 3 and st["dlq"]["visible-messages"] == 0
    st = cli.run("queue", "messages", "get-stats", "--queue-id", qid, "--channel-id", "cli-ch").data
    assert st["queue"]["visible-messages"] == 1

    wait_for(lambda: cli_items(cli.run("queue", "channels", "list-channels", "--queue-id", qid).data) == ["cli-ch"],
             5, desc="list-channels == ['cli-ch']")

    # An unfiltered GetMessages serves one channel at a time: take cli-ch first, then the rest.
    [c2] = cli.run("queue", "messages", "get-messages", "--queue-id", qid, "--channel-filter", "cli-ch",
                   "--visibility-in-seconds", "60", "--timeout-in-seconds", "0").data["messages"]
    assert c2["content"] == "c2"
    assert c2["metadata"]["channel-id"] == "cli-ch"
    assert c2["metadata"]["custom-properties"] == {"a": "b"}
    rest = cli.run("queue", "messages", "get-messages", "--queue-id", qid, "--limit", "3",
                   "--visibility-in-seconds", "60", "--timeout-in-seconds", "0").data["messages"]
    assert [m["content"] for m in rest] == ["c1", "c3"]
    got = rest[:1] + [c2] + rest[1:]
    assert [m["id"] for m in got] == [m["id"] for m in put["messages"]]
    assert all(m["delivery-count"] == 1 and m["receipt"] for m in got)
    m1, m2, m3 = got

    upd = cli.run("queue", "messages", "update-message", "--queue-id", qid, "--message-receipt", m1["receipt"],
                  "--visibility-in-seconds", "120").data
    assert upd["id"] == m1["id"] and upd["visible-after"]
    upd = cli.run("queue", "messages", "update-messages", "--queue-id", qid, "--entries",
                  json.dumps([{"receipt": m2["receipt"], "visibilityInSeconds": 120},
                              {"receipt": "bogus", "visibilityInSeconds": 120}])).data
    assert upd["client-failures"] == 1 and upd["server-failures"] == 0
    assert upd["entries"][0]["id"] == m2["id"] and upd["entries"][1]["error-code"] == 404

    r = cli.run("queue", "messages", "delete-message", "--queue-id", qid, "--message-receipt", m1["receipt"],
                "--force")
    assert r.rc == 0
    dele = cli.run("queue", "messages", "delete-messages", "--queue-id", qid, "--entries",
                   json.dumps([{"receipt": m2["receipt"]}, {"receipt": m3["receipt"]}])).data
    assert dele["client-failures"] == 0 and dele["server-failures"] == 0
    st = cli.run("queue", "messages", "get-stats", "--queue-id", qid).data
    assert (st["queue"]["visible-messages"], st["queue"]["in-flight-messages"]) == (0, 0)

    r = cli.run("queue", "messages", "delete-message", "--queue-id", qid, "--message-receipt", m1["receipt"],
                "--force", check=False)
    assert r.rc != 0 and "NotAuthorizedOrNotFound" in r.stderr


def test_cli_purge_queue(cli, make_queue):
    qid = make_queue()
    cli.run("queue", "messages", "put-messages", "--queue-id", qid, "--messages",
            json.dumps([{"content": "p1"}, {"content": "p2", "metadata": {"channelId": "purged"}}]))
    wr = cli.run("queue", "queue-admin", "queue", "purge", "--queue-id", qid, "--purge-type", "NORMAL",
                 "--channel-ids", json.dumps(["purged"]), *WAIT).data
    assert wr["status"] == "SUCCEEDED" and wr["operation-type"] == "PURGE_QUEUE"
    assert cli.run("queue", "messages", "get-stats", "--queue-id", qid).data["queue"]["visible-messages"] == 1
    wr = cli.run("queue", "queue-admin", "queue", "purge", "--queue-id", qid, "--purge-type", "BOTH", *WAIT).data
    assert wr["status"] == "SUCCEEDED"
    st = cli.run("queue", "messages", "get-stats", "--queue-id", qid).data
    assert st["queue"]["visible-messages"] == 0 and st["dlq"]["visible-messages"] == 0
    got = cli.run("queue", "messages", "get-messages", "--queue-id", qid, "--timeout-in-seconds", "0").data
    assert got["messages"] == []
