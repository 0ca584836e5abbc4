"""Who may read `/metrics/`: one decision function, usable outside Django views too.

A caller is allowed when any rule passes:

1. its address is in `METRICS_ALLOWED_IPS`;
2. it sends `METRICS_AUTH_TOKEN` in `X-Metrics-Token` or `Authorization: Bearer <token>`;
3. it is a logged-in, active superuser.

Otherwise the answer is 401 with `WWW-Authenticate: Bearer` when no credentials were sent at all
(no token header, no authenticated session), 403 when some were sent and were wrong. Nothing
configured means closed: only superusers get in.

The client address is the direct peer (`REMOTE_ADDR`). `X-Forwarded-For` counts only when that
peer is in `METRICS_TRUSTED_PROXIES`; then the client is the right-most address of the chain that
is not itself a trusted proxy, because everything left of it was written by the client and can be
forged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING, Any

from metrics.conf import Network, app_settings

if TYPE_CHECKING:
    from django.http import HttpRequest

IPAddress = IPv4Address | IPv6Address

logger = logging.getLogger("metrics")

TOKEN_HEADER = "X-Metrics-Token"
WWW_AUTHENTICATE = 'Bearer realm="metrics"'


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one caller: allowed or not, the HTTP status to send, and why."""

    allowed: bool
    status: int
    reason: str
    client: IPAddress | None = None

    def __bool__(self) -> bool:
        return self.allowed


def parse_address(value: str | None) -> IPAddress | None:
    """Return the address in `value` (`1.2.3.4`, `::1`, `[::1]:80`, `1.2.3.4:5678`), or None."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        value = value[1:end]
    elif value.count(":") == 1:
        # IPv4 with a port; bare IPv6 addresses have at least two colons.
        value = value.split(":", 1)[0]
    try:
        address = ip_address(value)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; rules are written in IPv4.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in(address: IPAddress, networks: tuple[Network, ...]) -> bool:
    # `in` across IP versions is simply False, never an error.
    return any(address in network for network in networks)


def client_address(
    remote_addr: str | None,
    forwarded_for: str | None,
    trusted_proxies: tuple[Network, ...],
) -> IPAddress | None:
    """Return the client's address, believing `X-Forwarded-For` only from trusted proxies."""
    peer = parse_address(remote_addr)
    if peer is None or not forwarded_for or not _in(peer, trusted_proxies):
        return peer
    hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
    address = peer
    for hop in reversed(hops):
        address_or_none = parse_address(hop)
        if address_or_none is None:
            # Garbage in the chain: nothing left of it can be trusted, and neither can it.
            return None
        address = address_or_none
        if not _in(address, trusted_proxies):
            return address
    # Every hop is a trusted proxy: the left-most one is as close to the client as it gets.
    return address


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Return a header from a case-insensitive mapping (Django's) or a plain dict of any case."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def _bearer(authorization: str) -> str | None:
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


def token_matches(sent: str, expected: str) -> bool:
    """Compare tokens in constant time (length included: both sides are hashed first)."""
    if not expected:
        return False
    sent_digest = hashlib.sha256(sent.encode("utf-8", "surrogatepass")).digest()
    expected_digest = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(sent_digest, expected_digest)


def is_allowed(
    remote_addr: str | None,
    headers: Mapping[str, str],
    user: Any = None,
    *,
    allowed_ips: tuple[Network, ...] | None = None,
    auth_token: str | None = None,
    trusted_proxies: tuple[Network, ...] | None = None,
) -> Decision:
    """Decide whether a caller may read the metrics.

    `headers` maps header names to values (Django's `request.headers`, or any dict). `user` is
    only looked at when the address and token rules fail, so a lazy `request.user` costs no
    session or database access for Prometheus' own scrapes. The keyword arguments override the
    settings (for servers that are not Django views).
    """
    if allowed_ips is None:
        allowed_ips = app_settings.ALLOWED_IPS
    if auth_token is None:
        auth_token = app_settings.AUTH_TOKEN
    if trusted_proxies is None:
        trusted_proxies = app_settings.TRUSTED_PROXIES

    client = client_address(remote_addr, _header(headers, "X-Forwarded-For"), trusted_proxies)
    if client is not None and _in(client, allowed_ips):
        return Decision(True, 200, "ip", client)

    credentials = False
    sent = _header(headers, TOKEN_HEADER)
    if sent is not None:
        credentials = True
        if token_matches(sent.strip(), auth_token):
            return Decision(True, 200, "token", client)
    authorization = _header(headers, "Authorization")
    if authorization is not None:
        credentials = True
        bearer = _bearer(authorization)
        if bearer is not None and token_matches(bearer, auth_token):
            return Decision(True, 200, "bearer", client)

    if user is not None:
        try:
            authenticated = bool(getattr(user, "is_authenticated", False))
            superuser = authenticated and bool(getattr(user, "is_superuser", False))
            active = superuser and bool(getattr(user, "is_active", False))
        except Exception:
            # Loading the session user needs the database; when it is down, a probe or an
            # operator's browser must still get an answer (403), not a 500.
            logger.warning("metrics: could not load the session user", exc_info=True)
            authenticated = superuser = active = False
        if authenticated:
            credentials = True
            if superuser and active:
                return Decision(True, 200, "superuser", client)

    if not credentials:
        return Decision(False, 401, "no credentials", client)
    return Decision(False, 403, "credentials refused", client)


def check_request(request: HttpRequest) -> Decision:
    """Decide for a Django request (uses `request.user` when the auth middleware set it)."""
    return is_allowed(request.META.get("REMOTE_ADDR"), request.headers, getattr(request, "user", None))
