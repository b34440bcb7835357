"""Throws bad input, hostile URLs, kills and load at GenEvolve, and counts what held.

Everything runs on this machine against 127.0.0.1, in bounded loops; nothing touches the network.
The numbers in docs/reliability.md come from:

    python scripts/reliability_probe.py --rounds 200 --json docs/reliability.json

Each probe prints one line: what was tried, how many times, how many held.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cli(args, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, GENEVOLVE_HOME=str(home), GENEVOLVE_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "genevolve.cli", *args], capture_output=True, timeout=timeout, env=env)


def one_clear_line(proc) -> bool:
    err = proc.stderr.decode("utf-8", "replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return proc.returncode == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: ")


def probe_bad_cli_input(work: Path) -> dict:
    """Every bad input the issue lists, through the real command: exit 2 and one line."""
    from PIL import Image

    home = work / "home"
    settings = work / "settings.json"
    settings.write_text(json.dumps({"extra": {"library_embeddings": False}}))
    program = work / "program.json"
    program.write_text(json.dumps({"gen_prompt": 'A sign that says "OPEN"', "reference_images": []}))
    (work / "a_file").write_text("x")
    (work / "notes.png").write_text("not an image")
    Image.new("RGB", (200, 100), "white").save(work / "ok.png")
    data = (work / "ok.png").read_bytes()
    (work / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("1", (12000, 12000)).save(work / "bomb.png")
    bench_lines = {"array.jsonl": '["a red kite"]\n', "string.jsonl": '"a red kite"\n', "number.jsonl": "42\n",
                   "latin1.jsonl": None, "wise_string.json": '"a red kite"'}
    for name, text in bench_lines.items():
        if text is None:
            (work / name).write_bytes(b'{"id": "a", "question": "caf\xe9"}\n')
        else:
            (work / name).write_text(text)
    cases = [
        ["run", "", "--offline", "--renderer", "none"],
        ["run", '""', "--offline", "--renderer", "none"],
        ["run", "' '", "--offline", "--renderer", "none"],
        ["render", str(program), "--out", str(work / "x.xyz")],
        ["render", str(program), "--out", str(work)],
        ["render", str(program), "--out", str(work / "a_file" / "x.png")],
        ["render", str(program), "--out", str(work / ("x" * 300 + ".png"))],
        ["render", str(program), "--out", str(work / "x.png"), "--size", "0x0"],
        ["verify", str(work / "notes.png"), "--program", str(program)],
        ["verify", str(work / "truncated.png"), "--program", str(program)],
        ["verify", str(work / "bomb.png"), "--program", str(program)],
        ["verify", str(work / "missing.png"), "--program", str(program)],
        *[["bench", "run", "--bench", str(work / name), "--out", str(work / f"run-{name}"), "--no-progress"]
          for name in bench_lines],
        ["serve-renderer", "--pipeline", "layout", "--port", "99999"],
    ]
    held, failed = 0, []
    for args in cases:
        proc = cli(args, home)
        if one_clear_line(proc):
            held += 1
        else:
            failed.append({"args": args[:2], "rc": proc.returncode, "stderr": proc.stderr.decode()[-300:]})
    # Invalid UTF-8: saved losslessly, rendered, and the run reported as saved only when it was.
    proc = cli(["run", b'a poster \xff\xfe, title "SALE"', "--offline", "--config", str(settings),
                "--out", str(work / "utf8")], home)
    from genevolve.store import Store

    rows = Store(home / "genevolve.db").list_runs()
    utf8_ok = (proc.returncode == 0 and (work / "utf8" / "image.png").is_file() and any(
        Store(home / "genevolve.db").get_trajectory(r["id"]).request == 'a poster \udcff\udcfe, title "SALE"'
        for r in rows))
    return {"tried": len(cases) + 1, "held": held + int(utf8_ok), "failed": failed + ([] if utf8_ok else ["utf8"])}


def probe_protocol_fuzz(rounds: int) -> dict:
    """Requests and tool text full of protocol tags and control tokens: the planner still answers."""
    import random

    from genevolve.agent import Agent, AgentConfig
    from genevolve.policies.planner import PlannerPolicy

    pieces = ["</answer>", "<answer>{}</answer>", "</tool_call>", "<tool_call>{\"name\": \"search\"}</tool_call>",
              "</think>", "<think>", "<end_of_turn>", "<start_of_turn>model\n", "<|im_start|>assistant", "<|im_end|>",
              '"', "\\", "\udcff", "{", "}"]
    rng = random.Random(7)
    agent = Agent(PlannerPolicy(), {}, AgentConfig(), work_dir=Path(tempfile.mkdtemp()))
    held, failed = 0, []
    for _ in range(rounds):
        words = ["a poster of a lighthouse"] + [rng.choice(pieces) for _ in range(rng.randint(1, 6))]
        rng.shuffle(words)
        request = " ".join(words) + ' titled "NORTH"'
        traj = agent.run(request)
        # No tools are wired in, so the planner may be forced to answer; what matters is that
        # every turn parsed and a program came out.
        if traj.program is not None and not any(s.kind == "format_error" for s in traj.steps):
            held += 1
        else:
            failed.append({"request": request, "termination": traj.termination, "reason": traj.reason})
    return {"tried": rounds, "held": held, "failed": failed[:5]}


class _Hostile(socketserver.BaseRequestHandler):
    """Hostile answers on 127.0.0.1: drips, redirects inward, bombs, lies about sizes."""

    def handle(self):
        from PIL import Image

        line = self.request.makefile("rb").readline().decode()
        path = line.split(" ")[1] if " " in line else "/"
        try:
            if path == "/drip":
                for _ in range(600):
                    self.request.sendall(b"H")
                    time.sleep(0.2)
            elif path == "/redirect-metadata":
                self.request.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest\r\n\r\n")
            elif path == "/redirect-loop":
                self.request.sendall(b"HTTP/1.1 302 Found\r\nLocation: /redirect-loop\r\nContent-Length: 0\r\n\r\n")
            elif path == "/bomb":
                buf = io.BytesIO()
                Image.new("1", (20000, 20000)).save(buf, format="PNG")
                body = buf.getvalue()
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif path == "/huge":
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n" + b"\0" * 65536)
            elif path == "/endless":
                self.request.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
                for _ in range(2000):
                    self.request.sendall(b"\0" * 65536)
            elif path == "/text":
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            else:
                self.request.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass


def probe_hostile_urls(work: Path, rounds: int) -> dict:
    from genevolve.tools.download import DownloadError, safe_download

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    httpd = Server(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    base = f"http://127.0.0.1:{port}"
    urls = [base + p for p in ("/drip", "/redirect-metadata", "/redirect-loop", "/bomb", "/huge", "/endless", "/text")]
    urls += ["http://127.0.0.1:9/", "http://[::1]/", "http://169.254.169.254/", "http://10.0.0.1/", "file:///etc/passwd",
             "http://[::ffff:127.0.0.1]/", "gopher://x/", "http://0.0.0.0/"]
    held, slowest, failed = 0, 0.0, []
    tried = 0
    for i in range(rounds):
        url = urls[i % len(urls)]
        exempt = {f"127.0.0.1:{port}"} if url.startswith(base) else set()
        t0 = time.monotonic()
        tried += 1
        try:
            safe_download(url, work / "dl", timeout=1.0, max_bytes=4 * 1024 * 1024, allow_hosts=exempt)
            failed.append({"url": url, "why": "accepted"})
        except DownloadError:
            took = time.monotonic() - t0
            slowest = max(slowest, took)
            if took <= 4.0:  # the 3 s default deadline (3 x timeout) plus 1 s of scheduling on a busy machine
                held += 1
            else:
                failed.append({"url": url, "why": f"took {took:.1f}s"})
    httpd.shutdown()
    httpd.server_close()
    leftovers = list((work / "dl").glob("*")) if (work / "dl").exists() else []
    return {"tried": tried, "held": held, "slowest_s": round(slowest, 2), "files_written": len(leftovers),
            "failed": failed[:5]}


def probe_kills(work: Path, rounds: int) -> dict:
    """SIGKILL `genevolve run` while the policy is thinking: the request is always in the store."""
    from genevolve.store import Store

    db = work / "kills.db"
    script = f"""
import sys, time
from genevolve.agent import Agent, AgentConfig
from genevolve.store import Store
class Slow:
    name = "slow"
    def stream(self, messages, images=()):
        print("thinking", flush=True); time.sleep(60); yield ""
Agent(Slow(), [], AgentConfig(), store=Store({str(db)!r}), work_dir={str(work)!r}).run(sys.argv[1])
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    held = 0
    for i in range(rounds):
        request = f'kill probe {i}: a poster titled "N{i}"'
        proc = subprocess.Popen([sys.executable, "-c", script, request], stdout=subprocess.PIPE, text=True, env=env)
        proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if any(r["request"] == request for r in Store(db).list_runs(limit=10_000)):
            held += 1
    return {"tried": rounds, "held": held}


def probe_renderer_load(rounds: int, workers: int = 8) -> dict:
    """Mixed good and bad requests at a token-protected layout service: no 500s, and it stays up."""
    import httpx
    import uvicorn

    from genevolve.renderers.service import create_app, renderer_for_pipeline

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(renderer_for_pipeline("layout"), token="probe", max_body=1024 * 1024)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    good = {"Authorization": "Bearer probe"}
    kinds = [
        ("ok", good, {"prompt": 'a poster "LOAD"', "width": 128, "height": 128}, 200),
        ("no token", {}, {"prompt": "x"}, 401),
        ("wrong token", {"Authorization": "Bearer nope"}, {"prompt": "x"}, 401),
        ("seed -1", good, {"prompt": "x", "seed": -1}, 422),
        ("size 0x0", good, {"prompt": "x", "width": 0, "height": 0}, 400),
        ("bad image", good, {"prompt": "x", "image_urls": ["data:image/png;base64,AAAA"]}, 400),
        ("2 MB body", good, {"prompt": "x" * (2 * 1024 * 1024)}, 413),
        ("not JSON", good, None, 422),
    ]

    def send(i):
        name, headers, body, want = kinds[i % len(kinds)]
        try:
            if body is None:
                r = httpx.post(url + "/generate", content=b"{nope", headers={**headers, "Content-Type": "application/json"},
                               timeout=60)
            else:
                r = httpx.post(url + "/generate", json=body, headers=headers, timeout=60)
            return name, r.status_code, want
        except httpx.HTTPError as exc:
            return name, type(exc).__name__, want

    t0 = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(send, range(rounds)))
    elapsed = time.monotonic() - t0
    health = httpx.get(url + "/health", timeout=10).json()
    server.should_exit = True
    held = sum(1 for _, got, want in results if got == want)
    by_kind: dict[str, dict] = {}
    for name, got, want in results:
        k = by_kind.setdefault(name, {"sent": 0, "as_expected": 0, "expected": want})
        k["sent"] += 1
        k["as_expected"] += int(got == want)
    return {"tried": rounds, "held": held, "server_errors_5xx": sum(1 for _, g, _ in results if isinstance(g, int) and g >= 500),
            "served_ok": health["served"], "still_up": bool(health["ok"]), "seconds": round(elapsed, 1),
            "workers": workers, "by_kind": by_kind}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200, help="requests / URLs / fuzzed requests per probe")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="genevolve-probe-") as tmp:
        work = Path(tmp)
        for name, run in [("bad CLI input", lambda: probe_bad_cli_input(work / "cli")),
                          ("protocol tags in requests", lambda: probe_protocol_fuzz(args.rounds)),
                          ("hostile URLs", lambda: probe_hostile_urls(work, args.rounds)),
                          ("SIGKILL during a run", lambda: probe_kills(work, args.kills)),
                          ("renderer service load", lambda: probe_renderer_load(args.rounds))]:
            (work / "cli").mkdir(exist_ok=True)
            t0 = time.monotonic()
            res = run()
            res["probe_s"] = round(time.monotonic() - t0, 1)
            results[name] = res
            print(f"{name}: {res['held']}/{res['tried']} held ({res['probe_s']}s)"
                  + "".join(f"; {k}={v}" for k, v in res.items() if k not in ("held", "tried", "probe_s", "failed", "by_kind")),
                  flush=True)
            for f in res.get("failed") or []:
                print("   failed:", f, flush=True)
    results["machine"] = {"cpus": os.cpu_count(), "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    print("load average after:", results["machine"]["load_average_after"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=True, default=str) + "\n")


if __name__ == "__main__":
    main()
