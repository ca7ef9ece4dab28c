"""Protocol Buffers messages of brpc_mini: baidu_std's RpcMeta and the echo example.

brpc: src/brpc/policy/baidu_rpc_meta.proto, src/brpc/options.proto,
src/brpc/streaming_rpc_meta.proto, example/echo_c++/echo.proto

The .proto files here are brpc_mini's own, written to match brpc's package names, message names,
field names, numbers and types, so the frames interoperate with real brpc. The generated
``*_pb2.py`` modules are checked in (``python -m brpc_mini.proto.generate`` rebuilds them), so using
the kit needs the protobuf runtime only, not protoc:

    from brpc_mini.proto import baidu_rpc_meta_pb2, echo_pb2

This package imports nothing on its own, so the generator still runs when a generated module is
missing or stale.
"""
