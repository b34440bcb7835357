"""Run one trainer under a multi-process launcher (torchrun) for tests/training/test_train_distributed.py.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/helpers/dist_train_worker.py \
        sft|grpo CONFIG.yaml OUT_DIR '{"max_steps": 4}'

Each rank writes OUT_DIR/params-rank<R>.json: a digest of its trained weights, so the test can
check that every rank ends with the same parameters. Everything else is the real trainer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


def main() -> None:
    import torch

    torch.set_num_threads(1)
    kind, config, out, overrides = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
    rank = int(os.environ.get("RANK", "0"))

    def probe(model) -> None:
        digest = hashlib.sha256()
        total = 0.0
        for name, p in sorted(model.named_parameters()):
            data = p.detach().float().cpu().contiguous()
            digest.update(name.encode())
            digest.update(data.numpy().tobytes())
            total += float(data.double().abs().sum())
        out.mkdir(parents=True, exist_ok=True)
        (out / f"params-rank{rank}.json").write_text(json.dumps({"sha256": digest.hexdigest(), "abs_sum": total}))

    from genevolve.training.config import config_from_file

    if kind == "sft":
        from genevolve.training.sft import SFTConfig, train_sft

        result = train_sft(config_from_file(SFTConfig, config, **overrides), quiet=True, probe=probe)
    else:
        from genevolve.training.grpo import GRPOConfig, train_grpo

        result = train_grpo(config_from_file(GRPOConfig, config, **overrides), quiet=True, probe=probe)
    if rank == 0:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
