"""brpc's error codes and berror."""

import errno
import os

from brpc_mini.rpc import errors
from brpc_mini.rpc.errors import berror


def test_brpc_codes_have_brpc_values():
    expected = {
        "ENOSERVICE": 1001, "ENOMETHOD": 1002, "EREQUEST": 1003, "ERPCAUTH": 1004,
        "ETOOMANYFAILS": 1005, "EPCHANFINISH": 1006, "EBACKUPREQUEST": 1007, "ERPCTIMEDOUT": 1008,
        "EFAILEDSOCKET": 1009, "EHTTP": 1010, "EOVERCROWDED": 1011, "ERTMPPUBLISHABLE": 1012,
        "ERTMPCREATESTREAM": 1013, "EEOF": 1014, "EUNUSED": 1015, "ESSL": 1016,
        "EH2RUNOUTSTREAMS": 1017, "EREJECT": 1018, "EPROGREADTIMEOUT": 1019, "EINTERNAL": 2001,
        "ERESPONSE": 2002, "ELOGOFF": 2003, "ELIMIT": 2004, "ECLOSE": 2005, "EITP": 2006,
        "ESHUTDOWNWRITE": 2007, "ERDMA": 3001, "ERDMAMEM": 3002,
    }
    for name, value in expected.items():
        assert getattr(errors, name) == value, name
    assert errors.ESTOP == -20


def test_system_codes_come_from_errno():
    for name in ("EPERM", "ENOENT", "EINTR", "EAGAIN", "EWOULDBLOCK", "ENOMEM", "EBUSY", "EINVAL",
                 "EPIPE", "ENODATA", "EOVERFLOW", "ENETUNREACH", "ECONNRESET", "ETIMEDOUT",
                 "ECONNREFUSED", "EHOSTDOWN", "EHOSTUNREACH", "ECANCELED"):
        assert getattr(errors, name) == getattr(errno, name), name


def test_berror_descriptions():
    assert berror(errors.ENOMETHOD) == "Method not found"
    assert berror(errors.ENOSERVICE) == "Service not found"
    assert berror(errors.ERPCTIMEDOUT) == "RPC deadline reached"
    assert berror(errors.ESTOP) == "The structure is stopping"
    assert berror(-1) == "General error -1"
    assert berror(errno.ECONNREFUSED) == os.strerror(errno.ECONNREFUSED)
    assert berror(0) == os.strerror(0)
    assert "99999" in berror(99999)


def test_every_brpc_code_has_a_description():
    for name in dir(errors):
        value = getattr(errors, name)
        if name.startswith("E") and isinstance(value, int) and value >= 1001:
            assert not berror(value).startswith("Unknown"), name
