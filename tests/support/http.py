"""A stand-in HTTP server on 127.0.0.1 whose answers a test sets: for answers the real peers
never give (a captive portal, a registry that rate-limits, a server that is not a registry)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class StandIn:
    url: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html"})
    body: str = "<html>hello</html>"
    requests: list[str] = field(default_factory=list)
    #: Answers for particular paths (with their query string): ``(status, headers, body)``.
    routes: dict[str, tuple[int, dict[str, str], str]] = field(default_factory=dict)


@contextmanager
def stand_in_server() -> Iterator[StandIn]:
    answer = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer.requests.append(self.path)
            status, headers, text = answer.routes.get(
                self.path, (answer.status, answer.headers, answer.body)
            )
            body = text.encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    answer.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield answer
    finally:
        server.shutdown()
        server.server_close()
