"""Naming service ``list://`` and the ``rr`` / ``random`` load balancers.

brpc: src/brpc/policy/list_naming_service.cpp, round_robin_load_balancer.cpp,
randomized_load_balancer.cpp, src/brpc/load_balancer.h

``SelectServer`` skips servers in the Controller's excluded set (those an earlier try of the same
RPC used) unless nothing else is left, and servers whose main socket is failed. Nothing fits:
EHOSTDOWN; no servers at all: ENODATA. Random choices come from the runtime's seeded generator.
"""
from __future__ import annotations

import errno as _errno
import socket as _pysocket

from .errors import EHOSTDOWN
from .socket import Socket, endpoint2str


def parse_endpoint(text: str):
    """``"host:port"`` -> ``(ip, port)``; raises ValueError naming what is wrong."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"expected 'host:port', got {text!r}")
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    try:
        ip = _pysocket.gethostbyname(host)
    except OSError as exc:
        raise ValueError(f"cannot resolve host {host!r} in {text!r}: {exc}") from None
    return ip, port


def parse_list_naming_service(url: str) -> list:
    """``list://a:1,b:2`` -> endpoints. brpc: ListNamingService::GetServers"""
    prefix = "list://"
    if not url.startswith(prefix):
        raise ValueError(f"only list:// naming services are supported, got {url!r}")
    items = [x.strip() for x in url[len(prefix):].split(",") if x.strip()]
    return [parse_endpoint(x.split(" ")[0]) for x in items]


class LoadBalancer:
    """Main sockets of the servers, plus a way to pick one."""

    name = "?"

    def __init__(self, server_ids: list, runtime):
        self.server_ids = list(server_ids)
        self.runtime = runtime

    def _candidates(self, excluded):
        return self.server_ids

    def SelectServer(self, begin_time_us: int, excluded):
        """(0, socket) or (error code, None)."""
        n = len(self.server_ids)
        if n == 0:
            return _errno.ENODATA, None
        order = self._order(n)
        fallback = None
        for i, index in enumerate(order):
            sid = self.server_ids[index]
            s = Socket.Address(sid, self.runtime)
            if s is None or not s.IsAvailable():
                continue
            if excluded and sid in excluded:
                fallback = fallback or s
                continue
            return 0, s
        if fallback is not None:
            return 0, fallback
        return EHOSTDOWN, None

    def Describe(self) -> str:
        servers = []
        for sid in self.server_ids:
            s = Socket.AddressFailedAsWell(sid, self.runtime)
            servers.append(endpoint2str(s.remote_side) if s is not None else "?")
        return f"{self.name}{{{','.join(servers)}}}"


class RoundRobinLoadBalancer(LoadBalancer):
    """brpc: src/brpc/policy/round_robin_load_balancer.cpp (a prime stride from a random start)."""
    name = "rr"
    _PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71)

    def __init__(self, server_ids, runtime):
        super().__init__(server_ids, runtime)
        self._offset = runtime.random.randrange(1 << 16)
        n = max(1, len(self.server_ids))
        primes = [p for p in self._PRIMES if n % p]
        self._stride = primes[runtime.random.randrange(len(primes))] if primes else 1

    def _order(self, n):
        start = self._offset % n
        self._offset += self._stride
        return [(start + i * self._stride) % n for i in range(n)]


class RandomizedLoadBalancer(LoadBalancer):
    """brpc: src/brpc/policy/randomized_load_balancer.cpp"""
    name = "random"

    def _order(self, n):
        start = self.runtime.random.randrange(n)
        return [(start + i) % n for i in range(n)]


LOAD_BALANCERS = {"rr": RoundRobinLoadBalancer, "random": RandomizedLoadBalancer}
