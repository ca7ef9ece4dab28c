"""Stubs for any protobuf service, built from its ServiceDescriptor.

brpc: none — this is what protoc's ``cc_generic_services`` Stub is in C++, and what protoc's
``py_generic_services`` emitted for Python before protobuf began removing it (design notes,
measured-facts.md). Building the stub from the descriptor keeps working whatever protoc does.

    EchoService_Stub = make_stub(echo_pb2.DESCRIPTOR.services_by_name["EchoService"])
    response = EchoService_Stub(channel).Echo(cntl, request)            # synchronous
    EchoService_Stub(channel).Echo(cntl, request, done)                  # asynchronous
"""
from __future__ import annotations

from google.protobuf import message_factory


def make_stub(service_descriptor):
    """A stub class: ``Stub(channel).Method(controller, request, done=None)``."""
    if not hasattr(service_descriptor, "methods") or not hasattr(service_descriptor, "full_name"):
        raise TypeError("make_stub needs a protobuf ServiceDescriptor, e.g. "
                        "echo_pb2.DESCRIPTOR.services_by_name['EchoService']")

    def __init__(self, channel):
        if not hasattr(channel, "CallMethod"):
            raise TypeError(f"a stub needs a channel with CallMethod, got {type(channel).__name__}")
        self.rpc_channel = channel

    namespace = {"__init__": __init__, "DESCRIPTOR": service_descriptor,
                 "__doc__": f"Client stub of {service_descriptor.full_name}."}
    for method in service_descriptor.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)

        def call(self, controller, request, done=None, _method=method, _request_class=request_class,
                 _response_class=response_class):
            if not isinstance(request, _request_class):
                raise TypeError(f"{_method.full_name} takes a {_request_class.DESCRIPTOR.full_name}, "
                                f"got {type(request).__name__}")
            return self.rpc_channel.CallMethod(_method, controller, request, _response_class, done)

        call.__name__ = method.name
        call.__doc__ = f"{method.full_name}({method.input_type.name}) returns {method.output_type.name}"
        namespace[method.name] = call
    return type(f"{service_descriptor.name}_Stub", (object,), namespace)
