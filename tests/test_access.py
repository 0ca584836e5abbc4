"""Who may read /metrics/: addresses, tokens, superusers; 401 versus 403; forwarded headers."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from metrics.access import client_address, is_allowed, token_matches
from metrics.conf import parse_networks

TOKEN = "s3cret-token"
NETS = parse_networks("127.0.0.1,10.0.0.0/8,192.168.1.0/24,2001:db8::/32,::1")
PROXIES = parse_networks("172.16.0.0/12")


class User:
    """A stand-in for request.user with the attributes the rules read."""

    def __init__(self, *, authenticated: bool = True, superuser: bool = False, active: bool = True):
        self.is_authenticated = authenticated
        self.is_superuser = superuser
        self.is_active = active


ANONYMOUS = User(authenticated=False)

CASES = [
    # (description, remote_addr, headers, user, allowed, status, reason)
    ("listed address", "127.0.0.1", {}, None, True, 200, "ip"),
    ("CIDR first address", "10.0.0.0", {}, None, True, 200, "ip"),
    ("CIDR last address", "10.255.255.255", {}, None, True, 200, "ip"),
    ("just past the CIDR", "11.0.0.0", {}, None, False, 401, "no credentials"),
    ("just before the /24", "192.168.0.255", {}, None, False, 401, "no credentials"),
    ("inside the /24", "192.168.1.200", {}, None, True, 200, "ip"),
    ("IPv6 loopback", "::1", {}, None, True, 200, "ip"),
    ("IPv6 inside /32", "2001:db8:ffff::1", {}, None, True, 200, "ip"),
    ("IPv6 outside /32", "2001:db9::1", {}, None, False, 401, "no credentials"),
    ("IPv4-mapped IPv6 peer", "::ffff:10.1.2.3", {}, None, True, 200, "ip"),
    ("no address at all", "", {}, None, False, 401, "no credentials"),
    ("garbage address", "not-an-ip", {}, None, False, 401, "no credentials"),
    ("token header", "8.8.8.8", {"X-Metrics-Token": TOKEN}, None, True, 200, "token"),
    ("token header any case", "8.8.8.8", {"x-metrics-token": TOKEN}, None, True, 200, "token"),
    ("bearer", "8.8.8.8", {"Authorization": f"Bearer {TOKEN}"}, None, True, 200, "bearer"),
    ("bearer lower-case scheme", "8.8.8.8", {"Authorization": f"bearer {TOKEN}"}, None, True, 200, "bearer"),
    ("wrong token", "8.8.8.8", {"X-Metrics-Token": "wrong"}, None, False, 403, "credentials refused"),
    ("empty token", "8.8.8.8", {"X-Metrics-Token": ""}, None, False, 403, "credentials refused"),
    ("token prefix", "8.8.8.8", {"X-Metrics-Token": TOKEN[:-1]}, None, False, 403, "credentials refused"),
    (
        "token plus suffix",
        "8.8.8.8",
        {"X-Metrics-Token": TOKEN + "x"},
        None,
        False,
        403,
        "credentials refused",
    ),
    (
        "very long token",
        "8.8.8.8",
        {"X-Metrics-Token": "a" * 100_000},
        None,
        False,
        403,
        "credentials refused",
    ),
    ("non-ASCII token", "8.8.8.8", {"X-Metrics-Token": "sécret"}, None, False, 403, "credentials refused"),
    ("wrong bearer", "8.8.8.8", {"Authorization": "Bearer nope"}, None, False, 403, "credentials refused"),
    ("empty bearer", "8.8.8.8", {"Authorization": "Bearer "}, None, False, 403, "credentials refused"),
    ("basic auth", "8.8.8.8", {"Authorization": f"Basic {TOKEN}"}, None, False, 403, "credentials refused"),
    ("superuser", "8.8.8.8", {}, User(superuser=True), True, 200, "superuser"),
    (
        "inactive superuser",
        "8.8.8.8",
        {},
        User(superuser=True, active=False),
        False,
        403,
        "credentials refused",
    ),
    ("staff, not superuser", "8.8.8.8", {}, User(), False, 403, "credentials refused"),
    ("anonymous", "8.8.8.8", {}, ANONYMOUS, False, 401, "no credentials"),
    (
        "spoofed X-Forwarded-For from an untrusted peer",
        "8.8.8.8",
        {"X-Forwarded-For": "127.0.0.1"},
        None,
        False,
        401,
        "no credentials",
    ),
    (
        "X-Forwarded-For from a trusted proxy",
        "172.16.0.5",
        {"X-Forwarded-For": "10.1.1.1"},
        None,
        True,
        200,
        "ip",
    ),
    (
        "client-written left part of the chain is ignored",
        "172.16.0.5",
        {"X-Forwarded-For": "127.0.0.1, 8.8.8.8"},
        None,
        False,
        401,
        "no credentials",
    ),
    (
        "chain of trusted proxies",
        "172.16.0.5",
        {"X-Forwarded-For": "10.1.1.1, 172.20.0.1, 172.16.0.9"},
        None,
        True,
        200,
        "ip",
    ),
    (
        "garbage in the chain",
        "172.16.0.5",
        {"X-Forwarded-For": "10.1.1.1, junk"},
        None,
        False,
        401,
        "no credentials",
    ),
]


@pytest.mark.parametrize(
    ("remote_addr", "headers", "user", "allowed", "status", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_access_table(remote_addr, headers, user, allowed, status, reason) -> None:
    """Each case gets the documented answer."""
    decision = is_allowed(
        remote_addr, headers, user, allowed_ips=NETS, auth_token=TOKEN, trusted_proxies=PROXIES
    )
    assert (decision.allowed, decision.status, decision.reason) == (allowed, status, reason)
    assert bool(decision) is allowed


def test_nothing_configured_means_closed() -> None:
    """No addresses and no token: a token-looking header or a local address gets nothing."""
    for remote, headers in [("127.0.0.1", {}), ("127.0.0.1", {"X-Metrics-Token": ""})]:
        decision = is_allowed(remote, headers, None, allowed_ips=(), auth_token="", trusted_proxies=())
        assert not decision.allowed
    decision = is_allowed("127.0.0.1", {}, User(superuser=True), allowed_ips=(), auth_token="")
    assert decision.reason == "superuser"


def test_user_is_not_evaluated_when_the_address_suffices() -> None:
    """A lazy request.user is left alone when the address or token already decides."""

    class Exploding:
        @property
        def is_authenticated(self) -> bool:
            raise AssertionError("user looked at")

    assert is_allowed("127.0.0.1", {}, Exploding(), allowed_ips=NETS, auth_token=TOKEN).allowed
    assert is_allowed("8.8.8.8", {"X-Metrics-Token": TOKEN}, Exploding(), allowed_ips=NETS, auth_token=TOKEN)


def test_client_address_takes_the_rightmost_untrusted_hop() -> None:
    """Forwarded chains are read from the right, skipping trusted proxies."""
    assert client_address("172.16.0.1", "1.1.1.1, 2.2.2.2, 172.16.0.2", PROXIES) == ip_address("2.2.2.2")
    assert client_address("9.9.9.9", "1.1.1.1", PROXIES) == ip_address("9.9.9.9")
    assert client_address("172.16.0.1", "", PROXIES) == ip_address("172.16.0.1")
    assert client_address("172.16.0.1", "[2001:db8::1]:443", PROXIES) == ip_address("2001:db8::1")
    assert client_address("172.16.0.1", "1.2.3.4:5678", PROXIES) == ip_address("1.2.3.4")


def test_token_comparison() -> None:
    """Equal tokens match, anything else does not, and an unset token matches nothing."""
    assert token_matches("abc", "abc")
    assert not token_matches("abd", "abc")
    assert not token_matches("", "")
    assert not token_matches("abc", "")


# --- through the view ---


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"REMOTE_ADDR": "127.0.0.1"}, 200),
        ({"REMOTE_ADDR": "8.8.8.8"}, 401),
        ({"REMOTE_ADDR": "8.8.8.8", "HTTP_X_METRICS_TOKEN": TOKEN}, 200),
        ({"REMOTE_ADDR": "8.8.8.8", "HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}, 200),
        ({"REMOTE_ADDR": "8.8.8.8", "HTTP_X_METRICS_TOKEN": "nope"}, 403),
        ({"REMOTE_ADDR": "8.8.8.8", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}, 401),
        ({"REMOTE_ADDR": "::1"}, 200),
    ],
)
def test_view_applies_the_rules(extra, status) -> None:
    """/metrics/ answers 200, 401 (with a Bearer challenge) or 403."""
    with override_settings(METRICS_ALLOWED_IPS="127.0.0.1,::1", METRICS_AUTH_TOKEN=TOKEN):
        response = Client().get("/metrics/", **extra)
    assert response.status_code == status
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")
    else:
        assert "WWW-Authenticate" not in response
    if status == 200:
        assert b"# TYPE" in response.content
    else:
        assert b"# TYPE" not in response.content


@pytest.mark.django_db
def test_superuser_session_gets_in_and_staff_does_not() -> None:
    """A logged-in superuser reads metrics; a staff user who is not one gets 403."""
    users = get_user_model().objects
    staff = users.create_user("staff", password="pw", is_staff=True)
    admin = users.create_superuser("admin", password="pw")
    client = Client(REMOTE_ADDR="8.8.8.8")
    client.force_login(staff)
    assert client.get("/metrics/").status_code == 403
    client.force_login(admin)
    assert client.get("/metrics/").status_code == 200
    client.logout()
    assert client.get("/metrics/").status_code == 401


def test_user_that_cannot_be_loaded_is_no_credential(caplog) -> None:
    """When loading the session user fails (database down), the answer is 401, not an error."""

    class Unloadable:
        @property
        def is_authenticated(self) -> bool:
            raise ConnectionError("database down")

    decision = is_allowed("8.8.8.8", {}, Unloadable(), allowed_ips=NETS, auth_token=TOKEN)
    assert (decision.allowed, decision.status) == (False, 401)
    assert "could not load the session user" in caplog.text
