"""The offline judge: what can be measured without a VLM.

- ``text_accuracy``: OCR of the image against the program's exact-text constraints
  (``genevolve.judges.verify.verify_image``, rapidocr); None when there is no text to check.
- ``constraint_coverage``: the share of the request's derived constraints (text, counts,
  relations) that the gen_prompt states; None when the request has none.
- ``sufficiency``: the local four-check rubric on {0, .25, .5, .75, 1} (see sufficiency.py).

``faithfulness``, ``visual_correctness`` and ``aesthetics`` need eyes and stay None (not 0).
``overall`` is the plain mean of the measured values among text_accuracy, constraint_coverage
and sufficiency. It is a program/text-quality signal, not a KScore, and must not be compared
with KScore numbers.
"""

from __future__ import annotations

from genevolve.judges.base import Judge, Scores, case_question
from genevolve.judges.sufficiency import constraint_coverage, local_sufficiency
from genevolve.program import derive_constraints

LOCAL_OVERALL_PARTS = ("text_accuracy", "constraint_coverage", "sufficiency")


class LocalJudge(Judge):
    spec = "local"

    def __init__(self, ocr: bool = True):
        self.ocr = ocr

    def _score(self, case, image, program, trajectory) -> Scores:
        if program is None and trajectory is not None:
            program = getattr(trajectory, "program", None)
        if program is None:
            return Scores.failed(self.spec, "no program: the rollout ended without an answer")
        if image is None:
            return Scores.failed(self.spec, "no image to judge (the render failed)")
        request = case_question(case) or getattr(trajectory, "request", "")
        coverage = constraint_coverage(derive_constraints(request, program), program.gen_prompt)
        suff = local_sufficiency(case, trajectory if trajectory is not None else program)
        text_accuracy, details = None, {"sufficiency_checks": suff.details.get("checks", {})}
        if self.ocr and program.text_constraints():
            from genevolve.judges.verify import verify_image  # lazy: loads the OCR models

            report = verify_image(image, program)
            text_accuracy = report.get("text_score")
            details["ocr"] = {"constraints": report.get("constraints", []),
                              "ocr_text": report.get("ocr_text"), "elapsed_s": report.get("elapsed_s")}
        values = {"text_accuracy": text_accuracy, "constraint_coverage": coverage,
                  "sufficiency": suff.sufficiency if suff.status == "scored" else None}
        measured = [v for v in values.values() if v is not None]
        overall = round(sum(measured) / len(measured), 6) if measured else None
        details["overall_parts"] = [k for k, v in values.items() if v is not None]
        rationale = (f"text_accuracy (OCR)={_fmt(text_accuracy)}, constraint_coverage={_fmt(coverage)}, "
                     f"sufficiency={_fmt(values['sufficiency'])}; {suff.rationale}")
        return Scores(text_accuracy=text_accuracy, constraint_coverage=coverage, sufficiency=values["sufficiency"],
                      overall=overall, rationale=rationale, judge=self.spec, details=details)


def _fmt(v):
    return "n/a" if v is None else f"{v:.2f}"
