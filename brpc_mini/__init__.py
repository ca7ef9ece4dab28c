"""brpc_mini: a teaching re-implementation of Apache brpc's client and server in Python on greenlets."""
