"""The subjects of a layout render: what the program names, in its count and stated position.

A scene is read from the program (its ``subject`` and ``relation`` constraints that the
gen_prompt still states), placed on a grid that honours left/right, above/below and
front/behind, and drawn copy by copy as the bound reference photo, else a colour pictogram,
else a placeholder panel without lettering. Every drawn copy's box goes into the report, so a judge can check
counts and positions without looking at pixels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from genevolve.program import (
    ORDINALS, Constraint, Program, is_text_carrier, ordinal_image_index, subject_constraints,
)
from genevolve.subjects import is_plural, mentions_subject, same_subject

MAX_COPIES = 24  # beyond this a comp stops being countable at a glance; the report says so
_VERTICAL = {"above", "below", "in_front_of", "behind"}


@dataclass
class SceneItem:
    name: str  # as the constraint names it, lower case
    label: str  # as the gen_prompt writes it
    count: int | None  # asked for; None: the text does not say
    arrangement: str | None = None
    container: str | None = None
    reference: int | None = None  # index into the program's references
    pictogram: tuple[str, str] | None = None  # (character, Unicode name)
    contents: list["SceneItem"] = field(default_factory=list)
    colour: str | None = None  # the colour word the gen_prompt gives it ("a red bicycle")

    @property
    def copies(self) -> int:
        if self.count:
            return min(self.count, MAX_COPIES)
        return 3 if is_plural(self.name.split()[-1]) else 1


def stated(name: str, prompt: str) -> bool:
    """Whether the gen_prompt still names the subject (its head noun, singular or plural)."""
    return mentions_subject(name, prompt)


def read_scene(program: Program) -> tuple[list[SceneItem], list[Constraint]]:
    """The subjects to draw and the relations between them."""
    prompt = program.gen_prompt
    subjects = [c for c in program.constraints if c.kind == "subject" and c.subject]
    relations = [c for c in program.constraints if c.kind == "relation"]
    if not program.constraints:  # a hand-written program with no derived constraints: read its prompt
        from genevolve.program import relation_constraints

        relations = relation_constraints(prompt)
        subjects = subject_constraints(prompt, relations=relations)
    lettered = bool(program.text_constraints())
    # A sign, banner or title that carries the program's text is drawn as that text, not as a
    # second, empty thing beside it.
    items = [SceneItem(c.subject, _as_written(c.subject, prompt), c.count, c.arrangement, c.object)
             for c in subjects if stated(c.subject, prompt) and not (lettered and is_text_carrier(c.subject))]
    _bind_references(items, program)
    _give_colours(items, prompt)
    relations = [_by_what_it_shows(r, items) for r in relations]
    names = [i.name for i in items]
    relations = [r for r in relations if any(same_subject(r.subject or "", n) for n in names)
                 and any(same_subject(r.object or "", n) for n in names)]
    return items, relations


def _give_colours(items: list[SceneItem], prompt: str) -> None:
    """Each drawn subject's own colour word ("a red bicycle leaning on a blue door"), so the comp
    shows the binding the request asks for instead of painting the surface red."""
    from genevolve.english import COLOURS, attribute_pairs
    from genevolve.subjects import strip_quoted

    for colour, noun in attribute_pairs(strip_quoted(prompt)):
        if colour not in COLOURS:
            continue
        it = next((it for it in items if it.colour is None and it.reference is None and same_subject(noun, it.name)),
                  None)
        if it is not None:
            it.colour = colour


def subject_colours(items: list[SceneItem]) -> set[str]:
    """The colour words drawn on subjects (the surface takes its colour from the others)."""
    return {it.colour for it in items if it.colour}


def _by_what_it_shows(relation: Constraint, items: list[SceneItem]) -> Constraint:
    """"the first image below the chair" is the subject the first image shows, below the chair."""
    update = {}
    for side in ("subject", "object"):
        index = ordinal_image_index(getattr(relation, side))
        bound = next((it for it in items if index is not None and it.reference == index), None)
        if bound is not None:
            update[side] = bound.name
    return relation.model_copy(update=update) if update else relation


_INVERSE = {"above": "below", "below": "above", "left_of": "right_of", "right_of": "left_of"}


def text_placement(program: Program) -> str | None:
    """Where the lettering goes relative to the drawn subjects ("above", "below", "left_of",
    "right_of"), when a relation puts a text carrier (the sign that reads the text) there."""
    if not program.text_constraints():
        return None
    relations = [c for c in program.constraints if c.kind == "relation"]
    if not program.constraints:
        from genevolve.program import relation_constraints

        relations = relation_constraints(program.gen_prompt)
    for r in relations:
        if r.relation not in _INVERSE:
            continue
        if is_text_carrier(r.subject) and not is_text_carrier(r.object):
            return r.relation
        if is_text_carrier(r.object) and not is_text_carrier(r.subject):
            return _INVERSE[r.relation]
    return None


def _as_written(name: str, prompt: str) -> str:
    m = re.search(re.escape(name), prompt, re.IGNORECASE)
    return m.group(0) if m else name


def _bind_references(items: list[SceneItem], program: Program) -> None:
    """A reference shows a subject when its note, or the sentence citing it, names that subject."""
    sentences = re.split(r"(?<=[.;!?])\s+|\n", program.gen_prompt)
    for i, ref in enumerate(program.reference_images):
        ordinal = ORDINALS[i] if i < len(ORDINALS) else str(i + 1)
        # Only the clause that cites it: "the first reference image at the top, a cat next to a dog"
        # puts the photo at the top; it does not say the photo shows the cat.
        clauses = [c for s in sentences for c in re.split(r"[,;:]|\band\b|\bwith\b", s)]
        cited = " ".join(c for c in clauses if re.search(rf"\b{ordinal}\s+(reference|image|photo)", c, re.I))
        for text in (ref.note or "", cited):
            hit = next((it for it in items if it.reference is None and stated(it.name, text)), None)
            if hit is not None:
                hit.reference = i
                break
        else:
            # The user's own image shows what the request calls theirs: "my cat" is that photo,
            # not a placeholder beside it.
            if re.search(r"\buser'?s?\b|\byour\b|\bown\b", ref.note or "", re.I):
                hit = next((it for it in items if it.reference is None
                            and re.match(r"(?:my|our)\s", it.label or it.name, re.I)), None)
                if hit is not None:
                    hit.reference = i


# ---------------------------------------------------------------- placement

def place_groups(items: list[SceneItem], relations: list[Constraint]) -> dict[int, tuple[int, int, int]]:
    """item index -> (column, row, rows in that column), honouring the relations."""
    n = len(items)
    idx = {}
    for r in relations:
        a = next((i for i, it in enumerate(items) if same_subject(r.subject or "", it.name)), None)
        b = next((i for i, it in enumerate(items) if same_subject(r.object or "", it.name)), None)
        if a is not None and b is not None and a != b:
            idx.setdefault(r.relation, []).append((a, b))
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for rel in _VERTICAL:
        for a, b in idx.get(rel, []):
            parent[find(a)] = find(b)
    columns: dict[int, list[int]] = {}
    for i in range(n):
        columns.setdefault(find(i), []).append(i)
    # Column order: left_of / right_of edges, else order of first mention.
    before = [(find(a), find(b)) for a, b in idx.get("left_of", [])] + \
             [(find(b), find(a)) for a, b in idx.get("right_of", [])]
    order = _topo(sorted(columns, key=lambda c: min(columns[c])), before)
    # Next to: keep the two columns adjacent (move b right after a when nothing forbids it).
    for a, b in idx.get("next_to", []):
        ca, cb = find(a), find(b)
        if ca != cb and abs(order.index(ca) - order.index(cb)) > 1 and not any(cb in e for e in before):
            order.remove(cb)
            order.insert(order.index(ca) + 1, cb)
    out = {}
    for col_pos, root in enumerate(order):
        members = columns[root]
        up = [(a, b) for a, b in idx.get("above", []) + idx.get("behind", []) if a in members and b in members]
        up += [(b, a) for a, b in idx.get("below", []) + idx.get("in_front_of", []) if a in members and b in members]
        rows = _topo(sorted(members), up)
        for row, i in enumerate(rows):
            out[i] = (col_pos, row, len(rows))
    return out


def _topo(nodes: list[int], edges: list[tuple[int, int]]) -> list[int]:
    """Stable topological order (a before b for each edge); a cycle keeps the given order."""
    out, left = [], list(nodes)
    while left:
        free = [x for x in left if not any(b == x and a in left and a != x for a, b in edges)]
        pick = free[0] if free else left[0]
        out.append(pick)
        left.remove(pick)
    return out


def arrangement_points(n: int, shape: str | None, aspect: float = 1.0) -> list[tuple[float, float]]:
    """Centres in a unit square for ``n`` copies arranged as asked (``aspect`` = cell width / height)."""
    if n <= 0:
        return []
    if n == 1:
        return [(0.5, 0.5)]
    if shape == "column":
        return [(0.5, (k + 0.5) / n) for k in range(n)]
    if shape == "diagonal":
        return [((k + 0.5) / n, (k + 0.5) / n) for k in range(n)]
    if shape == "circle":
        return [(0.5 + 0.36 * math.cos(2 * math.pi * k / n - math.pi / 2),
                 0.5 + 0.36 * math.sin(2 * math.pi * k / n - math.pi / 2)) for k in range(n)]
    if shape == "triangle":
        rows, left, r = [], n, 1  # 1 on top, 2 under it, 3 under those…; the last row takes the rest
        while left > 0:
            take = min(r, left)
            rows.append(take)
            left -= take
            r += 1
        pts = []
        for j, k in enumerate(rows):
            y = (j + 0.5) / len(rows)
            width = len(rows)
            pts += [(0.5 + (i - (k - 1) / 2) / width, y) for i in range(k)]
        return pts
    if shape == "row":
        cols = n if n <= 8 else math.ceil(n / math.ceil(n / 8))
    elif shape == "grid":
        cols = math.ceil(math.sqrt(n))
    else:  # no shape asked: the grid that gives each copy the largest tile in this cell
        cols = max(range(1, n + 1), key=lambda c: (min(aspect / c, 1 / math.ceil(n / c)), -c))
    rows = math.ceil(n / cols)
    return [((k % cols + 0.5) / cols, (k // cols + 0.5) / rows) for k in range(n)]


def _tile_side(points: list[tuple[float, float]], w: int, h: int) -> int:
    """The largest square tile that keeps copies apart (a gap of about a fifth of a tile)."""
    if len(points) == 1:
        return int(min(w, h) * 0.78)
    best = min(math.hypot((a[0] - b[0]) * w, (a[1] - b[1]) * h) for i, a in enumerate(points) for b in points[i + 1:])
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    room = min(w * (1 - (max(xs) - min(xs))), h * (1 - (max(ys) - min(ys))))
    return max(8, int(min(best / 1.25, room * 0.95, min(w, h) * 0.78)))


# ---------------------------------------------------------------- drawing

def draw_scene(img: Image.Image, region: tuple[int, int, int, int], items: list[SceneItem],
               relations: list[Constraint], refs: list[Image.Image], pal: dict, label_font) -> list[dict]:
    """Draw every item in ``region``; returns one report entry per item (boxes in image pixels)."""
    from genevolve.renderers.pictograms import draw_pictogram, emoji_font_path, find_pictogram

    by_name = {it.name: it for it in items}
    groups = []
    for it in items:
        holder = by_name.get(it.container) if it.container else None
        if holder is not None and holder is not it:
            holder.contents.append(it)
        else:
            groups.append(it)
    has_font = emoji_font_path() is not None  # without one, a pictogram cannot be drawn: say "box"
    for it in items:
        it.pictogram = find_pictogram(it.name) if it.reference is None and has_font else None
    x0, y0, x1, y1 = region
    if x1 - x0 < 16 or y1 - y0 < 16:  # the text took the room: say so rather than draw specks
        return [{**_entry(it, []), "note": "no room left beside the text at this size"} for it in items]
    grid = place_groups(groups, relations)
    ncols = max((c for c, _, _ in grid.values()), default=0) + 1
    horizontal = any(r.relation in ("left_of", "right_of", "next_to") for r in relations)
    if ncols >= 4 and not horizontal and all(n == 1 for _, _, n in grid.values()) and (x1 - x0) < 2 * (y1 - y0):
        # Many unrelated groups: two rows read better than one row of tiny tiles.
        per_row = math.ceil(ncols / 2)
        grid = {i: (c % per_row, c // per_row, 2) for i, (c, _, _) in grid.items()}
        ncols = per_row
    report: list[dict] = []
    depth = {i: 0 for i in range(len(groups))}
    for r in relations:  # what stands in front is drawn last, a little larger and lower
        if r.relation in ("in_front_of", "behind"):
            a = next((i for i, g in enumerate(groups) if same_subject(r.subject or "", g.name)), None)
            if a is not None:
                depth[a] = 1 if r.relation == "in_front_of" else -1
    # Columns are as wide as their groups need: three cats in a row get more room than one horse.
    weight = [1.0] * ncols
    for gi, (col, _, _) in grid.items():
        g = groups[gi]
        need = g.copies if g.arrangement == "row" else math.ceil(math.sqrt(g.copies))
        weight[col] = max(weight[col], float(min(need, 4)))
    edges = [x0]
    for wgt in weight:
        edges.append(edges[-1] + (x1 - x0) * wgt / sum(weight))
    for gi in sorted(range(len(groups)), key=lambda i: depth[i]):
        it = groups[gi]
        col, row, nrows = grid[gi]
        ch = (y1 - y0) / nrows
        cell = (int(edges[col]), int(y0 + row * ch), int(edges[col + 1]), int(y0 + (row + 1) * ch))
        scale = {1: 1.0, 0: 0.92, -1: 0.72}[depth[gi]]
        boxes = _draw_group(img, cell, it, refs, pal, label_font, scale, draw_pictogram)
        report.append(_entry(it, boxes))
        for content in it.contents:
            cboxes = []
            per = max(1, content.count // max(1, len(boxes))) if content.count else 3
            for bx in boxes:
                bw, bh = bx[2] - bx[0], bx[3] - bx[1]
                # Contents sit in the upper half of their container, overlapping its rim.
                sub = (bx[0] + int(bw * 0.12), bx[1] - int(bh * 0.05), bx[2] - int(bw * 0.12), bx[1] + int(bh * 0.5))
                sub_item = SceneItem(content.name, content.label, per, None, None, content.reference, content.pictogram,
                                     colour=content.colour)
                cboxes += _draw_group(img, sub, sub_item, refs, pal, label_font, 1.0, draw_pictogram, tight=True)
            report.append(_entry(content, cboxes))
    return report


def _entry(it: SceneItem, boxes: list[list[int]]) -> dict:
    form = "reference" if it.reference is not None else "pictogram" if it.pictogram else "box"
    entry = {"name": it.name, "count": it.count, "drawn": len(boxes), "form": form,
             "arrangement": it.arrangement, "container": it.container, "boxes": boxes}
    if it.pictogram:
        entry["pictogram"] = it.pictogram[1]
    if it.colour:
        entry["colour"] = it.colour
    if it.reference is not None:
        entry["reference"] = it.reference
    if it.count and it.count > MAX_COPIES:
        entry["note"] = f"{it.count} asked, {MAX_COPIES} drawn: more would not read as a count"
    return entry


def _draw_group(img, cell, it: SceneItem, refs, pal, label_font, scale, draw_pictogram, tight=False) -> list[list[int]]:
    cx0, cy0, cx1, cy1 = cell
    if it.arrangement in ("triangle", "circle", "diagonal", "grid"):
        # A shape keeps its proportions: drawn in the largest square of the cell, not stretched.
        side0 = min(cx1 - cx0, cy1 - cy0)
        cx0, cy0 = cx0 + (cx1 - cx0 - side0) // 2, cy0 + (cy1 - cy0 - side0) // 2
        cx1, cy1 = cx0 + side0, cy0 + side0
    w, h = max(1, cx1 - cx0), max(1, cy1 - cy0)
    points = arrangement_points(it.copies, it.arrangement, w / h)
    side = max(8, int(_tile_side(points, w, h) * (1.0 if tight else scale)))
    if tight:
        side = max(8, min(side, int(h * 0.8)))
    tile = _tile(it, side, refs, pal, label_font, draw_pictogram)
    boxes = []
    for px, py in points:
        x = int(cx0 + px * w - side / 2)
        y = int(cy0 + py * h - side / 2)
        if scale > 1 - 1e-6 and not tight:
            y = min(cy1 - side, y + int(side * 0.04))
        img.paste(tile, (x, y), tile)
        boxes.append([x, y, x + side, y + side])
    return boxes


def _tile(it: SceneItem, side: int, refs, pal, label_font, draw_pictogram) -> Image.Image:
    """One copy as an RGBA square: photo print, pictogram or placeholder panel."""
    from genevolve.renderers.layout import COLOR_WORDS, focal_fit
    from genevolve.renderers.pictograms import tinted
    from genevolve.renderers.typeset import luminance, mix, readable_on

    if it.reference is not None and it.reference < len(refs):
        border = max(2, side // 28)
        tile = Image.new("RGBA", (side, side), (250, 248, 244, 255))
        tile.paste(focal_fit(refs[it.reference], (side - 2 * border, side - 2 * border)), (border, border))
        return tile
    if it.pictogram:
        pic = draw_pictogram(it.pictogram[0], side)
        if pic is not None:
            return tinted(pic, COLOR_WORDS[it.colour]) if it.colour in COLOR_WORDS else pic
        it.pictogram = None  # the glyph would not draw: the report must say "box", as drawn
    # A placeholder: an outlined panel crossed corner to corner (the layout artist's "picture goes
    # here"), tinted if the name gives a colour. No lettering: the program decides every word on the
    # image, and the report names what the panel stands for.
    colour = COLOR_WORDS.get(it.colour or "") or next((COLOR_WORDS[w] for w in it.name.split() if w in COLOR_WORDS),
                                                      None)
    fill = colour or _placeholder_tint(it.name, pal)
    ink = readable_on(fill)
    line = mix(fill, ink, 0.45)
    tile = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    d = ImageDraw.Draw(tile)
    radius, width = max(2, side // 10), max(1, side // 60)
    d.rounded_rectangle([1, 1, side - 2, side - 2], radius=radius, fill=fill + (255,), outline=ink + (255,), width=width)
    inset = radius // 2 + width
    d.line([inset, inset, side - 1 - inset, side - 1 - inset], fill=line + (255,), width=width)
    d.line([inset, side - 1 - inset, side - 1 - inset, inset], fill=line + (255,), width=width)
    return tile


def _placeholder_tint(name: str, pal: dict) -> tuple[int, int, int]:
    """A panel colour of its own per subject (copies of one subject alike, two subjects apart),
    kept near the poster's surface so the panels do not shout."""
    import colorsys
    import hashlib

    from genevolve.renderers.typeset import luminance, mix

    base = mix(pal["bg"], (255, 255, 255) if luminance(pal["bg"]) < 0.3 else (0, 0, 0), 0.16)
    h, l, sat = colorsys.rgb_to_hls(*(c / 255 for c in base))
    turn = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 6 / 6  # six steps around the colour wheel
    r, g, b = colorsys.hls_to_rgb((h + turn) % 1.0, l, max(sat, 0.35))
    return mix(base, (round(r * 255), round(g * 255), round(b * 255)), 0.4)
