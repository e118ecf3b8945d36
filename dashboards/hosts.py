"""Which requests the dashboard answers, judged by their Host header, and when to warn that it is shared.

DNS rebinding: a web page from evil.example can point evil.example at 127.0.0.1 and then read the
dashboard from the victim's own browser, as same-origin requests. The browser still sends
``Host: evil.example:PORT``, so answering only requests that name the address the dashboard was bound to
(or a loopback name for it) defeats that. The dashboard has no authentication, so binding it off the
loopback shares every run in the store with whoever can reach the port; ``exposure_warning`` says so.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


def _bare(host: str) -> str:
    """A host as urlsplit gives it: lower case, an IPv6 address without its brackets."""
    return host.strip().strip("[]").lower()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """``host`` (a name or address to bind) reaches this machine only."""
    bare = _bare(host)
    return bare == "localhost" or (_is_address(bare) and ipaddress.ip_address(bare).is_loopback)


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The Host headers to answer: one of ``names`` (or, bound to every interface, any IP address), at
    ``port`` (None: any port, for an app served by someone else, e.g. tests)."""

    names: frozenset[str]
    port: int | None
    any_address: bool = False

    def allows(self, header: str | None) -> bool:
        if not header or any(c in header for c in "@/?#\\ "):  # a bare host[:port] only
            return False
        try:
            parts = urlsplit(f"//{header}")
            host, port = parts.hostname, parts.port
        except ValueError:  # a malformed port or IPv6 address
            return False
        if host is None or (self.port is not None and (port or 80) != self.port):
            return False
        # An address typed into the browser is its own origin, so no other site's page can make requests
        # carrying it; only names can be rebound.
        return host in self.names or (self.any_address and _is_address(host))


def host_policy(host: str, port: int | None, allowed: Iterable[str] = ()) -> HostPolicy:
    """The policy of a dashboard bound to ``host``: loopback accepts every loopback name, every interface
    (0.0.0.0, ::) accepts loopback, this machine's name and any address, another address only itself;
    ``allowed`` adds names (a DNS name the machine is reached by, or a proxy's)."""
    bare = _bare(host)
    names = {bare, *(_bare(a) for a in allowed)}
    if is_loopback(bare):
        names.update(LOOPBACK_NAMES)
    wildcard = bare in WILDCARD_ADDRESSES
    if wildcard:
        names.update([*LOOPBACK_NAMES, socket.gethostname().lower()])
    return HostPolicy(names=frozenset(names - {""}), port=port, any_address=wildcard)


def exposure_warning(host: str, port: int) -> str | None:
    """One line for stderr when ``host`` is off the loopback; None when it is on it."""
    if is_loopback(host):
        return None
    shown = f"[{host}]" if ":" in host else host
    return (
        f"dibs dashboard: warning: listening on {shown}:{port}, beyond this machine, with no "
        "authentication: anyone who can reach that port can read every run in the store"
    )
