#!/usr/bin/env python3
"""Real peer programs for sluice's namespace lab (Python 3 standard library only).

serve --http PORT --udp PORT
    A dual-stack server (one IPv6 socket bound to ``::`` with IPV6_V6ONLY=0,
    so IPv4 clients arrive as IPv4-mapped addresses; they are printed without
    the ``::ffff:`` prefix).

    HTTP/1.1 on TCP PORT (threaded, keep-alive):
      GET  /whoami   -> ``<client-ip>\\n``
      GET  /bytes/N  -> N bytes (N <= 100_000_000), for throughput
      POST /sink     -> reads the body (Content-Length or chunked) and replies
                        ``<client-ip> <bytes-received> <sha256-hex>\\n``
    UDP echo on UDP PORT: every datagram is answered with one of the SAME
    length whose first bytes are ``<client-ip>\\n``, padded with the rest of
    the original payload (truncated if the datagram is shorter than that).

    stdout, one line per event, flushed:
      ``listening http=PORT udp=PORT``        once both sockets are bound
      ``http <client-ip> <method> <path> <bytes>``  bytes sent (GET) or received (POST)
      ``udp <client-ip> <len>``
    Exits 0 on SIGTERM or SIGINT.

udp-probe HOST PORT --size S --count N --timeout T
    Sends N datagrams of S bytes, collects the replies (for at most T seconds
    after the last send) and prints one JSON line
    ``{"sent": N, "received": M, "seen_as": ["<ip>", ...]}`` where seen_as
    lists, in order of first appearance, the addresses the server reported.
    Exits 0 even when M < N: the caller decides. Use S >= 40 so that an IPv6
    address fits in the reply.

dns-forger ADDR --answer IP
    A hostile DNS server on UDP ADDR:53. To every query it sends, in order:
    an answer with the wrong transaction ID, a malformed message (a bare
    header cut short), an answer with the right ID for a different
    question, an unsolicited answer from the right ID but source port 5353
    (another socket), and last the right ID and question with rcode
    NXDOMAIN; every one of them carries an A record for the queried name
    with address IP. A domain bypass must install none of them.
    stdout: ``listening dns ADDR`` once bound, ``forged <qname> <n>`` per query.
"""

import argparse
import hashlib
import http.server
import json
import signal
import socket
import socketserver
import sys
import threading
import time

MAX_BYTES = 100_000_000
CHUNK = 256 * 1024
ZEROS = memoryview(bytes(CHUNK))

_log_lock = threading.Lock()


def log(line):
    with _log_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def client_ip(addr):
    """The printable client address: IPv4-mapped IPv6 addresses lose their prefix."""
    ip = addr[0]
    if ip.startswith("::ffff:") and "." in ip:
        return ip[len("::ffff:"):]
    return ip


def dual_stack_socket(kind, port):
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    return sock


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice-peer/1"

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    def _reply(self, code, body, content_type="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        ip = client_ip(self.client_address)
        if self.path == "/whoami":
            body = (ip + "\n").encode()
            self._reply(200, body)
            log(f"http {ip} GET {self.path} {len(body)}")
            return
        if self.path.startswith("/bytes/"):
            try:
                n = int(self.path[len("/bytes/"):])
            except ValueError:
                n = -1
            if not 0 <= n <= MAX_BYTES:
                body = f"bad size (0..={MAX_BYTES})\n".encode()
                self._reply(400, body)
                log(f"http {ip} GET {self.path} {len(body)}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            left = n
            while left > 0:
                step = min(left, CHUNK)
                self.wfile.write(ZEROS[:step])
                left -= step
            log(f"http {ip} GET {self.path} {n}")
            return
        body = b"not found\n"
        self._reply(404, body)
        log(f"http {ip} GET {self.path} {len(body)}")

    def _read_body(self):
        """Reads the request body; returns its length and SHA-256 (hex)."""
        total = 0
        digest = hashlib.sha256()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    break
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left > 0:
                    data = self.rfile.read(min(left, CHUNK))
                    if not data:
                        return total, digest.hexdigest()
                    left -= len(data)
                    total += len(data)
                    digest.update(data)
                self.rfile.readline(1024)  # CRLF after the chunk
            return total, digest.hexdigest()
        left = int(self.headers.get("Content-Length", "0"))
        while left > 0:
            data = self.rfile.read(min(left, CHUNK))
            if not data:
                break
            left -= len(data)
            total += len(data)
            digest.update(data)
        return total, digest.hexdigest()

    def do_POST(self):
        ip = client_ip(self.client_address)
        if self.path != "/sink":
            self._read_body()
            body = b"not found\n"
            self._reply(404, body)
            log(f"http {ip} POST {self.path} 0")
            return
        got, sha = self._read_body()
        self._reply(200, f"{ip} {got} {sha}\n".encode())
        log(f"http {ip} POST {self.path} {got}")


class DualStackHTTPServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Skip HTTPServer.server_bind: its getfqdn() may try DNS, which a
        # closed lab does not have.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "peer"
        self.server_port = self.server_address[1]


def udp_echo(sock, stop):
    # Reply FROM the address the datagram was sent TO: a socket bound to ``::``
    # would otherwise pick the source address by route (e.g. inet's gw0
    # address instead of the server address), which NAT on the way back
    # cannot match. IPV6_PKTINFO also carries IPv4-mapped addresses on a
    # dual-stack socket (Linux).
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, ancdata, _flags, addr = sock.recvmsg(65535, socket.CMSG_SPACE(20))
        except socket.timeout:
            continue
        except OSError:
            if stop.is_set():
                return
            raise
        reply_cmsg = []
        for level, kind, cdata in ancdata:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(cdata) >= 16:
                # struct in6_pktinfo { in6_addr addr; unsigned ifindex; }: keep
                # the address, let routing pick the interface (ifindex 0).
                reply_cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, cdata[:16] + bytes(4))]
        ip = client_ip(addr)
        prefix = (ip + "\n").encode()
        reply = (prefix + data[len(prefix):])[: len(data)]
        try:
            sock.sendmsg([reply], reply_cmsg, 0, addr)
        except OSError as err:
            log(f"udp-error {ip} {err}")
            continue
        log(f"udp {ip} {len(data)}")


def serve(args):
    stop = threading.Event()

    def on_signal(_signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    httpd = DualStackHTTPServer(("::", args.http), Handler)
    udp = dual_stack_socket(socket.SOCK_DGRAM, args.udp)
    http_thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    udp_thread = threading.Thread(target=udp_echo, args=(udp, stop), daemon=True)
    http_thread.start()
    udp_thread.start()
    log(f"listening http={args.http} udp={args.udp}")
    while not stop.is_set():
        stop.wait(0.5)
        if not (http_thread.is_alive() and udp_thread.is_alive()):
            log("error: a server thread died")
            sys.exit(1)
    httpd.shutdown()
    httpd.server_close()
    udp_thread.join(2)
    udp.close()
    return 0


def udp_probe(args):
    if args.size < 1 or args.size > 65507 or args.count < 0:
        sys.exit("udp-probe: need 1 <= size <= 65507 and count >= 0")
    family, kind, proto, _, sockaddr = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, kind, proto)
    received = 0
    seen = []

    def take(data):
        nonlocal received
        received += 1
        who = data.split(b"\n", 1)[0].decode(errors="replace")
        if who not in seen:
            seen.append(who)

    sock.setblocking(False)
    for i in range(args.count):
        tag = f"probe {i}\n".encode()
        payload = (tag + b"." * args.size)[: args.size]
        while True:
            try:
                sock.sendto(payload, sockaddr)
                break
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                # E.g. unreachable (an ICMP error from an earlier datagram): count it
                # as sent and lost.
                break
        while True:  # drain what already came back
            try:
                take(sock.recv(65535))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
    deadline = time.monotonic() + args.timeout
    sock.setblocking(True)
    while received < args.count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            take(sock.recv(65535))
        except socket.timeout:
            break
        except OSError:
            # ICMP errors surface as ECONNREFUSED etc. on the next call; keep waiting.
            continue
    print(json.dumps({"sent": args.count, "received": received, "seen_as": seen}), flush=True)
    return 0


def dns_name(name):
    out = b""
    for label in name.strip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dns_forger(args):
    import struct

    ip = socket.inet_aton(args.answer)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((args.addr, 53))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind((args.addr, 5353))
    print(f"listening dns {args.addr}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        q, peer = s.recvfrom(4096)
        if len(q) < 12:
            continue
        qid = struct.unpack(">H", q[:2])[0]
        # The question: name labels, then type and class.
        i = 12
        labels = []
        while i < len(q) and q[i] != 0:
            n = q[i]
            labels.append(q[i + 1 : i + 1 + n].decode(errors="replace"))
            i += 1 + n
        question = q[12 : i + 5]
        qname = ".".join(labels)

        def answer(ident, rcode, quest):
            hdr = struct.pack(">HHHHHH", ident, 0x8180 | rcode, 1, 1, 0, 0)
            rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + ip
            return hdr + quest + rr

        sent = [
            (s, answer(qid ^ 0x5A5A, 0, question)),
            (s, q[:7]),
            (s, answer(qid, 0, dns_name("evil." + qname) + b"\x00\x01\x00\x01")),
            (other, answer(qid, 0, question)),
            (s, answer(qid, 3, question)),
        ]
        for sock, msg in sent:
            sock.sendto(msg, peer)
        print(f"forged {qname} {len(sent)}", flush=True)


def main():
    parser = argparse.ArgumentParser(description="sluice lab peer programs")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="dual-stack HTTP server and UDP echo")
    p.add_argument("--http", type=int, required=True, metavar="PORT")
    p.add_argument("--udp", type=int, required=True, metavar="PORT")
    p = sub.add_parser("udp-probe", help="send datagrams, report who the server saw")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=2.0)
    p = sub.add_parser("dns-forger", help="a DNS server that answers with forgeries only")
    p.add_argument("addr")
    p.add_argument("--answer", required=True)
    args = parser.parse_args()
    if args.cmd == "serve":
        return serve(args)
    if args.cmd == "dns-forger":
        return dns_forger(args)
    return udp_probe(args)


if __name__ == "__main__":
    sys.exit(main())
