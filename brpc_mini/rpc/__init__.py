"""brpc_mini.rpc — brpc's client and server on top of brpc_mini.bthread.

A synchronous echo call, as the seed follows it::

    from brpc_mini import rpc
    from brpc_mini.proto import echo_pb2

    channel = rpc.Channel()
    channel.Init("127.0.0.1:8000", rpc.ChannelOptions(timeout_ms=100))
    stub = rpc.make_stub(echo_pb2.DESCRIPTOR.services_by_name["EchoService"])(channel)
    cntl = rpc.Controller()
    response = stub.Echo(cntl, echo_pb2.EchoRequest(message="hello world"))
    if cntl.Failed(): print(cntl.ErrorText())

Explained in: notebooks/04_channel_callmethod.ipynb .. 07_walkthrough.ipynb
"""
from . import errors  # noqa: F401
from .channel import Channel, ChannelOptions, HandleBackupRequest, HandleTimeout, Join, StartCancel  # noqa: F401
from .controller import Controller  # noqa: F401
from .flags import FLAGS  # noqa: F401
from .iobuf import IOBuf  # noqa: F401
from .retry_policy import RetryPolicy, RpcRetryPolicy  # noqa: F401
from .server import Server, ServerOptions  # noqa: F401
from .socket import Socket, rpc_state  # noqa: F401
from .stub import make_stub  # noqa: F401
