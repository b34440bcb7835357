"""BM25 ranking with bm25s, shared by the local corpus (search) and the image library (image_search).

Words are lowercased, English stop words dropped and, when PyStemmer is installed, stemmed;
``terms`` gives the same view of a text that the index has, so callers can reason about which
query words a document covers.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache


def _stemmer():
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # stemming only sharpens recall; plain tokens still work
        return None


def _tokenizer():
    """A bm25s tokenizer with English stop words, stemming when PyStemmer is installed."""
    from bm25s.tokenization import Tokenizer

    return Tokenizer(stopwords="en", stemmer=_stemmer())


_WORD_RE = re.compile(r"(?u)\b\w\w+\b")


def terms(text: str) -> set[str]:
    """The content words of ``text`` as the index sees them (lowercased, no stop words, stemmed)."""
    from bm25s.stopwords import STOPWORDS_EN

    words = [w for w in _WORD_RE.findall(text.lower()) if w not in STOPWORDS_EN]
    stemmer = _shared_stemmer()
    return set(stemmer.stemWords(words) if stemmer else words)


@lru_cache(maxsize=1)
def _shared_stemmer():
    return _stemmer()


class BM25Index:
    """A small bm25s index over a list of texts; ``query`` returns (index, score) pairs with score > 0."""

    def __init__(self, texts: list[str]):
        import bm25s

        self._lock = threading.Lock()
        self.tokenizer = _tokenizer()
        self.size = len(texts)
        self.retriever = bm25s.BM25()
        if texts:
            ids = self.tokenizer.tokenize(texts, show_progress=False)
            self.retriever.index(ids, show_progress=False)

    def query(self, text: str, k: int) -> list[tuple[int, float]]:
        if not self.size or not text.strip():
            return []
        with self._lock:  # the tokenizer keeps vocabulary state
            q = self.tokenizer.tokenize([text], update_vocab=False, show_progress=False)
            docs, scores = self.retriever.retrieve(q, k=min(k, self.size), show_progress=False)
        return [(int(d), float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]
