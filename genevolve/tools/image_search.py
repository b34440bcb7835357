"""``image_search(query, top_k)``: visual references, each registered with a trajectory IMG id.

Sources, all feeding one result line format (``image_line`` writes it, ``parse_image_lines`` reads it):

    - IMG_003: <title> — <caption> (source: library|web|user, WxH)

* ``LocalLibrary`` — a folder of images with captions (one ``captions.json`` or a sidecar
  ``<name>.txt`` per image), ranked by BM25 over file name + title + caption combined with the
  cosine similarity of all-MiniLM-L6-v2 sentence embeddings (library embeddings are computed
  once per library state and cached on disk);
* the user's own uploaded images (``ctx.user_images``), matched the same way, in every mode;
* web images from ddgs or a Serper-compatible API, each fetched through ``safe_download`` into
  the trajectory's work folder. When the web fails the library answers and the text says so.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from genevolve.embeddings import TextEmbedder, text_embedder
from genevolve.profiles import profile_of
from genevolve.tools.base import (
    Tool,
    ToolArgumentError,
    ToolContext,
    ToolResult,
    clip,
    distinct_queries,
    top_k_arg,
)
from genevolve.tools.bm25 import BM25Index, terms
from genevolve.tools.circuit import breaker_for
from genevolve.tools.ddgs_client import ddgs_rows
from genevolve.tools.serper_client import serper_base_url, serper_post, serper_post_official
from genevolve.trajectory import ImageRef

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
MAX_TOP_K = 8
CAPTION_CHARS = 220
COMPACT_CAPTION_CHARS = 80
# When a candidate is shown: the picture must be *of* what the query names. Either the query's head
# noun ("bench" in "green bench") is the head of the picture's title or one of its tags, no query
# word is unknown to the whole collection, and the meaning is not far off (cosine >=
# MIN_COSINE_WITH_WORDS); or its meaning alone is very close (cosine >= MIN_COSINE). A word that
# only the caption mentions ("a wooden bench behind it") is scenery, not the subject. Calibrated
# with all-MiniLM-L6-v2 on the shipped library (tests/tools/test_tools.py lists the labelled queries):
# true matches by meaning alone sit at 0.45-0.60 ("kitten" -> the cat 0.49), near misses at
# 0.38-0.43 ("croissant" -> the espresso cup 0.38, "bicycle" -> the motorcycle 0.42). An unrelated
# picture is worse than none.
MIN_COSINE = 0.45
MIN_COSINE_WITH_WORDS = 0.20
MIN_WORD_COVERAGE = 0.5
BM25_WEIGHT, COSINE_WEIGHT = 0.4, 0.6


# ---------------------------------------------------------------- sentence embeddings

def shared_embedder() -> TextEmbedder | None:
    """The process-wide embedder (the one SDL uses too), or None when it cannot load (BM25 alone still ranks)."""
    try:
        return text_embedder()
    except Exception:  # noqa: BLE001 - a missing model degrades ranking, it must not break search
        return None


# ---------------------------------------------------------------- matching

@dataclass
class Candidate:
    path: str
    title: str
    caption: str
    source: str  # library | user | web
    url: str | None = None
    match_text: str = ""
    score: float = 0.0
    meta: dict = field(default_factory=dict)


def humanise_stem(name: str) -> str:
    return re.sub(r"[_\-.]+", " ", Path(name).stem).strip()


def rank(query: str, candidates: list[Candidate], vectors, embedder: TextEmbedder | None,
         bm25: BM25Index | None = None) -> list[Candidate]:
    """Candidates that match ``query`` (by words or by meaning), best first, with ``score`` set."""
    import numpy as np

    if not candidates:
        return []
    bm25 = bm25 or BM25Index([c.match_text for c in candidates])
    lexical = np.zeros(len(candidates), dtype=np.float32)
    for i, s in bm25.query(query, k=len(candidates)):
        lexical[i] = s
    if lexical.max() > 0:
        lexical = lexical / lexical.max()
    cosine = np.zeros(len(candidates), dtype=np.float32)
    semantic = embedder is not None and vectors is not None and len(vectors) == len(candidates)
    if semantic:
        cosine = vectors @ embedder.encode_query(query)
    wanted = terms(query)
    cand_terms = [terms(c.match_text) for c in candidates]
    # A query word that no candidate mentions names something this collection does not hold
    # ("eiffel"): then matching the other words ("tower", "night") is not evidence, only meaning is.
    unknown = wanted - set().union(*cand_terms)
    head = head_noun(query)
    out = []
    for i, c in enumerate(candidates):
        coverage = len(wanted & cand_terms[i]) / len(wanted) if wanted else 0.0
        subject = bool(head) and head in picture_subjects(c)
        words_match = lexical[i] > 0 and coverage >= MIN_WORD_COVERAGE and not unknown and subject
        if semantic:
            keep = cosine[i] >= MIN_COSINE or (words_match and cosine[i] >= MIN_COSINE_WITH_WORDS)
        else:  # words alone decide when no embedding model is available
            keep = words_match
        if keep:
            c.score = float(BM25_WEIGHT * lexical[i] + COSINE_WEIGHT * max(0.0, float(cosine[i])))
            c.meta = {**c.meta, "bm25": round(float(lexical[i]), 4), "cosine": round(float(cosine[i]), 4)}
            out.append(c)
    out.sort(key=lambda c: -c.score)
    return out


_PREPOSITIONS = r"\s+(?:on|in|with|at|under|beside|from|of|for|near|behind|by|against|during)\s+"


def head_noun(phrase: str) -> str:
    """The last word before the first preposition, singular: "Espresso cup on a saucer" -> "cup"."""
    from genevolve.subjects import singular

    front = re.split(_PREPOSITIONS, phrase.strip(), maxsplit=1, flags=re.IGNORECASE)[0]
    words = re.findall(r"[a-z0-9]+", front.lower())
    return singular(words[-1]) if words else ""


def picture_subjects(c: Candidate) -> set[str]:
    """What a picture is of: its title's head noun and its tags (singular; a two-word tag gives both).

    Without tags (a user's image, a sidecar-captioned folder) every word of its name and caption counts."""
    from genevolve.subjects import singular

    tags = c.meta.get("tags") if isinstance(c.meta.get("tags"), list) else []
    out = {head_noun(c.title)} if c.title else set()
    for t in tags:
        out |= {singular(w) for w in re.findall(r"[a-z0-9]+", str(t).lower())}
    if c.source == "user" or not tags:
        # A user's file name is what they called it; a library without tags has only its words to go by.
        out |= {singular(w) for w in re.findall(r"[a-z0-9]+", f"{humanise_stem(c.title)} {c.caption}".lower())}
    return out - {""}


# ---------------------------------------------------------------- the local library

def _load_captions(folder: Path) -> dict[str, dict]:
    path = folder / "captions.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    out = {}
    for name, value in (data.items() if isinstance(data, dict) else []):
        out[name] = value if isinstance(value, dict) else {"caption": str(value)}
    return out


class LocalLibrary:
    """A folder of captioned images, indexed once per folder state (BM25 in memory, embeddings on disk)."""

    name = "local-library"
    _states: dict[str, tuple] = {}
    _lock = threading.Lock()

    def __init__(self, folder: str | Path, *, embeddings: bool = True, cache_dir: str | Path | None = None):
        self.folder = Path(folder).expanduser()
        self.use_embeddings = embeddings
        self._cache_dir = Path(cache_dir) if cache_dir else None

    def cache_dir(self) -> Path:
        if self._cache_dir is None:
            from genevolve.config import genevolve_home

            self._cache_dir = genevolve_home() / "cache" / "library"
        return self._cache_dir

    def entries(self) -> list[Candidate]:
        if not self.folder.is_dir():
            return []
        captions = _load_captions(self.folder)
        out = []
        for p in sorted(self.folder.rglob("*")):
            if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            rel = p.relative_to(self.folder).as_posix()
            info = dict(captions.get(rel) or captions.get(p.name) or {})
            sidecar = p.with_suffix(".txt")
            if not info.get("caption") and sidecar.is_file():
                info["caption"] = sidecar.read_text(encoding="utf-8", errors="replace").strip()
            title = str(info.get("title") or humanise_stem(p.name).capitalize())
            caption = " ".join(str(info.get("caption") or "").split())
            tags = info.get("tags") or []
            tags = " ".join(tags) if isinstance(tags, list) else str(tags)
            out.append(Candidate(path=str(p), title=title, caption=caption, source="library",
                                 match_text=f"{humanise_stem(p.name)}. {title}. {caption} {tags}".strip(),
                                 meta={"tags": list(info.get("tags") or []) if isinstance(info.get("tags"), list)
                                       else str(info.get("tags") or "").split()}))
        return out

    def _key(self, entries: list[Candidate], model_id: str) -> str:
        h = hashlib.sha256(model_id.encode())
        for c in entries:
            st = Path(c.path).stat()
            h.update(f"{Path(c.path).name}|{st.st_size}|{st.st_mtime_ns}|{c.match_text}".encode())
        return h.hexdigest()[:24]

    def index(self):
        """(entries, bm25, vectors or None, embedder or None) for the folder's current state."""
        import numpy as np

        entries = self.entries()
        embedder = shared_embedder() if self.use_embeddings and entries else None
        state_key = self._key(entries, embedder.model_id if embedder else "bm25-only")
        folder_key = f"{self.folder.resolve()}|{bool(embedder)}"
        with LocalLibrary._lock:
            cached = LocalLibrary._states.get(folder_key)
            if cached and cached[0] == state_key:
                return cached[1]
            vectors = None
            if embedder is not None:
                file = self.cache_dir() / f"{state_key}.npy"
                if file.is_file():
                    try:
                        vectors = np.load(file)
                    except (OSError, ValueError):  # a torn or foreign file: embed again
                        vectors = None
                if vectors is None or vectors.shape[0] != len(entries):
                    vectors = embedder.encode([c.match_text for c in entries])
                    file.parent.mkdir(parents=True, exist_ok=True)
                    tmp = file.with_name(file.stem + ".part.npy")
                    np.save(tmp, vectors)
                    tmp.replace(file)
            built = (entries, BM25Index([c.match_text for c in entries]), vectors, embedder)
            LocalLibrary._states[folder_key] = (state_key, built)
            return built

    def search(self, query: str, top_k: int) -> list[Candidate]:
        from copy import copy

        entries, bm25, vectors, embedder = self.index()
        ranked = rank(query, [copy(c) for c in entries], vectors, embedder, bm25)
        return ranked[:top_k]


class UserImages:
    """The user's uploaded images, matched by file name and caption like library images."""

    name = "user"
    _vectors: dict[str, object] = {}
    _lock = threading.Lock()

    def __init__(self, embeddings: bool = True):
        self.use_embeddings = embeddings

    def search(self, query: str, refs: list[ImageRef], top_k: int) -> list[Candidate]:
        import numpy as np

        refs = [r for r in refs if r is not None]
        if not refs:
            return []
        cands = [Candidate(path=r.path, title=r.title or Path(r.path).name, caption=r.caption or "",
                           source="user", url=r.url,
                           match_text=f"{humanise_stem(r.title or Path(r.path).name)}. {r.caption or ''}".strip())
                 for r in refs]
        embedder = shared_embedder() if self.use_embeddings else None
        vectors = None
        if embedder is not None:
            with UserImages._lock:
                missing = [c.match_text for c in cands if c.match_text not in UserImages._vectors]
                if missing:
                    for text, vec in zip(missing, embedder.encode(missing)):
                        UserImages._vectors[text] = vec
                vectors = np.stack([UserImages._vectors[c.match_text] for c in cands])
        return rank(query, cands, vectors, embedder)[:top_k]


# ---------------------------------------------------------------- web image backends

@dataclass
class WebImage:
    image_url: str
    title: str = ""
    page_url: str | None = None
    site: str = ""


class WebImageBackend(Protocol):
    name: str

    def search(self, query: str, top_k: int) -> list[WebImage]: ...


class DdgsImages:
    name = "ddgs"

    def __init__(self, *, timeout: float = 8, proxy: str | None = None, region: str = "us-en"):
        self.timeout, self.proxy, self.region = timeout, proxy, region

    def search(self, query: str, top_k: int) -> list[WebImage]:
        rows = ddgs_rows("images", query, top_k, timeout=self.timeout, proxy=self.proxy, region=self.region,
                         label="ddgs images")
        return [WebImage(image_url=r["image"], title=r.get("title", ""), page_url=r.get("url") or None,
                         site=r.get("source", "")) for r in rows if r.get("image")]


class SerperImages:
    """Serper-compatible image search: POST /images {"q", "num"} -> {"images": [{"imageUrl", ...}]}."""

    name = "serper"

    def __init__(self, api_key: str, *, base_url: str | None = None, timeout: float = 8):
        self.api_key, self.base_url, self.timeout = api_key, (base_url or serper_base_url()), timeout

    def search(self, query: str, top_k: int) -> list[WebImage]:
        data = serper_post("images", {"q": query, "num": top_k}, api_key=self.api_key, base_url=self.base_url,
                           timeout=self.timeout)
        return [WebImage(image_url=r["imageUrl"], title=r.get("title", ""), page_url=r.get("link"),
                         site=r.get("source", "")) for r in data.get("images") or []
                if isinstance(r, dict) and r.get("imageUrl")]

    def search_official(self, query: str, top_k: int) -> list[WebImage]:
        """The rows the official runtime takes, read as it reads them: the first ``top_k`` rows,
        the picture from ``imageUrl``, ``image_url``, ``thumbnailUrl`` or ``url`` (rows with none
        skipped), the page from ``link`` or else ``source``; asked with the official retries."""
        data = serper_post_official("images", {"q": query, "num": top_k}, api_key=self.api_key,
                                    base_url=self.base_url)
        out = []
        for r in (data.get("images") or [])[:top_k]:
            image_url = r.get("imageUrl") or r.get("image_url") or r.get("thumbnailUrl") or r.get("url") or ""
            if image_url:
                out.append(WebImage(image_url=image_url, title=r.get("title") or "image",
                                    page_url=r.get("link") or r.get("source") or "", site=r.get("source") or ""))
        return out


# ---------------------------------------------------------------- the tool

def parse_image_query(args: dict, *, default_top_k: int) -> tuple[list[str], int]:
    shape = 'Call it as {"query": "what the picture shows", "top_k": 4}.'
    if not isinstance(args, dict):
        raise ToolArgumentError(f"arguments must be a JSON object. {shape}")
    raw = args.get("query", args.get("queries"))
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(q, str) for q in raw):
        raise ToolArgumentError(f"a query string is required. {shape}")
    queries = distinct_queries(raw)
    if not queries:
        raise ToolArgumentError(f"the query is empty. {shape}")
    if len(queries) > 4:
        raise ToolArgumentError(f"at most 4 queries per call. {shape}")
    return queries, top_k_arg(args, default=default_top_k, cap=MAX_TOP_K, shape=shape)


# ---------------------------------------------------------------- the result line format
# ImageSearchTool writes one line per image with ``image_line``; ``parse_image_lines`` reads them
# back (the planner picks its references from them), so the format changes here and nowhere else.

_IMAGE_LINE_RE = re.compile(r"^\s*[-*]?\s*(IMG_\d{3,})\s*:\s*(.*)$", re.MULTILINE)
_TITLE_END = " — "  # the title ends at the first one; image_line keeps it out of titles


class ImageLine(NamedTuple):
    img_id: str
    title: str
    caption: str  # "" when the line has no title/caption separator


def image_line(ref: ImageRef, title: str, caption: str, *, compact: bool = False) -> str:
    """``- IMG_003: <title> — <caption> (source: library, 512x512)``; compact (nano): no source part."""
    size = f"{ref.width}x{ref.height}" if ref.width and ref.height else "size unknown"
    title = clip(title.replace("—", "-"), 100) or "Untitled"
    if compact:  # the nano profile: id, title and a short caption
        return f"- {ref.img_id}: {title}{_TITLE_END}{clip(caption, COMPACT_CAPTION_CHARS) or 'no caption'}"
    caption = clip(caption, CAPTION_CHARS) or "no caption"
    return f"- {ref.img_id}: {title}{_TITLE_END}{caption} (source: {ref.source}, {size})"


def parse_image_lines(text: str) -> list[ImageLine]:
    """Every ``IMG_###: …`` line of an image_search reply, with the ``(source: …)`` part dropped.

    It also reads the official runtime's ``IMG_001: title: …`` lines (all of it is the title then).
    """
    out = []
    for m in _IMAGE_LINE_RE.finditer(text):
        desc = re.sub(r"\(source:[^)]*\)\s*$", "", m.group(2)).strip()
        title, _, caption = desc.partition(_TITLE_END)
        out.append(ImageLine(m.group(1), title, caption))
    return out


class ImageSearchTool(Tool):
    name = "image_search"
    description = "Find reference pictures; each result carries an IMG_### id you may cite."

    def __init__(self, library: LocalLibrary | None, web: WebImageBackend | None = None, *,
                 user: UserImages | None = None, default_top_k: int = 4, download_kwargs: dict | None = None):
        self.library, self.web = library, web
        self.user = user or UserImages(embeddings=bool(library.use_embeddings) if library else True)
        self.default_top_k = default_top_k
        self.download_kwargs = dict(download_kwargs or {})
        self.backend_name = (f"{web.name}+user" if web is not None else "local-library+user")

    def canonical_args(self, args: dict) -> dict:
        queries, top_k = parse_image_query(args, default_top_k=self.default_top_k)
        return {"queries": queries, "top_k": top_k}

    def warm_up(self) -> threading.Thread:
        """Load the embedding model and index the library in the background (an app calls this at
        start so the first request does not pay for imports and model loading)."""
        def work():
            try:
                if self.library is not None:
                    self.library.index()
            except Exception:  # noqa: BLE001 - the first real call reports problems
                pass

        thread = threading.Thread(target=work, name="image-library-warm-up", daemon=True)
        thread.start()
        return thread

    def cache_context(self, ctx: ToolContext) -> dict:
        shas = sorted(r.sha256 or "" for r in (ctx.user_images or []) if r is not None)
        return {"user_images": shas} if shas else {}

    # -- sources

    def _web(self, query: str, top_k: int, ctx: ToolContext) -> list[Candidate]:
        from genevolve.tools.download import DownloadError, safe_download

        found = self.web.search(query, top_k * 2)  # some downloads fail; ask for spares
        dest = Path(ctx.work_dir) / "web"

        def fetch(item: WebImage):
            try:
                return item, safe_download(item.image_url, dest, **self.download_kwargs)
            except (DownloadError, OSError):  # one picture that cannot be stored is one failed download
                return item, None

        out = []
        if found:
            with ThreadPoolExecutor(max_workers=min(8, len(found))) as pool:
                for item, path in pool.map(fetch, found):
                    if path is not None and len(out) < top_k:
                        caption = f"web image from {item.site or item.page_url or item.image_url}"
                        out.append(Candidate(path=str(path), title=item.title or humanise_stem(path.name),
                                             caption=caption, source="web", url=item.image_url))
        return out

    def _for_query(self, query: str, top_k: int, ctx: ToolContext) -> tuple[list[Candidate], str, str | None]:
        """Candidates for one query, who answered, and why the web was skipped (if it was)."""
        user_hits = self.user.search(query, list(ctx.user_images or []), top_k)
        if self.web is None:
            lib = self.library.search(query, top_k) if self.library else []
            return user_hits + lib, "local-library", None
        breaker = breaker_for(self.web.name)  # shared with text search: one outage, one timeout
        why = None
        if ctx.offline:
            why = "the run is offline"
        elif not breaker.allow():
            why = f"{self.web.name} image search is switched off after a recent failure ({breaker.last_error})"
        else:
            try:
                web_hits = self._web(query, top_k, ctx)
                if web_hits:
                    return user_hits + web_hits, self.web.name, None
                why = "no web image could be downloaded safely"
            except Exception as exc:  # noqa: BLE001 - any web failure: answer from the library
                why = f"{self.web.name} image search failed ({exc})"
                breaker.trip(str(exc))
        lib = self.library.search(query, top_k) if self.library else []
        return user_hits + lib, "local-library", why

    def answer(self, args: dict, ctx: ToolContext) -> ToolResult:
        profile = profile_of(ctx)
        try:
            queries, top_k = parse_image_query(args, default_top_k=self.default_top_k)
        except ToolArgumentError as exc:
            return ToolResult(text=f"image_search: {exc}", error=str(exc), backend=self.backend_name)
        top_k = profile.cap_top_k(self.name, top_k)
        answered, reasons, refs, lines = [], [], [], []
        for query in queries:
            cands, who, why = self._for_query(query, top_k, ctx)
            answered.append(who)
            if why:
                reasons.append(why)
            shown = 0
            for c in cands:
                if shown >= top_k:
                    break
                ref = ctx.registry.register(c.path, source=c.source, title=c.title, caption=c.caption, url=c.url)
                if any(r.img_id == ref.img_id for r in refs):
                    continue  # the same picture found twice keeps one id and one line
                refs.append(ref)
                lines.append(image_line(ref, c.title, c.caption, compact=profile.compact_replies))
                shown += 1
        quoted = ", ".join(f'"{q}"' for q in queries)
        where = {"local-library": "the offline image library", "ddgs": "the web (ddgs)",
                 "serper": "the web (Serper)"}
        sources = " and ".join(dict.fromkeys(where.get(a, a) for a in answered))
        if ctx.user_images:
            sources += " plus your uploaded images"
        header = f"Image search results for {quoted} from {sources}:"
        text = [f"Images for {quoted}:" if profile.compact_replies else header]
        if reasons and not profile.compact_replies:
            text.append(f"Note: web images unavailable — {reasons[0]}; showing offline library images instead.")
        if lines:
            text += lines
        else:
            text.append("No image matched. Try a shorter, concrete query (an object, a place, an animal, "
                        "a material) or go on without a reference.")
        fallback = bool(reasons) and self.web is not None
        backend = "local-library" if self.web is None else (
            f"local-library (fallback from {self.web.name})" if fallback and set(answered) == {"local-library"}
            else self.web.name)
        if ctx.user_images:
            backend += "+user"
        return ToolResult(text="\n".join(text), images=refs, backend=backend,
                          meta={"queries": queries, "fallback": fallback, "fallback_reasons": reasons})

    # -- the official runtime's image_search

    def answer_official(self, args: dict, ctx: ToolContext) -> ToolResult:
        """Strict ``query`` (one string), top_k 5 by default; every result that arrived as a file is
        listed with ``title``/``url``/``local_path``/``page_url`` lines and numbered by its URL (by
        its file when it has none), as the official runtime numbers them: one picture at two URLs
        is two ids. A failed web search lists nothing, as the official runtime does. Bad argument
        types raise (the agent words it)."""
        from genevolve.official import turns

        query = (args.get("query") or "").strip()
        top_k = int(args.get("top_k", turns.DEFAULT_TOP_K) or turns.DEFAULT_TOP_K)
        found: list[dict] = []
        backend = "local-library" if self.web is None or ctx.offline else self.web.name
        error = None
        if query:
            found = [{"path": c.path, "title": c.title, "url": c.url or "", "page_url": "", "source": c.source,
                      "caption": c.caption} for c in self.user.search(query, list(ctx.user_images or []), top_k)]
            if backend == "local-library":
                found += [{"path": c.path, "title": c.title, "url": c.url or "", "page_url": "",
                           "source": c.source, "caption": c.caption}
                          for c in (self.library.search(query, top_k) if self.library else [])]
            else:
                try:
                    found += self._official_web(query, top_k, ctx)
                except Exception as exc:  # noqa: BLE001 - the official runtime shows an empty result
                    error = f"{self.web.name} image search failed: {exc}"
        shown, refs = [], []
        for item in found[:top_k]:
            ref = ctx.registry.register(item["path"], source=item["source"], title=item["title"],
                                        caption=item["caption"], url=item["url"] or None, by_location=True)
            if all(r.img_id != ref.img_id for r in refs):
                refs.append(ref)
            shown.append({"img_id": ref.img_id, "title": item["title"] or "image", "url": item["url"],
                          "local_path": ref.path, "page_url": item["page_url"]})
        return ToolResult(text=turns.image_block(query, shown), images=refs, backend=backend, error=error,
                          meta={"queries": [query] if query else []})

    def _official_web(self, query: str, top_k: int, ctx: ToolContext) -> list[dict]:
        """The web rows as the official runtime takes them; each body that answered 2xx is kept,
        image or not (the official runtime does not look inside), through the safe downloader."""
        from genevolve.tools.download import DownloadError, safe_download

        official_rows = getattr(self.web, "search_official", None)
        items = official_rows(query, top_k) if official_rows else self.web.search(query, top_k)[:top_k]
        dest = Path(ctx.work_dir) / "web"

        def fetch(item: WebImage):
            try:
                # 30 s per network operation, as the official downloader waits
                return safe_download(item.image_url, dest, **{"timeout": 30.0, **self.download_kwargs,
                                                              "require_image": False})
            except (DownloadError, OSError):  # one picture that cannot be stored is one failed download
                return None

        out = []
        if items:
            with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
                for item, path in zip(items, pool.map(fetch, items)):
                    if path is not None:  # the official runtime drops what did not download
                        out.append({"path": str(path), "title": item.title or "image", "url": item.image_url,
                                    "page_url": item.page_url or "", "source": "web",
                                    "caption": f"web image from {item.site or item.page_url or item.image_url}"})
        return out
