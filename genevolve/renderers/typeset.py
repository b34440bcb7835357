"""Setting type: fonts, a text-block fitter that never overflows, and the typeset stage.

The layout renderer sets its text with :func:`fit_block`; the typeset stage (``--typeset``) uses
the same fitter to put a program's exact text constraints onto a generative render, in the band
of the image with the least detail, on a panel that contrasts with the text.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageStat

from genevolve.renderers.base import RenderError

REPO_ROOT = Path(__file__).resolve().parents[2]

_FONT_FILES = {
    ("sans", False): "DejaVuSans.ttf", ("sans", True): "DejaVuSans-Bold.ttf",
    ("serif", False): "DejaVuSerif.ttf", ("serif", True): "DejaVuSerif-Bold.ttf",
    ("mono", False): "DejaVuSansMono.ttf", ("mono", True): "DejaVuSansMono-Bold.ttf",
}


def _font_dirs() -> list[Path]:
    """Where DejaVu lives on a fresh machine: our assets, matplotlib's wheel, Debian's package."""
    dirs = []
    if os.environ.get("GENEVOLVE_FONT_DIR"):
        dirs.append(Path(os.environ["GENEVOLVE_FONT_DIR"]))
    dirs.append(REPO_ROOT / "assets" / "fonts")
    # matplotlib is a requirement and ships DejaVu; find its data folder without importing it.
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.origin:
        dirs.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    dirs += [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"),
             Path("/usr/local/share/fonts")]
    return [d for d in dirs if d.is_dir()]


@lru_cache(maxsize=None)
def font_path(family: str = "sans", bold: bool = False) -> Path | None:
    name = _FONT_FILES.get((family, bold)) or _FONT_FILES[("sans", bold)]
    for d in _font_dirs():
        if (d / name).is_file():
            return d / name
    return None


# Han, kana, hangul and their punctuation: DejaVu has none of these glyphs.
_WIDE_SCRIPT_RE = re.compile(r"[\u2e80-\u2fdf\u3000-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
                             r"\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_WIDE_FONT_PATTERNS = ("NotoSansCJK*", "NotoSerifCJK*", "NotoSans*CJK*", "SourceHanSans*", "wqy-*",
                       "DroidSansFallback*")


def needs_wide_font(text: str) -> bool:
    """Whether ``text`` has CJK characters, which DejaVu cannot draw."""
    return bool(_WIDE_SCRIPT_RE.search(text or ""))


@lru_cache(maxsize=2)
def wide_font_path(bold: bool = False) -> Path | None:
    """A font with CJK glyphs (Debian's fonts-noto-cjk or fonts-wqy-microhei), if one is installed.

    The weight asked for is preferred; any weight beats none.
    """
    dirs = _font_dirs() + [d for d in (Path("/usr/share/fonts"),) if d.is_dir()]
    for pattern in _WIDE_FONT_PATTERNS:
        for d in dirs:
            paths = [p for p in sorted(d.rglob(pattern)) if p.suffix.lower() in (".ttc", ".otf", ".ttf")]
            if paths:
                weight = "Bold" if bold else "Regular"
                return next((p for p in paths if weight in p.name), paths[0])
    return None


@lru_cache(maxsize=512)
def get_font(family: str = "sans", bold: bool = False, size: int = 32, wide: bool = False) -> ImageFont.FreeTypeFont:
    """A TrueType font; Pillow's bundled font when DejaVu is nowhere (it still covers Latin).

    ``wide`` asks for a font that also covers CJK text, used when one is installed.
    """
    size = max(6, int(size))
    path = (wide_font_path(bold) if wide else None) or font_path(family, bold)
    if path is not None:
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def missing_glyph_warning(texts: list[str]) -> str | None:
    """A one-line warning when some text needs glyphs no installed font has."""
    wide = [t for t in texts if needs_wide_font(t)]
    if not wide or wide_font_path() is not None:
        return None
    return (f"no CJK font is installed, so {', '.join(repr(t) for t in wide[:3])} cannot be drawn legibly; "
            "install one (Debian: apt-get install fonts-noto-cjk) or set GENEVOLVE_FONT_DIR")


# ---------------------------------------------------------------- hierarchy

@dataclass(frozen=True)
class Style:
    family: str = "sans"
    bold: bool = False
    scale: float = 1.0  # relative to the title size
    tracking: float = 0.0  # unused by PIL directly; kept for future letter-spacing


ROLE_SCALE = {"title": 1.0, "subtitle": 0.5, "body": 0.4}


def assign_roles(texts: list[str]) -> list[tuple[str, str]]:
    """Order texts for a poster: a title, then a subtitle, then body lines.

    The title is the first short string (what requests usually quote first: "PARIS"); a long
    first string (a slogan) still reads best under a short one. Everything else keeps its order.
    """
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        return []
    title_i = next((i for i, t in enumerate(texts) if len(t) <= 32), 0)
    rest = [t for i, t in enumerate(texts) if i != title_i]
    out = [(texts[title_i], "title")]
    for j, t in enumerate(rest):
        out.append((t, "subtitle" if j == 0 else "body"))
    return out


# ---------------------------------------------------------------- fitting

@dataclass
class SetLine:
    text: str
    font: ImageFont.FreeTypeFont
    x: int
    y: int  # top of the ascender
    width: int
    height: int
    role: str


def _text_width(font, text: str) -> float:
    return font.getlength(text)


def _line_height(font) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def _split_long_word(font, word: str, width: float) -> list[str]:
    """Break a word that is wider than the box into pieces that fit (last resort)."""
    pieces, cur = [], ""
    for ch in word:
        if cur and _text_width(font, cur + ch) > width:
            pieces.append(cur)
            cur = ch
        else:
            cur += ch
    if cur:
        pieces.append(cur)
    return pieces


def _greedy_wrap(font, words: list[str], width: float) -> list[str]:
    lines, cur = [], ""
    for w in words:
        trial = f"{cur} {w}" if cur else w
        if not cur or _text_width(font, trial) <= width:
            cur = trial
        else:
            lines.append(cur)
            cur = w
    if cur:
        lines.append(cur)
    return lines


def wrap_text(font, text: str, width: float, allow_break: bool = False) -> list[str] | None:
    """Balanced word wrap: the fewest lines, then the most even line lengths.

    Returns None when a word does not fit and ``allow_break`` is False.
    """
    words = text.split()
    if not words:
        return []
    widest = max(_text_width(font, w) for w in words)
    if widest > width:
        if not allow_break:
            return None
        split: list[str] = []
        for w in words:
            split += _split_long_word(font, w, width) if _text_width(font, w) > width else [w]
        words = split
        widest = max(_text_width(font, w) for w in words)
    lines = _greedy_wrap(font, words, width)
    if len(lines) > 1:  # shrink the measure while the line count holds: even, poster-like rag
        lo, hi = widest, width
        for _ in range(8):
            mid = (lo + hi) / 2
            if len(_greedy_wrap(font, words, mid)) == len(lines):
                hi = mid
            else:
                lo = mid
        lines = _greedy_wrap(font, words, hi)
    return lines


def fit_block(items: list[tuple[str, str]], box: tuple[int, int, int, int], styles: dict[str, Style],
              align: str = "left", valign: str = "top", max_title_px: int | None = None,
              min_px: int = 12, spacing: float = 1.08, gap: float = 0.45) -> list[SetLine]:
    """Lay out (text, role) items inside ``box`` = (x0, y0, x1, y1) at the largest size that fits.

    Sizes keep the role ratios; each item wraps on words; nothing leaves the box. If even the
    smallest size does not fit, words are broken and the smallest size is used (still inside).
    """
    x0, y0, x1, y1 = box
    bw, bh = max(1, x1 - x0), max(1, y1 - y0)
    if not items:
        return []
    hi = int(max_title_px or bh * 0.5)
    lo = max(min_px, 6)

    def attempt(title_px: int, allow_break: bool = False):
        placed, y = [], 0.0
        for k, (text, role) in enumerate(items):
            st = styles.get(role) or styles.get("body") or Style()
            px = max(min_px, int(round(title_px * st.scale * ROLE_SCALE.get(role, 0.34))))
            font = get_font(st.family, st.bold, px, wide=needs_wide_font(text))
            lines = wrap_text(font, text, bw, allow_break=allow_break)
            if lines is None:
                return None
            lh = _line_height(font)
            if k:
                y += gap * px
            for line in lines:
                placed.append((line, font, y, lh, role))
                y += lh * spacing
            y -= lh * (spacing - 1)  # no trailing leading after the last line
        if y > bh:
            return None
        return placed, y

    best = None
    a, b = lo, max(lo, hi)
    while a <= b:  # the largest title size that fits
        mid = (a + b) // 2
        res = attempt(mid)
        if res is not None:
            best, a = res, mid + 1
        else:
            b = mid - 1
    if best is None:
        best = attempt(lo, allow_break=True)
        if best is None:  # too much text for the box even at the minimum: shrink below it
            size = lo
            while best is None and size > 6:
                size -= 1
                best = attempt(size, allow_break=True) if size >= 6 else None
                min_px = min(min_px, size)
            if best is None:
                raise RenderError(f"the text ({sum(len(t) for t, _ in items)} characters) does not fit a "
                                  f"{bw}x{bh} px text area legibly; render at a larger size (--size) or shorten the text")
    placed, total_h = best
    off = {"top": 0, "middle": (bh - total_h) / 2, "bottom": bh - total_h}[valign]
    out = []
    for line, font, y, lh, role in placed:
        w = int(round(_text_width(font, line)))
        if align == "center":
            x = x0 + (bw - w) // 2
        elif align == "right":
            x = x1 - w
        else:
            x = x0
        out.append(SetLine(line, font, int(x), int(round(y0 + off + y)), w, lh, role))
    return out


def draw_lines(img: Image.Image, lines: list[SetLine], colors: dict[str, tuple], shadow: tuple | None = None) -> None:
    """Draw set lines; an optional soft shadow keeps them legible over busy pixels."""
    if shadow is not None and lines:
        layer = Image.new("L", img.size, 0)
        d = ImageDraw.Draw(layer)
        for ln in lines:
            d.text((ln.x, ln.y), ln.text, font=ln.font, fill=255, anchor="la")
        radius = max(2, min(ln.font.size for ln in lines) // 8)
        layer = layer.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(radius))
        layer = layer.point(lambda v: int(v * 0.75))
        img.paste(Image.new("RGB", img.size, shadow[:3]), (0, 0), layer)
    d = ImageDraw.Draw(img)
    for ln in lines:
        d.text((ln.x, ln.y), ln.text, font=ln.font, fill=colors.get(ln.role, colors.get("body")), anchor="la")


# ---------------------------------------------------------------- colour helpers

def luminance(rgb) -> float:
    def ch(c):
        c = c / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = rgb[:3]
    return 0.2126 * ch(r) + 0.7152 * ch(g) + 0.0722 * ch(b)


def contrast_ratio(a, b) -> float:
    la, lb = luminance(a), luminance(b)
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)


def readable_on(bg, prefer=None) -> tuple[int, int, int]:
    """``prefer`` if it reads on ``bg`` (WCAG ratio >= 4.5), else near-white or near-black."""
    if prefer is not None and contrast_ratio(prefer, bg) >= 4.5:
        return tuple(prefer[:3])
    light, dark = (250, 248, 242), (18, 18, 22)
    return light if contrast_ratio(light, bg) >= contrast_ratio(dark, bg) else dark


def mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(a[i] * (1 - t) + b[i] * t)) for i in range(3))


# ---------------------------------------------------------------- the typeset stage

def detail_map(img: Image.Image, side: int = 160) -> Image.Image:
    """Edge energy on a thumbnail: where the subject and texture are (a cheap saliency proxy)."""
    small = img.convert("L").resize((side, max(1, int(side * img.height / img.width))), Image.Resampling.BILINEAR)
    return small.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.BoxBlur(2))


def typeset(image: Image.Image, texts: list[str]) -> tuple[Image.Image, dict]:
    """Set ``texts`` exactly onto ``image`` in the calmest band, on a contrasting panel."""
    items = assign_roles(texts)
    img = image.convert("RGB").copy()
    if not items:
        return img, {"region": None}
    W, H = img.size
    n_chars = sum(len(t) for t, _ in items)
    frac = min(0.42, 0.2 + 0.05 * (len(items) - 1) + 0.0015 * n_chars)
    # Small images: the band must still hold one line per item at the minimum legible size
    # (12 px) plus the feathered edge and padding, even if it covers more of the picture.
    min_band = (12 * 1.3 * len(items) + 0.1 * min(W, H)) / (1 - 0.22)
    frac = min(0.75, max(frac, min_band / H))
    bands = {"top": (0, 0, W, int(H * frac)), "bottom": (0, H - int(H * frac), W, H)}
    if W > H * 1.25:  # wide images also have calm sides
        side = int(W * min(0.45, frac + 0.1))
        bands["left"] = (0, 0, side, H)
        bands["right"] = (W - side, 0, W, H)
    edges = detail_map(img)
    sx, sy = edges.width / W, edges.height / H
    scores = {}
    for name, (a, b, c, d) in bands.items():
        crop = edges.crop((int(a * sx), int(b * sy), max(int(a * sx) + 1, int(c * sx)), max(int(b * sy) + 1, int(d * sy))))
        scores[name] = ImageStat.Stat(crop).mean[0]
    # Edge energy misses smooth subjects (a face is calmer than a sweater), and heads sit high in
    # most pictures: the top band must be clearly calmer to win; the bottom is the caption convention.
    bias = {"top": 1.5, "bottom": 1.0, "left": 1.15, "right": 1.15}
    region = min(scores, key=lambda k: (scores[k] * bias[k], list(bands).index(k)))
    x0, y0, x1, y1 = bands[region]
    mean = tuple(int(v) for v in ImageStat.Stat(img.crop((x0, y0, x1, y1))).mean[:3])
    dark_panel = luminance(mean) < 0.35
    panel_rgb = mix(mean, (8, 8, 12) if dark_panel else (250, 248, 242), 0.72)
    text_rgb = readable_on(panel_rgb)
    # A feathered panel: transparent at the edge facing the subject, opaque where the text sits.
    alpha = Image.new("L", (x1 - x0, y1 - y0), 0)
    feather = 0.22
    ad = ImageDraw.Draw(alpha)
    span = (y1 - y0) if region in ("top", "bottom") else (x1 - x0)
    solid_from = int(span * feather)
    for i in range(span):
        # distance from the inner edge (the one facing the image centre)
        inner = span - 1 - i if region in ("top", "left") else i
        v = 235 if inner >= solid_from else int(235 * inner / max(1, solid_from))
        if region in ("top", "bottom"):
            ad.line([(0, i), (x1 - x0, i)], fill=v)
        else:
            ad.line([(i, 0), (i, y1 - y0)], fill=v)
    img.paste(Image.new("RGB", alpha.size, panel_rgb), (x0, y0), alpha)
    pad = int(min(W, H) * 0.05)
    if region == "top":
        box = (x0 + pad, y0 + pad, x1 - pad, y1 - solid_from - pad // 3)
    elif region == "bottom":
        box = (x0 + pad, y0 + solid_from + pad // 3, x1 - pad, y1 - pad)
    elif region == "left":
        box = (x0 + pad, y0 + pad, x1 - solid_from - pad // 3, y1 - pad)
    else:
        box = (x0 + solid_from + pad // 3, y0 + pad, x1 - pad, y1 - pad)
    styles = {"title": Style("sans", True), "subtitle": Style("sans", False), "body": Style("sans", False)}
    lines = fit_block(items, box, styles, align="center", valign="middle",
                      max_title_px=int(min(W, H) * 0.14), min_px=max(12, int(min(W, H) * 0.022)))
    draw_lines(img, lines, {"title": text_rgb, "subtitle": text_rgb, "body": text_rgb})
    return img, {"region": region, "detail": {k: round(v, 2) for k, v in scores.items()},
                 "panel": list(panel_rgb), "text_color": list(text_rgb)}
