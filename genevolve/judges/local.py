"""The offline judge: what can be measured without a VLM, and nothing more.

Image dimensions (what the image shows):

- ``text_accuracy``: OCR of the image against the program's exact-text constraints
  (``genevolve.judges.verify.verify_image``, rapidocr); None when there is no text to check.
- ``structure``: the request's subjects, counts, arrangements and positions checked against
  the renderer's own layout report (``genevolve.judges.structure``); None when the renderer
  reports no layout (diffusion, services) or the request names no subject.

Program dimensions (what the program says, not what the image shows):

- ``constraint_coverage``: the share of the request's derived constraints the gen_prompt states.
- ``sufficiency``: the local four-check rubric on {0, .25, .5, .75, 1} (see sufficiency.py).

Given only an image and a request (no program, no trajectory), the image is checked against
what the request asks, and both program dimensions are None ("not measured").

``faithfulness``, ``visual_correctness`` and ``aesthetics`` need eyes (is that the Sydney Opera
House? is it any good?) and stay None, never a default. ``overall`` is the mean of the image
dimensions that were measured (``details["overall_parts"]`` names them) and None when neither
was: it is not a KScore and must not be compared with one. The program dimensions stay
separate so a GRPO reward does not count them twice (R_text is the sufficiency score).
"""

from __future__ import annotations

from genevolve.judges.base import Judge, Scores, case_question
from genevolve.judges.sufficiency import constraint_coverage, local_sufficiency
from genevolve.program import Program, derive_constraints

LOCAL_OVERALL_PARTS = ("text_accuracy", "structure")
NOT_MEASURED = {
    "faithfulness": "needs a VLM judge",
    "visual_correctness": "entity identity and appearance need a VLM judge",
    "aesthetics": "visual quality needs a VLM judge",
}


def render_report_of(image, render: dict | None) -> dict | None:
    """The render report given, else the one ``render_with_report`` attached to a PIL image."""
    if render is not None:
        return render
    info = getattr(image, "info", None)
    return info.get("genevolve_render") if isinstance(info, dict) else None


class LocalJudge(Judge):
    spec = "local"
    uses_render_report = True

    def __init__(self, ocr: bool = True):
        self.ocr = ocr

    def _score(self, case, image, program, trajectory, render=None) -> Scores:
        from genevolve.judges.structure import check_structure

        if program is None and trajectory is not None:
            program = getattr(trajectory, "program", None)
        request = case_question(case) or getattr(trajectory, "request", "")
        request_only = program is None and trajectory is None
        if request_only and request:
            # Only an image and a request: the image is checked against what the request itself
            # asks (its quoted text, subjects, positions); nothing about a program is measured.
            program = Program(gen_prompt=request)
        if program is None:
            return Scores.failed(self.spec, "no program: the rollout ended without an answer")
        if image is None:
            return Scores.failed(self.spec, "no image to judge (the render failed)")
        constraints = derive_constraints(request, program)
        if request_only:
            program.constraints = constraints
            coverage, suff = None, None
            details = {}
        else:
            coverage = constraint_coverage(constraints, program.gen_prompt)
            suff = local_sufficiency(case, trajectory if trajectory is not None else program)
            details = {"sufficiency_checks": suff.details.get("checks", {})}
        text_accuracy = None
        render = render_report_of(image, render)
        report = None
        if self.ocr and program.text_constraints():
            from genevolve.judges.verify import verify_image  # lazy: loads the OCR models

            report = verify_image(image, program, (render or {}).get("layout"))
            text_accuracy = report.get("text_score")
            details["ocr"] = {"constraints": report.get("constraints", []), "extra_text": report.get("extra_text", []),
                              "ocr_text": report.get("ocr_text"), "elapsed_s": report.get("elapsed_s")}
        structure = check_structure(constraints, (render or {}).get("layout"), report)
        if structure is not None:
            details["structure"] = structure
        structure_score = structure["score"] if structure else None
        values = {"text_accuracy": text_accuracy, "structure": structure_score}
        measured = [v for v in values.values() if v is not None]
        overall = round(sum(measured) / len(measured), 6) if measured else None
        details["overall_parts"] = [k for k, v in values.items() if v is not None]
        details["not_measured"] = dict(NOT_MEASURED)
        if text_accuracy is None:
            details["not_measured"]["text_accuracy"] = "no text asked" if not program.text_constraints() else "OCR off"
        if structure_score is None:
            details["not_measured"]["structure"] = ("the renderer reports no layout" if not (render or {}).get("layout")
                                                    else "the request names no subject")
        parts = ", ".join(details["overall_parts"]) or "nothing measurable in the image"
        image_part = (f"overall = mean of {parts}; text_accuracy (OCR)={_fmt(text_accuracy)}, "
                      f"structure (drawn and OCR boxes)={_fmt(structure_score)}; ")
        if request_only:
            suff_value = None
            for key in ("constraint_coverage", "sufficiency"):
                details["not_measured"][key] = "no program or trajectory: only an image and a request"
            rationale = (image_part + "program: not measured (no program or trajectory, only an image and a "
                         "request); not measured: faithfulness, visual_correctness, aesthetics")
        else:
            suff_value = suff.sufficiency if suff.status == "scored" else None
            rationale = (image_part + f"program: constraint_coverage={_fmt(coverage)}, sufficiency={_fmt(suff_value)}; "
                         f"not measured: faithfulness, visual_correctness, aesthetics; {suff.rationale}")
        return Scores(text_accuracy=text_accuracy, structure=structure_score, constraint_coverage=coverage,
                      sufficiency=suff_value, overall=overall, rationale=rationale, judge=self.spec, details=details)


def _fmt(v):
    return "n/a" if v is None else f"{v:.2f}"
