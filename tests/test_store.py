"""The SQLite store: runs, filters, audits, SFT export, guides, jobs — on a real database file."""

from __future__ import annotations

import json
import threading

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
