"""Error codes of the RPC layer and `berror`, which turns any code into a sentence.

brpc: src/brpc/errno.proto, enum brpc::Errno; src/butil/errno.cpp, berror

A Controller's ErrorCode() is one of three kinds of number, and brpc_mini keeps all three as plain
ints, exactly as brpc does:
- brpc's own codes (1001 and up), defined below with brpc's names;
- system errno values (ECONNREFUSED, ETIMEDOUT, ...), taken from Python's `errno` module so they have
  the platform's numbers (the chapters quote the Linux ones);
- bthread's ESTOP (-20), shared with the runtime.
"""

import os
from errno import (  # noqa: F401  (re-exported: the RPC code reads them from here)
    EAGAIN,
    EBUSY,
    ECANCELED,
    ECONNREFUSED,
    ECONNRESET,
    EHOSTDOWN,
    EHOSTUNREACH,
    EINTR,
    EINVAL,
    ENETUNREACH,
    ENODATA,
    ENOENT,
    ENOMEM,
    EOVERFLOW,
    EPERM,
    EPIPE,
    ETIMEDOUT,
    EWOULDBLOCK,
)

try:
    from brpc_mini.bthread.errno import ESTOP
except ImportError:  # the runtime package is optional for the wire-format code
    ESTOP = -20

# Caused by the client or the request (brpc::Errno, src/brpc/errno.proto).
ENOSERVICE = 1001
ENOMETHOD = 1002
EREQUEST = 1003
ERPCAUTH = 1004
ETOOMANYFAILS = 1005
EPCHANFINISH = 1006
EBACKUPREQUEST = 1007
ERPCTIMEDOUT = 1008
EFAILEDSOCKET = 1009
EHTTP = 1010
EOVERCROWDED = 1011
ERTMPPUBLISHABLE = 1012
ERTMPCREATESTREAM = 1013
EEOF = 1014
EUNUSED = 1015
ESSL = 1016
EH2RUNOUTSTREAMS = 1017
EREJECT = 1018
EPROGREADTIMEOUT = 1019

# Caused by the server.
EINTERNAL = 2001
ERESPONSE = 2002
ELOGOFF = 2003
ELIMIT = 2004
ECLOSE = 2005
EITP = 2006
ESHUTDOWNWRITE = 2007

# RDMA, on either side.
ERDMA = 3001
ERDMAMEM = 3002

# Short descriptions, in brpc_mini's own words (brpc's sentences are not copied). brpc registers
# a sentence for most codes at start-up (BAIDU_REGISTER_ERRNO in src/brpc/controller.cpp; none for
# EREJECT, and the RDMA ones only when built with RDMA) so that berror() can print it; a dict does
# the same job here, with a sentence for every code.
_DESCRIPTIONS = {
    ESTOP: "The structure is stopping",
    ENOSERVICE: "Service not found",
    ENOMETHOD: "Method not found",
    EREQUEST: "Bad request",
    ERPCAUTH: "Authentication failed",
    ETOOMANYFAILS: "Too many sub-calls of a ParallelChannel failed",
    EPCHANFINISH: "ParallelChannel finished (internal)",
    EBACKUPREQUEST: "Time to send a backup request (internal)",
    ERPCTIMEDOUT: "RPC deadline reached",
    EFAILEDSOCKET: "Connection broken",
    EHTTP: "Bad HTTP call",
    EOVERCROWDED: "Too many unwritten bytes on the connection",
    ERTMPPUBLISHABLE: "RTMP retrying stream is publishable",
    ERTMPCREATESTREAM: "RTMP server rejected createStream",
    EEOF: "Got EOF",
    EUNUSED: "Socket not needed",
    ESSL: "SSL error",
    EH2RUNOUTSTREAMS: "HTTP/2 connection ran out of streams",
    EREJECT: "Request rejected",
    EPROGREADTIMEOUT: "Progressive read timed out",
    EINTERNAL: "Internal server error",
    ERESPONSE: "Bad response",
    ELOGOFF: "Server is stopping",
    ELIMIT: "Server reached its concurrency limit",
    ECLOSE: "Server closed the connection on purpose",
    EITP: "Bad ITP response",
    ESHUTDOWNWRITE: "Write side of the connection shut down",
    ERDMA: "RDMA verbs error",
    ERDMAMEM: "Memory not registered for RDMA",
}


def berror(code: int) -> str:
    """Describe an error code: brpc's own codes, ESTOP, or any system errno.

    brpc: src/butil/errno.cpp, berror

    Like brpc, -1 is "General error -1", codes without a description fall back to the C library's
    strerror (here `os.strerror`), which says "Unknown error <n>" for numbers it does not know.
    brpc's berror returns a C string from a table filled at start-up; this one looks in a dict.
    """
    if not isinstance(code, int):
        raise TypeError(f"berror: code must be an int, got {type(code).__name__}")
    if code == -1:
        return "General error -1"
    description = _DESCRIPTIONS.get(code)
    if description is not None:
        return description
    try:
        return os.strerror(code)
    except (ValueError, OverflowError):
        return f"Unknown error {code}"
