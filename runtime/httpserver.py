"""A small HTTP endpoint for services without a web app: /metrics, /healthz, /readyz."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def serve_metrics(
    registry: CollectorRegistry,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: Callable[[], bool] = lambda: True,
) -> ThreadingHTTPServer:
    """Serve in a daemon thread; ``server.server_address[1]`` is the bound port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                body, status, ctype = b"ok\n", 200, "text/plain"
            elif self.path == "/readyz":
                ok = ready()
                body, status, ctype = (
                    (b"ready\n", 200, "text/plain") if ok else (b"not ready\n", 503, "text/plain")
                )
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
