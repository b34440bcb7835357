"""``search(queries, top_k)``: textual evidence from the web or from a local corpus.

Backends share one small interface, ``backend.search(query, top_k) -> list[Hit]``:

* ``LocalCorpus`` — a folder of .md/.txt/.jsonl documents, chunked by heading and paragraph and
  indexed with bm25s (built once per folder state, kept in memory);
* ``DdgsText`` — the ddgs metasearch library (no key);
* ``SerperText`` — a Serper-compatible JSON API (``SERPER_API_KEY``; ``SERPER_BASE_URL`` overrides
  the host, which is how tests point it at 127.0.0.1).

``SearchTool`` runs the queries of one call concurrently. A web backend that fails or times out
is replaced by the local corpus for that query, and the result says so; a process-wide circuit
breaker (``tools/circuit.py``) then keeps the web switched off for a while, so a machine without
network pays one timeout rather than one per call. The reply is a markdown digest; its writer and
its reader (``digest_passages``, what the planner takes facts from) sit together at the end.

Ranking lives in ``tools/bm25.py``; the web clients in ``tools/serper_client.py`` and
``tools/ddgs_client.py`` (image_search calls them too).
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from genevolve.profiles import profile_of
from genevolve.program import URL_RE
from genevolve.tools.base import (
    Tool,
    ToolArgumentError,
    ToolContext,
    ToolResult,
    clip,
    distinct_queries,
    top_k_arg,
)
from genevolve.tools.bm25 import BM25Index
from genevolve.tools.circuit import BackendUnavailable, breaker_for
from genevolve.tools.ddgs_client import ddgs_rows
from genevolve.tools.serper_client import serper_base_url, serper_post, serper_post_official

SNIPPET_CHARS = 320
MAX_QUERIES = 8
MAX_TOP_K = 10


@dataclass
class Hit:
    title: str
    snippet: str
    source: str  # what the model sees after "source:": a URL or a corpus file (+ where it is documented)
    url: str | None = None
    score: float = 0.0


class TextBackend(Protocol):
    name: str

    def search(self, query: str, top_k: int) -> list[Hit]: ...


# ---------------------------------------------------------------- local corpus

@dataclass
class Chunk:
    doc_title: str
    heading: str
    text: str
    file: str
    documented_at: str = ""  # the document's "source:" line
    url: str | None = None


_META_RE = re.compile(r"^(source|url)\s*:\s*(.+)$", re.IGNORECASE)


def _parse_markdown(text: str, file: str) -> list[Chunk]:
    lines = text.splitlines()
    title, documented_at, url = "", "", None
    body: list[str] = []
    for line in lines:
        stripped = line.strip()
        m = _META_RE.match(stripped)
        if m and not body and len(stripped) < 300:
            if m.group(1).lower() == "source":
                documented_at = m.group(2).strip()
            else:
                url = m.group(2).strip()
            continue
        if not title and stripped.startswith("# "):
            title = stripped[2:].strip()
            continue
        if not title and stripped and not body:
            title = stripped.lstrip("#").strip()
            continue
        body.append(line)
    title = title or Path(file).stem.replace("_", " ")
    chunks, heading, para = [], "", []

    def flush():
        if para:
            chunks.append(Chunk(title, heading, " ".join(" ".join(para).split()), file, documented_at, url))
            para.clear()

    for line in body:
        stripped = line.strip()
        if stripped.startswith("#"):
            flush()
            heading = stripped.lstrip("#").strip()
        elif not stripped:
            flush()
        else:
            para.append(stripped)
    flush()
    return chunks


def _parse_jsonl(text: str, file: str) -> list[Chunk]:
    chunks = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # one broken row must not hide the rest of the file
        if not isinstance(row, dict):
            continue
        body = str(row.get("text") or row.get("body") or "")
        title = str(row.get("title") or f"{Path(file).stem} #{n}")
        for para in re.split(r"\n\s*\n", body):
            if para.strip():
                chunks.append(Chunk(title, "", " ".join(para.split()), file, str(row.get("source") or ""),
                                    row.get("url") or None))
    return chunks


class LocalCorpus:
    """BM25 over a folder of documents; the index is rebuilt only when a file changes."""

    name = "local-corpus"
    _indexes: dict[tuple, tuple[list[Chunk], BM25Index]] = {}
    _lock = threading.Lock()

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.rglob("*")
                      if p.is_file() and p.suffix.lower() in (".md", ".txt", ".jsonl")
                      and p.name.lower() != "readme.md")

    def _state(self) -> tuple:
        files = self._files()
        return (str(self.folder.resolve()),) + tuple(
            (str(p.relative_to(self.folder)), p.stat().st_mtime_ns, p.stat().st_size) for p in files)

    def index(self) -> tuple[list[Chunk], BM25Index]:
        state = self._state()
        with LocalCorpus._lock:
            cached = LocalCorpus._indexes.get(state)
            if cached is None:
                chunks: list[Chunk] = []
                for p in self._files():
                    rel = p.relative_to(self.folder).as_posix()
                    text = p.read_text(encoding="utf-8", errors="replace")
                    chunks += _parse_jsonl(text, rel) if p.suffix.lower() == ".jsonl" else _parse_markdown(text, rel)
                texts = [f"{c.doc_title}. {c.heading}. {c.text}" for c in chunks]
                cached = (chunks, BM25Index(texts))
                # One entry per folder: drop indexes of older states of the same folder.
                for key in [k for k in LocalCorpus._indexes if k[0] == state[0]]:
                    del LocalCorpus._indexes[key]
                LocalCorpus._indexes[state] = cached
        return cached

    def search(self, query: str, top_k: int) -> list[Hit]:
        chunks, index = self.index()
        hits, per_doc = [], {}
        for i, score in index.query(query, k=top_k * 4):
            c = chunks[i]
            if per_doc.get(c.file, 0) >= 2:  # keep the digest varied: two passages per document at most
                continue
            per_doc[c.file] = per_doc.get(c.file, 0) + 1
            title = f"{c.doc_title} — {c.heading}" if c.heading else c.doc_title
            where = c.url or c.file
            source = f"{where}; {c.documented_at}" if c.documented_at else where
            hits.append(Hit(title=title, snippet=clip(c.text, SNIPPET_CHARS), source=source, url=c.url, score=score))
            if len(hits) >= top_k:
                break
        return hits


# ---------------------------------------------------------------- web backends

class DdgsText:
    """Web text search through the ddgs library (no key). ``proxy``/``timeout`` go to DDGS."""

    name = "ddgs"

    def __init__(self, *, timeout: float = 8, proxy: str | None = None, region: str = "us-en"):
        self.timeout, self.proxy, self.region = timeout, proxy, region

    def search(self, query: str, top_k: int) -> list[Hit]:
        rows = ddgs_rows("text", query, top_k, timeout=self.timeout, proxy=self.proxy, region=self.region)
        return [Hit(title=clip(r.get("title", ""), 120), snippet=clip(r.get("body", ""), SNIPPET_CHARS),
                    source=r.get("href", ""), url=r.get("href") or None) for r in rows[:top_k]]


class SerperText:
    """A Serper-compatible search API: POST /search {"q", "num"} -> {"organic": [...], ...}."""

    name = "serper"

    def __init__(self, api_key: str, *, base_url: str | None = None, timeout: float = 8):
        self.api_key, self.base_url, self.timeout = api_key, (base_url or serper_base_url()), timeout

    def search(self, query: str, top_k: int) -> list[Hit]:
        data = serper_post("search", {"q": query, "num": top_k}, api_key=self.api_key,
                           base_url=self.base_url, timeout=self.timeout)
        hits = []
        box = data.get("answerBox") or {}
        if isinstance(box, dict) and (box.get("answer") or box.get("snippet")):
            hits.append(Hit(title=clip(box.get("title") or "Answer", 120),
                            snippet=clip(box.get("answer") or box.get("snippet"), SNIPPET_CHARS),
                            source=box.get("link") or "serper answer box", url=box.get("link")))
        graph = data.get("knowledgeGraph") or {}
        if isinstance(graph, dict) and graph.get("description"):
            attrs = graph.get("attributes") or {}
            extra = "; ".join(f"{k}: {v}" for k, v in list(attrs.items())[:6]) if isinstance(attrs, dict) else ""
            hits.append(Hit(title=clip(graph.get("title") or "Knowledge graph", 120),
                            snippet=clip(f"{graph['description']} {extra}".strip(), SNIPPET_CHARS),
                            source=graph.get("descriptionLink") or graph.get("website") or "serper knowledge graph",
                            url=graph.get("descriptionLink")))
        for row in data.get("organic") or []:
            if isinstance(row, dict):
                hits.append(Hit(title=clip(row.get("title", ""), 120),
                                snippet=clip(row.get("snippet", ""), SNIPPET_CHARS),
                                source=row.get("link", ""), url=row.get("link")))
        return hits[:top_k]

    def search_organic(self, query: str, top_k: int) -> list[Hit]:
        """Only the organic results, unclipped, asked with the official retries: what the official
        runtime shows the model."""
        data = serper_post_official("search", {"q": query, "num": top_k}, api_key=self.api_key,
                                    base_url=self.base_url)
        return [Hit(title=str(row.get("title") or ""), snippet=str(row.get("snippet") or ""),
                    source=str(row.get("link") or row.get("url") or ""), url=row.get("link") or row.get("url"))
                for row in data.get("organic") or [] if isinstance(row, dict)][:top_k]


# ---------------------------------------------------------------- the tool

def parse_queries(args: dict, *, default_top_k: int) -> tuple[list[str], int]:
    """Read {"queries": [...]} or {"query": "..."} (+ optional top_k); raise ToolArgumentError otherwise."""
    shape = 'Call it as {"queries": ["first query", "second query"], "top_k": 5} or {"query": "one query"}.'
    if not isinstance(args, dict):
        raise ToolArgumentError(f"arguments must be a JSON object. {shape}")
    raw = args.get("queries", args.get("query"))
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ToolArgumentError(f"no queries given. {shape}")
    if not all(isinstance(q, str) for q in raw):
        raise ToolArgumentError(f"every query must be a string. {shape}")
    queries = distinct_queries(raw)
    if not queries:
        raise ToolArgumentError(f"the queries are empty. {shape}")
    if len(queries) > MAX_QUERIES:
        raise ToolArgumentError(f"at most {MAX_QUERIES} queries per call, got {len(queries)}. {shape}")
    return queries, top_k_arg(args, default=default_top_k, cap=MAX_TOP_K, shape=shape)


class SearchTool(Tool):
    name = "search"
    description = "Look facts up: several queries at once, a markdown digest of passages with sources."

    def __init__(self, primary: TextBackend, fallback: TextBackend | None = None, *, default_top_k: int = 5,
                 max_workers: int = 8):
        self.primary, self.fallback = primary, fallback
        self.default_top_k = default_top_k
        self.max_workers = max_workers
        self.backend_name = primary.name

    def canonical_args(self, args: dict) -> dict:
        queries, top_k = parse_queries(args, default_top_k=self.default_top_k)
        return {"queries": queries, "top_k": top_k}

    def _one(self, query: str, top_k: int, offline: bool = False) -> tuple[list[Hit], str, str | None]:
        """Hits for one query, the backend that answered, and why the primary was skipped (if it was)."""
        if self.fallback is None:
            return self.primary.search(query, top_k), self.primary.name, None
        if offline:
            return self.fallback.search(query, top_k), self.fallback.name, "the run is offline"
        breaker = breaker_for(self.primary.name)
        if not breaker.allow():
            return (self.fallback.search(query, top_k), self.fallback.name,
                    f"{self.primary.name} is switched off after a recent failure ({breaker.last_error})")
        try:
            return self.primary.search(query, top_k), self.primary.name, None
        except Exception as exc:  # noqa: BLE001 - any failure of the web means: use the local corpus
            reason = str(exc) if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"
            breaker.trip(reason)
            return self.fallback.search(query, top_k), self.fallback.name, f"{self.primary.name} failed ({reason})"

    def answer(self, args: dict, ctx: ToolContext | None = None) -> ToolResult:
        profile = profile_of(ctx)
        try:
            queries, top_k = parse_queries(args, default_top_k=self.default_top_k)
        except ToolArgumentError as exc:
            return ToolResult(text=f"search: {exc}", error=str(exc), backend=self.backend_name)
        offline = bool(ctx is not None and ctx.offline)
        top_k = profile.cap_top_k(self.name, top_k)
        if len(queries) == 1:
            answers = [self._one(queries[0], top_k, offline)]
        else:
            with ThreadPoolExecutor(max_workers=min(self.max_workers, len(queries))) as pool:
                answers = list(pool.map(lambda q: self._one(q, top_k, offline), queries))
        used = sorted({a[1] for a in answers})
        fallbacks = [a[2] for a in answers if a[2]]
        compact = profile.compact_replies
        lines = [] if compact else [digest_header(used)]
        if fallbacks and not compact:
            lines.append(f"Note: web search unavailable — {fallbacks[0]}; these results come from the "
                         f"offline local corpus instead.")
        total = 0
        for query, (hits, _backend, _why) in zip(queries, answers):
            lines.append(digest_query_heading(query))
            if not hits:
                lines.append("No results.")
            lines += [digest_line(n, h, compact=compact, snippet_chars=profile.snippet_chars or SNIPPET_CHARS)
                      for n, h in enumerate(hits, 1)]
            total += len(hits)
        backend = self.primary.name
        if fallbacks:
            backend = (f"{self.fallback.name} (fallback from {self.primary.name})" if len(used) == 1
                       else f"{self.primary.name}+{self.fallback.name} (partial fallback)")
        return ToolResult(text="\n".join(lines), backend=backend,
                          meta={"queries": queries, "hits": total, "fallback": bool(fallbacks),
                                "fallback_reasons": fallbacks})

    def answer_official(self, args: dict, ctx: ToolContext | None) -> ToolResult:
        """The official runtime's search: strict ``queries``, one block per query, no fallback.

        Bad argument types raise (the agent words it as the official tool error); a backend that
        fails gives that query an error line, as the official runtime does.
        """
        from genevolve.official import turns

        queries = args.get("queries") or []
        if isinstance(queries, str):
            queries = [queries]
        top_k = int(args.get("top_k", turns.DEFAULT_TOP_K) or turns.DEFAULT_TOP_K)
        if not queries:
            return ToolResult(text=turns.SEARCH_EMPTY_QUERIES, backend=self.backend_name, error="empty queries")
        offline = bool(ctx is not None and ctx.offline)
        backend = self.fallback if offline and self.fallback is not None else self.primary
        ask = getattr(backend, "search_organic", backend.search)
        blocks, failed = [], []
        for q in queries:
            q = (q or "").strip()
            if not q:
                continue
            try:
                hits = ask(q, top_k)
            except Exception as exc:  # noqa: BLE001 - the official runtime shows the failure, no fallback
                failed.append(f"{q}: {exc}")
                blocks.append(turns.search_error(q, exc))
                continue
            blocks.append(turns.search_block(q, ({"title": h.title, "url": h.url or "", "snippet": h.snippet}
                                                 for h in hits[:top_k])))
        return ToolResult(text="\n".join(blocks) if blocks else turns.SEARCH_NO_RESULTS, backend=backend.name,
                          error=f"search failed for {'; '.join(failed)}" if failed else None,
                          meta={"queries": [q for q in queries if isinstance(q, str)]})


# ---------------------------------------------------------------- the digest format
# SearchTool writes its reply with the functions below and ``digest_passages`` reads it back (the
# planner takes its facts from it), so the format changes here and nowhere else.

def digest_header(used: list[str]) -> str:
    names = {"local-corpus": "the offline local corpus", "ddgs": "the web (ddgs)", "serper": "the web (Serper)"}
    where = " and ".join(names.get(u, u) for u in used)
    return f"Search results from {where}:"


def digest_query_heading(query: str) -> str:
    return f'### "{query}"'


def digest_line(n: int, hit: Hit, *, compact: bool = False, snippet_chars: int = SNIPPET_CHARS) -> str:
    """``1. **Title** — snippet (source: …)``; compact (the nano profile): no source, a shorter snippet."""
    if compact:
        return f"{n}. **{hit.title}** — {clip(hit.snippet, snippet_chars)}"
    return f"{n}. **{hit.title}** — {hit.snippet} (source: {hit.source})"


def digest_passages(text: str) -> list[str]:
    """The passage text of each result line of a search reply, in order.

    Headings, numbering, the result's bold title, its ``(source: …)``, URLs, defanged protocol
    tags and markdown emphasis are dropped. It also reads the official runtime's blocks
    (``1. title: …`` / ``  url: …`` / ``  snippet: …``) well enough: URL lines go, and the
    ``title:`` / ``snippet:`` labels stay for the reader to strip.
    """
    passages: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.endswith(":"):  # headings and the header line
            continue
        line = re.sub(r"^(?:[-*>]|\d+[.)])\s*", "", line)
        line = re.sub(r"^\*\*[^*]{1,120}\*\*\s*(?:[—–:-]\s*)?", "", line)  # the result's title
        line = re.sub(r"\((?:source|sources|url)\b[^)]*\)\s*$", "", line, flags=re.IGNORECASE)
        line = re.sub(r"‹/?\w+›", " ", URL_RE.sub("", line))
        line = re.sub(r"\*\*|__|`", "", line).strip()
        if not line or re.match(r"(?i)^(?:source|sources|url|link)\b", line):
            continue
        passages.append(line)
    return passages


def digest_results(text: str) -> list[tuple[str, str]]:
    """(title, passage) for each result of a search reply: ours (``1. **Title** — snippet``) and the
    official runtime's blocks (``1. title: …`` then ``  snippet: …``).

    Who the passage is about lives in its title, so a reader judging relevance needs both.
    """
    out: list[tuple[str, str]] = []
    title = None
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"^(?:[-*>]|\d+[.)])\s*\*\*([^*]{1,200})\*\*\s*(?:[—–:-]\s*)?(.*)$", s)
        if m:
            passage = re.sub(r"\((?:source|sources|url)\b[^)]*\)\s*$", "", m.group(2), flags=re.IGNORECASE)
            out.append((m.group(1).strip(), re.sub(r"\*\*|__|`", "", passage).strip()))
            title = None
            continue
        m = re.match(r"^\d+[.)]\s*title:\s*(.*)$", s, re.IGNORECASE)
        if m:
            title = m.group(1).strip()
            out.append((title, ""))
            continue
        m = re.match(r"^snippet:\s*(.*)$", s, re.IGNORECASE)
        if m and title is not None and out:
            out[-1] = (title, m.group(1).strip())
            continue
        if title is None and not s.startswith("#") and not s.endswith(":") and re.match(r"^(?:[-*>]|\d+[.)])\s+", s):
            passage = re.sub(r"^(?:[-*>]|\d+[.)])\s*", "", s)  # an untitled result line
            passage = re.sub(r"\((?:source|sources|url)\b[^)]*\)\s*$", "", passage, flags=re.IGNORECASE)
            out.append(("", re.sub(r"‹/?\w+›", " ", URL_RE.sub("", passage)).strip()))
    return [(t, p) for t, p in out if p]
