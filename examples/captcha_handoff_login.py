#!/usr/bin/env python3
"""A tokend `command` login program whose captcha a person solves (SPEC §13).

tokend runs it with no shell and writes one JSON line to its stdin:
    {"site_name": ..., "account": ..., "password": ..., "proxy"?: ...}
It fetches a captcha from the portal, hands it to a person by printing one line
    {"captcha": {"image_base64": "...", "prompt": "..."}}
reads the person's answer as one line {"answer": "..."} from stdin (tokend lists the
challenge at GET /api/v1/automation/captchas, on the dashboard and in `tokend captcha list`,
and writes the answer posted there), logs in with it and prints
    {"token": "...", "expires_in": seconds}
Exit status: 0 success, 10 wrong credentials, 11 captcha (wrong or unanswered),
12 network error, 1 anything else. The password is never printed.

The portal it speaks to (adapt the two requests to yours):
    GET  CAPTCHA_URL -> {"data": {"id": "...", "image": "<base64 or data URL>"}}
    POST LOGIN_URL  JSON {"username", "password", "captcha", "captcha_id"}
         -> {"data": {"token": "...", "expires_in": 3600}} or {"msg": "..."} on failure

Configure it as
    [[sites]]
    name = "court_baoquan"
    driver = "command"
    command = ["/usr/local/lib/tokend/captcha_handoff_login.py",
               "--captcha-url", "https://portal.example/api/captcha",
               "--login-url", "https://portal.example/api/login"]
"""

import argparse
import json
import sys
import urllib.error
import urllib.request

CREDENTIAL_ERROR, CAPTCHA_ERROR, NETWORK_ERROR, FAILED = 10, 11, 12, 1


def opener(proxy):
    handlers = [urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else {})]
    return urllib.request.build_opener(*handlers)


def get_json(open_url, request, timeout=20):
    with open_url(request, timeout=timeout) as answer:
        return json.load(answer)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captcha-url", required=True)
    parser.add_argument("--login-url", required=True)
    parser.add_argument("--prompt", default="请输入图中字符 Type the characters in the image")
    args = parser.parse_args()

    # One line, not to end of file: stdin stays open for the captcha's answer.
    request = json.loads(sys.stdin.readline())
    open_url = opener(request.get("proxy")).open

    try:
        captcha = get_json(open_url, args.captcha_url)
    except (OSError, ValueError) as e:
        print(f"fetching the captcha failed: {e}", file=sys.stderr)
        return NETWORK_ERROR
    data = captcha.get("data", captcha)
    image = data.get("image") or data.get("jpg") or ""

    # Hand the captcha to a person; tokend answers on stdin.
    print(json.dumps({"captcha": {"image_base64": image, "prompt": args.prompt}}), flush=True)
    line = sys.stdin.readline()
    if not line:
        print("no answer to the captcha", file=sys.stderr)
        return CAPTCHA_ERROR
    answer = json.loads(line).get("answer", "")

    body = json.dumps({
        "username": request["account"],
        "password": request["password"],
        "captcha": answer,
        "captcha_id": data.get("id"),
    }).encode()
    login = urllib.request.Request(
        args.login_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        result = get_json(open_url, login)
    except urllib.error.HTTPError as e:
        print(f"login answered HTTP {e.code}", file=sys.stderr)
        if e.code in (401, 403):
            return CREDENTIAL_ERROR
        return NETWORK_ERROR if e.code == 429 or e.code >= 500 else FAILED
    except (OSError, ValueError) as e:
        print(f"login request failed: {e}", file=sys.stderr)
        return NETWORK_ERROR

    token = (result.get("data") or {}).get("token")
    if token:
        expires_in = (result.get("data") or {}).get("expires_in") or 3600
        print(json.dumps({"token": token, "expires_in": expires_in}))
        return 0
    message = str(result.get("msg") or result.get("message") or "")
    print(f"login refused: {message}", file=sys.stderr)
    if "验证码" in message or "captcha" in message.lower():
        return CAPTCHA_ERROR
    if any(word in message for word in ("密码", "账号", "password")):
        return CREDENTIAL_ERROR
    return FAILED


if __name__ == "__main__":
    sys.exit(main())
