"""The safe downloader: fetch one image from the web without letting a URL reach inside our network.

A search engine hands us URLs that anybody can write, so every hop is treated as hostile:

* only ``http``/``https``;
* the host is resolved here, and every address it resolves to must be a public one (no
  loopback, private, link-local such as the 169.254.169.254 metadata service, multicast,
  reserved or unspecified address, IPv4 or IPv6, IPv4-mapped IPv6 included);
* the connection goes to the address that was checked (the URL is rewritten to the IP, the
  ``Host`` header and TLS SNI/certificate check keep the real name), so a second DNS answer
  cannot swap in a private address (DNS rebinding);
* redirects are followed by hand, at most five, and each hop is checked again;
* the body is streamed with a byte cap (``Content-Length`` is checked first), and the whole
  fetch has a wall-clock deadline that a slow-dripping server cannot stretch;
* the bytes must decode as an image, and the pixel count is checked from the header before
  any full decode, so a tiny file that declares a gigantic canvas is refused.

``allow_private=True`` switches the address check off (only for tests and trusted setups);
``allow_hosts`` names exact ``host:port`` pairs that may be private (a test server on
127.0.0.1) while every other private address, redirects included, is still refused.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Collection
from urllib.parse import urljoin, urlsplit

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_REDIRECTS = 5
_REDIRECT_CODES = {301, 302, 303, 307, 308}
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
USER_AGENT = "GenEvolve/0.1 (+image reference fetcher)"


class DownloadError(Exception):
    """A download was refused or failed; the message says why."""


def blocked_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address must not be contacted, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            inner = blocked_reason(mapped)
            if inner:
                return f"{inner} (embedded in {ip})"
    checks = (
        ("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
        ("private", ip.is_private), ("reserved", ip.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return f"{name} address {ip}"
    if not ip.is_global:  # e.g. 100.64.0.0/10 carrier-grade NAT
        return f"non-public address {ip}"
    return None


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadError(f"cannot resolve host {host!r}: {exc}") from exc
    seen, out = set(), []
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if addr not in seen:
            seen.add(addr)
            out.append(addr)
    if not out:
        raise DownloadError(f"host {host!r} resolved to no address")
    return out


def _checked_target(url: str, *, allow_private: bool, allow_hosts: Collection[str]):
    """Validate one hop; return (scheme, host, port, checked addresses, path_and_query)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"refused scheme {scheme or '(none)'!r}: only http and https URLs are fetched")
    host = parts.hostname
    if not host:
        raise DownloadError(f"refused URL without a host: {url!r}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise DownloadError(f"refused URL with a bad port: {url!r}") from exc
    addresses = _resolve(host, port)
    exempt = allow_private or f"{host}:{port}" in allow_hosts
    if not exempt:
        for ip in addresses:
            reason = blocked_reason(ip)
            if reason:
                raise DownloadError(f"refused {host!r}: it resolves to a {reason}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port, addresses, path


def safe_download(url: str, dest_dir: str | Path, *, max_bytes: int = MAX_BYTES, timeout: float = 10.0,
                  max_pixels: float = MAX_PIXELS, allow_private: bool = False,
                  allow_hosts: Collection[str] = (), verify: Any = True, deadline: float | None = None,
                  require_image: bool = True) -> Path:
    """Download one image into ``dest_dir`` (named by content hash) or raise DownloadError.

    ``require_image=False`` keeps any body a 2xx answer carries, image or not (the official
    runtime lists whatever answered); every network check and cap still applies.

    ``timeout`` bounds each network operation; ``deadline`` (default 3 x timeout) bounds the
    whole fetch by the wall clock, redirects, DNS and a server that drips one byte at a time
    included: the caller has its answer by then, and the transfer is cut off.
    ``verify`` is passed to httpx (True: the system's CA bundle; an ``ssl.SSLContext`` lets a test
    trust its own certificate). The certificate is always checked against the URL's host name.
    """
    import httpx

    total = timeout * 3 if deadline is None else deadline
    client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False, verify=verify)
    from genevolve.http_limits import DeadlineExceeded, call_within

    def fetch() -> Path:
        return _fetch(client, url, Path(dest_dir), max_bytes=max_bytes, timeout=timeout, max_pixels=max_pixels,
                      allow_private=allow_private, allow_hosts={h.lower() for h in allow_hosts},
                      stop_at=time.monotonic() + total, require_image=require_image)

    try:
        return call_within(fetch, seconds=total, client=client, name="genevolve-download")
    except DeadlineExceeded:
        raise DownloadError(f"refused {url}: no complete answer within the {total:g}s deadline "
                            "(the server is too slow)") from None


def _fetch(client, url: str, dest_dir: Path, *, max_bytes: int, timeout: float, max_pixels: float,
           allow_private: bool, allow_hosts: set[str], stop_at: float, require_image: bool = True) -> Path:
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        scheme, host, port, addresses, path = _checked_target(current, allow_private=allow_private,
                                                              allow_hosts=allow_hosts)
        response = _send_pinned(client, scheme, host, port, addresses, path, current, timeout)
        try:
            if response.status_code in _REDIRECT_CODES:
                location = response.headers.get("location")
                if not location:
                    raise DownloadError(f"redirect without a Location header from {current}")
                current = urljoin(current, location)
                continue
            if response.status_code != 200 and (require_image or not 200 <= response.status_code < 300):
                raise DownloadError(f"HTTP {response.status_code} from {current}")
            data = _read_capped(response, max_bytes, stop_at, current)
        finally:
            response.close()
        if not require_image:
            return _store_by_hash(data, dest_dir, ".bin")
        return _store_image(data, dest_dir, max_pixels, current)
    raise DownloadError(f"too many redirects (more than {MAX_REDIRECTS}) starting at {url}")


def _send_pinned(client, scheme: str, host: str, port: int, addresses: list, path: str, url: str,
                 timeout: float):
    """GET ``path`` from the first checked address that accepts a connection.

    The URL names the IP itself, so httpx resolves nothing; the Host header and, for https, the
    TLS server name (SNI and certificate check) carry the real host name.
    """
    import httpx

    default_port = 443 if scheme == "https" else 80
    name = f"[{host}]" if ":" in host else host
    host_header = name if port == default_port else f"{name}:{port}"
    last: Exception | None = None
    for ip in addresses:
        ip_host = f"[{ip}]" if ip.version == 6 else str(ip)
        request = client.build_request(
            "GET", f"{scheme}://{ip_host}:{port}{path}",
            headers={"Host": host_header, "User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5"},
            extensions={"sni_hostname": host} if scheme == "https" else {})
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as exc:  # e.g. "localhost" answers on 127.0.0.1 but not on ::1
            last = exc
        except httpx.TimeoutException as exc:
            raise DownloadError(f"timed out after {timeout:g}s fetching {url}") from exc
        except httpx.HTTPError as exc:
            raise DownloadError(f"could not fetch {url}: {type(exc).__name__}: {exc}") from exc
    raise DownloadError(f"could not fetch {url}: {type(last).__name__}: {last}")


def _read_capped(response, max_bytes: int, deadline: float, url: str) -> bytes:
    import httpx

    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise DownloadError(f"refused {url}: body of {int(declared)} bytes exceeds the {max_bytes}-byte cap")
    buf = bytearray()
    try:
        for chunk in response.iter_bytes(65536):
            buf.extend(chunk)
            if len(buf) > max_bytes:
                raise DownloadError(f"refused {url}: body exceeds the {max_bytes}-byte cap")
            if time.monotonic() > deadline:
                raise DownloadError(f"refused {url}: the transfer was too slow")
    except httpx.TimeoutException as exc:
        raise DownloadError(f"timed out reading {url}") from exc
    except httpx.HTTPError as exc:
        raise DownloadError(f"connection failed while reading {url}: {exc}") from exc
    return bytes(buf)


def _store_image(data: bytes, dest_dir: Path, max_pixels: float, url: str) -> Path:
    fmt = check_image_bytes(data, max_pixels, url)
    return _store_by_hash(data, dest_dir, _EXTENSIONS.get(fmt, ".img"))


def _store_by_hash(data: bytes, dest_dir: Path, suffix: str) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    path = dest_dir / f"web_{digest[:16]}{suffix}"
    if path.exists():
        return path  # the same bytes are already stored: that is success
    # Each writer gets its own temporary file, so two downloads of the same picture at the same
    # moment never rename one shared temporary name from under each other; the atomic replace
    # lets the last identical copy win.
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp_name, path)
    except OSError:
        Path(tmp_name).unlink(missing_ok=True)
        if not path.exists():
            raise
    return path


def check_image_bytes(data: bytes, max_pixels: float = MAX_PIXELS, label: str = "the data") -> str:
    """Raise DownloadError unless ``data`` is a decodable image within the pixel cap; return its format."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DownloadError(f"refused {label}: empty body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                width, height = im.size
                if width * height > max_pixels:
                    raise DownloadError(f"refused {label}: {width}x{height} pixels exceeds the cap of "
                                        f"{int(max_pixels)} (possible decompression bomb)")
                fmt = im.format or ""
                im.verify()
            with Image.open(io.BytesIO(data)) as im:  # verify() leaves the image unusable; decode afresh
                im.load()
    except DownloadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DownloadError(f"refused {label}: decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise DownloadError(f"refused {label}: the bytes are not an image") from exc
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt files raise many types
        raise DownloadError(f"refused {label}: the image does not decode ({type(exc).__name__}: {exc})") from exc
    return fmt
