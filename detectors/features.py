"""Delexicalised n-grams: how an answer opens, with the topic words blanked out.

A detector trained on raw words learns the *topics* its training models refused (and so fails
on a model that refuses other things); one trained on these features learns the *moves* of a
refusal ("i cannot _ _ as it is _"). Words outside a closed vocabulary of frequent words (learned
from the training text: function words, modals, stance words) become ``_``; n-grams of the first
``head`` tokens are weighted TF-IDF style and L2-normalised. Training and inference share this
module, so the shipped arrays reproduce exactly what was trained.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|\d+|[^\w\s]")
_PREFIX_CHARS = 4000  # enough text for any head length we use; bounds work on huge answers
_SHORT_PREFIX_CHARS = 400
# the same tokens as _TOKEN on ASCII text (checked on every string of up to 3 ASCII characters), faster
_TOKEN_ASCII = re.compile(r"[a-zA-Z]+(?:'[a-zA-Z]+)?|\d+|[^\w\s\x1c-\x1f]", re.ASCII)
BLANK = "_"


def tokens(text: str, head: int) -> list[str]:
    """The first ``head`` tokens of ``text``: lower-cased words (apostrophes normalised), numbers, punctuation.

    >>> tokens("I’m sorry, but I can't.", 8)
    ["i'm", 'sorry', ',', 'but', 'i', "can't", '.']
    """
    # the usual case, fast: findall (no match objects) on a prefix that holds 60 tokens for 99 % of
    # the labelled answers, with the ASCII twin of the pattern when it can be used
    short = text[:_SHORT_PREFIX_CHARS].translate(_APOSTROPHES).lower()
    found = (_TOKEN_ASCII if short.isascii() else _TOKEN).findall(short)
    if len(found) >= head + 2 or len(text) <= _SHORT_PREFIX_CHARS:  # the last two may be a token cut in half
        return found[:head]
    prefix = text[:_PREFIX_CHARS].translate(_APOSTROPHES).lower()
    return [m.group() for m in itertools.islice(_TOKEN.finditer(prefix), head)]  # stop at ``head``


def ngrams(toks: Sequence[str], keep: frozenset[str] | set[str], max_n: int) -> list[str]:
    """Delexicalised 1..max_n-grams of ``toks``."""
    d = [t if t in keep else BLANK for t in toks]
    out = list(d)
    if max_n >= 2:
        out += [f"{a} {b}" for a, b in itertools.pairwise(d)]
    if max_n >= 3:
        out += [f"{a} {b} {c}" for a, b, c in zip(d, d[1:], d[2:], strict=False)]
    for n in range(4, max_n + 1):
        out.extend(" ".join(d[i : i + n]) for i in range(len(d) - n + 1))
    return out


def learn_keep(docs: Iterable[Sequence[str]], min_doc_fraction: float) -> frozenset[str]:
    """Words in at least ``min_doc_fraction`` of the documents: the closed vocabulary."""
    docs = list(docs)
    df = Counter(w for d in docs for w in set(d))
    floor = min_doc_fraction * len(docs)
    return frozenset(w for w, c in df.items() if c >= floor)


def learn_vocabulary(grams: Sequence[Sequence[str]], min_df: int = 2) -> tuple[dict[str, int], list[float]]:
    """Index every n-gram seen in ``min_df`` documents; its idf as scikit-learn's smooth idf computes it."""
    df = Counter(g for doc in grams for g in set(doc))
    names = sorted(g for g, c in df.items() if c >= min_df)
    n = len(grams)
    return {g: i for i, g in enumerate(names)}, [math.log((1 + n) / (1 + df[g])) + 1.0 for g in names]


def weights(grams: Sequence[str], index: dict[str, int], idf: Sequence[float]) -> dict[int, float]:
    """Sublinear-tf x idf weights of one document's known n-grams, L2-normalised."""
    counts = Counter([i for i in map(index.get, grams) if i is not None])
    w = {i: (1.0 + math.log(c)) * idf[i] for i, c in counts.items()}
    norm = math.sqrt(sum(v * v for v in w.values()))
    return {i: v / norm for i, v in w.items()} if norm else {}
