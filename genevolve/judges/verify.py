"""The local verifier: does the image carry the program's exact text, and only that text?

OCR (rapidocr-onnxruntime, models inside the wheel, no network) reads every line; each text
constraint is then looked for in the OCR text after normalising case, accents, spacing and
punctuation (word gaps are ignored: OCR both drops and adds them). A long constraint may be
wrapped over several lines, so the lines are also joined in reading order and the constraint is
matched as a substring of the whole. Each constraint reports its closest match, the edit distance
to it and a status: ``found``, ``near`` (one or two slips away: reported, not counted) or
``missing``.

Words on the image that no constraint asked for are reported as ``extra_text`` (text inside a
reference photo the renderer placed is the user's, not stray), and each one lowers the score:
text_score = found / (asked + extra words).
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from pathlib import Path

from PIL import Image

# OCR works on a copy no larger than this on its long side: poster text is large, and detection
# time grows with the pixel count (1024 -> 640 cuts it by more than half; all 20 layout test
# posters still read exactly). The short side is kept at OCR_MIN_SHORT_SIDE or more so the small
# print of a 16:9 banner stays readable.
OCR_MAX_SIDE = 640
OCR_MIN_SHORT_SIDE = 360
# A constraint counts as found when its edit distance to the closest OCR substring is at most
# this fraction of its length (rounded down). It is 0: the program asks for the text letter for
# letter, and on the labelled set (benchmarks/verify_labelled.py) a 5% allowance passed four
# one-letter misspellings of a 24-character line while finding no present text that 0 missed.
# A text one or two slips away is still reported, as a near match.
FOUND_TOLERANCE = 0.0

# Not found, but this similar: reported as a near match ("SOUP OF THE DAI"), still not counted.
NEAR_SIMILARITY = 0.75
# OCR lines read with less confidence than this are noise (texture, a photo's edges), not words.
EXTRA_MIN_SCORE = 0.6

# The most pixels `verify` decodes. A 12000x12000 PNG (a decompression bomb: a few hundred
# KB on disk) needs ~1.8 GB to decode; 40 MP covers an 8K frame (33 MP) with room to spare.
# JPEGs over the budget are decoded at a reduced scale instead (PIL's draft mode).
MAX_VERIFY_PIXELS = 40_000_000


class ImageInputError(ValueError):
    """The file cannot be checked: not an image, truncated, or too many pixels."""


def open_image_checked(path: Path, max_pixels: int = MAX_VERIFY_PIXELS) -> Image.Image:
    """Decode ``path`` as RGB within a pixel budget, or raise ImageInputError saying what to do."""
    import warnings

    from PIL import UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # the budget below is the check; PIL's warning is noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > max_pixels and im.format == "JPEG":
                im.draft("RGB", (w // 8, h // 8))  # decode at 1/8 scale: 64x fewer pixels
            if im.size[0] * im.size[1] > max_pixels:
                raise ImageInputError(
                    f"{path} is {w}x{h} ({w * h / 1e6:.0f} MP), over the {max_pixels / 1e6:.0f} MP budget; "
                    "downscale it first (text is checked on a copy of at most 640 px anyway)")
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise ImageInputError(f"{path} is not an image PIL can read; give a PNG, JPEG or WebP file") from None
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{path}: {exc}; downscale it first") from None
    except OSError as exc:  # truncated or corrupt data shows up when the pixels are decoded
        raise ImageInputError(f"{path} is truncated or corrupt ({exc}); export the image again") from None


_ENGINE = None
_ENGINE_LOCK = threading.Lock()


def ocr_engine():
    """The OCR engine, built once per process (construction loads three ONNX models)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:  # pragma: no cover - it is in requirements.txt
                raise RuntimeError("OCR needs rapidocr-onnxruntime: pip install rapidocr-onnxruntime") from exc
            # Detection runs at exactly the size ocr_lines hands over: rapidocr's default would
            # upscale anything whose short side is under 736 px (a 640x360 banner to 1308x736).
            _ENGINE = RapidOCR(det_limit_type="min", det_limit_side_len=32)
        return _ENGINE


def normalise(text: str) -> str:
    """Lowercase, strip accents, punctuation to spaces, single spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.lower()
    text = re.sub(r"[^\w]+|_", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def compact(text: str) -> str:
    """Normalised with no spaces at all: OCR often drops or adds the gap between words."""
    return normalise(text).replace(" ", "")


# Glyphs that OCR confuses on clean type ("11" read as "1l", "O" as "0"): matching treats each group
# as one character, since on a poster a reader cannot tell them apart either.
_CONFUSABLE = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l"})


def canonical(text: str) -> str:
    """``compact`` text with confusable glyphs folded (same length, so positions carry over)."""
    return text.translate(_CONFUSABLE)


def substring_distance(pattern: str, text: str) -> tuple[int, int, int]:
    """The least edit distance between ``pattern`` and any substring of ``text`` (Sellers).

    Returns (distance, start, end) of the best substring in ``text``.
    """
    m = len(pattern)
    if m == 0:
        return 0, 0, 0
    if not text:
        return m, 0, 0
    prev = list(range(m + 1))  # column for text position 0: matching against the empty substring
    prev_start = [0] * (m + 1)
    best = (prev[m], 0, 0)
    for j, tc in enumerate(text, start=1):
        cur = [0] * (m + 1)
        cur_start = [j] * (m + 1)  # a match may begin at any text position for free
        for i in range(1, m + 1):
            cost = 0 if pattern[i - 1] == tc else 1
            options = (
                (prev[i - 1] + cost, prev_start[i - 1]),  # substitute / match
                (prev[i] + 1, prev_start[i]),  # text char extra
                (cur[i - 1] + 1, cur_start[i - 1]),  # pattern char missing
            )
            cur[i], cur_start[i] = min(options)
        if cur[m] < best[0]:
            best = (cur[m], cur_start[m], j)
        prev, prev_start = cur, cur_start
    return best


def ocr_lines(image: Image.Image) -> list[dict]:
    """OCR lines in reading order: [{text, score, box}] (box in original image pixels)."""
    import numpy as np

    img = image.convert("RGB")
    scale = 1.0
    if max(img.size) > OCR_MAX_SIDE:
        scale = max(OCR_MAX_SIDE / max(img.size), min(1.0, OCR_MIN_SHORT_SIDE / min(img.size)))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    result, _ = ocr_engine()(np.asarray(img), use_cls=False)
    lines = []
    for box, text, score in result or []:
        xs, ys = [p[0] / scale for p in box], [p[1] / scale for p in box]
        lines.append({"text": text, "score": round(float(score), 3),
                      "box": [round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys))]})
    # Reading order: rows top to bottom (a row is lines whose centres are within half a line
    # height), left to right inside a row.
    rows = _rows(lines)
    rows = [_merge_touching(row, img, scale) for row in rows]
    return [ln for row in rows for ln in row]


def _rows(lines: list[dict]) -> list[list[dict]]:
    lines = sorted(lines, key=lambda ln: (ln["box"][1] + ln["box"][3]) / 2)
    rows: list[list[dict]] = []
    for ln in lines:
        cy = (ln["box"][1] + ln["box"][3]) / 2
        h = ln["box"][3] - ln["box"][1]
        if rows:
            last = rows[-1][-1]
            if abs(cy - (last["box"][1] + last["box"][3]) / 2) < 0.5 * max(h, last["box"][3] - last["box"][1]):
                rows[-1].append(ln)
                continue
        rows.append([ln])
    return [sorted(row, key=lambda r: r["box"][0]) for row in rows]


def _merge_touching(row: list[dict], img: Image.Image, scale: float) -> list[dict]:
    """Detection sometimes cuts one line of type into overlapping boxes ("THE" + "EDAY" for
    "THE DAY": the E is read twice). Boxes in a row that overlap or nearly touch are read again
    as one crop, so the words come back once each, with their gap."""
    import numpy as np

    out: list[dict] = []
    for ln in row:
        if out:
            prev = out[-1]
            h = max(prev["box"][3] - prev["box"][1], ln["box"][3] - ln["box"][1])
            if ln["box"][0] - prev["box"][2] < 0.2 * h:
                box = [min(prev["box"][0], ln["box"][0]), min(prev["box"][1], ln["box"][1]),
                       max(prev["box"][2], ln["box"][2]), max(prev["box"][3], ln["box"][3])]
                crop = img.crop(tuple(round(v * scale) for v in box))
                rec, _ = ocr_engine()(np.asarray(crop), use_det=False, use_cls=False, use_rec=True)
                if rec and rec[0][0].strip():
                    out[-1] = {"text": rec[0][0], "score": round(float(rec[0][1]), 3), "box": box}
                    continue
        out.append(dict(ln))
    return out


def column_texts(lines: list[dict]) -> list[str]:
    """The OCR lines grouped into columns (lines whose x-ranges overlap), each joined in reading
    order: a title wrapped over three lines beside a picture's label reads as one string again."""
    groups: list[list[int]] = []
    for i, ln in enumerate(lines):
        x0, _, x1, _ = ln["box"]
        home = None
        for g in groups:
            for j in g:
                a0, _, a1, _ = lines[j]["box"]
                overlap = min(x1, a1) - max(x0, a0)
                if overlap > 0.3 * min(x1 - x0, a1 - a0):
                    home = g
                    break
            if home is not None:
                break
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    return ["".join(compact(lines[j]["text"]) for j in g) for g in groups if len(g) > 1]


def match_constraint(target: str, line_texts: list[str], lines: list[dict] | None = None) -> dict:
    """Find one constraint in the OCR lines; report the closest match.

    ``lines`` (with boxes) adds column-wise joins to the candidates, so text beside other text
    (a caption next to the title) does not break a wrapped title apart.
    """
    want = compact(target)
    compacted = [compact(t) for t in line_texts]
    joined = "".join(compacted)
    # Match against the joined text (covers a constraint wrapped over lines) and against each line
    # (keeps best_match readable when it sits in one line); the smaller distance wins.
    distance, start, end = substring_distance(canonical(want), canonical(joined))
    best = joined[start:end]
    for c in compacted + (column_texts(lines) if lines else []):
        d, s, e = substring_distance(canonical(want), canonical(c))
        if d < distance:
            distance, best = d, c[s:e]
    if distance == 0:
        best = _readable_span(target, line_texts) or best
    allowed = int(len(want) * FOUND_TOLERANCE)
    similarity = max(0.0, 1.0 - distance / max(1, len(want)))
    found = bool(want) and distance <= allowed
    status = "found" if found else "near" if want and similarity >= NEAR_SIMILARITY else "missing"
    return {"text": target, "found": found, "status": status, "best_match": best,
            "edit_distance": int(distance), "similarity": round(similarity, 4)}


def holding_lines(target: str, lines: list[dict]) -> list[int]:
    """Indices of the OCR lines that carry (a piece of) ``target``: where the text sits."""
    want = canonical(compact(target))
    out = []
    for i, ln in enumerate(lines):
        got = canonical(compact(ln["text"]))
        if len(got) < 2 and len(want) >= 2:
            continue
        d, _, _ = substring_distance(got, want)  # the line lies inside the target, up to a slip
        if d <= len(got) // 8:
            out.append(i)
    return out


def union_box(boxes: list[list[int]]) -> list[int] | None:
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def _inside_any(box, regions) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return any(r[0] <= cx <= r[2] and r[1] <= cy <= r[3] for r in regions)


def extra_words(lines: list[dict], targets: list[str], ignore: list[list[int]] = ()) -> list[dict]:
    """Words on the image that no target holds: [{text, box}] (one entry per stray word).

    A word counts as asked when it lies inside some target after normalising (so OCR joining
    "SOUPOF" is still asked text) or is one slip from a piece of it. Lines inside ``ignore``
    (reference photos the renderer placed: a user's logo keeps its own lettering) and lines read
    with low confidence are skipped.
    """
    wanted = [canonical(compact(t)) for t in targets]
    out = []
    for ln in lines:
        if ln.get("score", 1.0) < EXTRA_MIN_SCORE or _inside_any(ln["box"], ignore):
            continue
        for word in normalise(ln["text"]).split():
            w = canonical(word.replace(" ", ""))
            if len(w) < 2 and not _is_wide_script(w):
                continue  # a lone letter is more often a glyph of a picture than a word
            slack = 1 if len(w) >= 4 else 0
            if any(substring_distance(w, t)[0] <= slack for t in wanted):
                continue
            out.append({"text": word, "box": ln["box"]})
    return out


def _is_wide_script(text: str) -> bool:
    """CJK, kana, hangul: one character is a word."""
    return any(ord(ch) >= 0x2E80 for ch in text)


def _readable_span(target: str, line_texts: list[str]) -> str | None:
    """The OCR lines (as read) that together hold the target, for a human-readable best_match."""
    want = canonical(compact(target))
    spans = []
    for i in range(len(line_texts)):
        acc = ""
        for j in range(i, min(len(line_texts), i + 8)):
            acc += canonical(compact(line_texts[j]))
            if want in acc:
                spans.append((len(acc), i, j))
                break
    if not spans:
        return None
    _, i, j = min(spans)
    return " / ".join(t.strip() for t in line_texts[i:j + 1])


def verify_image(image_or_path, program, layout: dict | None = None) -> dict:
    """OCR the image and check every text constraint of ``program``.

    ``layout`` is the renderer's layout report, when it gave one: text inside the reference photos
    it placed is not counted as stray.

    Returns {constraints: [{text, found, status, best_match, edit_distance, similarity, box}],
    extra_text: [{text, box}], text_score, ocr_text, ocr_lines, elapsed_s}; text_score is
    found / (asked + extra words), None when the program asks for no text.
    """
    t0 = time.perf_counter()
    if isinstance(image_or_path, (str, Path)):
        path = Path(image_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        image = open_image_checked(path)
    else:
        image = image_or_path
    if layout is None:
        info = getattr(image, "info", None) or {}
        layout = (info.get("genevolve_render") or {}).get("layout") or info.get("genevolve_layout")
    texts = program.text_constraints() if hasattr(program, "text_constraints") else list(program or [])
    report = check_lines(ocr_lines(image), texts, reference_regions(layout))
    report["elapsed_s"] = round(time.perf_counter() - t0, 4)
    return report


def check_lines(lines: list[dict], texts: list[str], ignore: list[list[int]] = ()) -> dict:
    """The verdict on OCR lines already read (``verify_image`` without the OCR step)."""
    line_texts = [ln["text"] for ln in lines]
    results = [match_constraint(t, line_texts, lines) for t in texts]
    for r in results:
        if r["status"] != "missing":
            r["box"] = union_box([lines[i]["box"] for i in holding_lines(r["text"], lines)])
    extra = extra_words(lines, texts, ignore)
    score = None
    if results:
        score = round(sum(r["found"] for r in results) / (len(results) + len(extra)), 4)
    return {"constraints": results, "extra_text": extra, "text_score": score, "ocr_text": line_texts,
            "ocr_lines": lines}


def reference_regions(layout: dict | None) -> list[list[int]]:
    """The boxes where a renderer placed reference photos (their own lettering is not stray text)."""
    layout = layout or {}
    boxes = [r["box"] for r in layout.get("references") or [] if r.get("box")]
    for d in layout.get("subjects") or []:
        if d.get("form") == "reference":
            boxes += list(d.get("boxes") or [])
    return boxes
