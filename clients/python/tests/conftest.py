"""The real tokend daemon (the repository's own binary) and a fake portal, for the client tests.

The binary is ``$TOKEND_BIN``, else ``target/debug/tokend``, else ``target/release/tokend``
of this checkout (``cargo build`` makes it). Without one the tests skip, except in CI
(``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
SECRET_KEY = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="


def tokend_binary() -> Optional[Path]:
    named = os.environ.get("TOKEND_BIN")
    if named:
        return Path(named)
    for profile in ("debug", "release"):
        path = REPO / "target" / profile / "tokend"
        if path.exists():
            return path
    return None


@pytest.fixture(scope="session")
def tokend_bin() -> Path:
    path = tokend_binary()
    if path is None or not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("no tokend binary: run `cargo build` first (or set TOKEND_BIN)")
        pytest.skip("no tokend binary: run `cargo build` first (or set TOKEND_BIN)")
    return path


class Portal:
    """A portal with a login endpoint and one protected page (``GET /work``)."""

    def __init__(self) -> None:
        self.passwords: Dict[str, str] = {}
        self.live: Dict[str, str] = {}  # token -> account
        self.logins: List[str] = []
        self.work_calls = 0
        self.login_delay = 0.0
        #: While set, every login answers 503 (the portal is down).
        self.down = False
        self.lock = threading.Lock()
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/login":
                    return self.answer(404, {"msg": "no such page"})
                time.sleep(portal.login_delay)
                if portal.down:
                    return self.answer(503, {"msg": "维护中"})
                account, password = body.get("username"), body.get("password")
                with portal.lock:
                    portal.logins.append(account)
                    if portal.passwords.get(account) != password:
                        return self.answer(401, {"msg": "账号或密码错误"})
                    token = f"tok-{account}-{secrets.token_hex(24)}"
                    portal.live[token] = account
                self.answer(200, {"data": {"token": token, "expires_in": 3600}})

            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/work":
                    return self.answer(404, {"msg": "no such page"})
                header = self.headers.get("Authorization") or ""
                token = header[len("Bearer "):] if header.startswith("Bearer ") else ""
                with portal.lock:
                    portal.work_calls += 1
                    account = portal.live.get(token)
                if account is None:
                    return self.answer(401, {"msg": "登录已失效"})
                self.answer(200, {"account": account})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def revoke_all(self) -> None:
        with self.lock:
            self.live.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Daemon:
    """``tokend serve`` on 127.0.0.1:0 with a config of its own, stopped at the end."""

    def __init__(self, binary: Path, folder: Path, sites: str, admin_token: str = "") -> None:
        self.binary, self.folder = binary, folder
        self.config = folder / "tokend.toml"
        admin = f'admin_token = "{admin_token}"\n' if admin_token else ""
        self.config.write_text(
            f'[server]\nlisten = "127.0.0.1:0"\n{admin}'
            f'[database]\nurl = "sqlite://{folder}/tokend.db"\n'
            f'[history]\nspool_file = "{folder}/history.spool"\n'
            "[retry]\nnetwork_retry_delay_base = 0.05\ncaptcha_retry_delay = 0.05\n"
            f"{sites}\n"
        )
        self.process: Optional[subprocess.Popen] = None
        self.log: "queue.Queue[str]" = queue.Queue()
        self.url = ""

    def env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKEND_", "REDIS_", "DATABASE_"))}
        env.update({"TOKEND_SECRET_KEY": SECRET_KEY, "RUST_LOG": "info"})
        for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.pop(proxy, None)
        return env

    def add_account(self, site: str, account: str, password: str) -> None:
        subprocess.run(
            [str(self.binary), "accounts", "add", site, account, "--password-stdin", "--config", str(self.config)],
            input=password + "\n",
            text=True,
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> "Daemon":
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        deadline = time.monotonic() + 30
        seen: List[str] = []
        while time.monotonic() < deadline:
            try:
                line = self.log.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            found = re.search(r"event=listening addr=(\S+)", line)
            if found:
                self.url = f"http://{found.group(1)}"
                return self
        self.stop()
        raise RuntimeError("tokend did not start listening:\n" + "".join(seen))

    def _read_log(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.log.put(line)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def site_block(name: str, portal: Portal, extra: str = "") -> str:
    return f'[[sites]]\nname = "{name}"\ndriver = "http"\nlogin_url = "{portal.url}/login"\n{extra}\n'


@pytest.fixture
def portal() -> Iterator[Portal]:
    portal = Portal()
    portal.passwords.update({"alice": "pw-alice", "bob": "pw-bob"})
    yield portal
    portal.close()


@pytest.fixture
def daemon(tokend_bin: Path, tmp_path: Path, portal: Portal) -> Iterator[Daemon]:
    """tokend with one site, ``portal``, whose accounts are alice and bob."""
    d = Daemon(tokend_bin, tmp_path, site_block("portal", portal))
    d.add_account("portal", "alice", "pw-alice")
    d.add_account("portal", "bob", "pw-bob")
    d.start()
    yield d
    d.stop()


def wait_until(what: str, check, within: float = 10.0):
    """Polls ``check`` until it returns something true, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        time.sleep(0.02)
