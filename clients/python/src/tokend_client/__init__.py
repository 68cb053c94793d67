"""tokend_client: the Python client of tokend, the token broker for court-portal automation.

    from tokend_client import Client

    with Client("http://127.0.0.1:8000") as tokend:
        token = tokend.acquire("court_zxfw")
        httpx.get(url, headers=token.headers)

        # Or let a 401 from the portal replace the token by itself:
        with httpx.Client(auth=tokend.auth("court_zxfw")) as portal:
            portal.get(url)

``AsyncClient`` has the same methods as coroutines. Errors are typed, all under
:class:`TokendError`. :mod:`tokend_client.driver` helps write a ``command`` login program.
"""

from .async_client import AsyncClient
from .auth import TokendAuth
from .checkout import AsyncCheckout, Checkout
from .client import Client
from .errors import (
    AcquisitionFailed,
    BudgetExhausted,
    CaptchaPending,
    Conflict,
    DaemonUnreachable,
    Forbidden,
    InvalidInput,
    NoAvailableAccount,
    NotFound,
    QueueFull,
    ShuttingDown,
    SiteUnavailable,
    Timeout,
    TokendError,
    TokenRejected,
    Unauthorized,
    Unavailable,
)
from .models import Token

__version__ = "0.1.0"

__all__ = [
    "AcquisitionFailed",
    "AsyncCheckout",
    "AsyncClient",
    "Checkout",
    "BudgetExhausted",
    "CaptchaPending",
    "Client",
    "Conflict",
    "DaemonUnreachable",
    "Forbidden",
    "InvalidInput",
    "NoAvailableAccount",
    "NotFound",
    "QueueFull",
    "ShuttingDown",
    "SiteUnavailable",
    "Timeout",
    "Token",
    "TokendAuth",
    "TokendError",
    "TokenRejected",
    "Unauthorized",
    "Unavailable",
]
