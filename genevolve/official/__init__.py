"""Speaking the official release's language: its conversation shape and its files.

* ``assets`` — finds the user's copy of the official release (a checkout or an installed copy) and
  reads its system prompt, final-step message and skill texts. Nothing of theirs is stored here.
* ``turns`` — the official runtime's turn handling written from its formats: how a turn is read,
  how an answer's references are resolved, the wording of tool replies and nudges.
* ``records`` — the official ``results.json`` records: import into our store, replay, render, and
  export of our bench runs in the layout their evaluator reads.
"""
