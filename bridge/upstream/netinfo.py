"""The bridge's own IP address as the upstream sees it, for Frontelio's heartbeat `ipAddress`.

Connecting a UDP socket sends no packet: the kernel only picks the route and the source
address, which is the address of the interface that reaches the upstream (not 127.0.1.1 from
/etc/hosts, not a docker bridge).
"""

from __future__ import annotations

import socket


def source_address_towards(host: str, port: int) -> str:
    """Raise OSError (socket.gaierror included) when the host does not resolve or has no route."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.connect(address)
        return str(probe.getsockname()[0])
