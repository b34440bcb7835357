"""Structure checks: does the render show the request's subjects, in their counts and places?

The evidence is the renderer's own report (the layout renderer lists every subject it drew, as a
reference photo, a pictogram or a placeholder panel, with one pixel box per copy). From those boxes
the checks are geometry: a subject is shown, its copies number what was asked, they form the
asked arrangement, and each stated relation (left of, above, in front of…) holds between the
groups. What the boxes cannot tell — whether the thing drawn really looks like the named
entity, or whether the picture is any good — is left unchecked and said so.

A renderer that reports no layout (a diffusion model, a remote service) gets ``None``: nothing
about structure was measured.
"""

from __future__ import annotations

from genevolve.program import Constraint, is_text_carrier, ordinal_image_index
from genevolve.subjects import same_subject


def _centre(b):
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def _union(boxes):
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def _inside(box, holders) -> bool:
    cx, cy = _centre(box)
    return any(h[0] <= cx <= h[2] and h[1] - 0.1 * (h[3] - h[1]) <= cy <= h[3] for h in holders)


def arrangement_holds(boxes: list[list[int]], shape: str) -> bool:
    """Whether the copies' boxes form ``shape`` (row, column, triangle, circle, grid, diagonal)."""
    if len(boxes) < 2:
        return False
    cs = [_centre(b) for b in boxes]
    side = sum(max(b[2] - b[0], b[3] - b[1]) for b in boxes) / len(boxes)
    tol = 0.25 * side
    if shape == "row":
        return max(c[1] for c in cs) - min(c[1] for c in cs) <= tol
    if shape == "column":
        return max(c[0] for c in cs) - min(c[0] for c in cs) <= tol
    if shape == "diagonal":
        order = sorted(cs)
        return all(b[1] > a[1] + tol for a, b in zip(order, order[1:]))
    rows: list[list[tuple[float, float]]] = []
    for c in sorted(cs, key=lambda c: c[1]):
        if rows and abs(c[1] - rows[-1][0][1]) <= tol:
            rows[-1].append(c)
        else:
            rows.append([c])
    if shape == "triangle":  # rows grow from the apex down (or up), each centred on the same axis
        sizes = [len(r) for r in rows]
        growing = all(b > a for a, b in zip(sizes, sizes[1:])) or all(b < a for a, b in zip(sizes, sizes[1:]))
        axis = [sum(c[0] for c in r) / len(r) for r in rows]
        return len(rows) >= 2 and growing and max(axis) - min(axis) <= side * 0.5
    if shape == "circle":
        if len(cs) < 3:
            return False
        mx, my = sum(c[0] for c in cs) / len(cs), sum(c[1] for c in cs) / len(cs)
        radii = [((c[0] - mx) ** 2 + (c[1] - my) ** 2) ** 0.5 for c in cs]
        mean = sum(radii) / len(radii)
        return mean > 0 and all(abs(r - mean) <= 0.2 * mean for r in radii)
    if shape == "grid":
        return len(rows) >= 2 and max(len(r) for r in rows) >= 2
    return False


def relation_holds(a: list[list[int]], b: list[list[int]], relation: str) -> bool:
    """Whether group ``a`` stands in ``relation`` to group ``b`` (boxes in image pixels, y down)."""
    ua, ub = _union(a), _union(b)
    (ax, ay), (bx, by) = _centre(ua), _centre(ub)
    if relation == "left_of":
        return ax < bx and ua[2] <= ub[0] + 0.25 * (ub[2] - ub[0])
    if relation == "right_of":
        return ax > bx and ua[0] >= ub[2] - 0.25 * (ub[2] - ub[0])
    if relation == "above":
        return ay < by and ua[3] <= ub[1] + 0.25 * (ub[3] - ub[1])
    if relation == "below":
        return ay > by and ua[1] >= ub[3] - 0.25 * (ub[3] - ub[1])
    if relation == "in_front_of":  # nearer: lower on the page
        return ua[3] > ub[3]
    if relation == "behind":
        return ua[3] < ub[3]
    if relation == "next_to":
        h = max(ua[3] - ua[1], ub[3] - ub[1])
        return abs(ay - by) <= 0.5 * h
    return False


def corner_holds(box: list[int], size: list[int], corner: str) -> bool:
    """Whether ``box`` sits in ``corner`` ("top-right"…) of an image of ``size``: its centre in the
    outer third on both axes, and small enough to be a corner mark (at most a sixth of the area)."""
    W, H = size
    cx, cy = _centre(box)
    vertical, horizontal = corner.split("-")
    ok_y = cy < H / 3 if vertical == "top" else cy > 2 * H / 3
    ok_x = cx > 2 * W / 3 if horizontal == "right" else cx < W / 3
    area = (box[2] - box[0]) * (box[3] - box[1])
    return ok_x and ok_y and area <= W * H / 6


def check_structure(constraints: list[Constraint], layout: dict | None,
                    verification: dict | None = None) -> dict | None:
    """Score the request's subject and relation constraints against what was drawn.

    The geometry is the layout report's boxes (what the renderer placed) and, for the text and
    the sign, banner or title that carries it, the OCR boxes of the text found in ``verification``
    (``verify_image``'s report). A relation with no geometry on one side is "not checked"
    (``ok`` None) and counts neither way. Returns None when nothing can be checked (no report, or
    no subjects/relations asked); else {"score", "checks": [{what, kind, ok, detail}],
    "subjects_asked", "subjects_shown", "placeholders", "identity_unchecked"}. ``subjects_shown``
    counts pictograms and reference photos: a placeholder panel is not the subject.
    """
    if not layout or "subjects" not in layout:
        return None
    text_boxes = [c["box"] for c in (verification or {}).get("constraints") or []
                  if c.get("found") and c.get("box")]
    lettered = any(c.kind == "text" for c in constraints)
    # The sign that carries the text is checked as the text (by OCR), not as a separate drawing.
    subjects = [c for c in constraints if c.kind == "subject" and c.source == "request" and c.subject
                and not (lettered and is_text_carrier(c.subject))]
    carriers = [c.subject for c in constraints if c.kind == "subject" and lettered and is_text_carrier(c.subject)]
    # A relation is checked only between subjects the request names ("ivy above it" has no
    # second subject to find, so it is not measurable here, rather than failed).
    relations = [c for c in constraints if c.kind == "relation" and c.source == "request"
                 and all(ordinal_image_index(name) is not None
                         or any(same_subject(name or "", s) for s in [x.subject for x in subjects] + carriers)
                         for name in (c.subject, c.object))]
    placements = [r for r in layout.get("references") or [] if r.get("asked")]
    if not subjects and not relations and not placements:
        return None
    drawn = [d for d in layout.get("subjects") or [] if d.get("drawn")]

    def find(name):
        index = ordinal_image_index(name)  # "the first image": what the first reference shows
        if index is not None:
            return next((d for d in drawn if d.get("reference") == index), None)
        return next((d for d in drawn if same_subject(name, d["name"])), None)

    checks = []
    shown = 0
    for c in subjects:
        d = find(c.subject)
        # A placeholder panel marks where the subject goes; it does not show the subject, so it fails
        # "shown" while its count and position still count.
        visible = d is not None and d.get("form") in ("pictogram", "reference")
        checks.append({"what": c.subject, "kind": "shown", "ok": visible,
                       "detail": ("not drawn" if d is None else "only a placeholder panel" if not visible
                                  else f"drawn as {d['form']}" + (f" ({d['pictogram']})" if d.get("pictogram") else ""))})
        if d is None:
            continue
        shown += visible
        if c.count:
            checks.append({"what": f"{c.count} {c.subject}", "kind": "count", "ok": d["drawn"] == c.count,
                           "detail": f"{d['drawn']} drawn"})
        if c.object:  # "tomatoes in the baskets": every copy sits within a container's box
            holder = find(c.object)
            ok = holder is not None and bool(d["boxes"]) and all(_inside(b, holder["boxes"]) for b in d["boxes"])
            checks.append({"what": f"{c.subject} in the {c.object}", "kind": "relation", "ok": ok,
                           "detail": "" if ok else "not inside"})
        if c.arrangement:
            ok = arrangement_holds(d["boxes"], c.arrangement)
            checks.append({"what": f"{c.subject} in a {c.arrangement}", "kind": "arrangement", "ok": ok,
                           "detail": "" if ok else "the copies do not form it"})
    def boxes_of(name):
        if lettered and is_text_carrier(name):
            return text_boxes, "its text was not found by OCR"
        d = find(name)
        return (d["boxes"] if d else []), "it was not drawn"

    for r in relations:
        (a, why_a), (b, why_b) = boxes_of(r.subject or ""), boxes_of(r.object or "")
        if a and b:
            ok = relation_holds(a, b, r.relation or "")
            checks.append({"what": r.describe(), "kind": "relation", "ok": ok,
                           "detail": "from the drawn and OCR boxes" if ok else "the boxes are not placed so"})
        else:
            missing = r.subject if not a else r.object
            checks.append({"what": r.describe(), "kind": "relation", "ok": None,
                           "detail": f"not checked: {missing}: {why_a if not a else why_b}"})
    for r in placements:
        size = layout.get("size")
        ok = bool(size) and corner_holds(r["box"], size, r["asked"])
        checks.append({"what": f"reference image {r['index'] + 1} in the {r['asked']} corner", "kind": "placement",
                       "ok": ok, "detail": f"placed at {r['box']}"})
    counted = [c for c in checks if c["ok"] is not None]
    passed = sum(bool(c["ok"]) for c in counted)
    # Identity is never verified here: a pictogram or a photo stands for the thing, a box only names it.
    unchecked = [c.subject for c in subjects if find(c.subject) is not None]
    return {"score": round(passed / len(counted), 6) if counted else None, "checks": checks,
            "passed": passed, "total": len(counted), "subjects_asked": len(subjects), "subjects_shown": shown,
            "placeholders": [d["name"] for d in drawn if d.get("form") == "box"],
            "identity_unchecked": unchecked}


def verification_summary(verification: dict | None, render: dict | None = None,
                         constraints: list[Constraint] | None = None) -> str:
    """One human line that says what was verified and what was not, e.g.
    "1/1 quoted texts found by OCR; 3/3 subjects drawn (renderer's report), count 1/1; identity not checked"."""
    constraints = list(constraints or [])
    parts: list[str] = []
    results = (verification or {}).get("constraints") or []
    if verification and verification.get("error"):
        parts.append(f"text not checked ({verification['error']})")
    elif results:
        found = sum(1 for r in results if r.get("found"))
        parts.append(f"{found}/{len(results)} text{'s' if len(results) != 1 else ''} found by OCR")
        near = [r for r in results if r.get("status") == "near"]
        if near:
            parts.append(f"{len(near)} near match{'es' if len(near) != 1 else ''} ("
                         + ", ".join(f"“{r.get('best_match')}” for “{r.get('text')}”" for r in near[:3]) + ")")
    else:
        parts.append("no text asked")
    extra = (verification or {}).get("extra_text") or []
    if extra:
        parts.append(f"{len(extra)} word{'s' if len(extra) != 1 else ''} on the image not asked for ("
                     + ", ".join(f"“{w['text']}”" for w in extra[:4]) + ("…" if len(extra) > 4 else "") + ")")
    subjects = [c for c in constraints if c.kind == "subject" and c.source == "request"]
    layout = (render or {}).get("layout")
    check = check_structure(constraints, layout, verification)
    n = len(subjects)
    noun = "subject" if n == 1 else "subjects"
    if check is None:
        if n:
            parts.append(f"{n} {noun} not checked (the renderer reports no layout)")
        if any(c.kind == "relation" and c.source == "request" for c in constraints):
            parts.append("positions not checked (no drawn boxes)")
    else:
        if check["subjects_asked"]:
            parts.append(f"{check['subjects_shown']}/{check['subjects_asked']} "
                         f"{'subject' if check['subjects_asked'] == 1 else 'subjects'} shown as pictogram or "
                         "reference photo (renderer's boxes)")
        by_kind: dict[str, list] = {}
        for c in check["checks"]:
            if c["kind"] != "shown":
                by_kind.setdefault(c["kind"], []).append(c["ok"])
        for kind, label in (("count", "counts"), ("arrangement", "arrangements"), ("relation", "positions"),
                            ("placement", "image placements")):
            oks = [ok for ok in by_kind.get(kind, []) if ok is not None]
            if oks:
                parts.append(f"{label} {sum(oks)}/{len(oks)} (from drawn and OCR boxes)"
                             if kind == "relation" else f"{label} {sum(oks)}/{len(oks)}")
            if len(oks) < len(by_kind.get(kind, [])):
                parts.append(f"{len(by_kind[kind]) - len(oks)} {label} not checked")
        if check["placeholders"]:
            parts.append(f"{len(check['placeholders'])} only as placeholder panels")
        if check["identity_unchecked"]:
            parts.append("identity and look not checked")
    return "; ".join(parts)
