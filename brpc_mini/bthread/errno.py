"""Error codes returned by the bthread_* functions.

brpc: src/bthread/errno.h, src/bthread/errno.cpp

The bthread C API returns 0 or an ``errno`` value; brpc_mini does the same with Python's
``errno`` numbers (Linux values), plus brpc's own ``ESTOP``.
"""
from errno import (  # noqa: F401  (re-exported for `from brpc_mini.bthread.errno import ...`)
    EAGAIN, EBUSY, EINTR, EINVAL, ENOMEM, EPERM, ETIMEDOUT, EWOULDBLOCK, ESRCH,
)

#: brpc's "the bthread / runtime is stopping" (src/bthread/errno.cpp defines it as -20).
ESTOP = -20

_NAMES = {0: "OK", EAGAIN: "EWOULDBLOCK", EBUSY: "EBUSY", EINTR: "EINTR", EINVAL: "EINVAL",
          ENOMEM: "ENOMEM", EPERM: "EPERM", ETIMEDOUT: "ETIMEDOUT", ESRCH: "ESRCH", ESTOP: "ESTOP"}


def errno_name(code: int) -> str:
    """Name of a return code, for printing: ``errno_name(22) == "EINVAL"``."""
    import errno as _errno
    return _NAMES.get(code) or _errno.errorcode.get(code, str(code))
