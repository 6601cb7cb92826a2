"""A moto S3 server over real HTTP that can be taken down and brought back on the same port.

What :class:`RestartableMotoServer` guarantees:

- It listens on 127.0.0.1 on a port chosen at the first ``start()``; ``restart()`` and
  later ``start()`` calls reuse that port, so clients and stores built from
  ``endpoint_url`` keep working across an outage.
- While stopped, the listening socket is closed *and* open keep-alive connections are
  shut down, so clients get "connection refused/reset", as from a real endpoint outage.
  (moto's own ``ThreadedMotoServer.stop()`` leaves the listening socket open, so requests
  would hang until the read timeout instead, and the port could not be bound again.)
- Buckets and objects live in moto's process-global backend, not in the server, so they
  survive stop/start. The flip side: that state is shared with every moto server in
  this process (the session ``moto_server`` included), so use unique bucket names. It
  does not survive a new process.
- Not guaranteed: whether a request in flight at ``stop()`` was applied.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

HOST = "127.0.0.1"
FAKE_ACCESS_KEY_ID = "AKIARETINAFUSIONTEST"
FAKE_SECRET_ACCESS_KEY = "retina-fusion-fake-secret-never-in-errors"
FAKE_REGION = "us-east-1"


class _TrackingHandler(MotoRequestHandler):
    """Records each open connection so that ``stop()`` can cut keep-alive clients off."""

    server: Any

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)


class RestartableMotoServer:
    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("the port is chosen at the first start()")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        server = make_server(
            HOST,
            self._port,
            DomainDispatcherApplication(create_backend_app),
            threaded=True,
            request_handler=_TrackingHandler,
        )
        server.connections = set()  # type: ignore[attr-defined]
        server.connections_lock = threading.Lock()  # type: ignore[attr-defined]
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"moto-{self._port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        with server.connections_lock:  # type: ignore[attr-defined]
            open_connections = list(server.connections)  # type: ignore[attr-defined]
        for connection in open_connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        thread.join(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()
