"""Holds idle and slow (slowloris) HTTP connections open against a server, for scripts/bench:
    python3 scripts/hold-connections.py HOST:PORT IDLE SLOW SECONDS
Idle ones send nothing; slow ones send a request line and then one header byte every 2 s,
and are opened again when the server cuts them. Prints how many are open every 5 s."""

import resource
import socket
import sys
import time


def connect(host, port):
    s = socket.create_connection((host, port), timeout=10)
    s.setblocking(False)
    return s


def main():
    addr, idle_n, slow_n, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    host, port = addr.rsplit(":", 1)
    port = int(port)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle = [connect(host, port) for _ in range(idle_n)]
    slow = [connect(host, port) for _ in range(slow_n)]
    for s in slow:
        s.send(b"GET /health HTTP/1.1\r\nX-Slow: ")
    cut = 0
    end, last_print = time.monotonic() + seconds, 0.0
    while time.monotonic() < end:
        for i, s in enumerate(slow):
            try:
                s.send(b"a")
            except OSError:
                cut += 1
                s.close()
                slow[i] = connect(host, port)
                slow[i].send(b"GET /health HTTP/1.1\r\nX-Slow: ")
        if time.monotonic() - last_print > 5:
            print(f"holding idle={len(idle)} slow={len(slow)} slow_cut_and_reopened={cut}", flush=True)
            last_print = time.monotonic()
        time.sleep(2)
    for s in idle + slow:
        s.close()


if __name__ == "__main__":
    main()
