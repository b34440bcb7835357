"""GenEvolve-Nano: the recipe that chains data build → SFT → GRPO (+SDL) → ablation → ship on the
real Gemma 3 270M (``recipe``), its model card and docs page (``report``) and its ``train nano``
command (``commands``). It uses the data, training and bench floors, so it sits above them.
"""
