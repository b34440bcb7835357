"""Re-render the layout renderer's example images in docs/images (the README shows them).

    python scripts/render_layout_examples.py [--out docs/images]

Each example is a request turned into a program the way the agent does it (the request restated,
constraints derived from the request), with photos from scikit-image's wheel as references.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import skimage.data

from genevolve.program import Program, Reference, derive_constraints
from genevolve.renderers import make_renderer, render_with_report

PHOTOS = Path(skimage.data.__file__).parent

EXAMPLES = [
    ("layout-poster-paris", 'Retro travel poster in orange and navy: two backpackers in front of the Eiffel Tower, '
     'title "PARIS" in bold serif', [], (600, 800)),
    ("layout-fullbleed-astronaut", 'Space poster titled "MISSION CONTROL" with the line "To the moon and back"; '
     "the first reference image fills the background", [("astronaut.png", "background")], (600, 800)),
    ("layout-split-coffee", 'Cafe banner titled "Morning Brew" with "Fresh roasted beans, open 7am to 3pm daily"; '
     "the first reference image on the left", [("coffee.png", "left")], (960, 540)),
    ("layout-collage-adopt", 'Adoption poster titled "ADOPT ME" with two cats in a row and a horse, '
     '"Call 555 0199"', [("chelsea.png", "appearance of the cat"), ("horse.png", "appearance of the horse")],
     (720, 720)),
    ("layout-subjects-market", 'A poster for a farmers market on Saturday June 7 titled "GREEN ROOTS" with baskets '
     "of tomatoes and three sunflowers", [], (600, 800)),
    ("layout-subjects-teapots", "Three identical teapots in a triangle, a cat to the left of a lamp", [], (720, 720)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    renderer = make_renderer("layout")
    for name, request, refs, size in EXAMPLES:
        program = Program(gen_prompt=request, reference_images=[
            Reference(img_id=f"IMG_{i + 1:03d}", note=note, path=str(PHOTOS / photo))
            for i, (photo, note) in enumerate(refs)])
        program.constraints = derive_constraints(request, program)
        image, report = render_with_report(renderer, program, size=size, seed=0)
        image.save(args.out / f"{name}.png", optimize=True)
        drawn = [f"{d['drawn']}×{d['name']} ({d['form']})" for d in report.get("layout", {}).get("subjects", [])]
        print(f"{name}: {report['layout']['composition']}; " + (", ".join(drawn) or "no subjects")
              + (f"; warnings: {json.dumps(report['warnings'])}" if report["warnings"] else ""))


if __name__ == "__main__":
    main()
