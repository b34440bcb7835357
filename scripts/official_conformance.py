"""Side by side: our runtime under ``--protocol official:<copy>`` vs the official runtime itself.

    python scripts/official_conformance.py /path/to/GenEvolve [--stream=0]

Runs every scripted scenario of tests/official/test_official_protocol.py twice against the same scripted
model server and the same Serper-shaped server (both on 127.0.0.1): once through our agent
(texts read from the given copy) and once through the official ``GenEvolveAgent`` from that copy
(run in a subprocess, so its ``genevolve`` package never meets ours), its tools with their own
retry settings. Then compares, request by request, the whole request bodies (local file paths
normalised; error texts compared as they are). Ours streams, so its bodies differ by ``"stream": true``
alone, which is reported on its own line; with ``--stream=0`` ours asks as the openai SDK does
and no difference at all is allowed. Needs the official runtime's requirements (openai, requests).
Nothing of the official copy is stored or copied: it is only run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "official")]

OFFICIAL_RUN = r"""
import json, sys
spec = json.load(sys.stdin)
sys.path.insert(0, spec["copy"])
from genevolve.agent import GenEvolveAgent
from genevolve.tools import ImageSearchTool, WebTextSearchTool
agent = GenEvolveAgent(model="GenEvolve", base_url=spec["chat"], api_key="EMPTY", max_rounds=spec["max_rounds"],
                       text_search_tool=WebTextSearchTool(base_url=spec["serper"]),
                       image_search_tool=ImageSearchTool(base_url=spec["serper"], download_dir=spec["images"]))
result = agent.run(spec["request"])
print(json.dumps({"messages": result.messages, "termination": result.termination,
                  "gen_prompt": result.gen_prompt, "refs": [r["img_id"] for r in result.reference_images]}))
"""


OFFICIAL_JUDGE = r"""
import importlib.util, json, sys
spec = json.load(sys.stdin)
loader = importlib.util.spec_from_file_location("official_evaluator", spec["script"])
ev = importlib.util.module_from_spec(loader)
loader.loader.exec_module(ev)
out = {"message": ev._build_user_message(spec["id"], spec["prompt"], spec["gen"], spec["gt"]), "readings": []}
for reply in spec["replies"]:
    try:
        obj = ev._parse_llm_json(reply)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
    except Exception:
        out["readings"].append("asks again")  # inside its retry loop
        continue
    try:
        f, v, t, a, _ = ev._normalize_scores(obj)
    except Exception:
        out["readings"].append("failed")  # outside the retry loop: the case fails
        continue
    t = 0.5 if t is None else t
    out["readings"].append([f, v, t, a, round(0.1 * f + 0.4 * v + 0.4 * t + 0.1 * a, 2)])
print(json.dumps(out))
"""

# Judge replies, well-formed and broken, that both readings are compared on.
JUDGE_REPLIES = [
    '{"rationale": "ok", "faithfulness": 1, "visual_correctness": 0.5, "text_accuracy": 1, "aesthetics": 0.5}',
    '```json\n{"faithfulness": 0.5, "visual_correctness": 0.5, "text_accuracy": 0, "aesthetics": 1}\n```',
    'Here is my verdict: {"faithfulness": 1, "visual_correctness": 1, "text_accuracy_na": true, "aesthetics": 0}',
    '{"faithfulness": 1, "visual_correctness": 0.5, "text_accuracy": 1, "aesthetics": 0.5,}',
    '{"Faithfulness": 1, "Visual Correctness": 1, "Text Accuracy": 1, "Aesthetics": 1}',
    '{"scores": {"faithfulness": 1, "visual_correctness": 1, "text_accuracy": 1, "aesthetics": 1}}',
    '{"rationale": "Looks right."}',
    '{"faithfulness": "1/1", "visual_correctness": 1, "text_accuracy": 1, "aesthetics": 1}',
    '{"faithfulness": 1, "visual_correctness": 1, "text_accuracy": 1, "aesthetics": NaN}',
    '{"faithfulness": 1, "visual_correctness": 0.33, "text_accuracy": 1, "aesthetics": 0.5}',
    '{"faithfulness": 2, "visual_correctness": -1, "text_accuracy": "N/A", "aesthetics": 0.5}',
    '{"faithfulness": 1, "visual_correctness": 1, "text_accuracy": 0, "text_accuracy_na": "True", "aesthetics": 1}',
    '{"faithfulness": 1, "visual_correctness": 1, "text_accuracy": 0, "text_accuracy_na": 1, "aesthetics": 1}',
    '{"faithfulness": 1, "visual_correctness": 1, "text_accuracy": null, "aesthetics": 1}',
    '{"faithfulness": null, "visual_correctness": 1, "text_accuracy": 1, "aesthetics": 1}',
    '{"faithfulness": true, "visual_correctness": false, "text_accuracy": 1, "aesthetics": "0.5"}',
    '{"rationale": "cut", "faithfulness": 1, "visual_correctness": 0.5, "text_accuracy": 1, "aesth',
    '{"faithfulness": 1, "visual_correctness": 1, "text_accuracy_na": true, "aesthetics": 0.5, "rationale": "cut',
    "{'faithfulness': 0.5, 'visual_correctness': 0.5, 'text_accuracy': 0.5, 'aesthetics': 0.5}",
    '[{"faithfulness": 1}]',
]


def normalise(messages: list[dict]) -> list[dict]:
    """Only the local file paths differ between the two runs (each downloads into its own folder)."""
    import re

    return [{"role": m["role"], "content": re.sub(r"(?m)^  local_path: .+$", "  local_path: <path>", m["content"])}
            for m in messages]


OFFICIAL_JUDGE_CALL = r"""
import importlib.util, json, sys
from pathlib import Path
spec = json.load(sys.stdin)
loader = importlib.util.spec_from_file_location("official_evaluator", spec["script"])
ev = importlib.util.module_from_spec(loader)
loader.loader.exec_module(ev)
from openai import OpenAI
client = OpenAI(api_key="EMPTY", base_url=spec["base_url"], timeout=60)
entry = {"id": spec["id"], "prompt": spec["prompt"], "output_path": spec["gen"], "gt_image": spec["gt"]}
_, ok, payload = ev.run_one_eval(entry, [Path(spec["gen"]).parent], client, "judge")
print(json.dumps({"ok": ok, "payload": payload}))
"""

# Scripted judge conversations run end to end through both (re-asks included).
JUDGE_SEQUENCES = [
    ["", "I cannot see a problem with it.",
     '{"rationale": "ok", "faithfulness": 1, "visual_correctness": 0.5, "text_accuracy": 1, "aesthetics": 0.5}'],
    ['{"Faithfulness": 1, "Visual Correctness": 1, "Text Accuracy": 1, "Aesthetics": 1}'],
    ['{"faithfulness": 1, "visual_correctness": 1, "text_accuracy_na": true, "aesthetics": NaN}'],
    ['{"faithfulness": "1/1", "visual_correctness": 1, "text_accuracy": 1, "aesthetics": 1}'],
]


def compare_judge_calls(copy: str, gen: Path, gt: Path) -> int:
    """Both judges against one scripted endpoint: the request bodies and the case's scores."""
    import os

    from helpers.chat_server import ChatServer

    from genevolve.judges import make_judge

    prompt, failures = 'A shop sign that reads "OPEN".', 0
    for n, replies in enumerate(JUDGE_SEQUENCES, 1):
        with ChatServer(list(replies)) as server:
            s = make_judge(f"kscore:judge@{server.base_url}?rubric=official:{copy}").score(
                {"id": "case-7", "question": prompt, "gt_image": str(gt)}, gen, None)
            ours_bodies = list(server.requests)
        mine = ({k: getattr(s, k) for k in ("faithfulness", "visual_correctness", "text_accuracy", "aesthetics",
                                            "overall")} if s.status == "scored" else "failed")
        with ChatServer(list(replies)) as server:
            spec = {"script": str(Path(copy) / "scripts" / "evaluate_images.py"), "base_url": server.base_url,
                    "id": "case-7", "prompt": prompt, "gen": str(gen), "gt": str(gt)}
            proc = subprocess.run([sys.executable, "-c", OFFICIAL_JUDGE_CALL], input=json.dumps(spec), text=True,
                                  capture_output=True, env=dict(os.environ), timeout=300)
            their_bodies = list(server.requests)
        if proc.returncode != 0:
            print(f"[judge call {n}] the official evaluator failed:\n{proc.stderr[-2000:]}")
            failures += 1
            continue
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        their = ({k: out["payload"][k] for k in mine} if out["ok"] and isinstance(mine, dict)
                 else out["payload"] if out["ok"] else "failed")
        problems = []
        if ours_bodies != their_bodies:
            problems.append(f"request bodies differ ({len(ours_bodies)} vs {len(their_bodies)} requests)")
        if mine != their:
            problems.append(f"scores {mine} vs {their}")
        print(f"[judge call {n}] {len(ours_bodies)} request(s): " + ("same" if not problems else
                                                                    "DIFFERENT: " + "; ".join(problems)))
        failures += bool(problems)
    return failures


def compare_judge(copy: str) -> int:
    """Our rubric=official call against the official evaluator's functions (run, never stored)."""
    import os

    from PIL import Image

    from genevolve.judges import kscore_official as off

    script = Path(copy) / "scripts" / "evaluate_images.py"
    with tempfile.TemporaryDirectory() as tmp:
        gen, gt = Path(tmp) / "gen.png", Path(tmp) / "gt.png"
        Image.new("RGBA", (640, 480), (30, 90, 200, 128)).save(gen)
        Image.new("RGB", (300, 200), (200, 40, 40)).save(gt)
        spec = {"script": str(script), "id": "case-7", "prompt": 'A shop sign that reads "OPEN".',
                "gen": str(gen), "gt": str(gt), "replies": JUDGE_REPLIES}
        proc = subprocess.run([sys.executable, "-c", OFFICIAL_JUDGE], input=json.dumps(spec), text=True,
                              capture_output=True, env=dict(os.environ), timeout=300)
        if proc.returncode != 0:
            print(f"[judge] the official evaluator failed:\n{proc.stderr[-2000:]}")
            return 1
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])
        ours_message = off.build_messages("rubric", spec["id"], spec["prompt"], gen, gt)[1]
        calls_differ = compare_judge_calls(copy, gen, gt)
    failures = calls_differ
    same = ours_message == theirs["message"]
    print(f"[judge] user message (text and both images, byte for byte): {'same' if same else 'DIFFERENT'}")
    failures += not same
    for reply, their in zip(JUDGE_REPLIES, theirs["readings"]):
        try:
            s = off.scores_from(off.read_reply(reply), "kscore", reply)
            mine = ([s.faithfulness, s.visual_correctness, s.text_accuracy, s.aesthetics, s.overall]
                    if s.status == "scored" else "failed")
        except off.UnreadableReply:
            mine = "asks again"
        if mine != their:
            failures += 1
            print(f"[judge] DIFFERENT reading of {reply!r}: ours {mine} vs official {their}")
    differ = failures - (not same) - calls_differ
    print(f"[judge] {len(JUDGE_REPLIES) - differ} of {len(JUDGE_REPLIES)} replies read the same")
    return failures


def main(copy: str, stream: bool = True) -> int:
    import os

    from helpers.chat_server import ChatServer
    from test_official_protocol import REQUEST, SCENARIOS, run_scenario, start_serper

    httpd, serper = start_serper()
    failures = 0
    try:
        for sc in SCENARIOS:
            with tempfile.TemporaryDirectory() as tmp:
                ours, our_requests = run_scenario(sc, serper, Path(tmp), official=copy, stream=stream)
                with ChatServer(list(sc.turns)) as server:
                    spec = {"copy": str(Path(copy).resolve()), "chat": server.base_url, "serper": serper["base"],
                            "images": str(Path(tmp) / "official-images"), "max_rounds": sc.max_rounds,
                            "request": REQUEST}
                    proc = subprocess.run([sys.executable, "-c", OFFICIAL_RUN], input=json.dumps(spec), text=True,
                                          capture_output=True, env={**os.environ, "SERPER_API_KEY": "k"},
                                          timeout=300)
                    if proc.returncode != 0:
                        print(f"[{sc.name}] the official runtime failed:\n{proc.stderr[-2000:]}")
                        failures += 1
                        continue
                    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
                    their_requests = list(server.requests)
            problems, streamed = [], 0
            if normalise(ours.messages) != normalise(theirs["messages"]):
                problems.append("final conversations differ")
            if len(our_requests) != len(their_requests):
                problems.append(f"{len(our_requests)} model calls vs {len(their_requests)}")
            for i, (a, b) in enumerate(zip(our_requests, their_requests)):
                a, b = dict(a, messages=normalise(a["messages"])), dict(b, messages=normalise(b["messages"]))
                if stream and a.get("stream") is True and "stream" not in b:
                    streamed += 1  # the one difference streaming makes
                    a.pop("stream")
                if a["messages"] != b["messages"]:
                    problems.append(f"request {i + 1}: messages differ")
                for key in sorted((set(a) | set(b)) - {"messages"}):
                    if a.get(key) != b.get(key):
                        problems.append(f"request {i + 1}: {key} {a.get(key, '(absent)')!r} vs "
                                        f"{b.get(key, '(absent)')!r}")
            if ours.termination != theirs["termination"]:
                problems.append(f"termination {ours.termination} vs {theirs['termination']}")
            our_refs = [r.img_id for r in ours.program.reference_images] if ours.program else []
            if (ours.program.gen_prompt if ours.program else "") != theirs["gen_prompt"] or our_refs != theirs["refs"]:
                problems.append("programs differ")
            status = "same" if not problems else "DIFFERENT: " + "; ".join(problems)
            if streamed and not problems:
                status += f' (but "stream": true in {streamed} request(s))'
            print(f"[{sc.name}] {len(our_requests)} model calls, {len(ours.messages)} messages: {status}")
            if problems:
                failures += 1
                _show_diff(normalise(ours.messages), normalise(theirs["messages"]))
    finally:
        httpd.shutdown()
    failures += compare_judge(copy)
    print("all scenarios match" if not failures else f"{failures} scenario(s) differ")
    return 1 if failures else 0


def _show_diff(ours, theirs):
    import difflib

    a = json.dumps(ours, indent=1, ensure_ascii=False).splitlines()
    b = json.dumps(theirs, indent=1, ensure_ascii=False).splitlines()
    for line in list(difflib.unified_diff(a, b, "ours", "official", lineterm=""))[:60]:
        print("   ", line)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--stream=0"]
    if len(args) != 1:
        sys.exit(__doc__)
    sys.exit(main(args[0], stream="--stream=0" not in sys.argv[1:]))
