"""The Controller, Channel.Init and stub APIs: what a user reads and the misuse they get told about.

brpc: src/brpc/controller.h, src/brpc/channel.cpp. Error codes are brpc's; misuse that brpc would
catch at compile time (wrong types) raises here.
"""
from __future__ import annotations

import errno

import pytest

from brpc_mini import rpc
from brpc_mini.bthread import bthread_id_lock, bthread_id_unlock
from brpc_mini.proto import echo_pb2
from brpc_mini.rpc import Channel, ChannelOptions, Controller
from brpc_mini.rpc.errors import EREQUEST, ERPCTIMEDOUT
from rpc_helpers import EchoService_Stub, echo, free_port


def connect(port, **options) -> Channel:
    channel = Channel()
    assert channel.Init(f"127.0.0.1:{port}", ChannelOptions(**options)) == 0
    return channel


# -- SetFailed, Failed, ErrorCode, ErrorText (no runtime needed) --------------------------------

def test_fresh_controller_has_not_failed():
    cntl = Controller()
    assert not cntl.Failed()
    assert cntl.ErrorCode() == 0
    assert cntl.ErrorText() == ""
    assert cntl.latency_us() == 0
    assert cntl.remote_side() is None
    assert cntl.retried_count() == 0


def test_set_failed_formats_and_appends():
    cntl = Controller()
    cntl.SetFailed(EREQUEST, "bad %s of %d bytes", "request", 7)
    assert cntl.Failed()
    assert cntl.ErrorCode() == EREQUEST
    assert cntl.ErrorText() == "[E1003]bad request of 7 bytes"
    cntl.SetFailed(ERPCTIMEDOUT, "then %s", "late")
    assert cntl.ErrorCode() == ERPCTIMEDOUT                 # the code is overwritten...
    assert cntl.ErrorText() == "[E1003]bad request of 7 bytes [E1008]then late"   # ...the text appended


def test_set_failed_with_text_only_is_minus_one_without_a_code_prefix():
    # brpc's SetFailed(const std::string&): _error_code = -1, the text as given (a server then
    # sends -1 as EINTERNAL, see SendRpcResponse)
    cntl = Controller()
    cntl.SetFailed("no code given")
    assert cntl.ErrorCode() == -1
    assert cntl.ErrorText() == "no code given"


def test_set_failed_with_minus_one_has_no_code_prefix():
    cntl = Controller()
    cntl.SetFailed(-1, "general")
    assert cntl.ErrorCode() == -1
    assert cntl.ErrorText() == "general"


def test_set_failed_with_zero_becomes_minus_one():
    cntl = Controller()
    cntl.SetFailed(0, "zero is not an error")
    assert cntl.Failed() and cntl.ErrorCode() == -1


def test_set_failed_rejects_a_non_int_code():
    with pytest.raises(TypeError, match="error_code"):
        Controller().SetFailed(1.5, "x")


def test_reset_clears_errors_and_settings():
    cntl = Controller()
    cntl.SetFailed(EREQUEST, "x")
    cntl.set_timeout_ms(10)
    cntl.set_max_retry(1)
    cntl.request_attachment().append(b"abc")
    cntl.Reset()
    assert not cntl.Failed() and cntl.ErrorText() == ""
    assert cntl.timeout_ms() != 10 and cntl.max_retry() != 1
    assert cntl.request_attachment().to_bytes() == b""


def test_setters_reject_misuse():
    cntl = Controller()
    with pytest.raises(ValueError, match="timeout_ms"):
        cntl.set_timeout_ms(0x80000000)
    with pytest.raises(TypeError, match="max_retry"):
        cntl.set_max_retry("3")
    with pytest.raises(TypeError, match="log_id"):
        cntl.set_log_id(None)
    with pytest.raises(ValueError, match="connection_type"):
        cntl.set_connection_type("udp")
    cntl.set_max_retry(5000)
    assert cntl.max_retry() == 1000            # brpc's MAX_RETRY_COUNT


# -- the correlation id -------------------------------------------------------------------------

def test_call_id_and_current_id_arithmetic(rt, echo_server):
    channel = connect(echo_server.port)
    cntl = Controller()
    call_id = cntl.call_id()
    assert call_id != 0 and cntl.call_id() == call_id          # made once, lazily
    assert cntl.current_id() == call_id + 1                     # the first try
    assert cntl.get_id(2) == call_id + 3                        # retry 2
    _, response = echo(channel, cntl=cntl)
    assert not cntl.Failed(), cntl.ErrorText()
    assert response.message == "hello world"
    # the RPC is over: every version of its id is dead
    for version in (call_id, call_id + 1, call_id + 4):
        assert bthread_id_lock(version) == errno.EINVAL
    assert rpc.Join(call_id) == 0                                # a destroyed id joins at once


def test_next_id_in_the_slot_starts_after_the_old_range(rt, echo_server):
    """design 3.4: with max_retry 3 the range is 2 + 3 = 5 versions; the slot's next id starts
    at end_ver = first_ver + range + 3 (contended, unlockable, one past)."""
    channel = connect(echo_server.port)
    cntl = Controller()
    first = cntl.call_id()
    echo(channel, cntl=cntl)
    assert not cntl.Failed(), cntl.ErrorText()
    cntl.Reset()
    second = cntl.call_id()
    assert second >> 32 == first >> 32, "a freed Id slot is reused first"
    assert (second & 0xFFFFFFFF) == (first & 0xFFFFFFFF) + (2 + 3) + 3
    cntl.set_max_retry(0)
    echo(channel, cntl=cntl)
    assert not cntl.Failed(), cntl.ErrorText()
    cntl.Reset()
    assert cntl.call_id() & 0xFFFFFFFF == (second & 0xFFFFFFFF) + (2 + 0) + 3


def test_reset_allows_reuse(rt, echo_server):
    channel = connect(echo_server.port)
    cntl = Controller()
    for i in range(3):
        old_id = cntl.call_id()
        _, response = echo(channel, f"round {i}", cntl=cntl)
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == f"round {i}"
        cntl.Reset()
        assert cntl.call_id() != old_id


def test_reuse_without_reset_fails_with_einval(rt, echo_server):
    channel = connect(echo_server.port)
    cntl, _ = echo(channel)
    assert not cntl.Failed(), cntl.ErrorText()
    requests_before = echo_server.service.nrequests
    _, response = echo(channel, "again", cntl=cntl)
    assert cntl.ErrorCode() == errno.EINVAL
    assert "Fail to lock call_id" in cntl.ErrorText()
    assert response.message == ""
    assert echo_server.service.nrequests == requests_before, "nothing was sent"


def test_async_reuse_without_reset_runs_done_inline(rt, echo_server):
    channel = connect(echo_server.port)
    cntl, _ = echo(channel)
    assert not cntl.Failed(), cntl.ErrorText()
    ran = []
    returned = EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="x"),
                                              lambda response: ran.append(cntl.ErrorCode()))
    assert returned is None
    assert ran == [errno.EINVAL]


def test_a_failed_call_destroys_its_id_too(rt):
    channel = connect(free_port(), max_retry=0)
    cntl, _ = echo(channel)
    assert cntl.Failed()
    assert bthread_id_lock(cntl.call_id()) == errno.EINVAL


def test_id_of_an_unused_controller_locks_and_unlocks(rt):
    cntl = Controller()
    call_id = cntl.call_id()
    data = []
    assert bthread_id_lock(call_id, data) == 0
    assert data == [cntl]                                 # the Controller is the Id's data
    assert bthread_id_unlock(call_id) == 0


def test_latency_and_sides(rt, echo_server):
    channel = connect(echo_server.port)
    cntl, _ = echo(channel)
    assert not cntl.Failed(), cntl.ErrorText()
    assert cntl.latency_us() >= 0
    assert cntl.remote_side() == ("127.0.0.1", echo_server.port)
    assert cntl.local_side()[0] == "127.0.0.1"


def test_log_id_reaches_the_server(rt, echo_server):
    seen = []
    service = echo_server.service
    original = service.Echo

    def recording_echo(cntl, request, response, done):
        seen.append((cntl.has_log_id(), cntl.log_id()))
        original(cntl, request, response, done)

    service.Echo = recording_echo
    channel = connect(echo_server.port)
    cntl = Controller()
    cntl.set_log_id(12345)
    echo(channel, cntl=cntl)
    echo(channel)
    assert seen == [(True, 12345), (False, 0)]


# -- Channel.Init -------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("no-port-here", ChannelOptions()),
    ("127.0.0.1:notaport", ChannelOptions()),
    ("127.0.0.1:70000", ChannelOptions()),
    (12345, ChannelOptions()),
    ("127.0.0.1:8000", "not options"),
    ("127.0.0.1:8000", ChannelOptions(protocol="http")),
    ("127.0.0.1:8000", ChannelOptions(connection_type="udp")),
    ("list://127.0.0.1:8000,127.0.0.1:8001", "no_such_lb", ChannelOptions()),
    ("file://servers.txt", "rr", ChannelOptions()),
], ids=["no-port", "bad-port", "port-range", "not-a-str", "not-options", "protocol",
        "connection-type", "load-balancer", "naming-scheme"])
# (a bad entry in a list:// is skipped with an error logged, as brpc's ParseServerList does:
# tests/rpc/test_rpc_load_balancer.py)
def test_channel_init_errors_are_einval(rt, args):
    assert Channel().Init(*args) == errno.EINVAL


def test_channel_init_forms(rt):
    port = free_port()
    assert Channel().Init(f"127.0.0.1:{port}") == 0
    assert Channel().Init(f"127.0.0.1:{port}", ChannelOptions()) == 0
    assert Channel().Init(f"127.0.0.1:{port}", "", ChannelOptions()) == 0     # empty balancer: single
    for connection_type in ("single", "pooled", "short", ""):
        assert Channel().Init(f"127.0.0.1:{port}", ChannelOptions(connection_type=connection_type)) == 0
    channel = Channel()
    assert channel.Init(f"list://127.0.0.1:{port},127.0.0.1:{port + 1}", "random", ChannelOptions()) == 0
    assert not channel.SingleServer()


def test_call_method_before_init_raises(rt):
    with pytest.raises(RuntimeError, match="Init"):
        EchoService_Stub(Channel()).Echo(Controller(), echo_pb2.EchoRequest(message="x"))


def test_call_method_after_failed_init_raises(rt):
    channel = Channel()
    assert channel.Init("nonsense", ChannelOptions(connection_type="udp")) == errno.EINVAL
    with pytest.raises(RuntimeError, match="Init"):
        EchoService_Stub(channel).Echo(Controller(), echo_pb2.EchoRequest(message="x"))


def test_call_method_type_errors(rt):
    channel = connect(free_port())
    method = echo_pb2.DESCRIPTOR.services_by_name["EchoService"].methods_by_name["Echo"]
    request = echo_pb2.EchoRequest(message="x")
    with pytest.raises(TypeError, match="controller"):
        channel.CallMethod(method, object(), request, echo_pb2.EchoResponse)
    with pytest.raises(TypeError, match="done"):
        channel.CallMethod(method, Controller(), request, echo_pb2.EchoResponse, done="not callable")


def test_missing_required_field_is_erequest(rt, echo_server):
    channel = connect(echo_server.port)
    cntl = Controller()
    response = EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest())   # message is required
    assert cntl.ErrorCode() == EREQUEST
    assert cntl.ErrorText() == "[E1003]Missing required fields in request: message"
    assert response.message == ""
    assert echo_server.service.nrequests == 0


# -- make_stub ----------------------------------------------------------------------------------

def test_make_stub_needs_a_service_descriptor():
    with pytest.raises(TypeError, match="ServiceDescriptor"):
        rpc.make_stub(object())
    with pytest.raises(TypeError, match="ServiceDescriptor"):
        rpc.make_stub(echo_pb2.EchoRequest.DESCRIPTOR)


def test_stub_needs_a_channel():
    with pytest.raises(TypeError, match="CallMethod"):
        EchoService_Stub(object())


def test_stub_checks_the_request_type():
    stub = EchoService_Stub(Channel())
    with pytest.raises(TypeError, match="example.EchoService.Echo takes a example.EchoRequest"):
        stub.Echo(Controller(), echo_pb2.EchoResponse(message="wrong type"))


def test_stub_shape():
    assert EchoService_Stub.__name__ == "EchoService_Stub"
    assert EchoService_Stub.DESCRIPTOR.full_name == "example.EchoService"
    assert "EchoRequest" in EchoService_Stub.Echo.__doc__
