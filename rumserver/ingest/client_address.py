"""The client's address, as seen through the proxies the operator trusts.

Behind a load balancer every request connects from the balancer's address; keyed on
that, one busy page would spend every browser's rate limit. ``X-Forwarded-For`` is
written by each proxy on the way in, so only the hops added by trusted proxies are
believed: walk it from the right, past addresses inside ``LLMRUM_TRUSTED_PROXIES``,
and the first address outside them is the client. A browser can write whatever it
likes on the left of the header; it cannot write on the right of what our own
proxies append.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings import this module: keep Django's request module out of it
    from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str], *, setting: str) -> tuple[Network, ...]:
    """CIDRs (or single addresses) from a setting; a bad one names the setting."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{setting}: {value!r} is not an address or CIDR") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _trusted(address: object, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def client_address(request: HttpRequest, trusted: Sequence[Network]) -> str:
    """The connecting address, or, when that is a trusted proxy, the rightmost
    ``X-Forwarded-For`` hop outside the trusted networks."""
    remote: str = request.META.get("REMOTE_ADDR", "")
    if not trusted:
        return remote
    connecting = _address(remote)
    if connecting is None or not _trusted(connecting, trusted):
        return remote
    client = str(connecting)
    for hop in reversed(request.headers.get("X-Forwarded-For", "").split(",")[-32:]):
        address = _address(hop)
        if address is None:
            # A hop no proxy of ours wrote: stop at the last one we can vouch for.
            break
        client = str(address)
        if not _trusted(address, trusted):
            break
    return client
