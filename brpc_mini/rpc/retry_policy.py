"""RetryPolicy: which failed tries are worth another.

brpc: src/brpc/retry_policy.h, src/brpc/retry_policy.cpp, RpcRetryPolicy

The default retries on a short list of codes: a failed or refused connection (EFAILEDSOCKET,
ECONNREFUSED, ECONNRESET, EPIPE, EEOF, EHOSTDOWN, a connect's ETIMEDOUT...), a socket that is too
busy (EOVERCROWDED), and two answers a server gives when it cannot take the call now (ELIMIT: at
max_concurrency; ELOGOFF: stopping). It never retries an RPC timeout (ERPCTIMEDOUT), a cancel, a
backup-request trigger, or any other error the server answered with.
"""
from __future__ import annotations

import errno as _errno

from .errors import EEOF, EFAILEDSOCKET, EH2RUNOUTSTREAMS, EHOSTDOWN, ELIMIT, ELOGOFF, EOVERCROWDED


class RetryPolicy:
    """Subclass and override ``DoRetry(cntl) -> bool``."""

    def DoRetry(self, cntl) -> bool:
        raise NotImplementedError


class RpcRetryPolicy(RetryPolicy):
    """brpc: src/brpc/retry_policy.cpp, RpcRetryPolicy::DoRetry"""

    RETRYABLE = frozenset({EFAILEDSOCKET, EEOF, EHOSTDOWN, ELOGOFF, _errno.ETIMEDOUT, ELIMIT,
                           _errno.ENOENT, _errno.EPIPE, _errno.ECONNREFUSED, _errno.ECONNRESET,
                           _errno.ENODATA, EOVERCROWDED, EH2RUNOUTSTREAMS})

    def DoRetry(self, cntl) -> bool:
        code = cntl.ErrorCode()
        return code != 0 and code in self.RETRYABLE


DefaultRetryPolicy = RpcRetryPolicy()
