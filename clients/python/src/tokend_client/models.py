"""What tokend hands out: a :class:`Token` with the headers to send to the portal."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Mapping, Optional

__all__ = ["Token"]


def _parse_time(value: Any) -> Optional[datetime]:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python < 3.11 takes at most six fraction digits.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Token:
    """A valid token for one account of one site.

    ``headers`` are the ready headers to send to the portal (``{"Authorization": "Bearer …"}``,
    ``{"Authorization": "<raw>"}`` for court_zxfw, ``{"Cookie": "SESSION=…"}`` for cookie
    sessions); ``authorization`` is the ``Authorization`` value alone (``None`` for cookie
    sessions). ``source`` says where it came from: ``cache``, ``store`` or ``login``.
    The token never appears in ``repr``.
    """

    site: str
    token: str = field(repr=False)
    token_type: Optional[str]
    authorization: Optional[str] = field(repr=False)
    headers: Dict[str, str] = field(repr=False)
    account: Optional[str]
    credential_id: Optional[int]
    expires_at: Optional[datetime]
    source: Optional[str]
    acquisition_id: Optional[str] = None

    @classmethod
    def from_answer(cls, site: str, data: Mapping[str, Any]) -> "Token":
        """The token of an acquire answer's ``data``."""
        token = data.get("token")
        if not isinstance(token, str) or not token:
            from .errors import TokendError

            raise TokendError("tokend's answer carries no token", data={"site": site})
        authorization = data.get("authorization")
        headers = data.get("headers")
        if isinstance(headers, Mapping) and headers:
            ready = {str(k): str(v) for k, v in headers.items()}
        elif isinstance(authorization, str) and authorization:
            # A daemon from before `headers` was in every answer.
            ready = {"Authorization": authorization}
        else:
            ready = {}
        credential_id = data.get("credential_id")
        acquisition_id = data.get("acquisition_id")
        return cls(
            site=site,
            token=token,
            token_type=data.get("token_type") if isinstance(data.get("token_type"), str) else None,
            authorization=authorization if isinstance(authorization, str) else None,
            headers=ready,
            account=data.get("account") if isinstance(data.get("account"), str) else None,
            credential_id=credential_id if isinstance(credential_id, int) else None,
            expires_at=_parse_time(data.get("expires_at")),
            source=data.get("source") if isinstance(data.get("source"), str) else None,
            acquisition_id=None if acquisition_id is None else str(acquisition_id),
        )

    def seconds_left(self, now: Optional[datetime] = None) -> Optional[float]:
        """Seconds until the token expires (``None`` when tokend did not say)."""
        if self.expires_at is None:
            return None
        return (self.expires_at - (now or datetime.now(timezone.utc))).total_seconds()
