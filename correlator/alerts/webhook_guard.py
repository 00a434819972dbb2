"""Where an alert webhook may be sent: public addresses, and internal ones only inside
``LLMRUM_WEBHOOK_ALLOWED_NETWORKS``.

Any member of an application can write a rule's webhook URL, and the worker that sends
it sits inside the deployment's network: without a guard, a rule could make it POST to
the cloud's metadata service (169.254.169.254), the database's admin port or any
internal service (server-side request forgery). So the address the worker actually
connects to (after DNS, checked on the connected socket, which a DNS answer that
changes between a check and the connection cannot get around) must be a global one
unless an operator listed its network; redirects are not followed, as a public URL
could otherwise send the POST inward."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookAddressRefused(OSError):
    """The webhook's address is internal and not in LLMRUM_WEBHOOK_ALLOWED_NETWORKS."""


def address_allowed(address: str, allowed: Sequence[Network]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is not the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return True
    return ip.is_global and not ip.is_multicast


def allowed_networks() -> tuple[Network, ...]:
    return tuple(settings.LLMRUM_WEBHOOK_ALLOWED_NETWORKS)


def literal_address_refused(url: str) -> str | None:
    """Why a URL whose host is written as an internal address cannot be a webhook (for
    the API and the admin, before anything is sent), or None. Names are checked when
    the webhook is sent, against the address they lead to then."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if address_allowed(host, allowed_networks()):
        return None
    return (
        f"{host} is an internal address: webhooks go to public addresses, or to networks "
        "listed in LLMRUM_WEBHOOK_ALLOWED_NETWORKS"
    )


def _guarded_connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
    sock = socket.create_connection(address, *args, **kwargs)
    peer = sock.getpeername()[0]
    if not address_allowed(peer, allowed_networks()):
        sock.close()
        raise WebhookAddressRefused(
            f"{address[0]} is {peer}, an internal address not in LLMRUM_WEBHOOK_ALLOWED_NETWORKS"
        )
    return sock


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _guarded_connect


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _guarded_connect


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_GuardedHTTPSConnection, req)  # the default TLS context


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx answer is then an HTTPError: a failed delivery


def guarded_opener() -> urllib.request.OpenerDirector:
    """An opener that connects to allowed addresses only and follows no redirect. No
    proxy either: through a proxy the connected address would be the proxy's."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        _GuardedHTTPHandler(),
        _GuardedHTTPSHandler(),
        _NoRedirects(),
    )
