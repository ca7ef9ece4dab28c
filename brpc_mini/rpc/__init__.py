"""RPC layer: channel, controller, socket, server and the baidu_std protocol, on top of bthread."""
