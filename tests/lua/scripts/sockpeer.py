#!/usr/bin/env python3
"""A client in another process for the example tests (python3 sockets).

  sockpeer.py --port P [--send-file F] [--shut-wr] [--read-delay S]
              [--rcvbuf N] [--out F] [--after-eof TEXT] [--deadline S]
  sockpeer.py --port P --chat NAME --out F [--lines F] [--rate B] [--no-read]
              [--shut-wr] [--deadline S]

Stream mode (the default): connects to 127.0.0.1:P, sends the file's bytes
(from a thread of its own, while reading), then half-closes if --shut-wr;
reads nothing for --read-delay seconds, then reads until EOF into --out.
Prints "connected", "sent N", "eof N" (N = bytes read) or "error NAME";
after EOF it sends --after-eof and closes.

Chat mode: connects, sends "NAME\\n" then the lines of --lines (one write
each, one per line of the file, at about --rate bytes/s if given), then
half-closes if --shut-wr; reads into --out until EOF (not at all with
--no-read, until killed). Prints "connected", "sent N", "eof N".

Every run ends by itself after --deadline seconds (exit 3).
"""
import argparse
import os
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
    ap.add_argument("--rate", type=float)
    ap.add_argument("--deadline", type=float, default=60)
    a = ap.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(int(a.deadline))

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
                start, n = time.monotonic(), 0
                for line in data.splitlines(True):
                    s.sendall(line)
                    n += len(line)
                    if a.rate:
                        ahead = n / a.rate - (time.monotonic() - start)
                        if ahead > 0.01:
                            time.sleep(ahead)
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


if __name__ == "__main__":
    sys.exit(main())
