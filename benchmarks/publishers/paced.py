"""Publish at a fixed rate for a fixed time, each message stamped with its send time.

Every millisecond tick it sends what is due (rate x elapsed - sent) in one write, so the rate holds
on average even when sleep() oversleeps; the stamp is taken per batch, just before the write.
Replies are read by a thread and thrown away so neither socket buffer fills.
Usage: python -m benchmarks.publishers.paced PORT CHANNEL RATE SECONDS
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

from benchmarks.resp import encode
from benchmarks.workloads import latency_payload


def discard(sock: socket.socket) -> None:
    try:
        while sock.recv(1 << 16):
            pass
    except OSError:
        pass


def main() -> None:
    port, channel, rate, seconds = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3]), float(sys.argv[4])
    total = int(rate * seconds)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=discard, args=(sock,), daemon=True).start()
    clock = time.monotonic_ns
    start = clock()
    sent = 0
    max_batch = 0
    while sent < total:
        now = clock()
        due = min(total, int((now - start) * rate / 1e9) + 1) - sent
        if due > 0:
            sock.sendall(b"".join(encode(b"PUBLISH", channel, latency_payload(clock())) for _ in range(due)))
            sent += due
            max_batch = max(max_batch, due)
        time.sleep(0.001)
    elapsed = (clock() - start) / 1e9
    time.sleep(0.2)  # let the last replies arrive before closing
    sock.close()
    print(json.dumps({"sent": sent, "elapsed_s": elapsed, "rate": sent / elapsed, "max_batch": max_batch}))


if __name__ == "__main__":
    main()
