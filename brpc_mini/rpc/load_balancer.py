"""Naming service ``list://`` and the ``rr`` / ``random`` load balancers.

brpc: src/brpc/policy/list_naming_service.cpp (ParseServerList), file_naming_service.cpp
(SplitIntoServerAndTag), round_robin_load_balancer.cpp, randomized_load_balancer.cpp,
src/brpc/load_balancer.h

``list://`` entries are separated by commas; each is an address, optionally followed by blanks
(spaces or tabs) and a tag. Blank entries and ``#`` comments are skipped, an entry that is not an
address is skipped with an error logged (``Invalid address=`...'``), and a repeated entry is kept
once — as brpc's ParseServerList does.

``SelectServer`` visits the servers in a prime-stride order and takes the first one whose main
socket is usable and that the RPC has not tried yet (the Controller's excluded set); the last one
visited is taken even if excluded ("always take last chance"), so a lone healthy server is retried
rather than failing. Nothing usable: EHOSTDOWN; no servers at all: ENODATA. The strides are primes
from brpc's table (36809..41579, src/bthread/offset_inl.list), and random choices come from the
runtime's seeded generator. brpc keeps rr's position and stride per thread (thread-local); the kit
keeps one pair per load balancer.
"""
from __future__ import annotations

import errno as _errno
import logging
import socket as _pysocket

from ..bthread.task_control import _steal_primes
from .errors import EHOSTDOWN
from .socket import Socket, endpoint2str

log = logging.getLogger("brpc_mini.rpc")


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


def split_into_server_and_tag(line: str):
    """``"  host:port  tag # comment"`` -> ``("host:port", "tag")``; None for a blank or ``#``
    line. brpc: src/brpc/policy/file_naming_service.cpp, SplitIntoServerAndTag"""
    rest = line.lstrip()
    if not rest or rest[0] == "#":
        return None
    parts = rest.split(None, 1)
    address = parts[0]
    tag = ""
    if len(parts) > 1:
        # as in brpc: the tag's first character is always kept, then it runs to a '#'
        tag = (parts[1][0] + parts[1][1:].split("#", 1)[0]).rstrip()
    return address, tag


def parse_list_naming_service(url: str) -> list:
    """``list://a:1,b:2`` -> endpoints, in order, each once.

    brpc: src/brpc/policy/list_naming_service.cpp, ParseServerList (ListNamingService::GetServers).
    An entry that is not an address is logged and skipped; a repeated (address, tag) is dropped.
    """
    prefix = "list://"
    if not url.startswith(prefix):
        raise ValueError(f"only list:// naming services are supported, got {url!r}")
    endpoints = []
    presence = set()
    for field in url[len(prefix):].split(","):
        split = split_into_server_and_tag(field)
        if split is None:
            continue
        address, tag = split
        try:
            endpoint = parse_endpoint(address)
        except ValueError as exc:
            log.error("Invalid address=`%s': %s", address, exc)
            continue
        if (endpoint, tag) in presence:
            log.debug("Duplicated server=%s%s", endpoint2str(endpoint), f"({tag})" if tag else "")
            continue
        presence.add((endpoint, tag))
        endpoints.append(endpoint)
    return endpoints


def prime_offset(rng) -> int:
    """A random prime from brpc's table. brpc: src/bthread/prime_offset.h, prime_offset"""
    primes = _steal_primes()
    return primes[rng.randrange(len(primes))]


class LoadBalancer:
    """Main sockets of the servers, plus a way to pick one."""

    name = "?"

    def __init__(self, server_ids: list, runtime):
        self.server_ids = list(server_ids)
        self.runtime = runtime

    def _IsServerAvailable(self, sid: int):
        """The server's main socket if it can take an RPC, else None. brpc: IsServerAvailable"""
        s = Socket.Address(sid, self.runtime)
        if s is None or not s.IsAvailable():
            return None
        return s

    def SelectServer(self, begin_time_us: int, excluded):
        """(0, socket) or (error code, None)."""
        raise NotImplementedError

    def Describe(self) -> str:
        servers = []
        for sid in self.server_ids:
            s = Socket.AddressFailedAsWell(sid, self.runtime)
            servers.append(endpoint2str(s.remote_side) if s is not None else "?")
        return f"{self.name}{{{','.join(servers)}}}"


class RoundRobinLoadBalancer(LoadBalancer):
    """brpc: src/brpc/policy/round_robin_load_balancer.cpp, RoundRobinLoadBalancer::SelectServer

    Starts at a random server with a random prime stride, and remembers the server it *picked*:
    the next call goes on from there. A server that is down is stepped over, so its share is
    spread over the others instead of all going to its successor.
    """
    name = "rr"

    def __init__(self, server_ids, runtime):
        super().__init__(server_ids, runtime)
        self._stride = 0        # brpc: tls.stride, 0 until the first SelectServer
        self._offset = 0

    def SelectServer(self, begin_time_us: int, excluded):
        n = len(self.server_ids)
        if n == 0:
            return _errno.ENODATA, None
        if self._stride == 0:
            self._stride = prime_offset(self.runtime.random)
            self._offset = self.runtime.random.randrange(n)
        offset = self._offset
        for i in range(n):
            offset = (offset + self._stride) % n
            sid = self.server_ids[offset]
            if i + 1 == n or not (excluded and sid in excluded):   # always take last chance
                s = self._IsServerAvailable(sid)
                if s is not None:
                    self._offset = offset
                    return 0, s
        self._offset = offset
        return EHOSTDOWN, None


class RandomizedLoadBalancer(LoadBalancer):
    """brpc: src/brpc/policy/randomized_load_balancer.cpp, RandomizedLoadBalancer::SelectServer

    A random server; if it cannot be used, the next tries go a random prime stride apart, so a
    server that is down does not pass its share to its neighbour.
    """
    name = "random"

    def SelectServer(self, begin_time_us: int, excluded):
        n = len(self.server_ids)
        if n == 0:
            return _errno.ENODATA, None
        stride = 0
        offset = self.runtime.random.randrange(n)
        for i in range(n):
            sid = self.server_ids[offset]
            if i + 1 == n or not (excluded and sid in excluded):   # always take last chance
                s = self._IsServerAvailable(sid)
                if s is not None:
                    return 0, s
            if stride == 0:
                stride = prime_offset(self.runtime.random)
            offset = (offset + stride) % n
        return EHOSTDOWN, None


LOAD_BALANCERS = {"rr": RoundRobinLoadBalancer, "random": RandomizedLoadBalancer}
