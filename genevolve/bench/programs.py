"""Program quality without a renderer: ``genevolve eval programs``.

A policy runs on an evaluation set (usually one written by others, see ``eval_sets``); each request
gets one row measuring the program it ended with:

* ``valid`` — a program came back and validates against the images it saw, and the runtime did not
  have to put the request in place of a gen_prompt that described nothing ("...");
* ``quotes_kept`` — share of the request's quoted texts (any of "…", '…', “…”) found verbatim
  in gen_prompt (null when nothing is quoted);
* ``subjects_kept`` — share of the things the request shows (``english.extract_subjects``: named
  entities, counted, coloured, living and related nouns, else its main noun phrase) whose head noun
  the gen_prompt names; a program of "..." or one that drops "a pizza" keeps less than all;
* ``counts_kept``, ``colours_kept``, ``positions_kept`` — share of the set's metadata (GenEval:
  counts of 2 or more, colour-object pairs, object-relation-anchor triples) that the gen_prompt
  states (null when the set has none for the request);
* ``leak`` — reasoning or protocol text in gen_prompt that the request did not contain
  (``<think>``, tool names, JSON, "I will…", "the user wants…");
* ``invented`` — gen_prompt quotes a text for the renderer to print that the request never had
  ('Render the text "pink dog"' for "a photo of a pink dog"); the texts in ``invented_texts``;
* ``invented_count`` — gen_prompt states a count of two or more that the request never gave
  ("exactly 2 airplanes" for "a small airplane"); the counts in ``invented_counts``;
* ``invented_colour`` — gen_prompt gives a thing the request names a colour the request never gave
  it ("the bench is blue" on "a photo of a bench"), unless a search result or a bound reference's
  title or caption gives it that colour; the colours in ``invented_colours`` (``relevance``);
* ``repeated`` — gen_prompt says a sentence of three words or more more than once (a decoding
  loop); the sentences in ``repeated_sentences``;
* ``garbled`` — gen_prompt carries markup or code characters (``= { } [ ] < > _ |``…) or long digit
  runs the request does not have ("A motorcycle= science= layout:"); the words in ``garbled_words``;
* ``copied`` — gen_prompt is the request and at most one word of its own besides the teacher's fixed
  quality line (framing such as "a photo of" aside, ``program.copied_request``): no research,
  reference or skill guidance reaches the renderer. Not counted against clean: the planner teacher
  writes such a program where it has nothing to add (17% of the public requests); a policy that
  copies far more often than that has learned to skip the work, and the nano recipe ships no
  adapter that copies more often than the shipped one;
* ``tidied`` — the runtime had to clean or repair the program before the renderer got it (reasoning,
  a loop or an unsearched "fact" taken out, a dropped quoted text put back: the trajectory's
  "program cleaned" / "program repaired" warnings, in ``tidied_by``). The other measures read the
  program the renderer got; this one says how much of it the answer step had to mend;
* ``invented_claim`` — gen_prompt presents as a fact what no search result behind it holds
  ("Facts to respect: The cat is a mammal, not reptile."), or places a thing the request never
  names ("place the cat below the table" on "a cat"), or points at a picture the program does not
  bind ("match the look of the image" with no reference); the sentences in ``invented_claims``;
* ``facts`` / ``irrelevant_facts`` — sentences of gen_prompt carried from a search result (they
  share a run of six words with a result passage and are not the request's own words) and how
  many of those come from a source the request does not name (``genevolve.relevance``);
* ``references`` / ``irrelevant_references`` — references bound, and those whose image is not
  about anything the request names (user images always count as relevant);
* ``skill_recall`` — share of the skills the category needs (``eval_sets.CATEGORY_SKILLS``) that
  the policy consulted (null when the category needs none);
* ``user_pictures_bound`` — share of the pictures the user gave that the program binds (null when
  the request gives none; none of the public sets does, the held-out split's image requests do);
* ``rounds``, ``tokens`` (whitespace-separated words of the assistant turns, as the nano ablation
  counts them), ``seconds``.

Runs reuse the bench runner's crash-safe, resumable rollout stage (``BenchRunner``): one line per
request in ``rollout.jsonl``, the trajectory and program under ``cases/<id>/``; ``--resume``
continues a killed run. ``summarise`` writes ``summary.json``, ``summary.md`` and ``summary.png``
(per set and per category); ``compare`` pairs two runs on their shared requests with the nano
ablation's paired bootstrap.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from genevolve.bench.ablation import paired, paired_table
from genevolve.bench.eval_sets import needed_skills
from genevolve.bench.runner import BenchConfig, BenchRunner, case_dir_name
from genevolve.durable import latest_by_id, read_jsonl, write_atomic
from genevolve.program import (NO_DESCRIPTION_REPAIR, copied_request, garbled_fragments, invented_counts,
                               invented_texts, repeated_sentences, unbound_picture_citations, unnamed_placements)
from genevolve.program import reasoning_leaks as leaks
from genevolve.relevance import (bound_references, carried_facts, colour_grounds, invented_colours, search_sources,
                                 sentences, unsupported_facts)

NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
                10: "ten", 11: "eleven", 12: "twelve"}
QUALITY_METRICS = ("valid", "clean", "clean_not_copied", "quotes_kept", "subjects_kept", "counts_kept", "colours_kept", "positions_kept", "leak",
                   "repeated", "garbled", "copied", "tidied", "invented", "invented_count", "invented_colour", "invented_claim", "skill_recall", "user_pictures_bound", "rounds",
                   "tokens", "seconds")
KEPT = ("quotes_kept", "subjects_kept", "counts_kept", "colours_kept", "positions_kept")


# ---------------------------------------------------------------- per-request measures

def _noun_forms(name: str) -> str:
    """A regex for ``name`` in the singular or plural ("bus"/"buses", "wine glass"/"wine glasses",
    "broccoli"/"broccolis", "puppy"/"puppies")."""
    words = name.lower().split()
    head = words[-1]
    forms = {head, head + "s", head + "es"}
    if head.endswith("y"):
        forms.add(head[:-1] + "ies")
    if head.endswith(("s", "x", "ch", "sh")):
        forms.add(head + "es")
    front = "".join(re.escape(w) + r"\s+" for w in words[:-1])
    return front + "(?:" + "|".join(sorted(map(re.escape, forms), key=len, reverse=True)) + ")"


def count_stated(prompt: str, obj: str, count: int) -> bool:
    num = rf"(?:{count}|{NUMBER_WORDS.get(count, str(count))})"
    return bool(re.search(rf"\b{num}\b(?:\s+[\w-]+){{0,3}}?\s+{_noun_forms(obj)}\b", prompt, re.IGNORECASE))


def colour_stated(prompt: str, obj: str, colour: str) -> bool:
    return bool(re.search(rf"\b{re.escape(colour)}\b(?:\s+[\w-]+){{0,2}}?\s+{_noun_forms(obj)}\b", prompt,
                          re.IGNORECASE))


def position_stated(prompt: str, obj: str, relation: str, anchor: str) -> bool:
    """The object, the relation words, then the anchor, in one sentence ("a dog right of a teddy bear",
    "the dog is to the right of the teddy bear"), and nowhere the reverse ("the teddy bear is right of
    the dog" takes the position back)."""
    rel = r"\s+".join(re.escape(w) for w in relation.split())

    def said(first: str, second: str) -> bool:
        pattern = rf"\b{_noun_forms(first)}\b[^.;]*?\b{rel}\b[^.;]*?\b{_noun_forms(second)}\b"
        return bool(re.search(pattern, prompt, re.IGNORECASE))

    return said(obj, anchor) and not said(anchor, obj)


def subjects_kept(prompt: str, request: str) -> float | None:
    """Share of the request's subjects whose head noun the prompt names (None when it has none)."""
    from genevolve.english import lost_subjects, subject_heads

    heads = subject_heads(request)
    if not heads:
        return None
    lost = set(lost_subjects(prompt, request))
    return sum(h not in lost for h in heads) / len(heads)


def metadata_kept(prompt: str, expect: dict | None) -> dict:
    expect = expect or {}
    checks = {
        "counts_kept": [count_stated(prompt, c["object"], c["count"]) for c in expect.get("counts", [])
                        if c["count"] >= 2],
        "colours_kept": [colour_stated(prompt, c["object"], c["colour"]) for c in expect.get("colours", [])],
        "positions_kept": [position_stated(prompt, p["object"], p["relation"], p["anchor"])
                           for p in expect.get("positions", [])],
    }
    return {k: (sum(v) / len(v) if v else None) for k, v in checks.items()}


def measure(case: dict, traj, seconds: float) -> dict:
    from genevolve.program import quoted_strings, validate_program

    request = case["question"]
    program = traj.program
    prompt = program.gen_prompt if program else ""
    valid = (program is not None and not validate_program(program, {i.img_id for i in traj.images})
             and not any(NO_DESCRIPTION_REPAIR in w for w in traj.warnings))
    quotes = quoted_strings(request)
    sources = search_sources(traj)
    facts = carried_facts(prompt, request, sources) if program else []
    refs = bound_references(program, traj, request)
    needed = needed_skills(case)
    consulted = traj.skills_used()
    leaked = leaks(prompt, request)
    invented = invented_texts(prompt, request)
    counted = invented_counts(prompt, request)
    looped = repeated_sentences(prompt)
    garbled = garbled_fragments(prompt, request)
    coloured = invented_colours(prompt, request, colour_grounds(traj, sources, refs))
    tidied = [w[:300] for w in traj.warnings if w.startswith(("program cleaned", "program repaired"))]
    claims = ([f"fact: {s}" for s in unsupported_facts(prompt, request, sources)]
              + [f"position: {p}" for p in unnamed_placements(_without(prompt, facts), request)]
              + [f"picture: {p}" for p in unbound_picture_citations(prompt, request, len(program.reference_images))]
              ) if program else []
    claims = list(dict.fromkeys(c[:300] for c in claims))
    row = {
        "set": case.get("set"), "valid": bool(valid),
        "quotes_kept": (sum(q in prompt for q in quotes) / len(quotes)) if quotes else None,
        "subjects_kept": subjects_kept(prompt, request),
        **metadata_kept(prompt, case.get("expect")),
        "leak": bool(leaked), "leaked": leaked[:5], "invented": bool(invented), "invented_texts": invented[:5],
        "repeated": bool(looped), "repeated_sentences": looped[:5],
        "garbled": bool(garbled), "garbled_words": garbled[:5],
        "copied": bool(program) and copied_request(prompt, request),
        "tidied": bool(tidied), "tidied_by": tidied[:5],
        "invented_count": bool(counted), "invented_counts": counted[:5],
        "invented_colour": bool(coloured), "invented_colours": coloured[:5],
        "invented_claim": bool(claims), "invented_claims": claims[:5],
        "facts": len(facts), "irrelevant_facts": sum(not f["relevant"] for f in facts), "fact_list": facts,
        "references": len(refs), "irrelevant_references": sum(not r["relevant"] for r in refs),
        "reference_list": refs,
        "skills": consulted, "skills_needed": needed,
        "skill_recall": (len(set(needed) & set(consulted)) / len(needed)) if needed else None,
        # A picture the user gave is what the request is about ("the rocket from the first image"):
        # the share of them the program binds (None when the request gives none).
        "user_pictures_bound": user_pictures_bound(program, traj),
        "rounds": len(traj.steps), "tokens": sum(len((s.assistant_text or "").split()) for s in traj.steps),
        "seconds": round(seconds, 3), "termination": traj.termination,
        "gen_prompt": prompt[:3000] if program else None,
    }
    row["clean"] = is_clean(row)
    row["clean_not_copied"] = _clean_not_copied(row)
    return row


def _clean_not_copied(row: dict) -> bool:
    """Clean, and more than the request as written: a copy of the request is clean by construction
    (half the shipped adapter's programs on the external sets), so clean alone cannot tell an adapter
    that copies from one that does the research the method exists for."""
    return bool(row["clean"]) and not row.get("copied")


def user_pictures_bound(program, traj) -> float | None:
    """The share of the pictures the user gave that ``program`` binds; None when none was given."""
    given = list(dict.fromkeys(traj.user_image_ids))
    if not given:
        return None
    bound = {ref.img_id for ref in program.reference_images} if program else set()
    return sum(img in bound for img in given) / len(given)


def _without(prompt: str, facts: list[dict]) -> str:
    """``prompt`` without the sentences carried from search: "built across northern China over
    many centuries" is the source's wording, not a placement the program makes."""
    carried = {f["fact"] for f in facts}
    return " ".join(s for s in sentences(prompt) if s not in carried)


def is_clean(row: dict) -> bool:
    """One request's program passes every check at once: valid, every quoted text and every stated
    count, colour and position kept, no leak, no sentence said twice, no garbled words, no invented
    text, count, colour, fact or placement, no irrelevant fact or reference. The one number per
    request that two policies are compared on (``compare``; the nano recipe's ship decision, which
    also looks at ``copied``)."""
    return (bool(row["valid"]) and all(row.get(k) in (None, 1, 1.0, True) for k in KEPT) and not row["leak"]
            and not row.get("repeated") and not row.get("garbled")
            and not row.get("invented") and not row.get("invented_count")
            and not row.get("invented_colour") and not row.get("invented_claim")
            and not row["irrelevant_facts"] and not row["irrelevant_references"])


# ---------------------------------------------------------------- the run (the bench runner's rollout stage)

class ProgramEvalRunner(BenchRunner):
    """The bench runner with only its rollout stage, each line carrying the program-quality measures."""

    stages = ("rollout",)

    def do_rollout(self, case: dict) -> dict:
        traj, seconds = self.roll_out(case)
        row = measure(case, traj, seconds)
        row["status"] = "ok" if traj.program is not None else "failed"
        row["elapsed_s"] = row["seconds"]
        return row


def interleaved(cases: list[dict]) -> list[dict]:
    """Cases in round-robin order over (set, category), so a run stopped early (a slow model policy)
    has covered every category about equally rather than the first set only."""
    groups: dict[tuple, list[dict]] = {}
    for c in cases:
        groups.setdefault((c.get("set") or "", c.get("category") or ""), []).append(c)
    out: list[dict] = []
    queues = [groups[k] for k in sorted(groups)]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def run_program_eval(cases: list[dict], out_dir: str | Path, *, policy: str = "planner", set_name: str = "",
                     limit: int | None = None, resume: bool = False, protocol: str | None = None,
                     progress: bool = True, log=None) -> dict:
    from genevolve.bench.ablation import stratified_subset

    if limit and limit < len(cases):
        cases = stratified_subset(cases, limit)  # spread over sets and categories, not the first N
    cases = interleaved(cases)
    for c in cases:
        c["category"] = c.get("category")
    cfg = BenchConfig(bench=set_name, policy=policy, renderer="none", judge="none", parallel=1, limit=None,
                      offline=True, protocol=protocol)
    runner = ProgramEvalRunner(cases, out_dir, cfg, resume=resume, progress=progress, log=log)
    counts = runner.run()
    return {"counts": counts, "summary": summarise(out_dir)}


def remeasure(run_dir: str | Path) -> int:
    """Measure a run's stored trajectories again (after a measure changed); rollouts are kept, and so
    are their seconds. Returns how many rows were rewritten."""
    from genevolve.trajectory import Trajectory

    run_dir = Path(run_dir)
    cases = {c["id"]: c for c in read_jsonl(run_dir / "cases.jsonl")}
    rows = []
    for old in load_rows(run_dir):
        path = run_dir / "cases" / case_dir_name(old["id"]) / "trajectory.json"
        traj = Trajectory.from_dict(json.loads(path.read_text(encoding="utf-8")))
        row = {**old, **measure(cases[old["id"]], traj, old["seconds"])}
        rows.append(row)
    write_atomic(run_dir / "rollout.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)


# ---------------------------------------------------------------- summaries

def load_rows(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "rollout.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no rollout.jsonl in {run_dir}: not an eval programs run")
    rows = [r for r in latest_by_id(read_jsonl(path)).values() if "valid" in r]
    for r in rows:  # runs written before the measure: it follows from two they have
        if "clean_not_copied" not in r and "clean" in r and "copied" in r:
            r["clean_not_copied"] = _clean_not_copied(r)
    return rows


def _mean(rows: list[dict], key: str):
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return (round(sum(vals) / len(vals), 4), len(vals)) if vals else (None, 0)


def aggregate(rows: list[dict]) -> dict:
    out: dict = {"requests": len(rows)}
    for key in QUALITY_METRICS:
        out[key], out[f"{key}_n"] = _mean(rows, key)
    for key in ("facts", "irrelevant_facts", "references", "irrelevant_references"):
        out[key] = sum(int(r.get(key) or 0) for r in rows)
    out["requests_with_irrelevant_facts"] = sum(bool(r.get("irrelevant_facts")) for r in rows)
    return out


def summarise(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    rows = load_rows(run_dir)
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    by_set: dict[str, list[dict]] = {}
    by_cat: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_set.setdefault(r.get("set") or "", []).append(r)
        by_cat.setdefault((r.get("set") or "", r.get("category") or ""), []).append(r)
    summary = {"policy": run["identity"]["policy"], "set": run["identity"]["bench"], "overall": aggregate(rows),
               "sets": {k: aggregate(v) for k, v in sorted(by_set.items())},
               "categories": [{"set": s, "category": c, **aggregate(v)} for (s, c), v in sorted(by_cat.items())]}
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=1))
    write_atomic(run_dir / "summary.md", markdown(summary))
    chart(summary, run_dir / "summary.png")
    return summary


def _pct(v, n=None):
    if v is None:
        return "–"
    return f"{100 * v:.0f}%" + (f" (n={n})" if n is not None else "")


def _row_cells(name: str, a: dict) -> str:
    num = (lambda v, d=1: "–" if v is None else f"{v:.{d}f}")
    return (f"| {name} | {a['requests']} | {_pct(a['valid'])} | {_pct(a['clean'])} | "
            f"{_pct(a['quotes_kept'], a['quotes_kept_n'])} | {_pct(a.get('subjects_kept'), a.get('subjects_kept_n'))} | "
            f"{_pct(a['counts_kept'], a['counts_kept_n'])} | {_pct(a['colours_kept'], a['colours_kept_n'])} | "
            f"{_pct(a['positions_kept'], a['positions_kept_n'])} | {_pct(a['leak'])} | {_pct(a.get('repeated'))} | {_pct(a.get('garbled'))} | {_pct(a.get('copied'))} | {_pct(a.get('tidied'))} | {_pct(a.get('invented'))} | "
            f"{_pct(a.get('invented_count'))} | {_pct(a.get('invented_colour'))} | {_pct(a.get('invented_claim'))} | "
            f"{a['facts']} / {a['irrelevant_facts']} | {a['references']} / {a['irrelevant_references']} | "
            f"{num(a['skill_recall'], 2)} (n={a['skill_recall_n']}) | "
            f"{_pct(a.get('user_pictures_bound'), a.get('user_pictures_bound_n', 0))} | {num(a['rounds'])} | {num(a['tokens'], 0)} | "
            f"{num(a['seconds'], 2)} |")


TABLE_HEAD = ("| {first} | requests | valid | clean | quotes kept | subjects kept | counts kept | colours kept | positions kept | leaks | "
              "repeats | garbled | copied | tidied by the runtime | invented text | invented count | invented colour | invented fact / placement / picture | facts / irrelevant | references / irrelevant | "
              "skill recall | user pictures bound | rounds | tokens | seconds |\n" + "|---" * 25 + "|")


def markdown(summary: dict) -> str:
    lines = [f"# Program quality: policy `{summary['policy']}` on `{summary['set']}`", "",
             TABLE_HEAD.format(first="set"), _row_cells("**all**", summary["overall"])]
    lines += [_row_cells(name, agg) for name, agg in summary["sets"].items()]
    lines += ["", TABLE_HEAD.format(first="set / category")]
    lines += [_row_cells(f"{c['set']} / {c['category']}", c) for c in summary["categories"]]
    return "\n".join(lines) + "\n"


INVENTED_KINDS = (("invented", "text"), ("invented_count", "count"), ("invented_colour", "colour"),
                  ("invented_claim", "fact / placement / picture"))


def chart(summary: dict, path: str | Path) -> Path:
    """Per set, one panel a measure: clean first (the headline), then what it is made of."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = summary["sets"]
    names = list(sets)
    panels = [("clean", "clean program (higher is better)"), ("copied", "the request as written (lower)"),
              ("valid", "valid program"), ("quotes_kept", "quoted texts kept"),
              ("relevant_facts", "facts that are relevant"), ("skill_recall", "skill recall"),
              ("leak", "leaks (lower is better)"), ("tidied", "mended by the runtime (lower)"),
              ("invented_kinds", "invents a … (lower)")]
    fig, grid = plt.subplots(3, 3, figsize=(11, 9.2), constrained_layout=True)
    for ax, (key, title) in zip(grid.flat, panels):
        if key == "invented_kinds":
            _invented_bars(ax, sets, names)
        else:
            vals = [_chart_value(sets[n], key) for n in names]
            colour = {"clean": "#2f9e44", "copied": "#e8590c"}.get(key, "#4c6ef5")
            ax.bar(names, [v or 0 for v in vals], color=colour)
            for i, v in enumerate(vals):  # a dash where the set had nothing to measure (n = 0)
                ax.text(i, min((v or 0) + 0.03, 1.0), "–" if v is None else f"{v:.2f}", ha="center", fontsize=8)
        ax.set_ylim(0, 1.08)
        ax.set_title(title, fontsize=9)
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor", fontsize=7)
    fig.suptitle(f"{summary['policy']} on {summary['set']}", fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _chart_value(agg: dict, key: str) -> float | None:
    if key == "relevant_facts":
        return 1 - agg["irrelevant_facts"] / agg["facts"] if agg["facts"] else None
    return agg.get(key)


def _invented_bars(ax, sets: dict, names: list[str]) -> None:
    """The four invented columns side by side within each set, so one kind rising is seen at once."""
    width = 0.8 / len(INVENTED_KINDS)
    colours = ("#e8590c", "#f08c00", "#c2255c", "#7048e8")
    for k, ((key, label), colour) in enumerate(zip(INVENTED_KINDS, colours)):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(names))]
        ax.bar(xs, [sets[n].get(key) or 0 for n in names], width=width, color=colour, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.legend(fontsize=7, loc="upper right")


PAIRED_METRICS = ("clean", "clean_not_copied", "valid", "quotes_kept", "subjects_kept", "leak", "repeated", "garbled", "copied", "tidied", "invented", "invented_count",
                  "invented_colour", "invented_claim", "irrelevant_facts",
                  "irrelevant_references", "skill_recall", "user_pictures_bound")


def compare(run_a: str | Path, run_b: str | Path) -> list[dict]:
    """Run A against run B on the requests both measured, one paired bootstrap per metric."""
    a_rows, b_rows = load_rows(run_a), load_rows(run_b)
    name_a = f"A:{json.loads((Path(run_a) / 'run.json').read_text())['identity']['policy']}"
    name_b = f"B:{json.loads((Path(run_b) / 'run.json').read_text())['identity']['policy']}"
    out = []
    for metric in PAIRED_METRICS:
        rows = {name_a: [{"id": r["id"], "reward": float(r[metric])} for r in a_rows if r.get(metric) is not None],
                name_b: [{"id": r["id"], "reward": float(r[metric])} for r in b_rows if r.get(metric) is not None]}
        result = paired(rows, name_a, name_b)
        if result:
            out.append({"metric": metric, **result})
    return out


def compare_markdown(comparisons: list[dict]) -> str:
    header = "| metric | A | B | requests | A mean | B mean | A − B [95% paired bootstrap CI] | A higher / same / lower |"
    return paired_table(comparisons, header=header, label="metric") + "\n"
