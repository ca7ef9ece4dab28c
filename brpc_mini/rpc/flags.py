"""brpc's gflags that the kit honours, as one mutable namespace.

brpc: the DEFINE_* flags in src/brpc/event_dispatcher.cpp, socket.cpp, socket_map.cpp,
input_messenger.cpp, protocol.cpp

Set them before the objects that read them are made, as with gflags:
``brpc_mini.rpc.FLAGS.event_dispatcher_num = 2`` before the first connection of a runtime.
"""
from __future__ import annotations


class _Flags:
    _frozen = False

    def __init__(self):
        #: EventDispatchers per runtime (brpc: FLAGS_event_dispatcher_num, default 1)
        self.event_dispatcher_num = 1
        #: the dispatcher starts the reader with bthread_start_urgent unless this is True
        #: (brpc: FLAGS_event_dispatcher_edisp_unsched)
        self.event_dispatcher_edisp_unsched = False
        #: a client main socket that failed tries to reconnect this often, seconds
        #: (brpc: FLAGS_health_check_interval)
        self.health_check_interval = 3
        #: idle pooled connections kept per server (brpc: FLAGS_max_connection_pool_size)
        self.max_connection_pool_size = 100
        #: a socket refuses writes past this many unwritten bytes (brpc: FLAGS_socket_max_unwritten_bytes)
        self.socket_max_unwritten_bytes = 64 * 1024 * 1024
        #: what the protocol's cutter refuses (brpc: FLAGS_max_body_size); the cutter reads
        #: brpc_mini.rpc.policy.baidu_rpc_protocol.FLAGS_max_body_size, kept in step by the setter
        self._max_body_size = 64 * 1024 * 1024
        #: send RpcRequestMeta.timeout_ms (brpc: FLAGS_baidu_std_protocol_deliver_timeout_ms)
        self.baidu_std_protocol_deliver_timeout_ms = False
        self._frozen = True

    @property
    def max_body_size(self) -> int:
        return self._max_body_size

    @max_body_size.setter
    def max_body_size(self, value: int) -> None:
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"max_body_size must be a positive int, got {value!r}")
        self._max_body_size = value
        from .policy import baidu_rpc_protocol
        baidu_rpc_protocol.FLAGS_max_body_size = value

    def __setattr__(self, name, value):
        if self._frozen and not name.startswith("_") and not hasattr(self, name):
            raise AttributeError(f"brpc_mini has no flag named {name!r}")
        super().__setattr__(name, value)


FLAGS = _Flags()
