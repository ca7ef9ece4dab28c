"""``list://`` parsing and the rr / random load balancers, against brpc's algorithms.

brpc: src/brpc/policy/list_naming_service.cpp (ParseServerList), file_naming_service.cpp
(SplitIntoServerAndTag), round_robin_load_balancer.cpp and randomized_load_balancer.cpp
(SelectServer).

The balancers are driven directly, over fake main sockets (which are up or down as the test says)
and a seeded generator, so the counts below are exact and the same every run.
"""
from __future__ import annotations

import collections
import errno
import logging
import random

import pytest

from brpc_mini.rpc import Channel, ChannelOptions
from brpc_mini.rpc import load_balancer as lb
from brpc_mini.rpc.errors import EHOSTDOWN


class FakeMainSocket:
    def __init__(self, sid: int):
        self.sid = sid

    def IsAvailable(self) -> bool:
        return True


class FakeRuntime:
    def __init__(self, seed: int):
        self.random = random.Random(seed)


@pytest.fixture
def down(monkeypatch):
    """The set of server ids whose main socket is failed (Socket.Address gives None)."""
    failed = set()

    class FakeSocket:
        @staticmethod
        def Address(sid, runtime=None):
            return None if sid in failed else FakeMainSocket(sid)

    monkeypatch.setattr(lb, "Socket", FakeSocket)
    return failed


def picks(balancer, ncalls: int, excluded=None) -> collections.Counter:
    out = collections.Counter()
    for _ in range(ncalls):
        rc, s = balancer.SelectServer(0, excluded)
        out[s.sid if rc == 0 else rc] += 1
    return out


# -- a server that is down: its share is spread, not handed to its successor ----------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [3, 4, 5])
def test_round_robin_spreads_a_dead_servers_share_evenly(down, n, seed):
    """brpc's rr goes on from the server it picked (tls.offset), so with server 1 down every live
    server gets exactly 1/(n-1). The kit restarted from a fixed sequence and gave server 1's turns
    to server 2 (n=3: {0: 8000, 2: 4000})."""
    down.add(1)
    balancer = lb.RoundRobinLoadBalancer(list(range(n)), FakeRuntime(seed))
    ncalls = 1200
    live = [i for i in range(n) if i != 1]
    assert picks(balancer, ncalls) == {i: ncalls // len(live) for i in live}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_spreads_a_dead_servers_share(down, seed):
    """brpc's random retries a random prime stride away, not at the next index: with server 1 of
    3 down, servers 0 and 2 each get about half (the kit's +1 walk gave server 2 two thirds)."""
    down.add(1)
    balancer = lb.RandomizedLoadBalancer([0, 1, 2], FakeRuntime(seed))
    counts = picks(balancer, 6000)
    assert set(counts) == {0, 2}
    assert 0.44 < counts[0] / 6000 < 0.56, counts


def test_round_robin_visits_every_server_once_per_round(down):
    balancer = lb.RoundRobinLoadBalancer([10, 11, 12, 13, 14], FakeRuntime(7))
    order = [balancer.SelectServer(0, None)[1].sid for _ in range(15)]
    for start in range(0, 15, 5):
        assert sorted(order[start:start + 5]) == [10, 11, 12, 13, 14]
    assert order[:5] == order[5:10] == order[10:]


# -- excluded servers: "always take last chance" --------------------------------------------------

def test_an_excluded_server_is_taken_only_as_the_last_candidate_random(down):
    """brpc takes the n-th candidate whatever it is, and an excluded one only then: with A
    excluded and B down, A is returned when visited last and EHOSTDOWN when visited first. The
    kit always fell back to A."""
    a, b = 100, 101
    down.add(b)
    counts = picks(lb.RandomizedLoadBalancer([a, b], FakeRuntime(5)), 200, excluded={a})
    assert set(counts) == {a, EHOSTDOWN}, counts


def test_an_excluded_server_is_taken_only_as_the_last_candidate_rr(down):
    """The same for rr, where the order is fixed once the random start is drawn: from one start
    A is always visited last (taken), from the other always first (EHOSTDOWN)."""
    a, b = 100, 101
    down.add(b)
    outcomes = set()
    for seed in range(20):
        counts = picks(lb.RoundRobinLoadBalancer([a, b], FakeRuntime(seed)), 10, excluded={a})
        assert len(counts) == 1 and set(counts) <= {a, EHOSTDOWN}, counts
        outcomes |= set(counts)
    assert outcomes == {a, EHOSTDOWN}


@pytest.mark.parametrize("cls", [lb.RoundRobinLoadBalancer, lb.RandomizedLoadBalancer])
def test_when_every_server_is_excluded_the_last_one_visited_is_taken(down, cls):
    balancer = cls([1, 2, 3], FakeRuntime(3))
    counts = picks(balancer, 300, excluded={1, 2, 3})
    assert EHOSTDOWN not in counts and set(counts) <= {1, 2, 3}
    lone = cls([7], FakeRuntime(3))
    assert lone.SelectServer(0, {7})[1].sid == 7               # a lone server is retried


@pytest.mark.parametrize("cls", [lb.RoundRobinLoadBalancer, lb.RandomizedLoadBalancer])
def test_no_server_up_is_ehostdown_and_no_server_at_all_enodata(down, cls):
    down.update({1, 2})
    assert cls([1, 2], FakeRuntime(0)).SelectServer(0, None) == (EHOSTDOWN, None)
    assert cls([], FakeRuntime(0)).SelectServer(0, None) == (errno.ENODATA, None)


def test_strides_are_primes_from_brpcs_table():
    rng = random.Random(0)
    strides = {lb.prime_offset(rng) for _ in range(200)}
    assert all(36809 <= p <= 41579 for p in strides)
    assert all(all(p % d for d in range(2, int(p ** 0.5) + 1)) for p in strides)


# -- list:// --------------------------------------------------------------------------------------

def test_list_drops_repeated_servers():
    """brpc: ``presence.insert(node).second`` — the kit kept both, and the repeated server got
    twice the traffic."""
    assert lb.parse_list_naming_service("list://127.0.0.1:7001,127.0.0.1:7001,127.0.0.1:7002") == [
        ("127.0.0.1", 7001), ("127.0.0.1", 7002)]


def test_list_skips_bad_entries_with_an_error_logged(caplog):
    """brpc: ``LOG(ERROR) << "Invalid address=`" << addr << '\\''`` and ``continue``; the kit
    failed the whole Channel.Init."""
    with caplog.at_level(logging.ERROR, logger="brpc_mini.rpc"):
        got = lb.parse_list_naming_service("list://127.0.0.1:7001,no-port,127.0.0.1:99999,127.0.0.1:x")
    assert got == [("127.0.0.1", 7001)]
    for bad in ("no-port", "127.0.0.1:99999", "127.0.0.1:x"):
        assert f"Invalid address=`{bad}'" in caplog.text


def test_list_splits_address_and_tag_on_any_blank():
    """brpc: SplitIntoServerAndTag splits on isspace, so a tab before the tag works (the kit split
    on ' ' only and read "7001\\ttag1" as the port); blank entries and '#' comments are skipped."""
    url = "list:// 127.0.0.1:7001\ttag1 , ,#127.0.0.1:7009,127.0.0.1:7002   tag2 # note,\t127.0.0.1:7003"
    assert lb.parse_list_naming_service(url) == [("127.0.0.1", 7001), ("127.0.0.1", 7002), ("127.0.0.1", 7003)]
    assert lb.split_into_server_and_tag("\t127.0.0.1:7001\t\ttag1\t") == ("127.0.0.1:7001", "tag1")
    assert lb.split_into_server_and_tag("127.0.0.1:7001 t # comment") == ("127.0.0.1:7001", "t")
    assert lb.split_into_server_and_tag("   ") is None
    assert lb.split_into_server_and_tag(" # 127.0.0.1:7001") is None


def test_list_keeps_one_address_with_two_tags():
    """A server node is the address *and* the tag in brpc: the same address under two tags is two
    nodes."""
    assert lb.parse_list_naming_service("list://127.0.0.1:7001 a,127.0.0.1:7001 b,127.0.0.1:7001 a") == [
        ("127.0.0.1", 7001), ("127.0.0.1", 7001)]


def test_channel_init_with_a_bad_list_entry_uses_the_others(rt, caplog):
    channel = Channel()
    with caplog.at_level(logging.ERROR, logger="brpc_mini.rpc"):
        assert channel.Init("list://127.0.0.1:7001,bad,127.0.0.1:7001\ttag", "rr", ChannelOptions()) == 0
    assert len(channel._lb.server_ids) == 2          # 7001 untagged and 7001 tagged
    assert "Invalid address=`bad'" in caplog.text
    assert Channel().Init("list://127.0.0.1:7001", "no_such_lb", ChannelOptions()) == errno.EINVAL
