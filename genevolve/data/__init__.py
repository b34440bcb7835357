"""SFT training data from teacher trajectories: recipes -> requests -> trajectories -> filters -> GT -> splits.

``recipes`` writes the requests (seeded templates, disjoint from the bench); ``pipeline`` runs the
teacher, filters, renders ground truth and writes train/val SFT records; ``commands`` is
``genevolve data build``.
"""
