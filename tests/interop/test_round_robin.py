"""The test proxy itself (round_robin.py), against two echo servers: the contract and browser
suites' cluster runs are only as good as its spreading and its faithfulness."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import time

import pytest

from round_robin import RoundRobinProxy


class Echo:
    """An HTTP/1.1 server that answers with what it received, as JSON, and its own name; and on
    /stream a chunked body in three parts, 0.2 s apart."""

    def __init__(self, name: str):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                if self.path == "/stream":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(3):
                        part = f"data: {i}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        self.wfile.flush()
                        time.sleep(0.5)
                    self.wfile.write(b"0\r\n\r\n")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.dumps({
                    "node": name, "method": self.command, "path": self.path,
                    "headers": [[k.lower(), v] for k, v in self.headers.items()],
                    "body": self.rfile.read(length).decode(),
                }).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Set-Cookie", "a=1")
                self.send_header("Set-Cookie", "b=2")
                self.send_header("Connection", "keep-alive, X-Secret")
                self.send_header("X-Secret", "hop")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_DELETE = do_TRACE = _answer  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxied():
    echoes = [Echo("A"), Echo("B")]
    proxy = RoundRobinProxy([e.url for e in echoes])
    try:
        yield proxy
    finally:
        proxy.close()
        for echo in echoes:
            echo.close()


def test_each_request_on_one_kept_alive_connection_goes_to_the_next_node(proxied):
    port = int(proxied.url.rsplit(":", 1)[1])
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    nodes = []
    for i in range(4):
        client.request("POST", f"/v1/things?i={i}", body=b'{"x": 1}',
                       headers={"Content-Type": "application/json", "Authorization": "Bearer t",
                                "Connection": "keep-alive, X-Drop", "X-Drop": "hop", "Keep-Alive": "timeout=5"})
        answer = client.getresponse()
        seen = json.loads(answer.read())
        nodes.append(seen["node"])
        assert answer.status == 201
        assert answer.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
        assert answer.getheader("X-Secret") is None
        assert seen["method"] == "POST" and seen["path"] == f"/v1/things?i={i}" and seen["body"] == '{"x": 1}'
        headers = dict(seen["headers"])
        assert headers["authorization"] == "Bearer t" and headers["content-type"] == "application/json"
        assert headers["host"] == proxied.backends[i % 2].removeprefix("http://")
        assert headers["x-forwarded-host"] == f"127.0.0.1:{port}"
        assert "x-drop" not in headers and "keep-alive" not in headers and headers["connection"] == "close"
    client.close()
    assert nodes == ["A", "B", "A", "B"]
    assert list(proxied.counts.values()) == [2, 2]


def test_a_chunked_request_body_and_head_and_a_stream(proxied):
    port = int(proxied.url.rsplit(":", 1)[1])
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    client.request("POST", "/chunked", body=iter([b"ab", b"cd"]), encode_chunked=True,
                   headers={"Transfer-Encoding": "chunked"})
    answer = client.getresponse()
    assert json.loads(answer.read())["body"] == "abcd"

    client.request("HEAD", "/head")
    answer = client.getresponse()
    assert answer.status == 201 and answer.read() == b"" and int(answer.getheader("Content-Length")) > 0

    started = time.monotonic()
    client.request("GET", "/stream")
    answer = client.getresponse()
    assert answer.getheader("Content-Type") == "text/event-stream"
    first = answer.read1(100)
    # Relayed as it comes: the first part long before the last is sent (1 s after it).
    assert first == b"data: 0\n\n" and time.monotonic() - started < 0.9
    assert first + answer.read() == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"

    client.request("GET", "/after-the-stream")  # the connection is still good
    assert json.loads(client.getresponse().read())["path"] == "/after-the-stream"

    client.request("TRACE", "/any-method")  # which methods are allowed is the node's to say
    assert json.loads(client.getresponse().read())["method"] == "TRACE"
    client.close()


def test_a_node_out_of_reach_is_a_502_not_a_hang():
    proxy = RoundRobinProxy(["http://127.0.0.1:9"])  # discard: nothing listens
    try:
        client = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]), timeout=10)
        client.request("GET", "/")
        assert client.getresponse().status == 502
    finally:
        proxy.close()
