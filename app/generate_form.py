"""The Generate form on a page: its values as a ``GenerateForm``, and the form kept per session.

The fields are ``genevolve.service.FORM_FIELDS``; a page sends them positionally, in that order,
followed by the session id. ``takes_form`` turns a handler of ``(form, sid_value, request)`` into
the positional handler Gradio calls, so no handler lists the fields again. Any tab that fills the
form (Generate, Bench's "Run this case") remembers it through ``remember_form``.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import gradio as gr

from app import sessions
from genevolve.service import FORM_FIELDS, GenerateForm

_PAGE_SIGNATURE = inspect.Signature(
    [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for name in FORM_FIELDS]
    + [inspect.Parameter("sid_value", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
       # Gradio fills a parameter annotated gr.Request with the HTTP request (the session cookie).
       # (named apart from the form's own "request" field, the words to draw).
       inspect.Parameter("http_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                         annotation=gr.Request)])


def takes_form(handler):
    """``handler(form, sid_value, request)`` as Gradio calls it: the form's fields, the session id, the request."""

    def split(args, kwargs):
        bound = _PAGE_SIGNATURE.bind(*args, **kwargs)
        values = [bound.arguments.get(name) for name in FORM_FIELDS]
        return GenerateForm.from_values(values), bound.arguments.get("sid_value"), bound.arguments.get("http_request")

    if inspect.isgeneratorfunction(handler):  # Gradio streams only from a generator function
        def page(*args, **kwargs):
            yield from handler(*split(args, kwargs))
    else:
        def page(*args, **kwargs):
            return handler(*split(args, kwargs))

    functools.update_wrapper(page, handler, updated=())
    del page.__wrapped__  # Gradio must see the page's signature, not the handler's
    page.__signature__ = _PAGE_SIGNATURE
    page.__annotations__ = {"http_request": gr.Request}
    return page


def _form_path(sid: str) -> Path:
    return sessions.session_dir(sid) / "form.json"


def save_form(form: GenerateForm, sid_value, request: gr.Request = None) -> None:
    """Keep the session's form (only its own uploaded images), so a reload brings it back."""
    sid = sessions.session_id(sid_value, request)
    own = sessions.session_dir(sid, "uploads")
    paths = []
    for item in form.uploads:
        p = Path(item)
        mine = p if p.parent == own else own / p.name  # the page shows Gradio's cached copy of our file
        if mine.is_file():
            paths.append(str(mine))
    data = form.model_copy(update={"uploads": paths}).model_dump()
    tmp = _form_path(sid).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    tmp.replace(_form_path(sid))


remember_form = takes_form(save_form)


def restore_form(sid_value, request: gr.Request = None) -> tuple:
    """The session's last form (request, images, backends) in ``FORM_FIELDS`` order, or the defaults."""
    sid = sessions.session_id(sid_value, request)
    try:
        data = json.loads(_form_path(sid).read_text(encoding="utf-8"))
        form = GenerateForm(**{k: v for k, v in data.items() if k in FORM_FIELDS})
    except (OSError, ValueError):  # no form yet, or a damaged one (pydantic's errors are ValueErrors)
        form = GenerateForm()
    own = sessions.session_dir(sid, "uploads")
    values = dict(zip(FORM_FIELDS, form.values()))
    # A forged form file cannot make the page serve another folder's file.
    values["uploads"] = [p for p in form.uploads if Path(p).parent == own and Path(p).is_file()] or None
    return tuple(values[k] for k in FORM_FIELDS)


def restore_unless_edited(form: GenerateForm, sid_value, request: gr.Request = None) -> tuple:
    """``restore_form``'s values for the page that loads, except the fields whose value on the page
    is no longer the default: the user typed or chose them before the restore arrived, and their
    edit wins (a restore that landed after the first keystrokes wiped the request, and Generate
    then said "Write a request first")."""
    blank = GenerateForm().values()
    return tuple(gr.skip() if now != default else saved
                 for now, default, saved in zip(form.values(), blank, restore_form(sid_value, request)))
