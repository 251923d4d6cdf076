"""Answers one HTTP request on stdin/stdout: QEMU's guestfwd runs it for each connection a
slice opens to http://10.0.2.100/ on a host NIC given `http = DIR` (xtask/src/node.rs).

GET /<file> serves DIR/<file> (no `..`, no directories); two names test clients that misbehave
on purpose: /redirect-loop answers 302 to itself, /huge declares a body of 1 TiB and sends
1 MiB of it. Anything else is 404. Nothing here reaches beyond DIR.
"""

import os
import signal
import sys

# A guest that connects and sends nothing would keep this process (one per connection)
# forever: the request must arrive within this many seconds.
REQUEST_SECONDS = 30


def answer(status, headers, body=b""):
    out = sys.stdout.buffer
    out.write(("HTTP/1.1 %s\r\n" % status).encode())
    for name, value in headers:
        out.write(("%s: %s\r\n" % (name, value)).encode())
    out.write(b"Connection: close\r\n\r\n")
    out.write(body)
    out.flush()


def main():
    root = os.path.realpath(sys.argv[1])
    signal.alarm(REQUEST_SECONDS)
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sys.stdin.buffer.read1(4096)
        if not chunk:
            return
        data += chunk
    signal.alarm(0)
    words = data.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(words) != 3 or words[0] not in ("GET", "HEAD"):
        answer("400 Bad Request", [("Content-Length", "0")])
        return
    path = words[1].split("?", 1)[0]
    if path == "/redirect-loop":
        answer("302 Found", [("Location", "/redirect-loop"), ("Content-Length", "0")])
        return
    if path == "/huge":
        answer("200 OK", [("Content-Length", str(1 << 40))])
        block = b"\0" * 65536
        for _ in range(16):
            sys.stdout.buffer.write(block)
        sys.stdout.buffer.flush()
        return
    file = os.path.realpath(os.path.join(root, path.lstrip("/")))
    if not file.startswith(root + os.sep) or not os.path.isfile(file):
        answer("404 Not Found", [("Content-Length", "0")])
        return
    size = os.path.getsize(file)
    answer("200 OK", [("Content-Length", str(size)), ("Content-Type", "application/octet-stream")])
    if words[0] == "GET":
        with open(file, "rb") as f:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                sys.stdout.buffer.write(block)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, ConnectionResetError):
        pass
