"""The SQLite tool cache with real backends: hits, replay, image re-registration, degraded results."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image

from genevolve.config import ASSETS, EXAMPLES, Settings
from genevolve.tools import build_tools
from genevolve.tools.base import ToolContext
from genevolve.tools.cache import CachedTool, ToolCache, cache_key_text, normalise_args
from genevolve.tools.circuit import reset_breakers
from genevolve.tools.image_search import ImageSearchTool, LocalLibrary
from genevolve.tools.knowledge import KnowledgeTool
from genevolve.tools.search import LocalCorpus, SearchTool
from genevolve.trajectory import ImageRegistry

CORPUS = EXAMPLES / "corpus"
LIBRARY = ASSETS / "library"


class CountingCorpus(LocalCorpus):
    """The real corpus backend, counting how often it is asked."""

    def __init__(self, folder):
        super().__init__(folder)
        self.calls = 0
        self._lock = threading.Lock()

    def search(self, query, top_k):
        with self._lock:
            self.calls += 1
        return super().search(query, top_k)


class CountingLibrary(LocalLibrary):
    def __init__(self, folder):
        super().__init__(folder, embeddings=False)  # BM25 ranking is enough to test the cache
        self.calls = 0

    def search(self, query, top_k):
        self.calls += 1
        return super().search(query, top_k)


def _ctx(tmp_path, registry=None, **kw):
    return ToolContext(registry=registry or ImageRegistry(), work_dir=tmp_path / "work", **kw)


def test_normalised_arguments_share_a_key():
    a = cache_key_text("search", "local-corpus", {"queries": ["  Eiffel   Tower "], "top_k": 5})
    b = cache_key_text("search", "local-corpus", {"top_k": 5, "queries": ["eiffel tower"]})
    assert a == b
    assert normalise_args({"B": [" X "], "a": 1}) == {"B": ["x"], "a": 1}
    assert a != cache_key_text("search", "ddgs", {"queries": ["eiffel tower"], "top_k": 5})


def test_repeated_calls_hit_the_cache(tmp_path):
    corpus = CountingCorpus(CORPUS)
    cache = ToolCache(tmp_path / "cache.db")
    tool = CachedTool(SearchTool(corpus), cache)
    first = tool({"queries": ["Golden Gate Bridge colour", "Apollo 11 crew"]}, _ctx(tmp_path))
    assert corpus.calls == 2 and first.meta["cache"] == "miss"
    # Six rollouts of one prompt, differently spelled: one backend call per query in total.
    for spelling in ({"queries": ["golden gate bridge colour", "APOLLO 11 crew"]},
                     {"queries": ["Golden Gate Bridge colour", "Apollo 11 crew"], "top_k": 5}):
        again = tool(spelling, _ctx(tmp_path))
        assert again.text == first.text and again.meta["cache"] == "hit"
    assert corpus.calls == 2 and cache.hits == 2
    # The single-query form of a different question is a new call.
    tool({"query": "Apollo 11 crew"}, _ctx(tmp_path))
    assert corpus.calls == 3


def test_cache_survives_a_new_process_and_errors_are_not_cached(tmp_path):
    db = tmp_path / "cache.db"
    corpus = CountingCorpus(CORPUS)
    CachedTool(SearchTool(corpus), ToolCache(db))({"query": "Vespa"}, _ctx(tmp_path))
    bad = CachedTool(SearchTool(corpus), ToolCache(db))({"queries": []}, _ctx(tmp_path))
    assert bad.error and corpus.calls == 1
    fresh = ToolCache(db)  # a second connection, as a later run would open
    hit = CachedTool(SearchTool(corpus), fresh)({"query": "vespa"}, _ctx(tmp_path))
    assert hit.meta["cache"] == "hit" and corpus.calls == 1 and fresh.stats()["entries"] == 1


def test_replay_mode_serves_hits_and_refuses_misses(tmp_path):
    db = tmp_path / "cache.db"
    corpus = CountingCorpus(CORPUS)
    recorded = CachedTool(SearchTool(corpus), ToolCache(db))({"query": "Mona Lisa"}, _ctx(tmp_path))
    replay = CachedTool(SearchTool(corpus), ToolCache(db, "replay"))
    assert replay({"query": "Mona Lisa"}, _ctx(tmp_path)).text == recorded.text
    miss = replay({"query": "Rosetta Stone"}, _ctx(tmp_path))
    assert miss.error and "not recorded" in miss.text and miss.backend == "cache-replay"
    assert corpus.calls == 1
    with pytest.raises(ValueError, match="cache_mode"):
        ToolCache(db, "sometimes")


def test_cached_images_register_in_the_current_trajectory(tmp_path):
    library = CountingLibrary(LIBRARY)
    cache = ToolCache(tmp_path / "cache.db")
    tool = CachedTool(ImageSearchTool(library), cache)
    first_registry = ImageRegistry()
    extra = tmp_path / "upload.png"
    Image.new("RGB", (8, 8), "blue").save(extra)
    first_registry.register(extra, source="user", title="upload.png")  # takes IMG_001 in the first run
    first = tool({"query": "motorcycle"}, _ctx(tmp_path, first_registry))
    assert [r.img_id for r in first.images] == ["IMG_002"] and "- IMG_002: Red motorcycle" in first.text

    second_registry = ImageRegistry()
    second = tool({"query": "Motorcycle"}, _ctx(tmp_path, second_registry))
    assert library.calls == 1 and second.meta["cache"] == "hit"
    ref = second.images[0]
    assert ref.img_id == "IMG_001" and second_registry.get("IMG_001") is ref
    assert second.text == first.text.replace("IMG_002", "IMG_001")
    stored = Path(ref.path)
    assert stored.parent == cache.files_dir and stored.read_bytes() == (LIBRARY / "red_motorcycle.jpg").read_bytes()
    assert (ref.source, ref.title, ref.width) == ("library", "Red motorcycle in a garage", 741)
    # Found again in the same trajectory: same id, nothing new registered.
    third = tool({"query": "motorcycle"}, _ctx(tmp_path, second_registry))
    assert third.images[0].img_id == "IMG_001" and len(second_registry.list()) == 1


def test_user_images_are_part_of_the_key(tmp_path):
    library = CountingLibrary(LIBRARY)
    tool = CachedTool(ImageSearchTool(library), ToolCache(tmp_path / "cache.db"))
    tool({"query": "coins"}, _ctx(tmp_path))
    registry = ImageRegistry()
    upload = tmp_path / "old_coins.png"
    Image.new("RGB", (16, 16), "gold").save(upload)
    user = [registry.register(upload, source="user", title="old_coins.png")]
    with_user = tool({"query": "coins"}, _ctx(tmp_path, registry, user_images=user))
    assert library.calls == 2 and with_user.images[0].img_id == user[0].img_id


def test_degraded_results_replay_but_are_retried(tmp_path):
    class FlakyWeb:
        name = "flaky"
        calls = 0

        def search(self, query, top_k):
            FlakyWeb.calls += 1
            raise ConnectionError("offline")

    reset_breakers()
    db = tmp_path / "cache.db"
    tool = CachedTool(SearchTool(FlakyWeb(), fallback=LocalCorpus(CORPUS)), ToolCache(db))
    online = _ctx(tmp_path, offline=False)
    fell_back = tool({"query": "Holi"}, online)
    assert fell_back.meta["fallback"] and FlakyWeb.calls == 1
    reset_breakers()
    tool({"query": "Holi"}, online)
    assert FlakyWeb.calls == 2  # readwrite does not trust a fallback answer
    replayed = CachedTool(SearchTool(FlakyWeb(), fallback=LocalCorpus(CORPUS)), ToolCache(db, "replay"))(
        {"query": "Holi"}, online)
    assert replayed.text == fell_back.text and FlakyWeb.calls == 2
    reset_breakers()


def test_concurrent_use_is_safe(tmp_path):
    corpus = CountingCorpus(CORPUS)
    tool = CachedTool(SearchTool(corpus), ToolCache(tmp_path / "cache.db"))
    queries = ["Taj Mahal", "Great Wall", "Machu Picchu", "Mount Fuji"]
    errors, texts = [], {}

    def worker(n):
        try:
            for i in range(6):
                q = queries[(n + i) % 4]
                texts.setdefault(q, set()).add(tool({"query": q}, _ctx(tmp_path)).text)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(len(v) == 1 for v in texts.values())
    assert corpus.calls < 48 and tool.cache.stats()["entries"] == 4


def test_build_tools_wraps_by_mode(tmp_path):
    base = dict(cache_path=str(tmp_path / "tools.db"), store_path=str(tmp_path / "s.db"),
                runs_dir=str(tmp_path / "runs"), extra={"library_embeddings": False})
    assert all(isinstance(t, CachedTool) for t in build_tools(Settings(**base), offline=True).values())
    off = build_tools(Settings(cache_mode="off", **base), offline=True)
    assert not any(isinstance(t, CachedTool) for t in off.values())
    replay = build_tools(Settings(cache_mode="replay", **base), offline=True)
    assert replay["query_knowledge"]({"skill_name": "Quantity Counting"}, _ctx(tmp_path)).error
    readwrite = build_tools(Settings(**base), offline=True)
    text = readwrite["query_knowledge"]({"skill_name": "Quantity Counting"}, _ctx(tmp_path)).text
    assert text == KnowledgeTool()({"skill_name": "quantity_counting"}).text
    assert replay["query_knowledge"]({"skill_name": "quantity_counting"}, _ctx(tmp_path)).text == text


# ---------------------------------------------------------------- single flight

class GatedLibrary(CountingLibrary):
    """The real library backend; each search waits until the test opens the gate."""

    def __init__(self, folder):
        super().__init__(folder)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def search(self, query, top_k):
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return super().search(query, top_k)


def _run_concurrently(fn, n):
    results, errors = [None] * n, []

    def worker(i):
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results, errors


def _wait_for(predicate, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_concurrent_identical_calls_share_one_backend_call(tmp_path):
    # Six GRPO rollouts ask the same image question at the same moment, spelled differently.
    library = GatedLibrary(LIBRARY)
    cache = ToolCache(tmp_path / "cache.db")
    tool = CachedTool(ImageSearchTool(library), cache)
    registries = [ImageRegistry() for _ in range(6)]
    upload = tmp_path / "upload.png"
    Image.new("RGB", (8, 8), "blue").save(upload)
    registries[0].register(upload, source="user", title="upload.png")  # rollout 0 already holds IMG_001
    spellings = ["motorcycle", "Motorcycle", " MOTORCYCLE ", "motorcycle", "Motorcycle  ",
                 "motorCycle"]
    threads, results, errors = _run_concurrently(
        lambda i: tool({"query": spellings[i]}, _ctx(tmp_path, registries[i])), 6)
    # One leader in the backend, five waiting on it. The five can be counted before the leader has
    # reached the backend (it registers as in flight first), so wait for both.
    _wait_for(lambda: cache.stats()["waiting"] == 5 and library.entered.is_set())
    library.gate.set()
    for t in threads:
        t.join(10)
    assert not errors
    assert library.calls == 1 and cache.stats()["shared"] == 5 and cache.stats()["in_flight"] == 0
    assert sorted(r.meta["cache"] for r in results) == ["miss"] + ["shared"] * 5
    # Each rollout got the images registered in its own trajectory, with its own ids.
    assert results[0].images[0].img_id == "IMG_002" and registries[0].get("IMG_002") is results[0].images[0]
    for i in range(1, 6):
        ref = results[i].images[0]
        assert ref.img_id == "IMG_001" and registries[i].get("IMG_001") is ref
        assert results[i].text == results[0].text.replace("IMG_002", "IMG_001")
    # Later calls are ordinary hits.
    assert tool({"query": "motorcycle"}, _ctx(tmp_path)).meta["cache"] == "hit" and library.calls == 1


class _FirstCallWaits(SearchTool):
    """Real search over the corpus, except the first call: it waits for ``gate`` (so the other
    callers join it as waiters), then returns or raises what ``first`` gives."""

    def __init__(self, first):
        super().__init__(LocalCorpus(CORPUS))
        self.first = first
        self.calls = 0
        self.gate = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, args, ctx):
        with self._lock:
            self.calls += 1
            is_first = self.calls == 1
        if is_first:
            assert self.gate.wait(10)
            return self.first()
        return super().__call__(args, ctx)


def test_a_failed_call_is_not_shared_as_a_success(tmp_path):
    from genevolve.tools.base import ToolResult

    inner = _FirstCallWaits(lambda: ToolResult(text="search failed: the index is being rebuilt", error="index rebuilding"))
    cache = ToolCache(tmp_path / "cache.db")
    tool = CachedTool(inner, cache)
    threads, results, errors = _run_concurrently(lambda i: tool({"query": "Apollo 11 crew"}, _ctx(tmp_path)), 4)
    _wait_for(lambda: cache.stats()["waiting"] == 3)
    inner.gate.set()
    for t in threads:
        t.join(10)
    assert not errors
    failed = [r for r in results if r.error]
    ok = [r for r in results if not r.error]
    # The leader's failure reached only the leader; each waiter asked the backend itself.
    assert len(failed) == 1 and len(ok) == 3 and inner.calls == 4
    assert all("Apollo" in r.text and r.meta["cache"] == "miss" for r in ok)
    assert "rebuilt" not in " ".join(r.text for r in ok)
    assert cache.stats()["shared"] == 0 and cache.stats()["entries"] == 1
    assert tool({"query": "apollo 11 crew"}, _ctx(tmp_path)).meta["cache"] == "hit" and inner.calls == 4


def test_a_leader_that_raises_releases_its_waiters(tmp_path):
    def crash():
        raise RuntimeError("backend crashed")

    inner = _FirstCallWaits(crash)
    cache = ToolCache(tmp_path / "cache.db")
    tool = CachedTool(inner, cache)
    threads, results, errors = _run_concurrently(lambda i: tool({"query": "Vespa"}, _ctx(tmp_path)), 3)
    _wait_for(lambda: cache.stats()["waiting"] == 2)
    inner.gate.set()
    for t in threads:
        t.join(10)
    assert [str(e) for e in errors] == ["backend crashed"]  # the agent reports it to the model
    assert sum(r is not None and not r.error for r in results) == 2 and inner.calls == 3
    assert cache.stats()["in_flight"] == 0


def test_workers_opening_one_new_cache_together_all_get_it(tmp_path):
    """A data build's workers open the same new cache file at once; switching it to WAL takes an
    exclusive lock that SQLite's busy timeout does not wait for (a plain connect failed about 4 in
    10 such races with "database is locked")."""
    from helpers.race import race

    for run in range(25):
        path = tmp_path / f"race{run}" / "cache.db"
        _, errors = race(lambda _: ToolCache(path), 4)
        assert errors == [], (run, errors[0])
