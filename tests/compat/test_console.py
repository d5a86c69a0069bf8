"""The web console's switch and headers (its pages are tested in Chromium, tests/console)."""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests


def test_the_console_is_served_by_default_and_can_be_switched_off(server, fresh_server):
    r = requests.get(server.base + "/", timeout=10)
    assert r.url.endswith("/console/login") and r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', r.text).group(1)
    assert r.cookies["berth_console_login"] == token, "the login form's token, also in a cookie"
    browser = requests.Session()
    browser.cookies.set("berth_console_login", token)
    refused = browser.post(server.base + "/console/login",
                           data={"login": "default/admin", "passcode": "wrong", "csrf": token},
                           allow_redirects=False, timeout=10)
    assert refused.status_code == 303 and refused.headers["location"] == "/console/login?failed=1"
    assert "berth_console=" not in refused.headers.get("set-cookie", "")

    off = fresh_server(["--console=false"])
    gone = requests.get(off.base + "/console/login", timeout=10)
    assert gone.status_code == 404 and gone.json()["code"] == "NotFound"


def login_form(base):
    """A browser that opened the login page: its session and the form's token."""
    browser = requests.Session()
    page = browser.get(base + "/console/login", timeout=10)
    return browser, re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)


def test_a_login_post_from_another_site_logs_nobody_in(server):
    admin = server.admin_creds()
    forged = requests.post(server.base + "/console/login",
                           data={"login": admin["stompLogin"], "passcode": admin["stompPasscode"]},
                           allow_redirects=False, timeout=10)
    assert forged.status_code == 303 and forged.headers["location"] == "/console/login"
    assert "berth_console=" not in forged.headers.get("set-cookie", ""), "no session without the form's token"
    browser, token = login_form(server.base)
    ok = browser.post(server.base + "/console/login",
                      data={"login": admin["stompLogin"], "passcode": admin["stompPasscode"], "csrf": token},
                      allow_redirects=False, timeout=10)
    assert ok.status_code == 303 and ok.headers["location"] == "/console"
    assert "berth_console=" in ok.headers["set-cookie"] and "HttpOnly" in ok.headers["set-cookie"]


def test_guessing_passcodes_is_slowed_then_refused(server):
    login = f"default/nobody-{uuid.uuid4().hex[:8]}"
    browser, token = login_form(server.base)

    def attempt(_):
        r = browser.post(server.base + "/console/login", data={"login": login, "passcode": "guess", "csrf": token},
                         allow_redirects=False, timeout=30)
        return r.headers["location"]

    assert [attempt(i) for i in range(4)] == ["/console/login?failed=1"] * 4
    # Past the free failures, attempts take turns 0.25 s apart; those whose turn is more
    # than 5 s away are refused at once.
    with ThreadPoolExecutor(40) as pool:
        outcomes = list(pool.map(attempt, range(40)))
    assert "/console/login?failed=busy" in outcomes, outcomes
    assert set(outcomes) <= {"/console/login?failed=1", "/console/login?failed=busy"}
    shown = browser.get(server.base + "/console/login?failed=busy", timeout=10).text
    assert "Too many failed logins" in shown


def test_cookies_are_secure_behind_an_https_public_url(server, fresh_server):
    plain = requests.get(server.base + "/console/login", timeout=10)
    assert "Secure" not in plain.headers["set-cookie"], "plain HTTP: a Secure cookie would never come back"
    proxied = fresh_server(["--public-url", "https://queues.example.test"])
    page = requests.get(proxied.base + "/console/login", timeout=10)
    assert "Secure" in page.headers["set-cookie"]
