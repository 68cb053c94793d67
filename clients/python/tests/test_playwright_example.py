"""examples/playwright_login.py, run by the real daemon, drives a fake login page in Debian's
chromium and hands its captcha to a person. Where chromium or playwright is absent it skips,
except in CI (``CI=true``), where it fails, like the ``tokend_bin`` fixture."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List
from urllib.parse import parse_qs

import httpx
import pytest

from conftest import REPO, Daemon, wait_until
from tokend_client import AcquisitionFailed, Client

CHROMIUM = os.environ.get("TOKEND_CHROMIUM") or shutil.which("chromium") or ""


def missing_browser_stack() -> List[str]:
    """What this test needs and does not have: playwright (the package), chromium."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (pip install playwright)")
    if not CHROMIUM or not Path(CHROMIUM).exists():
        missing.append("chromium (apt-get install chromium, or set TOKEND_CHROMIUM)")
    return missing


@pytest.fixture(autouse=True)
def browser_stack() -> None:
    missing = missing_browser_stack()
    if not missing:
        return
    message = "the Playwright example needs " + " and ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail(message + " in CI")
    pytest.skip(message)


CAPTCHA = "4821"
PAGE = """<!doctype html><meta charset="utf-8"><title>登录</title>
<form method="post" action="/login">
<input id="username" name="username"><input id="password" name="password" type="password">
<svg id="captcha-image" width="80" height="30"><text x="5" y="22">{captcha}</text></svg>
<input id="captcha" name="captcha"><button id="submit">登录</button></form>"""


class LoginPage:
    """A single-page-style login: the token lands in localStorage, errors in `.error`."""

    def __init__(self, password: str) -> None:
        self.tokens = []
        page = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def send(self, body: str) -> None:
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self.send(PAGE.format(captcha=CAPTCHA))

            def do_POST(self) -> None:  # noqa: N802
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                get = lambda k: form.get(k, [""])[0]  # noqa: E731
                if get("captcha") != CAPTCHA:
                    return self.send('<div class="error">验证码错误</div>')
                if get("password") != password:
                    return self.send('<div class="error">账号或密码错误</div>')
                token = f"pw-{get('username')}-{secrets.token_hex(16)}"
                page.tokens.append(token)
                self.send(f"<script>localStorage.setItem('token', {json.dumps(token)})</script>ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return "http://%s:%d/login" % self.server.server_address[:2]


def answer_the_captcha(url: str) -> None:
    def pending():
        data = httpx.get(f"{url}/api/v1/automation/captchas", trust_env=False).json()["data"]
        return data["captchas"]

    [captcha] = wait_until("the browser's captcha handed to a person", pending, within=60)
    assert captcha["image"].startswith("data:image/png;base64,")
    posted = httpx.post(
        f"{url}/api/v1/automation/captchas/{captcha['id']}", json={"answer": CAPTCHA}, trust_env=False
    )
    assert posted.status_code == 200, posted.text


def test_playwright_login_program_with_a_person_solving_the_captcha(tokend_bin: Path, tmp_path: Path) -> None:
    page = LoginPage(password="pw-alice")
    program = REPO / "examples" / "playwright_login.py"
    site = (
        '[[sites]]\nname = "spa"\ndriver = "command"\n'
        f'command = ["{sys.executable}", "{program}", "--login-url", "{page.url}"]\n'
    )
    d = Daemon(tokend_bin, tmp_path, site)
    # A browser login takes longer than an HTTP one.
    d.config.write_text(d.config.read_text().replace("[retry]\n", "[retry]\nlogin_timeout = 90\n", 1))
    d.add_account("spa", "alice", "pw-alice")
    d.add_account("spa", "mallory", "not-her-password")
    d.start()
    try:
        results = []
        with Client(d.url) as tokend:
            waiter = threading.Thread(target=lambda: results.append(tokend.acquire("spa", account="alice")))
            waiter.start()
            answer_the_captcha(d.url)
            waiter.join(90)
            assert results and results[0].token == page.tokens[-1]

            failures = []

            def refused():
                try:
                    tokend.acquire("spa", account="mallory")
                except AcquisitionFailed as e:
                    failures.append(e)

            waiter = threading.Thread(target=refused)
            waiter.start()
            answer_the_captcha(d.url)
            waiter.join(90)
        assert failures and failures[0].error_type == "credential_error"
        assert "not-her-password" not in failures[0].message
    finally:
        d.stop()
