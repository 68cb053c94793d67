"""Helpers for writing a tokend ``command`` login program in Python.

tokend runs the program with no shell and writes one JSON line to its stdin
(``{"site_name", "account", "password", "proxy"?}``); the program prints
``{"token": …, "expires_in": seconds}`` (or ``expires_at``) and exits 0, or exits 10 (wrong
credentials), 11 (captcha), 12 (network) or 1 (anything else) with a message on stderr. To
hand a captcha to a person it prints ``{"captcha": {"image_base64", "prompt"}}`` and reads
one line ``{"answer": …}`` from stdin.

With these helpers a login program is a function::

    from tokend_client import driver

    def login(request: driver.LoginRequest) -> driver.LoginResult:
        ...                                   # log in with request.account / request.password
        answer = driver.ask_person(png_bytes, "请输入验证码")
        ...
        if refused:
            raise driver.WrongPassword("portal says 密码错误")
        return driver.LoginResult(token, expires_in=3600)

    if __name__ == "__main__":
        driver.run(login)

:func:`run` reads the request, calls the function, prints the result, maps the exceptions
below to tokend's exit codes and keeps the password out of every message it writes.
"""

from __future__ import annotations

import base64
import json
import sys
import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Callable, NoReturn, Optional, Union
from urllib.parse import quote, quote_plus

__all__ = [
    "LoginRequest",
    "LoginResult",
    "LoginError",
    "WrongPassword",
    "CaptchaWrong",
    "NetworkError",
    "read_request",
    "ask_person",
    "report",
    "run",
    "EXIT_OK",
    "EXIT_WRONG_PASSWORD",
    "EXIT_CAPTCHA",
    "EXIT_NETWORK",
    "EXIT_FAILED",
]

EXIT_OK = 0
EXIT_WRONG_PASSWORD = 10
EXIT_CAPTCHA = 11
EXIT_NETWORK = 12
EXIT_FAILED = 1


class LoginError(Exception):
    """The login failed for a reason tokend should not blame on the account (exit 1)."""

    exit_code = EXIT_FAILED


class WrongPassword(LoginError):
    """The portal refused the login or password: never retried (exit 10)."""

    exit_code = EXIT_WRONG_PASSWORD


class CaptchaWrong(LoginError):
    """The captcha was wrong or nobody answered it: retried with a fresh one (exit 11)."""

    exit_code = EXIT_CAPTCHA


class NetworkError(LoginError):
    """The portal could not be reached or answered 5xx/429: retried (exit 12)."""

    exit_code = EXIT_NETWORK


@dataclass(frozen=True)
class LoginRequest:
    """What tokend asks the program to do. ``password`` never appears in ``repr``."""

    site_name: str
    account: str
    password: str
    proxy: Optional[str] = None

    def __repr__(self) -> str:
        return f"LoginRequest(site_name={self.site_name!r}, account={self.account!r}, proxy={'set' if self.proxy else None})"


@dataclass(frozen=True)
class LoginResult:
    """A token and its life: ``expires_in`` seconds or ``expires_at`` (aware datetime or RFC 3339)."""

    token: str
    expires_in: Optional[int] = None
    expires_at: Optional[Union[datetime, str]] = None

    def to_line(self) -> str:
        line: dict = {"token": self.token}
        if self.expires_in is not None:
            line["expires_in"] = int(self.expires_in)
        if self.expires_at is not None:
            at = self.expires_at
            line["expires_at"] = at.isoformat() if isinstance(at, datetime) else str(at)
        return json.dumps(line, ensure_ascii=False)


def read_request(stream: Optional[IO[str]] = None) -> LoginRequest:
    """Reads tokend's request line (one line: stdin stays open for a captcha's answer)."""
    line = (stream or sys.stdin).readline()
    if not line:
        raise LoginError("tokend sent no request line on stdin")
    try:
        data = json.loads(line)
    except ValueError as e:
        raise LoginError(f"tokend's request line is not JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise LoginError("tokend's request line is not a JSON object")
    missing = [k for k in ("site_name", "account", "password") if not isinstance(data.get(k), str)]
    if missing:
        raise LoginError(f"tokend's request line lacks {', '.join(missing)}")
    proxy = data.get("proxy")
    return LoginRequest(data["site_name"], data["account"], data["password"], proxy if isinstance(proxy, str) else None)


def ask_person(
    image: Union[bytes, str],
    prompt: str = "请输入图中字符",
    *,
    stdin: Optional[IO[str]] = None,
    stdout: Optional[IO[str]] = None,
) -> str:
    """Hands a captcha to a person through tokend and returns their answer.

    ``image`` is the picture's bytes, or already base64 / a data URL. Blocks until the person
    answers (tokend's ``retry.captcha_answer_timeout``); raises :class:`CaptchaWrong` when
    nobody does.
    """
    encoded = image if isinstance(image, str) else base64.b64encode(image).decode("ascii")
    out = stdout or sys.stdout
    out.write(json.dumps({"captcha": {"image_base64": encoded, "prompt": prompt}}, ensure_ascii=False) + "\n")
    out.flush()
    line = (stdin or sys.stdin).readline()
    if not line:
        raise CaptchaWrong("nobody answered the captcha")
    try:
        answer = json.loads(line).get("answer")
    except (ValueError, AttributeError):
        raise CaptchaWrong("tokend's captcha answer line is not JSON") from None
    if not isinstance(answer, str) or not answer:
        raise CaptchaWrong("the captcha answer is empty")
    return answer


def report(result: Union[LoginResult, str], stdout: Optional[IO[str]] = None) -> None:
    """Prints the success line (a bare string is a token with the site's default life)."""
    if isinstance(result, str):
        result = LoginResult(result)
    if not result.token:
        raise LoginError("the login produced an empty token")
    out = stdout or sys.stdout
    out.write(result.to_line() + "\n")
    out.flush()


def _forms(secret: str) -> list:
    """The shapes a secret can take in a message: raw, JSON-escaped, URL-encoded, base64."""
    if not secret:
        return []
    escaped = json.dumps(secret)[1:-1]
    forms = {
        secret,
        escaped,
        json.dumps(escaped)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret),
        base64.b64encode(secret.encode()).decode(),
    }
    return sorted((f for f in forms if f), key=len, reverse=True)


def mask(text: str, secret: str) -> str:
    """``text`` with every form of ``secret`` replaced by ``***``."""
    for form in _forms(secret):
        text = text.replace(form, "***")
    return text


def run(
    login: Callable[[LoginRequest], Union[LoginResult, str]],
    *,
    stdin: Optional[IO[str]] = None,
    stdout: Optional[IO[str]] = None,
    stderr: Optional[IO[str]] = None,
) -> NoReturn:
    """Runs a login program: request in, result out, exit code from the outcome."""
    err = stderr or sys.stderr
    password = ""
    try:
        request = read_request(stdin)
        password = request.password
        report(login(request), stdout)
        code = EXIT_OK
    except LoginError as e:
        err.write(mask(str(e) or type(e).__name__, password) + "\n")
        code = e.exit_code
    except (ConnectionError, TimeoutError) as e:
        err.write(mask(f"network error: {e}", password) + "\n")
        code = EXIT_NETWORK
    except Exception as e:  # noqa: BLE001 - a login program must always exit with a code
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        err.write(mask(f"login failed: {last}", password) + "\n")
        code = EXIT_FAILED
    err.flush()
    sys.exit(code)
