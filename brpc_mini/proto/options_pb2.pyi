from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ConnectionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONNECTION_TYPE_UNKNOWN: _ClassVar[ConnectionType]
    CONNECTION_TYPE_SINGLE: _ClassVar[ConnectionType]
    CONNECTION_TYPE_POOLED: _ClassVar[ConnectionType]
    CONNECTION_TYPE_SHORT: _ClassVar[ConnectionType]

class ProtocolType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_UNKNOWN: _ClassVar[ProtocolType]
    PROTOCOL_BAIDU_STD: _ClassVar[ProtocolType]
    PROTOCOL_STREAMING_RPC: _ClassVar[ProtocolType]
    PROTOCOL_HTTP: _ClassVar[ProtocolType]
    PROTOCOL_H2: _ClassVar[ProtocolType]

class CompressType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESS_TYPE_NONE: _ClassVar[CompressType]
    COMPRESS_TYPE_SNAPPY: _ClassVar[CompressType]
    COMPRESS_TYPE_GZIP: _ClassVar[CompressType]
    COMPRESS_TYPE_ZLIB: _ClassVar[CompressType]
    COMPRESS_TYPE_LZ4: _ClassVar[CompressType]

class ChecksumType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKSUM_TYPE_NONE: _ClassVar[ChecksumType]
    CHECKSUM_TYPE_CRC32C: _ClassVar[ChecksumType]

class ContentType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTENT_TYPE_PB: _ClassVar[ContentType]
    CONTENT_TYPE_JSON: _ClassVar[ContentType]
    CONTENT_TYPE_PROTO_JSON: _ClassVar[ContentType]
    CONTENT_TYPE_PROTO_TEXT: _ClassVar[ContentType]
CONNECTION_TYPE_UNKNOWN: ConnectionType
CONNECTION_TYPE_SINGLE: ConnectionType
CONNECTION_TYPE_POOLED: ConnectionType
CONNECTION_TYPE_SHORT: ConnectionType
PROTOCOL_UNKNOWN: ProtocolType
PROTOCOL_BAIDU_STD: ProtocolType
PROTOCOL_STREAMING_RPC: ProtocolType
PROTOCOL_HTTP: ProtocolType
PROTOCOL_H2: ProtocolType
COMPRESS_TYPE_NONE: CompressType
COMPRESS_TYPE_SNAPPY: CompressType
COMPRESS_TYPE_GZIP: CompressType
COMPRESS_TYPE_ZLIB: CompressType
COMPRESS_TYPE_LZ4: CompressType
CHECKSUM_TYPE_NONE: ChecksumType
CHECKSUM_TYPE_CRC32C: ChecksumType
CONTENT_TYPE_PB: ContentType
CONTENT_TYPE_JSON: ContentType
CONTENT_TYPE_PROTO_JSON: ContentType
CONTENT_TYPE_PROTO_TEXT: ContentType

class ChunkInfo(_message.Message):
    __slots__ = ("stream_id", "chunk_id")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    chunk_id: int
    def __init__(self, stream_id: _Optional[int] = ..., chunk_id: _Optional[int] = ...) -> None: ...
