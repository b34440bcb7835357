"""The agent's tools: search, image_search, query_knowledge — backends chosen from Settings.

``build_tools(settings, offline)`` returns ``{"search", "image_search", "query_knowledge"}``.
Offline means local backends only (the corpus, the image library, the user's images). Online,
the web backend is Serper when ``SERPER_API_KEY`` is set (``SERPER_BASE_URL`` overrides its host)
and ddgs otherwise; either falls back to the local backend on any failure. Every tool is wrapped
in the SQLite tool cache unless ``settings.cache_mode == "off"``.

Optional knobs in ``settings.extra``: ``library_embeddings`` (default True; False ranks library
images by BM25 alone and never loads the embedding model), ``web_timeout`` (seconds, default 8),
``ddgs_proxy``.
"""

from __future__ import annotations

import os

from genevolve.tools.base import Tool, ToolArgumentError, ToolContext, ToolResult

__all__ = ["Tool", "ToolArgumentError", "ToolContext", "ToolResult", "build_tools"]

_CACHES: dict[tuple[str, str], object] = {}


def _cache_for(path: str, mode: str):
    """One ToolCache per (database, mode) in a process, shared by every agent built from it."""
    from genevolve.tools.cache import ToolCache

    key = (os.path.abspath(path), mode)
    if key not in _CACHES:
        _CACHES[key] = ToolCache(path, mode)
    return _CACHES[key]


def build_tools(settings, offline: bool) -> dict[str, Tool]:
    from genevolve.tools.cache import wrap_with_cache
    from genevolve.tools.image_search import DdgsImages, ImageSearchTool, LocalLibrary, SerperImages, UserImages
    from genevolve.tools.knowledge import KnowledgeTool
    from genevolve.tools.search import DdgsText, LocalCorpus, SearchTool, SerperText

    extra = dict(getattr(settings, "extra", None) or {})
    embeddings = bool(extra.get("library_embeddings", True))
    timeout = float(extra.get("web_timeout", 8))
    corpus = LocalCorpus(settings.corpus_dir)
    library = LocalLibrary(settings.library_dir, embeddings=embeddings)
    user = UserImages(embeddings=embeddings)
    if offline:
        search = SearchTool(corpus, default_top_k=settings.search_top_k)
        images = ImageSearchTool(library, user=user, default_top_k=settings.image_top_k)
    else:
        key = os.environ.get("SERPER_API_KEY", "").strip()
        if key:
            web_text, web_images = SerperText(key, timeout=timeout), SerperImages(key, timeout=timeout)
        else:
            proxy = extra.get("ddgs_proxy")
            web_text, web_images = DdgsText(timeout=timeout, proxy=proxy), DdgsImages(timeout=timeout, proxy=proxy)
        search = SearchTool(web_text, fallback=corpus, default_top_k=settings.search_top_k)
        images = ImageSearchTool(library, web=web_images, user=user, default_top_k=settings.image_top_k)
    tools: dict[str, Tool] = {"search": search, "image_search": images, "query_knowledge": KnowledgeTool()}
    if settings.cache_mode == "off":
        return tools
    return wrap_with_cache(tools, _cache_for(settings.cache_path, settings.cache_mode))
