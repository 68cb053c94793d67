#!/usr/bin/env python3
"""Captcha solver for tokend's court_zxfw driver (SPEC §15), built on ddddocr.

Protocol: the captcha image bytes (JPEG/PNG) arrive on stdin; the text goes to stdout
(one line); exit 0. Anything else (no text, an error) exits non-zero with the reason on
stderr, which tokend logs (scrubbed) and counts as a captcha_error, so the login is retried
with a fresh captcha.

Install (once, as the user tokend runs as, or into a virtualenv whose python3 you name in
captcha_solver):
    python3 -m pip install ddddocr
    sudo install -m 0755 examples/ddddocr_solve.py /usr/local/lib/tokend/ddddocr_solve.py
Config:
    captcha_solver = ["python3", "/usr/local/lib/tokend/ddddocr_solve.py"]
Try it:
    python3 examples/ddddocr_solve.py < captcha.jpg
"""

import sys


def main() -> int:
    image = sys.stdin.buffer.read()
    if not image:
        print("no image on stdin", file=sys.stderr)
        return 2
    try:
        import ddddocr
    except ImportError:
        print("ddddocr is not installed: python3 -m pip install ddddocr", file=sys.stderr)
        return 3
    try:
        ocr = ddddocr.DdddOcr(show_ad=False)
    except TypeError:  # versions without the show_ad argument
        ocr = ddddocr.DdddOcr()
    try:
        text = ocr.classification(image)
    except Exception as error:  # a broken image: say so, tokend fetches a new captcha
        print(f"ddddocr could not read the image: {error}", file=sys.stderr)
        return 4
    text = "".join(str(text).split())
    if not text:
        print("ddddocr read no text", file=sys.stderr)
        return 5
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
