#!/usr/bin/env python3
"""A tokend `command` login program that logs in through a real browser (Playwright).

Most court portals are single-page applications: the login is a form, a captcha image, and a
token the page keeps in localStorage. This program drives Debian's chromium headless through
that page, hands the captcha to a person through tokend (dashboard, `tokend captcha answer`,
a chat robot) and prints the token. It is written with `tokend_client.driver`, which reads
tokend's request line, maps exceptions to exit codes and keeps the password out of messages.

    pip install clients/python playwright      # into the venv tokend runs it with
    apt-get install chromium

    [[sites]]
    name = "my_portal"
    driver = "command"
    command = ["/opt/tokend/venv/bin/python", "/opt/tokend/playwright_login.py",
               "--login-url", "https://portal.example/login"]

Adapt the selectors (`--username-field` … or the constants below) to your portal.
"""

import argparse
import os

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from tokend_client import driver

CHROMIUM = os.environ.get("TOKEND_CHROMIUM", "/usr/bin/chromium")
CREDENTIAL_WORDS = ("密码错误", "账号或密码", "password")
CAPTCHA_WORDS = ("验证码错误", "captcha")


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--login-url", required=True)
    parser.add_argument("--username-field", default="#username")
    parser.add_argument("--password-field", default="#password")
    parser.add_argument("--captcha-image", default="#captcha-image")
    parser.add_argument("--captcha-field", default="#captcha")
    parser.add_argument("--submit", default="#submit")
    parser.add_argument("--error", default=".error")
    parser.add_argument("--token-key", default="token", help="the localStorage key of the token")
    parser.add_argument("--expires-in", type=int, default=3600)
    parser.add_argument("--timeout", type=float, default=20.0)
    return parser.parse_args()


def log_in(args, request: driver.LoginRequest) -> driver.LoginResult:
    with sync_playwright() as p:
        proxy = {"server": request.proxy} if request.proxy else None
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, proxy=proxy)
        try:
            page = browser.new_page()
            page.set_default_timeout(args.timeout * 1000)
            page.goto(args.login_url)
            page.fill(args.username_field, request.account)
            page.fill(args.password_field, request.password)
            if page.locator(args.captcha_image).count():
                image = page.locator(args.captcha_image).screenshot()
                page.fill(args.captcha_field, driver.ask_person(image, "请输入图中字符"))
            page.click(args.submit)
            return outcome(page, args)
        finally:
            browser.close()


def outcome(page, args) -> driver.LoginResult:
    """Waits for the token or an error message, whichever the page shows first."""
    page.wait_for_function(
        f"localStorage.getItem({args.token_key!r}) || document.querySelector({args.error!r})"
    )
    token = page.evaluate(f"localStorage.getItem({args.token_key!r})")
    if token:
        return driver.LoginResult(token, expires_in=args.expires_in)
    message = page.inner_text(args.error).strip()
    if any(word in message for word in CAPTCHA_WORDS):
        raise driver.CaptchaWrong(f"the portal says: {message}")
    if any(word in message for word in CREDENTIAL_WORDS):
        raise driver.WrongPassword(f"the portal says: {message}")
    raise driver.LoginError(f"the portal says: {message}")


def main():
    args = arguments()

    def login(request):
        try:
            return log_in(args, request)
        except PlaywrightTimeout as e:
            raise driver.NetworkError(f"the login page did not answer in time: {e.message}") from None
        except PlaywrightError as e:
            if "net::" in e.message:
                raise driver.NetworkError(f"the login page cannot be reached: {e.message}") from None
            raise

    driver.run(login)


if __name__ == "__main__":
    main()
