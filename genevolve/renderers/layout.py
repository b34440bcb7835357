"""The layout renderer: a deterministic poster from a program, with no model.

It is the default backend (offline, CI, designers' drafts). The program decides everything:
reference images are placed by the spatial hints in the notes and prompt (background, left,
right, top, bottom) and cover-cropped around their detail; the text constraints are set exactly
as written with a title / subtitle / body hierarchy; colours come from the prompt's colour words
or from the references (a colour a drawn subject carries, "a red bicycle", is drawn on that subject,
not on the surface); a seeded motif fills posters that have no photo. Text always fits its
box (it shrinks, then wraps) and always sits on a surface with enough contrast.
"""

from __future__ import annotations

import random
import re

from PIL import Image, ImageDraw, ImageFilter, ImageOps, ImageStat

from genevolve.program import ORDINALS, Program
from genevolve.renderers.base import Progress, Renderer, as_program, check_size, default_size, load_references
from genevolve.renderers.stage import draw_scene, read_scene, subject_colours, text_placement
from genevolve.renderers.typeset import (
    Style, assign_roles, contrast_ratio, detail_map, draw_lines, fit_block, luminance, mix, readable_on,
)

# Named colours a prompt may use, as a designer would pick them (not the CSS extremes).
COLOR_WORDS = {
    "red": (196, 48, 43), "crimson": (164, 22, 52), "scarlet": (214, 44, 32), "maroon": (110, 24, 36),
    "burgundy": (104, 20, 42), "pink": (236, 140, 170), "magenta": (196, 36, 132), "rose": (222, 110, 130),
    "coral": (240, 118, 96), "salmon": (240, 148, 120), "orange": (236, 124, 36), "amber": (240, 168, 40),
    "peach": (246, 190, 156), "yellow": (244, 204, 52), "mustard": (212, 164, 40), "gold": (206, 162, 62),
    "golden": (212, 168, 64), "cream": (244, 236, 214), "beige": (226, 212, 184), "ivory": (248, 244, 230),
    "sand": (220, 196, 150), "tan": (198, 164, 120), "brown": (120, 78, 50), "chocolate": (84, 52, 36),
    "olive": (120, 124, 52), "green": (52, 132, 84), "emerald": (24, 130, 96), "mint": (160, 220, 190),
    "sage": (156, 176, 140), "forest": (34, 84, 56), "lime": (170, 210, 60), "teal": (24, 120, 128),
    "turquoise": (48, 184, 180), "cyan": (60, 190, 214), "aqua": (96, 206, 210), "blue": (40, 88, 176),
    "navy": (22, 36, 82), "cobalt": (30, 70, 170), "azure": (60, 140, 220), "sky": (130, 190, 236),
    "indigo": (58, 44, 128), "purple": (110, 54, 150), "violet": (128, 80, 184), "lavender": (190, 170, 226),
    "lilac": (200, 170, 220), "plum": (96, 40, 90), "black": (20, 20, 24), "charcoal": (44, 46, 52),
    "grey": (128, 128, 132), "gray": (128, 128, 132), "silver": (190, 192, 198), "white": (246, 245, 240),
    "neon": (255, 60, 170), "pastel": (238, 200, 214), "sepia": (150, 110, 70), "rust": (168, 72, 40),
    "terracotta": (196, 102, 72), "ochre": (204, 136, 44),
}
# Moods and scenes that imply a palette when no colour is named.
MOOD_PALETTES = {
    "sunset": [(242, 120, 66), (120, 40, 90)], "sunrise": [(250, 170, 100), (90, 110, 170)],
    "ocean": [(20, 70, 120), (70, 170, 190)], "sea": [(20, 80, 130), (80, 180, 190)],
    "beach": [(240, 210, 160), (50, 150, 190)], "forest": [(30, 70, 46), (150, 180, 110)],
    "autumn": [(180, 80, 30), (90, 40, 24)], "winter": [(210, 228, 240), (50, 80, 120)],
    "night": [(16, 20, 48), (230, 190, 90)], "space": [(10, 12, 30), (120, 90, 200)],
    "desert": [(214, 160, 100), (120, 60, 40)], "retro": [(240, 200, 120), (200, 80, 50)],
    "vintage": [(232, 214, 180), (140, 60, 40)], "cyberpunk": [(20, 10, 40), (255, 50, 170)],
    "spring": [(250, 220, 230), (110, 170, 90)], "summer": [(250, 200, 60), (30, 140, 180)],
    "coffee": [(90, 56, 36), (232, 210, 180)], "jazz": [(24, 24, 40), (220, 160, 50)],
    "festival": [(240, 90, 60), (40, 40, 110)], "minimal": [(240, 238, 232), (30, 30, 34)],
}
DEFAULT_PALETTE = [(28, 44, 74), (232, 120, 72)]

_HINTS = [
    ("background", r"\b(background|backdrop|full[- ]bleed|full[- ]frame|behind everything|whole (?:poster|image|canvas)|fills? the)\b"),
    ("left", r"\bleft\b"), ("right", r"\bright\b"),
    ("top", r"\b(top|upper|above|sky|header)\b"), ("bottom", r"\b(bottom|lower|below|foreground|footer)\b"),
]


CORNER_RE = re.compile(r"\b(top|upper|bottom|lower)[- ](left|right)(?:[- ]hand)?\s+corner\b", re.IGNORECASE)
# A sentence about the user's own mark: "my logo in the top-right corner" places the user's image.
_OWN_MARK_RE = re.compile(r"\b(logo|badge|emblem|seal|stamp|crest|monogram|watermark|wordmark|(?:my|our)\s+"
                          r"(?:image|photo|picture|mark))\b", re.IGNORECASE)
CORNER_SHARE = 0.22  # a corner mark's side, as a share of the short side of the image


def corner_of(text: str) -> str | None:
    """'top-right' for "in the upper right-hand corner", else None."""
    m = CORNER_RE.search(text or "")
    if not m:
        return None
    return ("top" if m.group(1).lower() in ("top", "upper") else "bottom") + "-" + m.group(2).lower()


def placement_hints(program: Program) -> list[str | None]:
    """Where each reference goes, read from its note and the prompt sentences that cite it.

    Corners come back as "corner:top-right": a logo asked for a corner stays a corner mark."""
    sentences = re.split(r"(?<=[.;!?])\s+|\n", program.gen_prompt)
    hints: list[str | None] = []
    own_mark = [s for s in sentences if _OWN_MARK_RE.search(s) and corner_of(s)]
    for i, ref in enumerate(program.reference_images):
        ordinal = ORDINALS[i] if i < len(ORDINALS) else str(i + 1)
        cited = [s for s in sentences if re.search(rf"\b{ordinal}\s+(reference|image|photo|picture)", s, re.I)]
        corner = next((corner_of(t) for t in [ref.note] + cited if corner_of(t)), None)
        if corner is None and own_mark and i == 0:  # the user's mark is the first reference
            corner = corner_of(own_mark[0])
        if corner:
            hints.append(f"corner:{corner}")
            continue
        found = None
        for text in [ref.note] + cited:
            for name, pattern in _HINTS:
                if re.search(pattern, text or "", re.IGNORECASE):
                    found = name
                    break
            if found:
                break
        hints.append(found)
    return hints


# ---------------------------------------------------------------- palette

def prompt_colors(text: str, leave_out: set[str] = frozenset()) -> list[tuple[int, int, int]]:
    """Colour words in order of appearance (but those in ``leave_out``), then mood palettes if no
    colour is left."""
    low = text.lower()
    found: list[tuple[int, tuple]] = []
    for word, rgb in COLOR_WORDS.items():
        if word in leave_out:
            continue
        for m in re.finditer(rf"\b{word}\b", low):
            found.append((m.start(), rgb))
    colors = [rgb for _, rgb in sorted(found)]
    if not colors:
        for word, pal in MOOD_PALETTES.items():
            if re.search(rf"\b{word}\b", low):
                colors += pal
                break
    out: list[tuple[int, int, int]] = []
    for c in colors:
        if c not in out:
            out.append(c)
    return out


def image_colors(img: Image.Image, n: int = 6) -> list[tuple[int, int, int]]:
    """Dominant colours of an image, most common first (median-cut on a thumbnail)."""
    small = img.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    q = small.quantize(colors=n, method=Image.Quantize.MEDIANCUT)
    pal = q.getpalette()[: n * 3]
    counts = sorted(q.getcolors(), reverse=True)
    return [tuple(pal[i * 3: i * 3 + 3]) for _, i in counts]


def _saturation(c) -> float:
    mx, mn = max(c), min(c)
    return 0.0 if mx == 0 else (mx - mn) / mx


def build_palette(program: Program, refs: list[Image.Image], subject_colours: set[str] = frozenset()) -> dict:
    """bg, bg2 (gradient partner), accent, ink (text), ink2 (secondary text). ``subject_colours``
    are drawn on the subjects that carry them ("a red bicycle"), so they do not colour the surface."""
    words = prompt_colors(program.gen_prompt, leave_out=subject_colours)
    ref_cols = image_colors(refs[0]) if refs else []
    cols = words + ref_cols or list(DEFAULT_PALETTE)
    # The surface: the first named colour, else the reference's darkest strong colour.
    if words:
        bg = words[0]
    else:
        bg = min(cols, key=lambda c: luminance(c) - 0.3 * _saturation(c))
        if luminance(bg) > 0.25:  # a photo-derived panel reads best deep
            bg = mix(bg, (10, 10, 14), 0.55)
    # The accent: the most saturated colour that stands apart from the surface.
    others = [c for c in cols if c != bg] or [DEFAULT_PALETTE[1]]
    accent = max(others, key=lambda c: _saturation(c) + 0.25 * min(contrast_ratio(c, bg), 5) / 5)
    if contrast_ratio(accent, bg) < 1.8:
        accent = mix(accent, (255, 255, 255) if luminance(bg) < 0.3 else (0, 0, 0), 0.5)
    dark = luminance(bg) < 0.3
    bg2 = mix(bg, (0, 0, 0) if not dark else mix(bg, accent, 0.35), 0.22)
    ink = readable_on(bg, mix(bg, (255, 255, 255), 0.93) if dark else mix(bg, (0, 0, 0), 0.88))
    ink = _readable_on_both(ink, bg, bg2)
    if len(words) > 1 and min(contrast_ratio(words[1], bg), contrast_ratio(words[1], bg2)) >= 4.5:
        ink = words[1]  # "orange and navy": navy type on orange, as asked
    ink2 = mix(ink, accent, 0.25)
    if min(contrast_ratio(ink2, bg), contrast_ratio(ink2, bg2)) < 4.5:
        ink2 = ink
    return {"bg": bg, "bg2": bg2, "accent": accent, "ink": ink, "ink2": ink2}


def _readable_on_both(ink, a, b):
    if min(contrast_ratio(ink, a), contrast_ratio(ink, b)) >= 4.5:
        return ink
    light, dark = (250, 248, 242), (16, 16, 20)
    return max((light, dark), key=lambda c: min(contrast_ratio(c, a), contrast_ratio(c, b)))


def typefaces(prompt: str) -> dict[str, Style]:
    low = prompt.lower()
    if re.search(r"\b(mono(space)?|typewriter|terminal|pixel|code|hacker)\b", low):
        family = "mono"
    elif re.search(r"\bserif\b", low) and not re.search(r"\bsans[- ]?serif\b", low) or \
            re.search(r"\b(classic|elegant|editorial|vintage|literary|wedding|magazine)\b", low):
        family = "serif"
    else:
        family = "sans"
    return {"title": Style(family, True), "subtitle": Style(family, False), "body": Style("sans", False)}


# ---------------------------------------------------------------- drawing helpers

def vertical_gradient(size, top, bottom) -> Image.Image:
    w, h = size
    col = Image.new("RGB", (1, 256))
    for i in range(256):
        col.putpixel((0, i), mix(top, bottom, i / 255))
    return col.resize((w, h), Image.Resampling.BILINEAR)


def focal_fit(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Cover-crop to ``size`` centred between the image centre and its centre of detail."""
    w, h = max(1, size[0]), max(1, size[1])
    edges = detail_map(img, side=96)
    total = sum(edges.getdata()) or 1
    cx = sum(v * (i % edges.width) for i, v in enumerate(edges.getdata())) / total / edges.width
    cy = sum(v * (i // edges.width) for i, v in enumerate(edges.getdata())) / total / edges.height
    centering = (0.5 * 0.5 + 0.5 * cx, 0.5 * 0.5 + 0.5 * cy)
    return ImageOps.fit(img, (w, h), Image.Resampling.LANCZOS, centering=centering)


def add_grain(img: Image.Image, seed: int, strength: float = 0.05) -> Image.Image:
    """A faint paper grain so flat colour does not look like a placeholder (seeded: deterministic)."""
    import numpy as np

    noise = np.random.default_rng(seed).normal(128, 40, (img.height // 2 + 1, img.width // 2 + 1))
    grain = Image.fromarray(noise.clip(0, 255).astype("uint8"), "L").resize(img.size).convert("RGB")
    return Image.blend(img, grain, strength)


def _calm_band(img: Image.Image, frac: float) -> str:
    """'top' or 'bottom': where text will not cover the subject.

    Bottom unless the top is clearly calmer: portraits put faces high, and a caption band at the
    foot is the poster convention.
    """
    edges = detail_map(img, side=96)
    hb = max(1, int(edges.height * frac))
    top = ImageStat.Stat(edges.crop((0, 0, edges.width, hb))).mean[0]
    bottom = ImageStat.Stat(edges.crop((0, edges.height - hb, edges.width, edges.height))).mean[0]
    return "top" if top < bottom * 0.6 else "bottom"


def _scrim(img: Image.Image, band: str, frac: float, color, opacity: int = 215) -> None:
    """A gradient from clear to ``color`` over the text band, so text over photos stays legible."""
    W, H = img.size
    hb = int(H * frac)
    ramp = Image.new("L", (1, hb))
    solid = int(hb * 0.35)  # the first part of the band fades in, the rest is solid behind text
    for i in range(hb):
        v = opacity if i >= solid else int(opacity * (i / max(1, solid)) ** 1.4)
        ramp.putpixel((0, i), v)
    if band == "top":
        ramp = ramp.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    mask = ramp.resize((W, hb))
    y = H - hb if band == "bottom" else 0
    img.paste(Image.new("RGB", (W, hb), color), (0, y), mask)


def _framed(img: Image.Image, photo: Image.Image, box, border: int, shadow_rgb=(0, 0, 0)) -> None:
    """Paste a photo as a bordered print with a soft drop shadow."""
    x0, y0, x1, y1 = (int(v) for v in box)
    pw, ph = x1 - x0, y1 - y0
    sh = Image.new("L", img.size, 0)
    off = max(3, border)
    ImageDraw.Draw(sh).rectangle([x0 + off, y0 + off, x1 + off, y1 + off], fill=110)
    sh = sh.filter(ImageFilter.GaussianBlur(max(3, border * 2)))
    img.paste(Image.new("RGB", img.size, shadow_rgb), (0, 0), sh)
    ImageDraw.Draw(img).rectangle([x0, y0, x1, y1], fill=(250, 248, 244))
    img.paste(focal_fit(photo, (pw - 2 * border, ph - 2 * border)), (x0 + border, y0 + border))


# ---------------------------------------------------------------- the renderer

class LayoutRenderer(Renderer):
    name = "layout"
    generative = False  # it sets the exact text itself; the typeset stage has nothing to add

    def render(self, program: Program, size: tuple[int, int] | None = None, seed: int = 0,
               progress: Progress | None = None) -> Image.Image:
        program = as_program(program)
        refs = load_references(program)
        W, H = check_size(size) if size else default_size(program, [r.size for r in refs])
        rng = random.Random(f"{seed}|{program.gen_prompt}")
        scene, relations = read_scene(program)
        pal = build_palette(program, refs, subject_colours(scene))
        styles = typefaces(program.gen_prompt)
        texts = program.text_constraints()
        items = assign_roles(texts)
        bound = {it.reference for it in scene if it.reference is not None}
        # References that show a subject are drawn as that subject; the others shape the layout.
        hints = placement_hints(program)
        corners = [i for i in range(len(refs)) if i not in bound and (hints[i] or "").startswith("corner:")]
        free = [i for i in range(len(refs)) if i not in bound and i not in corners]
        text_side = text_placement(program)
        placed: list[dict] = []
        if corners:
            # A corner mark sits in a band of its own, so it covers neither the title nor the picture.
            side = int(min(W, H) * CORNER_SHARE)
            m = int(min(W, H) * 0.06)
            band = side + m + m // 2
            top = any(hints[i].endswith(("top-left", "top-right")) for i in corners)
            inner, kind, drawn = self._compose(W, H - band, [refs[i] for i in free], [hints[i] for i in free],
                                               items, pal, styles, rng, seed, scene, relations, refs, text_side)
            img = add_grain(Image.new("RGB", (W, H), pal["bg"] if top else pal["bg2"]), seed)
            img.paste(inner, (0, band if top else 0))
            if top:
                for d in drawn:
                    d["boxes"] = [[b[0], b[1] + band, b[2], b[3] + band] for b in d["boxes"]]
            used = set()
            for i in corners:
                where = hints[i].split(":", 1)[1]
                where = where if where not in used else where.replace("right", "@").replace("left", "right").replace("@", "left")
                used.add(where)
                mark = ImageOps.contain(refs[i], (side, side), Image.Resampling.LANCZOS)
                x = W - m - mark.width if where.endswith("right") else m
                y = m if where.startswith("top") else H - m - mark.height
                img.paste(mark, (x, y))
                placed.append({"index": i, "placement": where, "asked": hints[i].split(":", 1)[1],
                               "box": [x, y, x + mark.width, y + mark.height]})
        else:
            img, kind, drawn = self._compose(W, H, [refs[i] for i in free], [hints[i] for i in free], items, pal,
                                             styles, rng, seed, scene, relations, refs, text_side)
        report = {"composition": kind, "size": [W, H], "texts": [{"text": t, "typeset": True} for t in texts],
                  "references": placed,
                  "subjects": drawn, "relations": [r.model_dump(include={"subject", "relation", "object"})
                                                   for r in relations],
                  "not_drawn": [{"name": d["name"], "why": d["note"]} for d in drawn if d.get("note")]}
        boxes = [d for d in drawn if d["form"] == "box"]
        if boxes:
            from genevolve.renderers.pictograms import MISSING_FONT_HINT, emoji_font_path

            report["placeholders"] = [d["name"] for d in boxes]
            if emoji_font_path() is None:
                report["warning"] = MISSING_FONT_HINT
        img.info["genevolve_layout"] = report
        if progress:
            progress(1, 1)
        return img

    # The composition is chosen from the references and their hints. Text is fitted first, into
    # the box the composition offers; art and photos then take all the room the text left, so
    # no poster has a dead gap between picture and type.
    def _compose(self, W, H, refs, hints, items, pal, styles, rng, seed, scene=(), relations=(),
                 all_refs=(), text_side=None) -> tuple[Image.Image, str, list[dict]]:
        m = int(min(W, H) * 0.06)  # outer margin
        landscape = W > H * 1.2
        bg_index = next((i for i, h in enumerate(hints) if h == "background"), None)
        img = add_grain(vertical_gradient((W, H), pal["bg"], pal["bg2"]), seed)
        colors = {"title": pal["ink"], "subtitle": pal["ink2"], "body": pal["ink"]}
        max_title = int(min(W, H) * 0.16)
        min_px = max(12, int(min(W, H) * 0.022))
        bar_h = max(4, int(min(W, H) * 0.012))
        bar_space = bar_h * 4  # the accent rule above the title and its breathing room

        def set_text(box, align="left", valign="top", bar=True):
            x0, y0, x1, y1 = box
            if bar and valign == "top":  # otherwise the bar goes above wherever the text ends up
                y0 += bar_space
            lines = fit_block(items, (x0, y0, x1, y1), styles, align=align, valign=valign,
                              max_title_px=max_title, min_px=min_px)
            top = min((ln.y for ln in lines), default=y0)
            if bar and lines and valign != "top" and top - bar_space < box[1]:
                # no room above: refit with the bar's space reserved
                lines = fit_block(items, (x0, box[1] + bar_space, x1, y1), styles, align=align,
                                  valign=valign, max_title_px=max_title, min_px=min_px)
                top = min(ln.y for ln in lines)
            bottom = max((ln.y + ln.height for ln in lines), default=y1)
            return lines, (top - bar_space if bar else top), bottom

        def draw_text(lines, x0, top, bar=True, cols=None, shadow=None):
            if not lines:
                return
            if bar:
                ImageDraw.Draw(img).rectangle([x0, top, x0 + max(24, int(W * 0.08)), top + bar_h], fill=pal["accent"])
            draw_lines(img, lines, cols or colors, shadow=shadow)

        drawn: list[dict] = []
        label_font = None

        def stage(region):
            if scene:
                drawn.extend(draw_scene(img, region, list(scene), list(relations), list(all_refs), pal, label_font))

        if not refs:
            # No photo: the subjects take the room the text leaves. Nothing abstract stands in for
            # content: with no subjects the poster is its type.
            kind = "poster"
            if not scene:
                box = (m, m, W - m, H - m) if landscape else (m, int(H * 0.2), W - m, H - m)
                lines, top, bottom = set_text(box, valign="middle") if items else ([], 0, 0)
                draw_text(lines, m, top)
            elif text_side == "above" and items:  # "a sign that reads … above the croissant"
                lines, top, bottom = set_text((m, m, W - m, int(H * 0.46)), valign="top")
                stage((m, int(bottom + m), W - m, H - m))
                draw_text(lines, m, top)
            elif text_side == "right_of" and items:
                lines, top, bottom = set_text((W // 2 + m // 2, m, W - m, H - m), valign="middle")
                stage((m, m, W // 2, H - m))
                draw_text(lines, W // 2 + m // 2, top)
            elif landscape and text_side != "below":
                lines, top, bottom = set_text((m, m, W // 2 - m // 2, H - m), valign="middle") if items else ([], 0, 0)
                stage((W // 2, m, W - m, H - m) if items else (m, m, W - m, H - m))
                draw_text(lines, m, top)
            else:
                lines, top, bottom = set_text((m, int(H * 0.52), W - m, H - m), valign="bottom") if items else ([], H - m, H)
                stage((m, m, W - m, max(m + 10, top - m)))
                draw_text(lines, m, top)
        elif bg_index is not None:
            kind = "full-bleed"
            photo = refs[bg_index]
            img.paste(focal_fit(photo, (W, H)), (0, 0))
            band = _calm_band(img, 0.35)
            scrim_rgb = mix(image_colors(photo)[0], (6, 6, 10), 0.75)
            ink = readable_on(scrim_rgb, (250, 248, 242))
            cols = {"title": ink, "subtitle": ink, "body": ink}
            frac = min(0.55, 0.3 + 0.07 * max(0, len(items) - 1))
            lines, top, bottom = [], H, H
            if items:
                box = (m, H - int(H * frac), W - m, H - m) if band == "bottom" else (m, m, W - m, int(H * frac))
                lines, top, bottom = set_text(box, align="center", valign=band, bar=False)
                text_h = (H - top + m * 1.6) if band == "bottom" else (bottom + m * 1.6)
                _scrim(img, band, min(1.0, text_h / H * 1.45), scrim_rgb)
            others = [r for i, r in enumerate(refs) if i != bg_index]
            if others:  # a second reference becomes a framed print on the side its hint names
                side = hints[1 - bg_index] if len(hints) > 1 else None
                ph = int(min(H - 2 * m - (H - top if band == "bottom" else bottom), min(W, H) * 0.45))
                pw = int(ph * 0.8)
                x = W - m - pw if side != "left" else m
                y = m if band == "bottom" else H - m - ph
                if ph > 40:
                    _framed(img, others[0], (x, y, x + pw, y + ph), border=max(4, pw // 40))
            if scene:
                stage((m, m, W - m, top - m) if band == "bottom" else (m, bottom + m, W - m, H - m))
            # Over a photo the scrim gives contrast; a soft shadow keeps the letter edges crisp on it.
            draw_text(lines, m, top, bar=False, cols=cols, shadow=(0, 0, 0) if luminance(ink) > 0.5 else None)
        else:
            kind = "split"
            first = hints[0] or ("left" if landscape else "top")
            if landscape or first in ("left", "right"):
                iw = int(W * (0.56 if landscape else 0.5))
                ix = 0 if first != "right" else W - iw
                box = (iw + m, m, W - m, H - m) if ix == 0 else (m, m, W - iw - m, H - m)
                if scene:  # the subjects share the text column, above the text
                    sbox = (box[0], box[1], box[2], box[1] + int((box[3] - box[1]) * 0.5))
                    box = (box[0], sbox[3] + m // 2, box[2], box[3])
                lines, top, bottom = set_text(box, valign="middle") if items else ([], 0, 0)
                self._place_photos(img, refs, hints, (ix, 0, ix + iw, H), pal)
                if scene:
                    stage(sbox)
                draw_text(lines, box[0], top)
            elif first == "bottom":
                lines, top, bottom = set_text((m, m, W - m, int(H * 0.42)), valign="top") if items else ([], 0, 0)
                iy = int(bottom + m) if items else 0
                self._place_photos(img, refs, hints, (0, iy, W, H), pal)
                stage((m, iy + m, W - m, H - m))
                draw_text(lines, m, top)
            else:
                lines, top, bottom = set_text((m, int(H * 0.58), W - m, H - m), valign="bottom") if items else ([], H, H)
                ih = int(top - m) if items else H
                self._place_photos(img, refs, hints, (0, 0, W, ih), pal)
                stage((m, m, W - m, ih - m))
                draw_text(lines, m, top)
        return img, kind, drawn

    def _place_photos(self, img, refs, hints, box, pal) -> None:
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        if len(refs) == 1:
            img.paste(focal_fit(refs[0], (w, h)), (x0, y0))
            return
        # Two photos share the area along its long side, ordered by their hints.
        order = sorted(range(len(refs[:2])), key=lambda i: {"left": 0, "top": 0, "right": 2, "bottom": 2}.get(hints[i] or "", 1))
        gut = max(4, int(min(img.size) * 0.012))
        ImageDraw.Draw(img).rectangle([x0, y0, x1, y1], fill=pal["bg2"])
        if w >= h:
            half = (w - gut) // 2
            cells = [(x0, y0, x0 + half, y1), (x0 + half + gut, y0, x1, y1)]
        else:
            half = (h - gut) // 2
            cells = [(x0, y0, x1, y0 + half), (x0, y0 + half + gut, x1, y1)]
        for cell, i in zip(cells, order):
            cx0, cy0, cx1, cy1 = cell
            img.paste(focal_fit(refs[i], (cx1 - cx0, cy1 - cy0)), (cx0, cy0))
