"""The OCR verifier on a labelled set of rendered texts: precision and recall of "found".

    python benchmarks/verify_labelled.py [--out docs/bench/renderers.md] [--limit N] [--found-tolerance F]

The set is drawn here, deterministically: phrases (Latin, accents, punctuation, digits, CJK,
Korean) set in several fonts (DejaVu Sans Bold, Serif, Mono; Noto CJK when the text needs it),
sizes, one or two lines, on light and dark grounds. For every image the verifier is asked:

- the text that is there (label: present),
- the same text with one letter changed (label: absent: a verifier that passes it is not exact),
- another phrase of the set (label: absent).

A "found" verdict on a present text is a true positive. Precision = TP / (TP + FP), recall =
TP / (TP + FN). Stray-word detection is measured the same way: a quarter of the images carry one
extra word ("SALE", "FREE" ...) that no target asks for; the verifier should list it in
``extra_text``, and list nothing on the clean images.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genevolve.judges.verify import check_lines, ocr_lines  # noqa: E402
from genevolve.renderers.typeset import font_path, needs_wide_font, wide_font_path  # noqa: E402

# (phrase, category). Written for this set; categories are what each one tests.
PHRASES = [
    ("SOUP OF THE DAY", "words"), ("FRESH BREAD DAILY", "words"), ("HARBOR LIGHTS", "words"),
    ("GRAND OPENING", "words"), ("Night Owls Book Club", "words"), ("the last train home", "words"),
    ("Spring Market", "words"), ("OPEN LATE", "words"),
    ("Café Crème", "accents"), ("Crêpes à la carte", "accents"), ("Jalapeño Fiesta", "accents"),
    ("Müller & Söhne", "accents"), ("Señorita Bonita", "accents"),
    ("Open 9:00-17:00!", "punctuation"), ("Tickets: $25", "punctuation"), ("Rock & Roll", "punctuation"),
    ("What's next?", "punctuation"), ("No. 42, Main St.", "punctuation"),
    ("Sale starts 12 June 2026", "digits"), ("Room 1104", "digits"), ("Call 555-0199", "digits"),
    ("春节快乐", "cjk"), ("东京塔", "cjk"), ("欢迎光临", "cjk"), ("서울의 봄", "cjk"),
]
EXTRA_WORDS = ["SALE", "FREE", "Menu", "Today", "NEW"]
FONTS = [("sans", True), ("serif", False), ("mono", False), ("serif", True)]
SIZES = [30, 48, 84]
GROUNDS = [((250, 248, 242), (20, 20, 24)), ((24, 36, 66), (246, 245, 240))]


def one_letter_off(text: str, rng: random.Random) -> str:
    """The text with one letter changed to another of the same script (an absent, near text)."""
    spots = [i for i, ch in enumerate(text) if ch.isalpha()]
    i = rng.choice(spots)
    ch = text[i]
    if ord(ch) > 0x2E80:  # a CJK or hangul character: another common one
        pool = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后"
    else:
        pool = "abcdefghijklmnopqrstuvwxyz" if ch.islower() else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    # Exclude the glyphs the verifier deliberately folds together (l/1/i, o/0): not a change a reader sees.
    choices = [c for c in pool if c.lower() not in {ch.lower(), "l", "i", "o"}]
    return text[:i] + rng.choice(choices) + text[i + 1:]


def draw_case(text: str, font_spec, size: int, two_lines: bool, ground, extra: str | None) -> Image.Image:
    bg, ink = ground
    img = Image.new("RGB", (900, 600), bg)
    d = ImageDraw.Draw(img)
    path = wide_font_path(font_spec[1]) if needs_wide_font(text) else font_path(*font_spec)
    font = ImageFont.truetype(str(path), size)
    words = text.split()
    lines = [text]
    if two_lines and len(words) > 1:
        half = (len(words) + 1) // 2
        lines = [" ".join(words[:half]), " ".join(words[half:])]
    while max(d.textlength(ln, font=font) for ln in lines) > 820 and size > 16:
        size -= 4
        font = ImageFont.truetype(str(path), size)
    y = 200 if extra else 140
    for ln in lines:
        d.text((40, y), ln, fill=ink, font=font)
        y += int(size * 1.3)
    if extra:
        small = ImageFont.truetype(str(font_path("sans", True)), 40)
        d.text((40, 60), extra, fill=ink, font=small)
    return img


def build_set(limit: int | None = None, seed: int = 0):
    rng = random.Random(seed)
    cases = []
    k = 0
    for phrase, category in PHRASES:
        for v in range(4):
            font_spec = FONTS[(k + v) % len(FONTS)]
            size = SIZES[(k + 2 * v) % len(SIZES)]
            two_lines = v % 2 == 1
            ground = GROUNDS[(k + v) % 2]
            extra = EXTRA_WORDS[k % len(EXTRA_WORDS)] if v == 3 else None
            other = rng.choice([p for p, _ in PHRASES if p != phrase])
            cases.append({"text": phrase, "category": category, "font": f"{font_spec[0]}{' bold' if font_spec[1] else ''}",
                          "size": size, "two_lines": two_lines and len(phrase.split()) > 1, "ground": ground,
                          "extra": extra, "absent": [one_letter_off(phrase, rng), other], "font_spec": font_spec})
        k += 1
    return cases[:limit] if limit else cases


def measure(cases) -> dict:
    tp = fp = fn = tn = 0
    near_on_absent = 0
    by_cat = defaultdict(lambda: [0, 0])  # category -> [found, present]
    by_size = defaultdict(lambda: [0, 0])
    by_lines = defaultdict(lambda: [0, 0])
    extra_tp = extra_fn = extra_fp_images = clean_images = 0
    misses, false_passes, missed_extra = [], [], []
    t0 = time.perf_counter()
    for c in cases:
        img = draw_case(c["text"], c["font_spec"], c["size"], c["two_lines"], c["ground"], c["extra"])
        lines = ocr_lines(img)
        present = check_lines(lines, [c["text"]])
        ok = present["constraints"][0]["found"]
        tp += ok
        fn += not ok
        if not ok:
            misses.append((c["text"], c["font"], c["size"], present["ocr_text"]))
        for key, table in ((c["category"], by_cat), (c["size"], by_size), (c["two_lines"], by_lines)):
            table[key][0] += ok
            table[key][1] += 1
        for wrong in c["absent"]:
            r = check_lines(lines, [wrong])["constraints"][0]
            fp += r["found"]
            tn += not r["found"]
            near_on_absent += r["status"] == "near"
            if r["found"]:
                false_passes.append((wrong, c["text"], present["ocr_text"]))
        strays = {w["text"] for w in present["extra_text"]}
        if c["extra"]:
            hit = c["extra"].lower() in strays
            extra_tp += hit
            extra_fn += not hit
            if not hit:
                missed_extra.append((c["extra"], c["text"], present["ocr_text"]))
        else:
            clean_images += 1
            extra_fp_images += bool(strays)
    n = len(cases)
    return {"images": n, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn),
            "near_on_absent": near_on_absent, "by_category": dict(by_cat), "by_size": dict(by_size),
            "by_lines": dict(by_lines), "extra_recall": extra_tp / max(1, extra_tp + extra_fn),
            "extra_cases": extra_tp + extra_fn, "clean_images": clean_images,
            "clean_with_strays": extra_fp_images, "misses": misses, "false_passes": false_passes, "missed_extra": missed_extra,
            "seconds": time.perf_counter() - t0}


def report_md(m: dict) -> str:
    cats = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(m["by_category"].items()))
    sizes = ", ".join(f"{k} px {v[0]}/{v[1]}" for k, v in sorted(m["by_size"].items()))
    lines = ", ".join(f"{'two lines' if k else 'one line'} {v[0]}/{v[1]}" for k, v in sorted(m["by_lines"].items()))
    out = [
        "## OCR verifier on a labelled set of rendered texts",
        "",
        "    python benchmarks/verify_labelled.py --out docs/bench/renderers.md",
        "",
        f"{m['images']} images drawn by the script (25 phrases: plain words, accents, punctuation, digits, "
        "Chinese and Korean; DejaVu Sans Bold / Serif / Serif Bold / Mono, Noto CJK for CJK; 30, 48 and 84 px; one "
        "or two lines; light and dark grounds). Each image is asked for the text it carries (present), "
        "the same text with one letter changed, and another phrase of the set (both absent).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| precision of \"found\" | {m['precision']:.3f} ({m['tp']} TP, {m['fp']} FP) |",
        f"| recall of \"found\" | {m['recall']:.3f} ({m['tp']} of {m['tp'] + m['fn']} present texts) |",
        f"| absent texts rejected | {m['tn']} of {m['tn'] + m['fp']} ({m['near_on_absent']} of them reported as near matches) |",
        f"| stray word listed in extra_text | {m['extra_recall']:.3f} ({m['extra_cases']} images with one extra word) |",
        f"| clean images with any extra_text | {m['clean_with_strays']} of {m['clean_images']} |",
        "",
        f"Recall by category: {cats}. By size: {sizes}. By lines: {lines}.",
        "",
        "The verifier's old edit allowance (5% of the text's length: one slip in a 20-character line) on the "
        "same set, `python benchmarks/verify_labelled.py --found-tolerance 0.05`: precision 0.960 (4 FP: "
        "one-letter variants of the 24-character \"Sale starts 12 June 2026\" passed as found), recall 0.960. "
        "Exact matching loses no present text here, so it is the setting; a text one or two slips away is "
        "reported as a near match.",
        "",
    ]
    if m["misses"]:
        out.append("Present texts not found (text, font, size, what OCR read). The recognition model inside "
                   "rapidocr-onnxruntime's wheel reads Chinese and Latin script; Korean hangul is outside it, so "
                   "Korean text is never found (and reported missing, not passed):")
        out.append("")
        out += [f"- “{t}” ({f}, {s} px): {ocr}" for t, f, s, ocr in m["misses"]]
        out.append("")
    if m["false_passes"]:
        out.append("Absent texts passed as found (asked, drawn, OCR):")
        out.append("")
        out += [f"- “{w}” on an image of “{t}”: {ocr}" for w, t, ocr in m["false_passes"]]
        out.append("")
    if m["missed_extra"]:
        out.append("Extra words not listed (extra word, asked text, OCR):")
        out.append("")
        out += [f"- “{w}” beside “{t}”: {ocr}" for w, t, ocr in m["missed_extra"]]
        out.append("")
    out.append(f"Machine: {platform.machine()}, {platform.python_version()}; {m['seconds']:.0f} s for the whole set.")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None, help="a markdown file whose section this replaces/appends")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--found-tolerance", type=float, default=None,
                    help="measure another edit allowance (a fraction of the text's length; 0.05 was the old one)")
    args = ap.parse_args()
    if args.found_tolerance is not None:
        from genevolve.judges import verify

        verify.FOUND_TOLERANCE = args.found_tolerance
        args.out = None  # a what-if: printed, never written over the page
    m = measure(build_set(args.limit))
    text = report_md(m)
    print(text)
    if args.out:
        head = "## OCR verifier on a labelled set of rendered texts"
        old = args.out.read_text() if args.out.exists() else ""
        if head in old:
            before, rest = old.split(head, 1)
            after = rest.split("\n## ", 1)
            old = before + (("## " + after[1]) if len(after) > 1 else "")
            old = old.rstrip() + "\n\n"
        args.out.write_text((old.rstrip() + "\n\n" if old.strip() else "") + text)


if __name__ == "__main__":
    main()
