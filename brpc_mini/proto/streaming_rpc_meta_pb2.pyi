from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class StreamSettings(_message.Message):
    __slots__ = ("stream_id", "need_feedback", "writable", "extra_stream_ids")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    NEED_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    WRITABLE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_STREAM_IDS_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    need_feedback: bool
    writable: bool
    extra_stream_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, stream_id: _Optional[int] = ..., need_feedback: _Optional[bool] = ..., writable: _Optional[bool] = ..., extra_stream_ids: _Optional[_Iterable[int]] = ...) -> None: ...
