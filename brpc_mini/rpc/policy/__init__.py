"""Protocol policies: how each wire protocol packs, cuts and processes messages (brpc: src/brpc/policy/)."""
