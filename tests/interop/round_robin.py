"""A per-request round-robin HTTP reverse proxy for the test suites (standard library only).

The contract and browser suites run against three tether nodes through it: each request goes to
the next node in turn, whatever connection it came on, so a write answered by one node followed
by a read answered by another is the normal case, not the exception (a load balancer that pins
a client's connection to a node would hide exactly that).

    proxy = RoundRobinProxy()            # listening on 127.0.0.1, port 0: proxy.url
    proxy.backends = [node.base, ...]    # may be set after the nodes start (give them --public-url proxy.url)
    ...
    proxy.close()

What it does, as a reverse proxy should (RFC 9110 section 7.6, RFC 9112):

- keeps the client's connection alive (HTTP/1.1; schemathesis's `requests` and Chromium reuse
  it), and answers each request on it from the next node;
- opens a fresh connection to the node for every request (`Connection: close`), so a request is
  never resent on a connection the node had already closed: a write is sent at most once;
- drops the hop-by-hop headers both ways (`Connection` and the headers it names, `Keep-Alive`,
  `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`, `Proxy-*`, `Expect`), sets `Host` to the
  node's address and passes the client's as `X-Forwarded-Host` (with `X-Forwarded-For` and
  `-Proto`); a chunked request body is read whole and sent with a `Content-Length`;
- returns the node's status, headers and body; a body of known length is sent with it, any other
  (chunked, or ended by close: a `text/event-stream`) is relayed chunk by chunk as it arrives;
- never hangs: a node that does not connect within CONNECT_TIMEOUT is a 502, one that does not
  answer within READ_TIMEOUT a 504 (a stream simply ends), an idle client connection is closed
  after CLIENT_IDLE_TIMEOUT;
- is quiet: no access log, no traceback for a client that went away. `counts` tells how many
  requests each node was sent.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import socket
import sys
import threading
import urllib.parse

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
CLIENT_IDLE_TIMEOUT = 60.0
MAX_BODY = 64 * 1024 * 1024

# RFC 9110 section 7.6.1 (and `Expect`, which this proxy answers itself, and `Proxy-Connection`,
# which old clients send).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade", "expect",
})


def _hop_by_hop(headers) -> set[str]:
    """The hop-by-hop header names of a message: the fixed ones and those its `Connection` names."""
    named = set(HOP_BY_HOP)
    for value in headers.get_all("Connection") or ():
        named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Many clients connect at once (schemathesis workers, a browser's parallel fetches).
    request_queue_size = 128

    def handle_error(self, request, client_address):
        """Quiet about a client that went away; anything else is a bug here, said in one line."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, socket.timeout)):
            return
        print(f"round_robin: {type(error).__name__}: {error}", file=sys.stderr, flush=True)


class RoundRobinProxy:
    def __init__(self, backends: list[str] | None = None, host: str = "127.0.0.1"):
        self._lock = threading.Lock()
        self._next = itertools.count()
        self._backends: list[tuple[str, int]] = []
        self.counts: dict[str, int] = {}
        if backends:
            self.backends = backends
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy = proxy
        self.server = _Server((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="round-robin", daemon=True)
        self._thread.start()

    @property
    def backends(self) -> list[str]:
        return [f"http://{host}:{port}" for host, port in self._backends]

    @backends.setter
    def backends(self, urls: list[str]) -> None:
        parsed = []
        for url in urls:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme != "http" or not parts.hostname or not parts.port or parts.path not in ("", "/"):
                raise ValueError(f"a backend is http://HOST:PORT, not {url!r}")
            parsed.append((parts.hostname, parts.port))
        with self._lock:
            self._backends = parsed
            self.counts = {f"http://{h}:{p}": 0 for h, p in parsed}

    def pick(self) -> tuple[str, int]:
        with self._lock:
            if not self._backends:
                raise LookupError("no backends")
            backend = self._backends[next(self._next) % len(self._backends)]
            self.counts[f"http://{backend[0]}:{backend[1]}"] += 1
            return backend

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class _Handler(http.server.BaseHTTPRequestHandler):
    proxy: RoundRobinProxy
    protocol_version = "HTTP/1.1"  # keep-alive to clients
    timeout = CLIENT_IDLE_TIMEOUT  # the client socket's timeout: an idle connection ends
    server_version = "round-robin"
    sys_version = ""

    def setup(self):
        super().setup()
        # Headers and body are separate writes: without this, Nagle's algorithm holds the body
        # back until the client's delayed ACK (40 ms a response on Linux).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass

    def _read_body(self) -> bytes | None:
        """The request body (a chunked one decoded); None when it cannot be read."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = bytearray()
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    return None
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass  # trailers: dropped
                    return bytes(body)
                if len(body) + size > MAX_BODY:
                    return None
                body += self.rfile.read(size)
                self.rfile.readline(8)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.isdigit() or int(length) > MAX_BODY:
            return None
        return self.rfile.read(int(length))

    def _simple(self, status: int, message: str) -> None:
        body = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _proxy(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            body = None
        if body is None:
            self.close_connection = True
            self._simple(400, "round_robin: unreadable request body")
            return
        try:
            host, port = self.proxy.pick()
        except LookupError:
            self._simple(503, "round_robin: no backends yet")
            return
        drop = _hop_by_hop(self.headers) | {"host", "content-length"}
        upstream = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
        try:
            try:
                upstream.connect()
            except OSError as e:
                self._simple(502, f"round_robin: {host}:{port} unreachable: {e}")
                return
            upstream.sock.settimeout(READ_TIMEOUT)
            upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in drop and not name.lower().startswith("x-forwarded-"):
                    upstream.putheader(name, value)
            upstream.putheader("Host", f"{host}:{port}")
            if self.headers.get("Host"):
                upstream.putheader("X-Forwarded-Host", self.headers["Host"])
            upstream.putheader("X-Forwarded-For", self.client_address[0])
            upstream.putheader("X-Forwarded-Proto", "http")
            upstream.putheader("Connection", "close")
            if body or self.command in ("POST", "PUT", "PATCH") or "content-length" in (k.lower() for k in self.headers):
                upstream.putheader("Content-Length", str(len(body)))
            try:
                upstream.endheaders(body or None)
                response = upstream.getresponse()
            except (TimeoutError, socket.timeout):
                self._simple(504, f"round_robin: {host}:{port} did not answer within {READ_TIMEOUT}s")
                return
            except (OSError, http.client.HTTPException) as e:
                self._simple(502, f"round_robin: {host}:{port} failed: {type(e).__name__}: {e}")
                return
            self._relay(response)
        finally:
            upstream.close()

    def _status_and_headers(self, response: http.client.HTTPResponse, drop: set[str]) -> None:
        """The node's status line and end-to-end headers (its own `Date` and `Server` included)."""
        self.send_response_only(response.status, response.reason)
        for name, value in response.headers.items():
            if name.lower() not in drop:
                self.send_header(name, value)
        if self.close_connection:  # the client asked for it
            self.send_header("Connection", "close")

    def _relay(self, response: http.client.HTTPResponse) -> None:
        drop = _hop_by_hop(response.headers) | {"content-length"}
        no_body = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        length = response.getheader("Content-Length")
        known = length is not None and length.isdigit() and not response.chunked
        if no_body or known:
            try:
                data = b"" if no_body else response.read()
            except (TimeoutError, socket.timeout, OSError, http.client.HTTPException) as e:
                self._simple(502, f"round_robin: the answer broke off: {type(e).__name__}: {e}")
                return
            self._status_and_headers(response, drop)
            if length is not None:  # as the node said (for HEAD, the length a GET would have)
                self.send_header("Content-Length", length if no_body else str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)
            return
        # A body of unknown length (chunked, or ended by close: an event stream): relayed as it
        # comes, chunked; when the node ends it (or goes silent for READ_TIMEOUT) so does this.
        self._status_and_headers(response, drop)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
        except (TimeoutError, socket.timeout, http.client.HTTPException, ConnectionError):
            # The stream broke off: the client must not take it for a whole body.
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def __getattr__(self, name: str):
        """Every method is passed on (`do_GET`, `do_TRACE`, `do_FOO`, …): which ones are allowed
        is the node's to say (schemathesis sends undeclared ones and expects the node's 405)."""
        if name.startswith("do_"):
            return self._proxy
        raise AttributeError(name)
