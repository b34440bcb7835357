"""The safe downloader against hostile URLs and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler

import pytest
from PIL import Image

from genevolve.tools.download import DownloadError, check_image_bytes, safe_download
from helpers.local_http import serve


def _png_bytes(size=(32, 24), color=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _bomb_png(width=100_000, height=100_000) -> bytes:
    """A few hundred bytes that declare a 10-gigapixel canvas (IHDR only + a tiny IDAT)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


class _Handler(BaseHTTPRequestHandler):
    routes: dict = {}

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_response(404)
            self.end_headers()
            return
        answer = route(self)
        if answer is None:  # the route wrote its own response
            return
        status, headers, body = answer
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers and body is not None:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass


@pytest.fixture(scope="module")
def server():
    png = _png_bytes()
    seen_hosts = []

    def image(h):
        seen_hosts.append(h.headers.get("Host"))
        return 200, {"Content-Type": "image/png"}, png

    def redirect(to):
        return lambda h: (302, {"Location": to}, b"")

    def streamed_big(h):
        # No Content-Length: the cap must be enforced while streaming.
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.end_headers()
        try:
            for _ in range(64):
                h.wfile.write(b"\0" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return None

    class Handler(_Handler):
        pass

    with serve(Handler) as httpd:
        port = httpd.server_address[1]
        Handler.routes = _routes(port, image, redirect, streamed_big)
        yield {"base": httpd.url, "allow": {f"127.0.0.1:{port}"}, "hosts": seen_hosts, "port": port}


def _routes(port, image, redirect, streamed_big) -> dict:
    return {
        "/img.png": image,
        "/redirect-ok": redirect("/img.png"),
        "/redirect-private": redirect("http://10.0.0.1/img.png"),
        "/redirect-metadata": redirect("http://169.254.169.254/latest/meta-data"),
        "/redirect-localhost": redirect(f"http://localhost:{port}/img.png"),
        "/redirect-loop": redirect("/redirect-loop"),
        "/big": lambda h: (200, {"Content-Type": "image/png", "Content-Length": str(30 * 1024 * 1024)}, b""),
        "/text": lambda h: (200, {"Content-Type": "text/html"}, b"<html>not an image</html>" * 20),
        "/bomb.png": lambda h: (200, {"Content-Type": "image/png"}, _bomb_png()),
        "/stream-big": streamed_big,
    }


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://10.0.0.1/",
    "http://192.168.1.1/x.png",
    "http://172.16.5.4/",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://100.64.0.1/",
    "file:///etc/passwd",
    "ftp://example.com/a.png",
    "gopher://example.com/",
    "http:///nohost",
])
def test_refuses_hostile_urls(url, tmp_path):
    with pytest.raises(DownloadError):
        safe_download(url, tmp_path, timeout=2)
    assert not any(tmp_path.iterdir())


def test_refusal_reasons_are_specific(tmp_path):
    with pytest.raises(DownloadError, match="link-local"):
        safe_download("http://169.254.169.254/latest/meta-data", tmp_path)
    with pytest.raises(DownloadError, match="loopback"):
        safe_download("http://[::1]/", tmp_path)
    with pytest.raises(DownloadError, match="scheme"):
        safe_download("file:///etc/passwd", tmp_path)


def test_loopback_server_refused_without_the_allow_flag(server, tmp_path):
    with pytest.raises(DownloadError, match="loopback"):
        safe_download(server["base"] + "/img.png", tmp_path)


def test_accepts_real_image_from_allowed_server(server, tmp_path):
    path = safe_download(server["base"] + "/img.png", tmp_path, allow_hosts=server["allow"])
    with Image.open(path) as im:
        assert im.size == (32, 24)
    assert path.parent == tmp_path and path.suffix == ".png"
    # The connection went to the checked IP while the Host header kept the name from the URL.
    assert server["hosts"][-1] == f"127.0.0.1:{server['port']}"
    same = safe_download(server["base"] + "/img.png", tmp_path, allow_private=True)
    assert same == path  # named by content hash


def test_follows_a_safe_redirect(server, tmp_path):
    path = safe_download(server["base"] + "/redirect-ok", tmp_path, allow_hosts=server["allow"])
    assert path.exists()


@pytest.mark.parametrize("route,reason", [
    ("/redirect-private", "private"),
    ("/redirect-metadata", "link-local"),
    ("/redirect-localhost", "loopback"),  # same machine, but not the allowed host:port
    ("/redirect-loop", "too many redirects"),
    ("/big", "cap"),
    ("/stream-big", "cap"),
    ("/text", "not an image"),
    ("/bomb.png", "pixels|bomb"),
    ("/missing", "HTTP 404"),
])
def test_refuses_bad_responses(server, tmp_path, route, reason):
    with pytest.raises(DownloadError, match=reason):
        safe_download(server["base"] + route, tmp_path, allow_hosts=server["allow"], max_bytes=1024 * 1024)
    assert not any(tmp_path.iterdir())


def test_pixel_cap_applies_before_decoding():
    data = _png_bytes((300, 300))
    assert check_image_bytes(data) == "PNG"
    with pytest.raises(DownloadError, match="exceeds the cap"):
        check_image_bytes(data, max_pixels=300 * 299)
    with pytest.raises(DownloadError, match="decode|not an image"):
        check_image_bytes(data[:200])


def _self_signed(tmp_path, host: str):
    """A throwaway certificate for ``host`` only (no IP address in it)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_https_pins_the_checked_ip_and_verifies_the_host_name(tmp_path):
    # The connection goes to the IP we checked, yet TLS must still name and verify "localhost":
    # the certificate holds no IP address, so verifying against the IP would fail.
    import ssl

    cert, key = _self_signed(tmp_path, "localhost")
    png = _png_bytes((12, 9))
    hosts = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            hosts.append(self.headers.get("Host"))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

    with serve(Handler, tls=(str(cert), str(key))) as httpd:
        port = httpd.server_address[1]
        trust = ssl.create_default_context(cafile=str(cert))
        path = safe_download(f"https://localhost:{port}/x.png", tmp_path / "out", verify=trust,
                             allow_hosts={f"localhost:{port}"})
        with Image.open(path) as im:
            assert im.size == (12, 9)
        assert hosts == [f"localhost:{port}"]
        with pytest.raises(DownloadError, match="could not fetch"):  # the same server, untrusted certificate
            safe_download(f"https://localhost:{port}/x.png", tmp_path / "out2", allow_hosts={f"localhost:{port}"})


@pytest.fixture
def drip_server():
    """A real server on 127.0.0.1 that answers one byte every 0.2 s, in the headers or the body."""
    import socketserver

    png = _png_bytes()
    answers = {
        "/drip-headers": b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Pad: " + b"a" * 400 + b"\r\n\r\n",
        "/drip-body": b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n" + png + b"\0" * 99000,
    }
    served = []

    class Drip(socketserver.BaseRequestHandler):
        def handle(self):
            line = self.request.makefile("rb").readline().decode()
            reply = answers.get(line.split(" ")[1], b"HTTP/1.1 404 Not Found\r\n\r\n")
            start = time.monotonic()
            head_end = reply.find(b"\r\n\r\n") + 4
            fast, slow = (b"", reply) if line.split(" ")[1] == "/drip-headers" else (reply[:head_end + 64], reply[head_end + 64:])
            try:
                self.request.sendall(fast)
                for i in range(len(slow)):
                    self.request.sendall(slow[i:i + 1])
                    time.sleep(0.2)
            except OSError:  # the client hung up: what the deadline is for
                pass
            served.append(time.monotonic() - start)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    httpd = Server(("127.0.0.1", 0), Drip)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    yield {"base": f"http://127.0.0.1:{port}", "allow": {f"127.0.0.1:{port}"}, "served": served}
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("route", ["/drip-headers", "/drip-body"])
def test_a_dripping_server_cannot_hold_the_download_past_its_deadline(drip_server, tmp_path, route):
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"deadline|too slow"):
        # The default deadline is 3 x timeout; every byte arrives well inside the 1 s timeout.
        safe_download(drip_server["base"] + route, tmp_path, allow_hosts=drip_server["allow"], timeout=1.0)
    took = time.monotonic() - t0
    assert took < 4.0, f"held for {took:.1f}s with a 3s deadline"
    assert not any(tmp_path.iterdir())
    # The transfer itself is cut off too: the server sees the connection close soon after.
    end = time.monotonic() + 5
    while not drip_server["served"] and time.monotonic() < end:
        time.sleep(0.05)
    assert drip_server["served"] and drip_server["served"][0] < 5.0


def test_identical_images_downloaded_at_once_all_succeed(server, tmp_path):
    """Many URLs answering the same bytes at the same moment: every download succeeds with one file.

    They all store to the same content-hash name; a shared temporary name made the later renames
    fail (FileNotFoundError) once another thread had moved the file into place.
    """
    from concurrent.futures import ThreadPoolExecutor

    for attempt in range(6):
        dest = tmp_path / f"round{attempt}"
        start = threading.Barrier(24)

        def one(i):
            start.wait()
            return safe_download(f"{server['base']}/img.png?copy={i}", dest, allow_hosts=server["allow"])

        with ThreadPoolExecutor(max_workers=24) as pool:
            paths = list(pool.map(one, range(24)))
        assert len(set(paths)) == 1 and paths[0].exists()
        assert [p.name for p in dest.iterdir()] == [paths[0].name]  # no temporary file left behind


def test_store_by_hash_treats_an_existing_identical_file_as_success(tmp_path):
    import sys

    from helpers.race import race

    from genevolve.tools.download import _store_image

    png = _png_bytes()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so the writers interleave as on a busy machine
    try:
        for attempt in range(40):
            dest = tmp_path / f"round{attempt}"
            results, errors = race(lambda _: _store_image(png, dest, 1e7, "test"), 16)
            assert not errors, errors[0]
            assert len(set(results)) == 1
            assert [p.name for p in dest.iterdir()] == [results[0].name]
    finally:
        sys.setswitchinterval(switch)
