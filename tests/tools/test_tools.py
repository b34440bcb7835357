"""The agent's tools with their real backends: local corpus, image library, skills, Serper wire format."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from PIL import Image

from genevolve.config import ASSETS, EXAMPLES, Settings
from genevolve.tools import build_tools
from genevolve.tools.base import ToolContext
from genevolve.tools.circuit import reset_breakers
from genevolve.tools.image_search import ImageSearchTool, LocalLibrary, SerperImages
from genevolve.tools.knowledge import SKILLS, KnowledgeTool
from genevolve.tools.search import DdgsText, LocalCorpus, SearchTool, SerperText
from genevolve.trajectory import ImageRegistry
from helpers.local_http import serve

IMAGE_LINE = re.compile(r"^- (IMG_\d{3}): (.+) — (.+) \(source: (library|web|user), (\d+)x(\d+)\)$")
CORPUS = EXAMPLES / "corpus"
LIBRARY = ASSETS / "library"


@pytest.fixture(autouse=True)
def _fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


def _ctx(tmp_path, **kw) -> ToolContext:
    return ToolContext(registry=kw.pop("registry", ImageRegistry()), work_dir=tmp_path / "work", **kw)


def _image_lines(text: str) -> list[re.Match]:
    return [m for m in (IMAGE_LINE.match(line) for line in text.splitlines()) if m]


# ---------------------------------------------------------------- search over the local corpus

def test_local_search_digest_groups_queries_with_sources():
    tool = SearchTool(LocalCorpus(CORPUS))
    result = tool({"queries": ["Eiffel Tower height", "Marie Curie Nobel Prize", "moka pot inventor"], "top_k": 3})
    assert result.error is None and result.backend == "local-corpus"
    sections = re.split(r'^### "', result.text, flags=re.M)[1:]
    assert [s.split('"', 1)[0] for s in sections] == ["Eiffel Tower height", "Marie Curie Nobel Prize",
                                                      "moka pot inventor"]
    expected = ["eiffel_tower.md", "marie_curie.md", "moka_pot.md"]
    for section, doc in zip(sections, expected):
        first = section.splitlines()[1]
        assert first.startswith("1. **") and f"(source: {doc}; Wikipedia:" in first
    assert "330 metres" in sections[0] and "1911" in sections[1] and "Bialetti" in sections[2]


@pytest.mark.parametrize("compact", [False, True])
def test_search_digest_parser_reads_what_the_tool_writes(compact):
    """The digest is written and read in tools/search.py: every hit's snippet comes back as one
    passage, in order, without its number, title, source or URL."""
    from genevolve.profiles import get_profile
    from genevolve.tools.base import clip
    from genevolve.tools.search import digest_passages

    profile = get_profile("nano" if compact else "genevolve")
    tool = SearchTool(LocalCorpus(CORPUS))
    ctx = ToolContext(registry=ImageRegistry(), work_dir=Path("."), profile=profile)
    queries = ["Eiffel Tower height", "moka pot inventor"]
    result = tool({"queries": queries, "top_k": 2}, ctx)
    hits = [h for q in queries for h in tool.primary.search(q, 2)]
    assert ("(source:" in result.text) is not compact
    expected = [clip(h.snippet, profile.snippet_chars) if compact else h.snippet for h in hits]
    assert digest_passages(result.text) == expected and len(expected) == 4


def test_image_line_parser_reads_what_the_tool_writes():
    """One result line, full and compact, parses back into its id, title and caption."""
    from genevolve.tools.image_search import image_line, parse_image_lines
    from genevolve.trajectory import ImageRef

    ref = ImageRef(img_id="IMG_007", path="x.png", source="web", width=640, height=480)
    full = image_line(ref, "Eiffel Tower — at night", "The lattice tower lit (gold) at dusk")
    compact = image_line(ref, "Eiffel Tower", "The lattice tower lit at dusk", compact=True)
    text = "Image search results for \"tower\":\n" + full + "\n" + compact
    parsed = parse_image_lines(text)
    assert [tuple(p) for p in parsed] == [
        ("IMG_007", "Eiffel Tower - at night", "The lattice tower lit (gold) at dusk"),  # dash kept out of the title
        ("IMG_007", "Eiffel Tower", "The lattice tower lit at dusk")]


def test_single_query_form_and_top_k():
    tool = SearchTool(LocalCorpus(CORPUS), default_top_k=2)
    result = tool({"query": "  Terracotta   Army soldiers  "})
    lines = [line for line in result.text.splitlines() if re.match(r"^\d+\. ", line)]
    assert '### "Terracotta Army soldiers"' in result.text
    assert 1 <= len(lines) <= 2 and "terracotta_army.md" in lines[0]


def test_queries_run_concurrently(tmp_path):
    # Each search waits until all four queries are in flight: run one by one, the barrier breaks.
    barrier = threading.Barrier(4, timeout=10)

    class RendezvousCorpus(LocalCorpus):
        def search(self, query, top_k):
            barrier.wait()
            return super().search(query, top_k)

    tool = SearchTool(RendezvousCorpus(CORPUS))
    result = tool({"queries": ["Holi colours", "Shinkansen", "Rosetta Stone", "Golden Gate"]})
    assert result.error is None
    assert result.text.count("### ") == 4 and "holi.md" in result.text and "rosetta_stone.md" in result.text


@pytest.mark.parametrize("args", [
    {}, {"queries": []}, {"queries": [1, 2]}, {"query": "   "}, {"queries": "x", "top_k": "many"},
    {"queries": ["a"], "top_k": 0}, {"queries": [f"q{i}" for i in range(12)]}, ["not", "a", "dict"],
])
def test_bad_search_arguments_explain_the_shape(args):
    result = SearchTool(LocalCorpus(CORPUS))(args)
    assert result.error
    assert '{"queries": [' in result.text  # the model is told the correct shape


def test_corpus_reads_jsonl_and_reindexes_on_change(tmp_path):
    (tmp_path / "notes.md").write_text("# Lighthouses\nsource: test\n\nThe Bell Rock lighthouse is off Scotland.\n")
    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"title": "Zeppelin NT", "text": "A semi-rigid airship.", "url": "https://example.org/z"}) + "\n"
        + "not json\n")
    corpus = LocalCorpus(tmp_path)
    hits = corpus.search("airship", 3)
    assert hits[0].title == "Zeppelin NT" and hits[0].source == "https://example.org/z"
    assert corpus.search("lighthouse Scotland", 3)[0].source == "notes.md; test"
    assert corpus.search("gondola", 3) == []
    (tmp_path / "more.txt").write_text("Venice gondola\n\nA gondola is a flat-bottomed rowing boat.\n")
    assert corpus.search("gondola", 3)[0].title == "Venice gondola"


# ---------------------------------------------------------------- image search over the shipped library

@pytest.fixture(scope="module")
def library_tool():
    return ImageSearchTool(LocalLibrary(LIBRARY))  # real all-MiniLM-L6-v2 embeddings


def test_library_finds_the_right_photographs(library_tool, tmp_path):
    ctx = _ctx(tmp_path)
    cat = library_tool({"query": "cat"}, ctx)
    first = _image_lines(cat.text)[0]
    assert Path(ctx.registry.get(first.group(1)).path).name == "chelsea_the_cat.jpg"
    assert first.group(4) == "library" and (first.group(5), first.group(6)) == ("451", "300")
    astro = library_tool({"query": "astronaut in a spacesuit", "top_k": 2}, ctx)
    assert Path(astro.images[0].path).name == "astronaut_eileen_collins.jpg"
    # Meaning, not only words: no caption says "kitty" or "galaxies far away".
    kitty = library_tool({"query": "kitty"}, ctx)
    assert kitty.images and Path(kitty.images[0].path).name == "chelsea_the_cat.jpg"
    assert kitty.images[0].img_id == cat.images[0].img_id  # same image, same id
    deep = library_tool({"query": "distant galaxies in deep space"}, ctx)
    assert Path(deep.images[0].path).name == "hubble_deep_field.jpg"


def test_image_result_lines_and_registry(library_tool, tmp_path):
    ctx = _ctx(tmp_path)
    result = library_tool({"query": "sky background", "top_k": 3}, ctx)
    lines = result.text.splitlines()
    assert lines[0].startswith('Image search results for "sky background"')
    matches = _image_lines(result.text)
    assert len(matches) == len(result.images) == len(lines) - 1 <= 3
    assert [m.group(1) for m in matches] == [r.img_id for r in result.images] == ["IMG_001", "IMG_002", "IMG_003"][
        :len(matches)]
    again = library_tool({"query": "sky background", "top_k": 3}, ctx)
    assert again.text == result.text and len(ctx.registry.list()) == len(result.images)


def test_custom_library_with_sidecar_and_json_captions(tmp_path):
    folder = tmp_path / "lib"
    folder.mkdir()
    Image.new("RGB", (20, 10), "yellow").save(folder / "IMG_0001.png")
    (folder / "IMG_0001.txt").write_text("A yellow taxi cab parked on a rainy street.")
    Image.new("RGB", (10, 20), "green").save(folder / "leaf.jpg")
    (folder / "captions.json").write_text(json.dumps({"leaf.jpg": "Macro photo of a green maple leaf."}))
    tool = ImageSearchTool(LocalLibrary(folder, embeddings=False))
    tool.warm_up().join(timeout=30)
    assert any(key.startswith(str(folder.resolve())) for key in LocalLibrary._states)
    ctx = _ctx(tmp_path)
    taxi = _image_lines(tool({"query": "yellow taxi"}, ctx).text)
    assert len(taxi) == 1 and taxi[0].group(2) == "Img 0001" and "rainy street" in taxi[0].group(3)
    assert (taxi[0].group(5), taxi[0].group(6)) == ("20", "10")
    leaf = tool({"query": "maple leaf"}, ctx)
    assert leaf.images[0].title == "Leaf" and leaf.images[0].img_id == "IMG_002"


def test_unrelated_query_returns_no_image(library_tool, tmp_path):
    ctx = _ctx(tmp_path)
    for query in ("Eiffel Tower at night", "a dog"):
        result = library_tool({"query": query}, ctx)
        assert result.images == [] and "No image matched" in result.text, result.text
    assert library_tool({"query": ""}, ctx).error


def test_user_images_are_found_and_keep_their_id(library_tool, tmp_path):
    registry = ImageRegistry()
    path = tmp_path / "my_red_bicycle.png"
    Image.new("RGB", (64, 48), (200, 20, 20)).save(path)
    library_copy = tmp_path / "IMG_4471.jpg"  # an uploaded photo with a camera file name
    library_copy.write_bytes((LIBRARY / "coffee_cup.jpg").read_bytes())
    user = [registry.register(path, source="user", title=path.name),
            registry.register(library_copy, source="user", title=library_copy.name, caption="espresso on the table")]
    ctx = _ctx(tmp_path, registry=registry, user_images=user)
    result = library_tool({"query": "red bicycle"}, ctx)
    first = _image_lines(result.text)[0]
    assert first.group(1) == user[0].img_id and first.group(4) == "user" and first.group(5) == "64"
    coffee = library_tool({"query": "espresso cup"}, ctx)
    # The library holds the same picture: it is one reference with the user's id, listed once.
    assert [r.img_id for r in coffee.images].count(user[1].img_id) == 1
    assert coffee.images[0].img_id == user[1].img_id and "plus your uploaded images" in coffee.text


# ---------------------------------------------------------------- knowledge

def test_every_skill_has_the_four_sections():
    tool = KnowledgeTool()
    for name in SKILLS:
        result = tool({"skill_name": name})
        assert result.error is None and result.meta["skill"] == name
        for heading in ("## When to use", "## When not to use", "## What to write into the gen_prompt",
                        "## Pitfalls"):
            assert heading in result.text, (name, heading)
        bullets = result.text.split("## What to write into the gen_prompt", 1)[1].split("## Pitfalls")[0]
        assert bullets.count("\n- ") >= 4


@pytest.mark.parametrize("raw", ["Text Rendering", "text-rendering", "TEXT_RENDERING", "text_renderin",
                                 "text rendering skill"])
def test_skill_names_are_forgiving(raw):
    result = KnowledgeTool()({"skill_name": raw})
    assert result.error is None and result.meta["skill"] == "text_rendering"


@pytest.mark.parametrize("args", [{"skill_name": "cooking"}, {"skill_name": ""}, {}, {"skill_name": 3}])
def test_unknown_skill_lists_valid_names(args):
    result = KnowledgeTool()(args)
    assert result.error and all(name in result.text for name in SKILLS)


# ---------------------------------------------------------------- backends from settings

def test_build_tools_offline_and_online(tmp_path, monkeypatch):
    settings = Settings(cache_path=str(tmp_path / "c.db"), store_path=str(tmp_path / "s.db"),
                        runs_dir=str(tmp_path / "runs"))
    tools = build_tools(settings, offline=True)
    assert set(tools) == {"search", "image_search", "query_knowledge"}
    assert tools["search"].backend_name == "local-corpus"
    assert tools["image_search"].backend_name == "local-library+user"
    assert type(tools["search"]).__name__ == "CachedTool"
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    assert build_tools(settings, offline=False)["search"].backend_name == "ddgs"
    monkeypatch.setenv("SERPER_API_KEY", "k")
    online = build_tools(Settings(cache_mode="off", cache_path=str(tmp_path / "c.db")), offline=False)
    assert online["search"].backend_name == "serper" and online["image_search"].backend_name == "serper+user"
    assert type(online["search"]).__name__ == "SearchTool"


# ---------------------------------------------------------------- web fallbacks (no network touched)

def test_ddgs_failure_falls_back_to_the_corpus_once():
    # An unreachable proxy on 127.0.0.1 makes the real ddgs client fail fast without leaving the machine.
    ddgs = DdgsText(timeout=2, proxy="http://127.0.0.1:9")
    tool = SearchTool(ddgs, fallback=LocalCorpus(CORPUS))
    result = tool({"queries": ["Sydney Opera House architect", "Vespa designer"]})
    assert result.error is None and result.backend == "local-corpus (fallback from ddgs)"
    assert "web search unavailable" in result.text and "ddgs failed" in result.text
    assert "sydney_opera_house.md" in result.text and "vespa_scooter.md" in result.text
    assert result.meta["fallback"] is True


def test_offline_run_never_asks_the_web(tmp_path):
    class MustNotBeCalled:
        name = "ddgs"

        def search(self, query, top_k):
            raise AssertionError("the web was asked during an offline run")

    tool = SearchTool(MustNotBeCalled(), fallback=LocalCorpus(CORPUS))
    result = tool({"query": "Chinese New Year zodiac"}, _ctx(tmp_path, offline=True))
    assert "the run is offline" in result.text and "chinese_new_year.md" in result.text
    images = ImageSearchTool(LocalLibrary(LIBRARY, embeddings=False), web=MustNotBeCalled())
    assert "the run is offline" in images({"query": "coins"}, _ctx(tmp_path, offline=True)).text


def test_circuit_breaker_stops_retrying_the_web():
    class BrokenWeb:
        name = "brokenweb"
        calls = 0

        def search(self, query, top_k):
            BrokenWeb.calls += 1
            raise TimeoutError("simulated timeout")

    tool = SearchTool(BrokenWeb(), fallback=LocalCorpus(CORPUS))
    first = tool({"query": "Colosseum"})
    second = tool({"queries": ["Taj Mahal", "Mount Fuji"]})
    assert BrokenWeb.calls == 1
    assert "brokenweb failed (TimeoutError: simulated timeout)" in first.text
    assert "switched off after a recent failure" in second.text and "taj_mahal.md" in second.text


def test_image_web_failure_falls_back_to_library(tmp_path):
    class BrokenImages:
        name = "ddgs"

        def search(self, query, top_k):
            raise ConnectionError("no route to host")

    tool = ImageSearchTool(LocalLibrary(LIBRARY, embeddings=False), web=BrokenImages())
    result = tool({"query": "motorcycle"}, _ctx(tmp_path, offline=False))
    assert result.backend == "local-library (fallback from ddgs)"
    assert "web images unavailable" in result.text and "no route to host" in result.text
    assert Path(result.images[0].path).name == "red_motorcycle.jpg"


# ---------------------------------------------------------------- Serper wire format on 127.0.0.1

@pytest.fixture()
def serper_server():
    png = _png_bytes()
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status, body: bytes, ctype="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("X-API-KEY"), payload))
            if "flaky" in payload["q"] and sum("flaky" in p["q"] for _, _, p in seen) == 1:
                return self._send(503, b'{"message": "busy, try again"}')  # only the first ask
            if self.headers.get("X-API-KEY") != "test-key":
                return self._send(403, b'{"message": "Unauthorized."}')
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/search":
                body = {"searchParameters": {"q": payload["q"]},
                        "answerBox": {"title": "Eiffel Tower height", "answer": "330 m"},
                        "organic": [{"title": f"Result {i} for {payload['q']}", "link": f"https://example.org/{i}",
                                     "snippet": f"Snippet {i}.", "position": i} for i in range(1, 6)]}
            else:
                body = {"images": [
                    {"title": "Red square", "imageUrl": f"{base}/red.png", "link": "https://example.org/red",
                     "source": "example.org", "imageWidth": 40, "imageHeight": 30},
                    {"title": "Broken", "imageUrl": f"{base}/not-an-image", "link": "https://example.org/b",
                     "source": "example.org"},
                    {"title": "Metadata service", "imageUrl": "http://169.254.169.254/latest/meta-data",
                     "source": "evil.example"}]}
            self._send(200, json.dumps(body).encode())

        def do_GET(self):  # noqa: N802
            if self.path == "/red.png":
                return self._send(200, png, "image/png")
            self._send(200, b"<html></html>", "text/html")

    with serve(Handler) as server:
        port = server.server_address[1]
        yield {"base": server.url, "seen": seen, "allow": {f"127.0.0.1:{port}"}}


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (220, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_serper_text_backend(serper_server, monkeypatch):
    monkeypatch.setenv("SERPER_BASE_URL", serper_server["base"])
    tool = SearchTool(SerperText("test-key"), fallback=LocalCorpus(CORPUS), default_top_k=3)
    result = tool({"queries": ["eiffel tower height", "louvre"]})
    assert result.backend == "serper" and result.error is None
    assert "1. **Eiffel Tower height** — 330 m" in result.text
    assert "2. **Result 1 for eiffel tower height** — Snippet 1. (source: https://example.org/1)" in result.text
    assert sorted(p["q"] for _, _, p in serper_server["seen"]) == ["eiffel tower height", "louvre"]
    assert all(path == "/search" and key == "test-key" and p["num"] == 3 for path, key, p in serper_server["seen"])


def test_serper_busy_once_is_asked_again(serper_server):
    """A 503 is asked once more after a second; a refusal (403) is not."""
    tool = SearchTool(SerperText("test-key", base_url=serper_server["base"]), fallback=LocalCorpus(CORPUS))
    result = tool({"queries": ["flaky eiffel tower"]})
    assert result.backend == "serper" and result.error is None, result.text
    assert len(serper_server["seen"]) == 2
    tool = SearchTool(SerperText("wrong", base_url=serper_server["base"]), fallback=LocalCorpus(CORPUS))
    tool({"queries": ["louvre"]})
    assert len(serper_server["seen"]) == 3


def test_serper_bad_key_falls_back(serper_server):
    tool = SearchTool(SerperText("wrong", base_url=serper_server["base"]), fallback=LocalCorpus(CORPUS))
    result = tool({"query": "Statue of Liberty torch"})
    assert "serper failed (serper: HTTP 403" in result.text and "statue_of_liberty.md" in result.text


def test_serper_images_download_safely(serper_server, tmp_path):
    web = SerperImages("test-key", base_url=serper_server["base"])
    tool = ImageSearchTool(LocalLibrary(LIBRARY, embeddings=False), web=web,
                           download_kwargs={"allow_hosts": serper_server["allow"]})
    ctx = _ctx(tmp_path, offline=False)
    result = tool({"query": "red square", "top_k": 3}, ctx)
    assert result.backend == "serper"
    lines = _image_lines(result.text)
    assert len(lines) == 1 and lines[0].group(4) == "web" and (lines[0].group(5), lines[0].group(6)) == ("40", "30")
    ref = result.images[0]
    assert ref.url.endswith("/red.png") and Path(ref.path).parent == ctx.work_dir / "web"
    assert not any("meta" in p.name for p in (ctx.work_dir / "web").iterdir())


# Hand-labelled queries on the shipped library: the picture a person would accept as showing the
# query's subject, or None when the library holds nothing that does (then nothing must come back).
LIBRARY_LABELS = [
    ("croissant", None), ("teapot", None), ("bicycle", None), ("a cup of tea", None), ("tower", None),
    ("green bench", None), ("bench", None), ("dog", None), ("apple", None), ("lamp", None),
    ("space shuttle", None),
    ("coffee", "coffee_cup.jpg"), ("espresso", "coffee_cup.jpg"), ("cat", "chelsea_the_cat.jpg"),
    ("kitten", "chelsea_the_cat.jpg"), ("rocket", "rocket_falcon9_launch_pad.jpg"),
    ("motorbike", "red_motorcycle.jpg"), ("moon", "moon_surface.jpg"), ("galaxy", "hubble_deep_field.jpg"),
    ("brick", "brick_wall.jpg"), ("lawn", "grass.jpg"), ("camera", "photographer_with_camera.jpg"),
    ("horse", "horse_silhouette.png"), ("clock", "wall_clock_motion_blur.jpg"),
]


@pytest.mark.parametrize("query,expected", LIBRARY_LABELS)
def test_library_returns_the_subject_or_nothing(library_tool, tmp_path, query, expected):
    result = library_tool({"query": query}, _ctx(tmp_path))
    if expected is None:
        assert result.images == [] and "No image matched" in result.text, result.text
    else:
        assert result.images and Path(result.images[0].path).name == expected, result.text
