"""The web console's switch and headers (its pages are tested in Chromium, tests/console)."""

from __future__ import annotations

import requests


def test_the_console_is_served_by_default_and_can_be_switched_off(server, fresh_server):
    r = requests.get(server.base + "/", timeout=10)
    assert r.url.endswith("/console/login") and r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    refused = requests.post(server.base + "/console/login", data={"login": "default/admin", "passcode": "wrong"},
                            allow_redirects=False, timeout=10)
    assert refused.status_code == 303 and refused.headers["location"] == "/console/login?failed=1"
    assert "set-cookie" not in refused.headers

    off = fresh_server(["--console=false"])
    gone = requests.get(off.base + "/console/login", timeout=10)
    assert gone.status_code == 404 and gone.json()["code"] == "NotFound"
