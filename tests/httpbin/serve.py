"""Serves httpbin (the PyPI package, installed by scripts/test under
target/test-deps/py) on a free loopback port for the connection tests, and
prints `listening http://127.0.0.1:PORT` once it accepts connections."""

from werkzeug.serving import make_server

from httpbin import app

server = make_server("127.0.0.1", 0, app, threaded=True)
print(f"listening http://127.0.0.1:{server.server_port}", flush=True)
server.serve_forever()
