"""Keeps every Python process the tests start on the loopback address.

The tests put this folder first on PYTHONPATH, so Python imports this file at
start-up in every process they spawn (`dvc`, `python -m stages ...`), and
conftest.py installs the same guard in the test process itself. Any attempt to
resolve or connect to a host that is not on 127.0.0.0/8 or ::1 fails at once
with an OSError that says so, whatever network the machine has: a test can
neither pass nor fail because of the internet.

HERMETIC_CANONICAL=http://127.0.0.1:<port> additionally sends the datasets'
canonical URLs (storage.googleapis.com, s3.amazonaws.com) to a loopback server
standing in for them, at <port>/<host>/<path>, so the code path that downloads
from the canonical URL can be tested too.
"""

from __future__ import annotations

import ipaddress
import os
import socket

CANONICAL_HOSTS = ("storage.googleapis.com", "s3.amazonaws.com")


def _is_loopback(host) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkBlocked(socket.gaierror):
    """Raised for any non-loopback host: the tests never leave this machine."""


def install() -> None:
    if getattr(socket, "_hermetic_installed", False):
        return
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            raise NetworkBlocked(-2, f"network disabled in tests: {host} is not a loopback address")
        return real_getaddrinfo(host, *args, **kwargs)

    def _check(address) -> None:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            raise ConnectionRefusedError(f"network disabled in tests: {address[0]} is not a loopback address")

    def connect(self, address):
        _check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket._hermetic_installed = True

    standin = os.environ.get("HERMETIC_CANONICAL")
    if standin:
        import urllib.request

        real_open = urllib.request.OpenerDirector.open

        def open_(self, fullurl, *args, **kwargs):
            url = fullurl.full_url if isinstance(fullurl, urllib.request.Request) else fullurl
            for host in CANONICAL_HOSTS:
                prefix = f"https://{host}/"
                if url.startswith(prefix):
                    url = f"{standin.rstrip('/')}/{host}/{url[len(prefix) :]}"
                    fullurl = urllib.request.Request(url, headers=getattr(fullurl, "headers", {}) or {})
                    break
            return real_open(self, fullurl, *args, **kwargs)

        urllib.request.OpenerDirector.open = open_


install()
