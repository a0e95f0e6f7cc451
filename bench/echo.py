#!/usr/bin/env python3
"""Keystroke echo time: how long a typed character takes to come back on the terminal.

Usage: echo.py ROUNDS COMMAND... -- prints the median and 95th percentile in microseconds.

Starts COMMAND (an interactive shell) on a new pseudo-terminal, waits for its prompt, then
types one character at a time and measures the time until the terminal echoes it. Through
crashcart the byte crosses crashcart's relay into the container's own pty and back; nsenter
gives the shell the benchmark's pty directly; docker exec -t relays through dockerd.
"""
import os
import pty
import select
import statistics
import sys
import time


def read_until(fd, needle, timeout=10.0):
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SystemExit(f"echo.py: no {needle!r} within {timeout}s; saw {seen[-200:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 4096)
    return seen


def main():
    rounds = int(sys.argv[1])
    command = sys.argv[2:]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["PS1"] = "READY> "
        os.environ["TERM"] = "dumb"
        os.execvp(command[0], command)
    os.write(fd, b"PS1='READY> '\n")
    read_until(fd, b"READY> ")
    time.sleep(0.3)
    samples = []
    for i in range(rounds):
        ch = b"abcdefghij"[i % 10 : i % 10 + 1]
        start = time.perf_counter()
        os.write(fd, ch)
        read_until(fd, ch)
        samples.append((time.perf_counter() - start) * 1e6)
    os.write(fd, b"\x15exit\n")
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    os.waitpid(pid, 0)
    samples.sort()
    p95 = samples[int(len(samples) * 0.95) - 1]
    print(f"{statistics.median(samples):.0f} {p95:.0f}")


if __name__ == "__main__":
    main()
