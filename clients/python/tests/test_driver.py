"""tokend_client.driver: a login program written with it, run by the real daemon's
``command`` driver, and the exit codes it maps."""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

import httpx
import pytest

from conftest import Daemon, wait_until
from tokend_client import AcquisitionFailed, CaptchaPending, Client, driver

PROGRAM = r'''
from tokend_client import driver

def login(request):
    if request.password == "right":
        return driver.LoginResult(f"cmd-{request.account}-token", expires_in=1800)
    if request.password == "captcha":
        answer = driver.ask_person(b"\x89PNG fake image", "请输入验证码")
        if answer != "x7k2":
            raise driver.CaptchaWrong("the portal says 验证码错误")
        return driver.LoginResult(f"cmd-{request.account}-solved", expires_in=1800)
    if request.password == "network":
        raise ConnectionError("the portal reset the connection")
    raise driver.WrongPassword(f"the portal refused password {request.password}")

driver.run(login)
'''


@pytest.fixture
def command_daemon(tokend_bin: Path, tmp_path: Path):
    program = tmp_path / "login.py"
    program.write_text(PROGRAM)
    site = (
        '[[sites]]\nname = "filing"\ndriver = "command"\n'
        f'command = ["{sys.executable}", "{program}"]\n'
    )
    d = Daemon(tokend_bin, tmp_path, site)
    d.add_account("filing", "ok", "right")
    d.add_account("filing", "bad", "s3cr3t pw")
    d.add_account("filing", "human", "captcha")
    d.add_account("filing", "offline", "network")
    d.start()
    yield d
    d.stop()


def test_a_login_program_written_with_the_driver_helpers(command_daemon: Daemon) -> None:
    with Client(command_daemon.url) as tokend:
        token = tokend.acquire("filing", account="ok")
        assert token.token == "cmd-ok-token"
        assert 1700 < token.seconds_left() <= 1800

        with pytest.raises(AcquisitionFailed) as refused:
            tokend.acquire("filing", account="bad")
        assert refused.value.error_type == "credential_error"
        assert "s3cr3t" not in refused.value.message

        with pytest.raises(AcquisitionFailed) as offline:
            tokend.acquire("filing", account="offline")
        assert offline.value.error_type == "network_error"


def test_a_captcha_handed_to_a_person_and_captcha_pending(command_daemon: Daemon) -> None:
    # The caller's own timeout runs out while the login waits for a person: CaptchaPending
    # names the challenge; the login goes on.
    with Client(command_daemon.url, timeout=1.5) as impatient, pytest.raises(CaptchaPending) as pending:
        impatient.acquire("filing", account="human")
    [captcha] = pending.value.captchas
    assert captcha["prompt"] == "请输入验证码" and captcha["account"] == "human"

    answers = []
    with Client(command_daemon.url) as tokend:
        waiter = threading.Thread(target=lambda: answers.append(tokend.acquire("filing", account="human")))
        waiter.start()
        posted = httpx.post(
            f"{command_daemon.url}/api/v1/automation/captchas/{captcha['id']}",
            json={"answer": "x7k2"},
            trust_env=False,
        )
        assert posted.status_code == 200, posted.text
        waiter.join(30)
    wait_until("the solved login's token", lambda: answers)
    assert answers[0].token == "cmd-human-solved"


def run_program(login, stdin: str):
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        driver.run(login, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return exit_.value.code, out.getvalue(), err.getvalue()


REQUEST = '{"site_name": "s", "account": "a", "password": "p@ss word/+"}\n'


@pytest.mark.parametrize(
    "error, code",
    [
        (driver.WrongPassword("no"), 10),
        (driver.CaptchaWrong("no"), 11),
        (driver.NetworkError("no"), 12),
        (ConnectionRefusedError("no"), 12),
        (ValueError("no"), 1),
    ],
)
def test_exceptions_map_to_exit_codes(error: Exception, code: int) -> None:
    def login(request):
        raise error

    assert run_program(login, REQUEST)[0] == code


def test_success_line_and_the_password_masked_in_every_form() -> None:
    code, out, _ = run_program(lambda r: driver.LoginResult("tok", expires_in=60), REQUEST)
    assert (code, out) == (0, '{"token": "tok", "expires_in": 60}\n')

    def echo(request):
        raise driver.WrongPassword(
            f"portal echoed {request.password} / p%40ss%20word%2F%2B / p%40ss+word%2F%2B / cEBzcyB3b3JkLys="
        )

    code, _, err = run_program(echo, REQUEST)
    assert code == 10
    assert "p@ss" not in err and "p%40ss" not in err and "cEBzcyB3b3JkLys=" not in err
    assert err.count("***") == 4


def test_a_bad_request_line_is_a_clear_failure() -> None:
    code, _, err = run_program(lambda r: "tok", "not json\n")
    assert code == 1 and "not JSON" in err
