"""``service:<url>[,<url>…]`` — render on remote GPUs through the renderer-service protocol.

Client: ``POST <url>/generate`` with ``{"prompt", "image_urls": [data URIs], "seed", "width",
"height", "num_inference_steps", "true_cfg_scale", "guidance_scale", "negative_prompt",
"num_images_per_prompt"}`` and read ``{"success": true, "image": base64}`` (``image_base64`` is
accepted too, as some services of the official release answer). ``service:<url>?size=official``
sizes renders as the official release does (1024 on the long side, the first reference's
aspect ratio, multiples of 16) instead of our ~1 MP default, and sends references as the official
client does: each file's bytes as they are (up to 4, labelled ``image/jpeg`` whatever the format,
as it labels them), and no request at all without a reference (it refuses those). Without
``size=official`` references are re-encoded (JPEG, at most 1536 px, alpha dropped). Requests go round-robin over the URLs, at most
``concurrency`` at a time from this process, and a failed attempt (connection error, 429, 5xx)
is retried on the next URL after an exponential backoff.

Server: :func:`create_app` wraps any Renderer (a diffusers pipeline, or ``layout`` for tests) in
that protocol with FastAPI; one request renders at a time (one process per GPU), ``GET /health``
says what is loaded. ``genevolve serve-renderer --pipeline ID --port N`` runs it under uvicorn.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image
from pydantic import BaseModel, Field

from genevolve.program import Program, Reference
from genevolve.renderers.base import (
    Progress, Renderer, RenderError, as_program, check_size, decode_image_bytes, default_size, image_to_data_uri,
    load_references,
)
from genevolve.specs import spec_kind

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
# The shared secret of a service started with `serve-renderer --token` (or this variable):
# the server reads it as its token, the `service:` client sends it as a bearer token.
TOKEN_ENV = "GENEVOLVE_RENDERER_TOKEN"
MAX_BODY_BYTES = 32 * 1024 * 1024  # two 1536-px references as data URIs are ~2 MB
MAX_SEED = 2 ** 32 - 1
# The largest answer the client reads: a 2048x2048 PNG as base64 is ~16 MB; more is not an image.
MAX_REPLY_BYTES = 64 * 1024 * 1024


class ServiceRenderer(Renderer):
    generative = True

    def __init__(self, urls: list[str], *, concurrency: int = 4, retries: int = 3, backoff_s: float = 1.0,
                 timeout_s: float = 600.0, num_inference_steps: int = 40, true_cfg_scale: float = 4.0,
                 guidance_scale: float = 1.0, negative_prompt: str = " ", num_images_per_prompt: int = 1,
                 size_mode: str = "ours", token: str | None = None, max_reply_bytes: int = MAX_REPLY_BYTES):
        import os

        if not urls:
            raise RenderError("service needs at least one URL: service:http://host:port")
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise RenderError(f"service URL must start with http:// or https://, got {u!r}")
        self.urls = [u.rstrip("/") for u in urls]
        self.name = "service:" + ",".join(self.urls)
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s  # the wall-clock limit of one attempt's whole answer, not per read
        self.max_reply_bytes = max_reply_bytes
        if size_mode not in ("ours", "official"):
            raise RenderError(f"service size must be 'ours' or 'official', got {size_mode!r}")
        if int(num_images_per_prompt) < 1:
            raise RenderError("num_images_per_prompt must be at least 1")
        self.size_mode = size_mode
        self.params = {"num_inference_steps": num_inference_steps, "true_cfg_scale": true_cfg_scale,
                       "guidance_scale": guidance_scale, "negative_prompt": negative_prompt,
                       "num_images_per_prompt": int(num_images_per_prompt)}
        self._next_url = itertools.cycle(range(len(self.urls)))
        self._url_lock = threading.Lock()
        # Bounds how many renders this process has in flight across threads (bench --parallel).
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self.last_info: dict = {}

    def _pick_url(self) -> str:
        with self._url_lock:
            return self.urls[next(self._next_url)]

    def render(self, program: Program, size: tuple[int, int] | None = None, seed: int = 0,
               progress: Progress | None = None) -> Image.Image:
        from genevolve.http_limits import RemoteError, post_json

        program = as_program(program)
        refs = load_references(program)
        if size:
            w, h = check_size(size)
        elif self.size_mode == "official":
            w, h = official_size([r.size for r in refs])
        else:
            w, h = default_size(program, [r.size for r in refs])
        if self.size_mode == "official":
            image_urls = official_reference_uris(program)
        else:
            image_urls = [image_to_data_uri(r) for r in refs]
        payload = {"prompt": program.gen_prompt, "image_urls": image_urls,
                   "seed": int(seed), "width": w, "height": h, **self.params}
        errors: list[str] = []
        with self._slots:
            for attempt in range(self.retries + 1):
                url = self._pick_url()
                try:
                    headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                    resp = post_json(f"{url}/generate", payload, headers=headers, timeout_s=self.timeout_s,
                                     deadline_s=self.timeout_s, max_bytes=self.max_reply_bytes)
                except RemoteError as exc:
                    if not exc.retryable:
                        raise RenderError(f"renderer service: {exc}") from None
                    errors.append(str(exc))
                else:
                    if resp.status_code in RETRY_STATUS:
                        errors.append(f"{url}: HTTP {resp.status_code}")
                    elif resp.status_code == 401:
                        raise RenderError(f"renderer service {url} wants a bearer token: set {TOKEN_ENV} to the "
                                          "server's --token" + (" (the one set was refused)" if self.token else ""))
                    elif resp.status_code != 200:
                        raise RenderError(f"renderer service {url} refused the request: HTTP {resp.status_code} "
                                          f"{resp.text[:300]}")
                    else:
                        image = self._decode(resp, url)
                        self.last_info = {"url": url, "attempts": attempt + 1}
                        if progress:
                            progress(1, 1)
                        return image
                if attempt < self.retries:
                    time.sleep(self.backoff_s * (2 ** attempt))
        raise RenderError(f"renderer service failed after {self.retries + 1} attempts: " + "; ".join(errors[-4:])
                          + ". Check that `genevolve serve-renderer` is running at these URLs")

    @staticmethod
    def _decode(resp, url: str) -> Image.Image:
        try:
            body = resp.json()
        except ValueError as exc:
            raise RenderError(f"renderer service {url} answered with non-JSON: {resp.text[:200]!r}") from None
        if not isinstance(body, dict) or not body.get("success"):
            reason = body.get("error") if isinstance(body, dict) else None
            raise RenderError(f"renderer service {url} reported failure: {reason or body!r}"[:500])
        data = body.get("image") or body.get("image_base64")
        if not isinstance(data, str):
            raise RenderError(f"renderer service {url} answered success without an 'image' (or 'image_base64') field")
        return decode_image_bytes(data, what=f"the answer from {url}")

    def describe(self) -> dict:
        return dict(self.last_info)


OFFICIAL_MAX_REFS = 4  # the official service client sends at most this many references


def official_reference_uris(program: Program) -> list[str]:
    """References as the official service client sends them: the first 4 reference files' bytes
    untouched, each labelled ``data:image/jpeg`` (its label whatever the format; services decode by
    content). Like that client, refuses a program with no reference file."""
    import base64

    uris = []
    for ref in program.reference_images[:OFFICIAL_MAX_REFS]:
        if ref.path and Path(ref.path).is_file():
            uris.append("data:image/jpeg;base64," + base64.b64encode(Path(ref.path).read_bytes()).decode("ascii"))
    if not uris:
        raise RenderError("service ?size=official sends requests as the official service client does, and it "
                          "sends none without a reference image file; add a reference, or drop ?size=official")
    return uris


# ---------------------------------------------------------------- server

class GenerateRequest(BaseModel):
    """The body of POST /generate (module level: FastAPI resolves the annotation by name)."""

    prompt: str = Field("", max_length=20_000)
    image_urls: list[str] = Field(default_factory=list, max_length=8)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = Field(None, ge=1, le=500)
    true_cfg_scale: float | None = Field(None, ge=0, le=100)
    guidance_scale: float | None = Field(None, ge=0, le=100)
    negative_prompt: str | None = Field(None, max_length=20_000)
    num_images_per_prompt: int | None = Field(None, ge=1, le=16)  # accepted for compatibility; one image is returned


def official_size(reference_sizes: list[tuple[int, int]], long_side: int = 1024, multiple: int = 16) -> tuple[int, int]:
    """The official release's render size: ``long_side`` on the long side in the first reference's
    aspect ratio, each side rounded to a multiple of ``multiple``; square without references."""
    if not reference_sizes:
        return long_side, long_side
    w, h = reference_sizes[0]
    scale = long_side / max(w, h)
    return (max(multiple, round(w * scale / multiple) * multiple),
            max(multiple, round(h * scale / multiple) * multiple))


class _Guard:
    """ASGI middleware in front of POST requests: the bearer token first, then a body cap.

    Both are checked before the body is parsed (an unauthenticated or oversized request costs
    no more than its headers and at most ``max_body`` bytes), and answered in the protocol's
    error shape.
    """

    def __init__(self, app, token: str | None, max_body: int):
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        import hmac

        headers = dict(scope["headers"])
        # With a token, only GET /health is open: the API schema and docs describe a private service.
        if scope["method"] != "POST" and (not self.token or scope.get("path") == "/health"):
            return await self.app(scope, receive, send)
        if self.token:
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return await _send_error(send, 401, f"missing or wrong bearer token: send 'Authorization: Bearer "
                                                    f"<token>' (the service: renderer reads {TOKEN_ENV})")
        declared = headers.get(b"content-length", b"")
        too_big = f"request body over the {self.max_body}-byte limit; send smaller reference images"
        if declared.isdigit() and int(declared) > self.max_body:
            return await _send_error(send, 413, too_big)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:  # a chunked body that never declared its length
                return await _send_error(send, 413, too_big)
            if not message.get("more_body"):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


async def _send_error(send, status: int, error: str) -> None:
    import json

    body = json.dumps({"success": False, "error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def create_app(renderer: Renderer, label: str | None = None, *, token: str | None = None,
               max_body: int = MAX_BODY_BYTES):
    """A FastAPI app serving ``renderer`` with the renderer-service protocol.

    ``token``: when set, POST requests need ``Authorization: Bearer <token>`` (401 otherwise).
    Bad input is a 4xx with ``{"success": false, "error": <what to change>}``, never a 500.
    """
    import base64
    import io

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    app = FastAPI(title="GenEvolve renderer service")
    app.add_middleware(_Guard, token=token or None, max_body=max_body)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "body"
            problems.append(f"{where}: {err.get('msg')}")
        return JSONResponse({"success": False, "error": "; ".join(problems)[:1000]}, status_code=422)
    gpu_lock = threading.Lock()  # one render at a time: a GPU serves one pipeline call well
    state = {"served": 0, "busy": False, "started": time.time()}

    @app.get("/health")
    def health():
        return {"ok": True, "renderer": label or renderer.name, "busy": state["busy"], "served": state["served"],
                "uptime_s": round(time.time() - state["started"], 1), "auth": bool(token)}

    # A plain (sync) handler: FastAPI runs it in a worker thread, so /health stays responsive.
    @app.post("/generate")
    def generate(req: GenerateRequest):
        with tempfile.TemporaryDirectory(prefix="genevolve-serve-") as tmp:
            try:
                size = None
                if req.width is not None or req.height is not None:  # 0x0 is an error, not "default"
                    if req.width is None or req.height is None:
                        raise RenderError("give both width and height, or neither (the service picks a size)")
                    size = check_size((req.width, req.height))
                refs = []
                for i, uri in enumerate(req.image_urls):
                    if uri.startswith(("http://", "https://")):
                        # The server may sit where the web is unreachable; the client inlines images.
                        raise RenderError(f"image_urls[{i}] is a web URL; send images inline as data: URIs")
                    img = decode_image_bytes(uri, what=f"image_urls[{i}]")
                    path = Path(tmp) / f"ref{i}.png"
                    img.save(path)
                    refs.append(Reference(img_id=f"IMG_{i + 1:03d}", path=str(path)))
                program = Program(gen_prompt=req.prompt, reference_images=refs)
                extra = {}
                if hasattr(renderer, "model"):  # diffusers: per-request sampling settings
                    extra = {k: v for k, v in {
                        "steps": req.num_inference_steps, "guidance_scale": req.guidance_scale,
                        "true_cfg_scale": req.true_cfg_scale, "negative_prompt": req.negative_prompt,
                    }.items() if v is not None}
                with gpu_lock:
                    state["busy"] = True
                    try:
                        image = renderer.render(program, size=size, seed=req.seed, **extra)
                    finally:
                        state["busy"] = False
            except RenderError as exc:
                return JSONResponse({"success": False, "error": str(exc)}, status_code=400)
            except Exception as exc:  # noqa: BLE001 - the client gets a reason, the server stays up
                return JSONResponse({"success": False, "error": f"{type(exc).__name__}: {exc}"}, status_code=500)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        state["served"] += 1
        return {"success": True, "image": base64.b64encode(buf.getvalue()).decode("ascii"),
                "width": image.width, "height": image.height, "seed": req.seed}

    return app


def renderer_for_pipeline(pipeline: str) -> Renderer:
    """What ``--pipeline`` names: ``layout``, any renderer spec, or a bare diffusers id/path."""
    from genevolve.renderers import make_renderer

    if spec_kind(pipeline) in ("layout", "diffusers", "gemini"):
        return make_renderer(pipeline)
    return make_renderer(f"diffusers:{pipeline}")


def check_listen(host: str, port: int) -> None:
    """Raise RenderError (saying what to change) unless ``host:port`` can be listened on."""
    import socket

    if not 1 <= port <= 65535:
        raise RenderError(f"--port must be 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        raise RenderError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host") from None


def serve(pipeline: str, host: str = "127.0.0.1", port: int = 8000, preload: bool = True,
          token: str | None = None, max_body: int = MAX_BODY_BYTES) -> None:
    import uvicorn

    check_listen(host, port)  # before loading a pipeline for minutes
    renderer = renderer_for_pipeline(pipeline)
    if preload and hasattr(renderer, "load"):
        renderer.load()  # fail at start, not at the first request
    uvicorn.run(create_app(renderer, label=pipeline, token=token, max_body=max_body), host=host, port=port,
                log_level="info")
