#!/usr/bin/env python3
"""One guest connection to the host's loopback: QEMU's guestfwd `cmd:` runs
this once per TCP connection the guest opens to the forwarded address, with
the connection on stdin/stdout, and it relays bytes to 127.0.0.1:PORT.

    guestfwd-relay.py PORT

Why not `guestfwd=...-tcp:127.0.0.1:PORT`: a chardev is opened once, when
QEMU starts, and carries one stream, while Git over SSH opens a connection
per fetch. Why not the slirp host address (10.0.2.2): `restrict=on` drops
every guest packet except those to a guestfwd address, and slirp refuses a
guestfwd on the host address. So the listener stays on the host's loopback
and the guest stays unable to reach anything else.

stderr is the guest's connection too (libslirp hands the socket to all
three descriptors): this script writes nothing but the relayed bytes. When
nothing listens yet (the scenario whose remote appears late), it closes the
connection, which the guest's ssh reports as closed by the remote host.
"""

import os
import socket
import sys
import threading


def to_host(host: socket.socket) -> None:
    try:
        while data := os.read(0, 65536):
            host.sendall(data)
    except OSError:
        pass
    try:
        host.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def to_guest(host: socket.socket) -> None:
    try:
        while data := host.recv(65536):
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
    except OSError:
        pass
    # The guest's end: half-close a socket (as libslirp hands over), close
    # a pipe (as ssh's ProxyCommand does, which a host-side check uses).
    fd = os.dup(1)
    try:
        socket.socket(fileno=fd).shutdown(socket.SHUT_WR)
    except OSError:
        os.close(fd)
        os.close(1)


def main() -> int:
    port = int(sys.argv[1])
    try:
        host = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return 1
    host.settimeout(None)
    back = threading.Thread(target=to_guest, args=(host,), daemon=True)
    back.start()
    to_host(host)
    back.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
