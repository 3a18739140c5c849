#!/usr/bin/env python3
"""A client in another process for the example tests (python3 sockets).

  sockpeer.py --port P [--send-file F] [--shut-wr] [--read-delay S]
              [--rcvbuf N] [--out F] [--after-eof TEXT] [--deadline S]
  sockpeer.py --port P --chat NAME --out F [--lines F] [--no-read]
              [--shut-wr] [--deadline S]
  sockpeer.py --port P --group A,B,W --lines F --out PREFIX [--window B]

Stream mode (the default): connects to 127.0.0.1:P, sends the file's bytes
(from a thread of its own, while reading), then half-closes if --shut-wr;
reads nothing for --read-delay seconds, then reads until EOF into --out.
Prints "connected", "sent N", "eof N" (N = bytes read) or "error NAME";
after EOF it sends --after-eof and closes.

Chat mode: connects, sends "NAME\\n" then the lines of --lines (one write
each), then half-closes if --shut-wr; reads into --out until EOF (not at
all with --no-read, until killed). Prints "connected", "sent N", "eof N".

Group mode (--group A,B,...,W --lines F --window B --out PREFIX): members
A, B, ... and W join one after the other (each waits for its own join
line); then W sends the lines, never more than --window bytes ahead of
the slowest member's reading (so no member of the group can fall behind by
more than that, however loaded the machine), then half-closes; every
member reads until W's leave ("* W left") or EOF. What member X read is in
PREFIX.X. Prints "joined", "sent N", "done".

Every run ends by itself after --deadline seconds (exit 3).
"""
import argparse
import os
import selectors
import signal
import socket
import sys
import threading
import time


def say(text):
    print(text, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--send-file")
    ap.add_argument("--shut-wr", action="store_true")
    ap.add_argument("--read-delay", type=float, default=0)
    ap.add_argument("--rcvbuf", type=int)
    ap.add_argument("--out")
    ap.add_argument("--after-eof")
    ap.add_argument("--chat")
    ap.add_argument("--lines")
    ap.add_argument("--no-read", action="store_true")
    ap.add_argument("--group")
    ap.add_argument("--window", type=int, default=256 * 1024)
    ap.add_argument("--deadline", type=float, default=60)
    a = ap.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(int(a.deadline))

    if a.group:
        return group(a)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if a.rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
    try:
        s.connect(("127.0.0.1", a.port))
    except OSError as e:
        say("error connect " + (e.__class__.__name__))
        return 1
    say("connected")

    data = b""
    if a.chat is not None:
        data = (a.chat + "\n").encode()
        if a.lines:
            with open(a.lines, "rb") as f:
                for line in f.read().splitlines(True):
                    data += line
    elif a.send_file:
        with open(a.send_file, "rb") as f:
            data = f.read()

    def send():
        try:
            if a.chat is not None:
                for line in data.splitlines(True):
                    s.sendall(line)
            else:
                s.sendall(data)
            say("sent %d" % len(data))
            if a.shut_wr:
                s.shutdown(socket.SHUT_WR)
        except OSError as e:
            say("error send " + e.__class__.__name__)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    if a.no_read:
        while True:
            time.sleep(1)
    if a.read_delay:
        time.sleep(a.read_delay)
    out = open(a.out, "wb") if a.out else None
    n = 0
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            n += len(chunk)
            if out:
                out.write(chunk)
                out.flush()
    except OSError as e:
        if out:
            out.close()
        say("error %s after %d" % (e.__class__.__name__, n))
        return 2
    if out:
        out.close()
    sender.join()
    say("eof %d" % n)
    if a.after_eof is not None:
        try:
            s.sendall(a.after_eof.encode())
            say("sent after eof %d" % len(a.after_eof))
        except OSError as e:
            say("error send after eof " + e.__class__.__name__)
    s.close()
    return 0


def group(a):
    names = a.group.split(",")
    socks, got, tail = {}, {}, {}
    for name in names:
        c = socket.create_connection(("127.0.0.1", a.port))
        c.sendall((name + "\n").encode())
        socks[name], got[name], tail[name] = c, [], b""
        want = ("* %s joined\n" % name).encode()
        while want not in tail[name]:
            chunk = c.recv(65536)
            if not chunk:
                say("error eof before the join of " + name)
                return 2
            got[name].append(chunk)
            tail[name] = (tail[name] + chunk)[-4096:]
    say("joined")
    with open(a.lines, "rb") as f:
        lines = f.read().splitlines(True)
    writer = socks[names[-1]]
    prefix = len(names[-1]) + 2  # every member gets "W: " + line
    total, i = 0, 0
    received = {n: 0 for n in names}  # bytes read since the joins
    done = {n: False for n in names}
    leave = ("* %s left" % names[-1]).encode()
    sel = selectors.DefaultSelector()
    for n, c in socks.items():
        sel.register(c, selectors.EVENT_READ, n)
    shut = False
    while not all(done.values()):
        slowest = min(received.values())
        while i < len(lines) and total - slowest < a.window:
            writer.sendall(lines[i])  # one line: blocks only while the chat reads nothing
            total += prefix + len(lines[i])
            i += 1
        if i == len(lines) and not shut:
            say("sent %d" % i)
            writer.shutdown(socket.SHUT_WR)
            shut = True
        for key, _ in sel.select(timeout=0.05):
            n = key.data
            try:
                chunk = key.fileobj.recv(65536)  # readable: does not block
            except OSError as e:
                say("error %s at %s" % (e.__class__.__name__, n))
                return 2
            if chunk:
                got[n].append(chunk)
                received[n] += len(chunk)
                tail[n] = (tail[n] + chunk)[-256:]
            if not chunk or leave in tail[n]:
                done[n] = True
                received[n] = float("inf")  # no longer holds the writer back
                sel.unregister(key.fileobj)
    for n in names:
        with open("%s.%s" % (a.out, n), "wb") as f:
            f.write(b"".join(got[n]))
        socks[n].close()
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
