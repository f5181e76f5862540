"""A real HTTP server on 127.0.0.1 that records requests and fails on demand: the
receiving end of webhook destinations in tests."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request and answers from `script` (then 200 once it is empty).

    Actions: ("status", code, headers, body), ("sleep", seconds[, then this action]),
    ("drop",).
    """

    url: str = ""
    script: deque[tuple] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_action(self, request: Request) -> tuple:
        with self.lock:
            self.requests.append(request)
            return self.script.popleft() if self.script else ("status", 200, {}, b"ok")


def make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so dropped connections hit a reused socket

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = Request(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                at=time.monotonic(),
            )
            action = receiver.next_action(request)
            if action[0] == "drop":
                self.close_connection = True  # close the socket without any response
                return
            if action[0] == "sleep":
                time.sleep(action[1])
                action = action[2] if len(action) > 2 else ("status", 200, {}, b"late")
            _, status, headers, text = action
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        do_POST = do_PUT = do_PATCH = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out leaves a broken pipe behind: expected here


@contextmanager
def serving_receiver() -> Iterator[Receiver]:
    """A Receiver listening on a free port of 127.0.0.1 until the block ends."""
    receiver = Receiver()
    server = QuietServer(("127.0.0.1", 0), make_handler(receiver))
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/audience?token=q"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
