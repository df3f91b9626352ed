"""send_probe return codes as the original's: -102 (ERR_SOCKET) for a peer
that cannot be connected to or drops the exchange, -200 (ERR_METADATA) for a
peer a metadata server does not know, 0 for a live peer."""
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import new_engine
from mooncake.engine import TransferEngine

ERR_SOCKET, ERR_METADATA = -102, -200


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    return port


@pytest.fixture(scope="module")
def eng():
    return new_engine()


def test_probe_closed_port_is_a_socket_error(eng):
    assert eng.send_probe(f"127.0.0.1:{closed_port()}") == ERR_SOCKET
    assert eng.send_probe(peer_server_name="127.0.0.1:1") == ERR_SOCKET
    assert eng.send_probe(f"127.0.0.1:{eng.get_rpc_port()}") == 0  # ourselves


def test_probe_peer_that_hangs_up_is_a_socket_error(eng):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def hang_up():
        c, _ = srv.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        c.close()  # reset, no reply

    t = threading.Thread(target=hang_up)
    t.start()
    try:
        assert eng.send_probe(f"127.0.0.1:{port}") == ERR_SOCKET
    finally:
        t.join(10)
        srv.close()


class MetadataStore(BaseHTTPRequestHandler):
    """Mooncake's HTTP metadata protocol: GET/PUT/DELETE <path>?key=<key>,
    404 for a missing key."""
    store = {}

    def _key(self):
        return urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("key", [""])[0]

    def _reply(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        v = self.store.get(self._key())
        self._reply(200, v) if v is not None else self._reply(404, b"not found")

    def do_PUT(self):
        self.store[self._key()] = self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(200, b"ok")

    def do_DELETE(self):
        self.store.pop(self._key(), None)
        self._reply(200, b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_store():
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetadataStore)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metadata", MetadataStore.store
    server.shutdown()
    server.server_close()
    MetadataStore.store.clear()


def test_probe_with_a_metadata_server(http_store):
    url, store = http_store
    e = TransferEngine()
    assert e.initialize("127.0.0.1", url, "tcp", "") == 0
    assert any(k.endswith("rpc_meta/127.0.0.1") for k in store)
    assert e.send_probe("127.0.0.1") == 0                # ourselves
    assert e.send_probe("nobody-registered") == ERR_METADATA
    # a peer that registered and went away: its entry remains, its port is closed
    store["mooncake/rpc_meta/ghost"] = (
        b'{"ip_or_host_name":"127.0.0.1","rpc_port":%d}' % closed_port())
    assert e.send_probe("ghost") == ERR_SOCKET
    store["mooncake/rpc_meta/junk"] = b"not json"
    assert e.send_probe("junk") == ERR_METADATA
    del e
