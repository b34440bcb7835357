"""Pictograms for the layout renderer: a subject's name -> a colour emoji from an installed font.

The font is Debian's ``fonts-noto-color-emoji`` (NotoColorEmoji.ttf, bitmap glyphs at one
size, 109 px); any other colour emoji font can be named with GENEVOLVE_EMOJI_FONT. Without one,
:func:`find_pictogram` still says which character would fit and :func:`draw_pictogram` returns
None, so the renderer falls back to a placeholder panel and says why.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from genevolve.subjects import ALIASES, pictograph_names, singular

EMOJI_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
    "/System/Library/Fonts/Apple Color Emoji.ttc",
)
# CBDT bitmap fonts only open at their strike size; the glyph is scaled afterwards.
_EMOJI_STRIKE_PX = 109
MISSING_FONT_HINT = ("no colour emoji font is installed, so subjects are drawn as unlettered placeholder panels; install one "
                     "(Debian: apt-get install fonts-noto-color-emoji) or set GENEVOLVE_EMOJI_FONT")


@lru_cache(maxsize=1)
def emoji_font_path() -> Path | None:
    env = os.environ.get("GENEVOLVE_EMOJI_FONT")
    for cand in ([env] if env else []) + list(EMOJI_FONT_CANDIDATES):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


@lru_cache(maxsize=1)
def _font():
    path = emoji_font_path()
    if path is None:
        return None
    try:
        return ImageFont.truetype(str(path), _EMOJI_STRIKE_PX)
    except OSError:
        return None


@lru_cache(maxsize=1)
def _covered() -> frozenset[int] | None:
    """Code points the installed emoji font has a glyph for (None when it cannot be read)."""
    path = emoji_font_path()
    if path is None:
        return None
    try:
        from fontTools.ttLib import TTFont  # lazy: only when pictograms are drawn

        with TTFont(str(path), lazy=True, fontNumber=0) as font:
            return frozenset(font.getBestCmap())
    except Exception:  # noqa: BLE001 - an unreadable cmap means: trust the font, try the glyph
        return None


# Words that describe a thing without changing what it is: "three identical white teapots" is
# still a teapot; "Sydney Opera House" is not a house, so a name keeps its own words.
ATTRIBUTE_WORDS = {
    "red", "blue", "green", "yellow", "orange", "purple", "pink", "black", "white", "grey", "gray", "brown",
    "golden", "gold", "silver", "teal", "cyan", "magenta", "violet", "turquoise", "beige", "navy", "dark",
    "light", "pale", "bright", "big", "small", "tiny", "large", "huge", "little", "tall", "short", "old",
    "young", "new", "identical", "wooden", "glass", "metal", "ceramic", "plastic", "paper", "stone", "ripe",
    "fresh", "shiny", "fluffy", "cute", "happy", "sleeping", "striped", "spotted", "round", "vintage", "retro",
}


def find_pictogram(name: str) -> tuple[str, str] | None:
    """(character, its Unicode name) for a subject name, or None when no pictograph fits.

    Tries the whole name ("palm tree"), then everyday synonyms ("car" -> AUTOMOBILE), then the
    head noun when the other words only describe it ("three white teapots"). A name whose other
    words are part of it ("Sydney Opera House", "ice cube") never falls back to its head noun:
    a house pictogram for an opera house would show the wrong thing.
    """
    import unicodedata

    names = pictograph_names()
    words = [w for w in name.lower().replace("-", " ").split() if w]
    if not words:
        return None
    head = singular(words[-1])
    tries = [" ".join(words), " ".join(words[:-1] + [head])]
    if all(w in ATTRIBUTE_WORDS for w in words[:-1]):
        tries.append(head)
    for t in tries:
        if t in ALIASES:
            alias = ALIASES[t]
            if alias is None:
                return None
            try:
                char = unicodedata.lookup(alias)
            except KeyError:
                char = None
            if char and _has_glyph(char):
                return char, alias
        if t in names and _has_glyph(names[t]):
            return names[t], t.upper()
    return None


def _has_glyph(char: str) -> bool:
    covered = _covered()
    return covered is None or ord(char) in covered


def draw_pictogram(char: str, side: int) -> Image.Image | None:
    """The pictogram as an RGBA image ``side`` px square (transparent around it), or None without a font."""
    font = _font()
    if font is None or side < 4:
        return None
    tile = _glyph(char)
    if tile is None:
        return None
    k = side / max(tile.size)  # the strike is ~136 px: large tiles scale it up, small ones down
    out = tile.resize((max(1, round(tile.width * k)), max(1, round(tile.height * k))), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.paste(out, ((side - out.width) // 2, (side - out.height) // 2), out)
    return canvas


def tinted(pic: Image.Image, rgb: tuple[int, int, int]) -> Image.Image:
    """The pictogram in one colour, its shading kept: an emoji bicycle is blue whatever the request
    said, and a comp of "a red bicycle" must show a red one."""
    from PIL import ImageOps

    shade = pic.convert("L")
    dark = tuple(round(c * 0.3) for c in rgb)
    light = tuple(round(c + (255 - c) * 0.6) for c in rgb)
    out = ImageOps.colorize(shade, black=dark, white=light, mid=rgb).convert("RGBA")
    out.putalpha(pic.getchannel("A"))
    return out


@lru_cache(maxsize=256)
def _glyph(char: str) -> Image.Image | None:
    font = _font()
    size = _EMOJI_STRIKE_PX * 2
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    try:
        ImageDraw.Draw(img).text((size // 2, size // 2), char, font=font, embedded_color=True, anchor="mm")
    except (OSError, ValueError):
        return None
    box = img.getbbox()
    return img.crop(box) if box else None
