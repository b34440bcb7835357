"""The SQLite store: runs, filters, audits, SFT export, guides, jobs — on a real database file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from genevolve.program import Program
from genevolve.store import Store
from genevolve.trajectory import Step, Trajectory


def make_traj(request, termination="answer", program=True, session=None, error=None):
    t = Trajectory(request=request, system_prompt="s", request_message=request)
    t.steps = [Step(round=1, assistant_text="<think>x</think><answer>{}</answer>",
                    kind="answer" if not error else "format_error", error=error)]
    t.termination = termination
    t.backends = {"policy": "planner", "renderer": "layout"}
    if session:
        t.meta["session"] = session
    if program:
        t.program = Program(gen_prompt=f"draw {request}")
    return t


def test_save_get_and_update(tmp_path):
    store = Store(tmp_path / "g.db")
    t = make_traj("a kite")
    store.save_trajectory(t)
    assert store.get_trajectory(t.id).to_dict() == t.to_dict()
    t.warnings.append("later")
    store.save_trajectory(t)  # same id: an update, not a second row
    assert len(store.list_runs()) == 1 and store.get_trajectory(t.id).warnings == ["later"]
    assert store.get_trajectory("nope") is None


def test_filters(tmp_path):
    store = Store(tmp_path / "g.db")
    good = make_traj("good", session="s1")
    bad = make_traj("bad", termination="policy_error", program=False, session="s2", error="boom")
    for t in (good, bad):
        store.save_trajectory(t)
    assert [r["id"] for r in store.list_runs(session="s1")] == [good.id]
    assert [r["id"] for r in store.list_runs(has_errors=True)] == [bad.id]
    assert [r["id"] for r in store.list_runs(termination="answer")] == [good.id]
    store.attach_render(good.id, "/tmp/x.png", {"backend": "layout"}, {"text_score": 0.5})
    assert [r["id"] for r in store.list_runs(verification_failed=True)] == [good.id]
    assert store.get_run(good.id)["render"] == {"backend": "layout"}
    store.add_audit(good.id, "accept")
    assert [r["id"] for r in store.list_runs(audited=False)] == [bad.id]


def test_audits_and_export(tmp_path):
    store = Store(tmp_path / "g.db")
    a, b = make_traj("a"), make_traj("b")
    for t in (a, b):
        store.save_trajectory(t)
    store.add_audit(a.id, "accept", "fine")
    store.add_audit(b.id, "accept")
    store.add_audit(b.id, "reject", "wrong text")  # the latest verdict counts
    assert store.latest_verdict(b.id) == "reject"
    assert [x["verdict"] for x in store.audits(b.id)] == ["accept", "reject"]
    lines = store.export_sft(tmp_path / "out").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["messages"][1]["content"] == "a"
    all_lines = store.export_sft(tmp_path / "out2", accepted_only=False).read_text().splitlines()
    assert len(all_lines) == 2


def test_guides_capacity_and_jobs(tmp_path):
    store = Store(tmp_path / "g.db")
    for i in range(5):
        store.add_guide({"trigger": f"t{i}", "summary": "s", "guidance": {"do": [str(i)]}, "created_at": i},
                        capacity=3)
    guides = store.list_guides()
    assert [g["trigger"] for g in guides] == ["t2", "t3", "t4"] and guides[0]["guidance"] == {"do": ["2"]}
    store.bump_guide(guides[0]["id"])
    assert store.list_guides()[0]["times_retrieved"] == 1
    job = store.create_job("sft", {"lr": 1e-4}, str(tmp_path))
    store.update_job(job, status="running", pid=123, bogus="ignored")
    got = store.get_job(job)
    assert got["status"] == "running" and got["pid"] == 123
    assert [j["id"] for j in store.list_jobs()] == [job]


def test_concurrent_writers(tmp_path):
    store = Store(tmp_path / "g.db")
    trajs = [make_traj(f"r{i}") for i in range(24)]
    threads = [threading.Thread(target=store.save_trajectory, args=(t,)) for t in trajs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(store.list_runs()) == 24


def test_a_failed_block_rolls_back_and_the_connection_goes_on(tmp_path):
    import pytest

    store = Store(tmp_path / "g.db")
    store.save_trajectory(make_traj("kept"))
    with pytest.raises(RuntimeError):
        with store.connect() as db:
            db.execute("DELETE FROM runs")
            raise RuntimeError("mid-transaction")
    assert [r["request"] for r in store.list_runs()] == ["kept"]  # the delete was undone
    store.save_trajectory(make_traj("after"))  # the same thread's connection still works
    other = Store(tmp_path / "g.db")  # and another connection sees both committed rows
    assert sorted(r["request"] for r in other.list_runs()) == ["after", "kept"]


def test_a_forked_child_opens_its_own_connection(tmp_path):
    import os

    store = Store(tmp_path / "g.db")
    store.save_trajectory(make_traj("parent"))
    pid = os.fork()
    if pid == 0:  # the child: write through the store it inherited, report by exit code
        code = 1
        try:
            store.save_trajectory(make_traj("child"))
            code = 0 if len(store.list_runs()) == 2 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(r["request"] for r in store.list_runs()) == ["child", "parent"]
    store.save_trajectory(make_traj("parent again"))  # the parent's connection is untouched
    assert len(store.list_runs()) == 3


def _image_search_traj(tmp_path):
    from PIL import Image

    from genevolve.trajectory import ImageRef

    photo = tmp_path / "lighthouse.png"
    Image.new("RGB", (8, 8), "white").save(photo)
    t = Trajectory(request="a lighthouse", system_prompt="s", request_message="a lighthouse")
    call = '<think>look</think><tool_call>{"name": "image_search", "arguments": {"query": "lighthouse"}}</tool_call>'
    t.steps = [Step(round=1, assistant_text=call, kind="tool_call", tool_name="image_search",
                    tool_arguments={"query": "lighthouse"}, reply="<tool_response>\nIMG_001 a lighthouse\n</tool_response>",
                    tool_images=["IMG_001"]),
               Step(round=2, assistant_text="<think>x</think><answer>{}</answer>", kind="answer")]
    t.images = [ImageRef(img_id="IMG_001", path=str(photo))]
    t.program = Program(gen_prompt="a lighthouse")
    return t


def test_a_fix_that_changes_a_tool_call_ends_the_record_at_the_fix(tmp_path):
    """The stored tool response answered the old query: it must not follow the new one."""
    store = Store(tmp_path / "g.db")
    changed, rethought = _image_search_traj(tmp_path), _image_search_traj(tmp_path)
    for t in (changed, rethought):
        store.save_trajectory(t)
        store.add_audit(t.id, "accept")
    new_call = ('<think>the harbour one</think><tool_call>{"name": "image_search", "arguments": '
                '{"query": "red lighthouse harbour"}}</tool_call>')
    store.add_audit(changed.id, "needs_fix", step=1, fix=new_call)
    same_call = ('<think>a better reason</think><tool_call>{"name": "image_search", "arguments": '
                 '{"query": "lighthouse"}}</tool_call>')
    store.add_audit(rethought.id, "needs_fix", step=1, fix=same_call)
    report = store.export_sft_report(tmp_path / "out")
    records = {json.loads(line)["messages"][-1]["content"]: json.loads(line)
               for line in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()}
    cut = records[new_call]
    assert [m["role"] for m in cut["messages"]] == ["system", "user", "assistant"]
    assert cut["images"] == [] and "<image>" not in json.dumps(cut["messages"])
    assert list(report["cut"]) == [changed.id] and "record ends at the fix" in report["cut"][changed.id]
    kept = next(r for r in records.values() if r is not cut)  # only the thinking changed: the reply still fits
    assert kept["messages"][2]["content"] == same_call and "<tool_response>" in kept["messages"][3]["content"]
    assert len(kept["images"]) == 1 and (tmp_path / "out" / kept["images"][0]).is_file()
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [Path(kept["images"][0]).name]
