"""What a dashboard serves and who may use it: :class:`DashboardOptions`, checked once at start
(a non-loopback address without a token or basic auth is refused, names are validated), so a
running dashboard never meets a bad setting."""

from __future__ import annotations

import ipaddress
import re
import secrets

import msgspec

from rjobs.errors import ValidationError
from rjobs.store.keys import QueueKeys

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DashboardOptions", "is_loopback", "parse_basic_auth"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: A basic-auth user becomes the actor of its actions (rjobs.Actor(type="human", id=user)).
_USER = re.compile(r"^[A-Za-z0-9_.@\-]{1,128}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,255}$")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_basic_auth(text: str) -> tuple[str, str]:
    """``user:password`` -> (user, password); the user must be a valid actor id."""
    user, sep, password = text.partition(":")
    if not sep or not password:
        raise ValidationError("--basic-auth must be user:password")
    if not _USER.match(user):
        raise ValidationError("--basic-auth user: use 1-128 characters from A-Z a-z 0-9 _ . @ -")
    return user, password


class DashboardOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The dashboard's settings: the server, the queues shown, where it listens, and its access
    rules. ``secret`` signs the login cookie and the CSRF tokens (a new one per process: a
    restart logs everyone out)."""

    url: str
    queues: tuple[str, ...]
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    read_only: bool = False
    token: str | None = None
    basic_auth: tuple[str, str] | None = None
    allowed_hosts: tuple[str, ...] = ()
    secret: bytes = msgspec.field(default_factory=lambda: secrets.token_bytes(32))

    def validate(self) -> DashboardOptions:
        """Self, or ValidationError naming the first bad setting."""
        if not self.queues:
            raise ValidationError("name the queues to show: -q QUEUE (repeatable)")
        for name in self.queues:
            QueueKeys(name)  # raises on a bad name
        if len(set(self.queues)) != len(self.queues):
            raise ValidationError("a queue is named twice")
        if not _HOST.match(self.host):
            raise ValidationError(f"bad --host {self.host[:60]!r}")
        if isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise ValidationError("--port must be 0-65535")
        if self.token is not None and len(self.token) < 16:
            raise ValidationError("the token must have at least 16 characters")
        if self.basic_auth is not None:
            parse_basic_auth(":".join(self.basic_auth))
        if self.token is not None and self.basic_auth is not None:
            raise ValidationError("use a token or basic auth, not both")
        if not is_loopback(self.host) and not self.auth_required:
            raise ValidationError(
                f"listening on {self.host} needs --token (or RJOBS_DASHBOARD_TOKEN) or --basic-auth user:pass"
            )
        for allowed in self.allowed_hosts:
            if not _HOST.match(allowed):
                raise ValidationError(f"bad --allow-host {allowed[:60]!r}")
        return self

    @property
    def auth_required(self) -> bool:
        """Whether a request must authenticate (a token or basic auth is set)."""
        return self.token is not None or self.basic_auth is not None

    def host_names(self) -> set[str]:
        """The Host header names (without port) a request may carry: the bound host, the loopback
        names when it is a loopback address, and the allowed hosts. Empty: any host (a wildcard
        address with no --allow-host, where auth is required anyway)."""
        names = {h.lower() for h in self.allowed_hosts}
        if self.host in ("0.0.0.0", "::", "[::]"):
            return names
        names.add(self.host.lower())
        if is_loopback(self.host):
            names |= {"localhost", "127.0.0.1", "[::1]", "::1"}
        return names
