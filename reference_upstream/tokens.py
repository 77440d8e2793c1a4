"""Token counts for the reference upstream: two stand-in tokenizers with their chat templates, so a
test can swap the served model's tokenizer while its answers, and their refusal rate, stay the same.

``words`` counts words and punctuation and adds 4 tokens per message and 3 per prompt; ``bytes``
counts one token per 4 bytes of UTF-8 and adds 6 per message and 2 per prompt.

>>> prompt_tokens(["Hello, world"], "words"), prompt_tokens(["Hello, world"], "bytes")
(10, 11)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

Tokenizer = Literal["words", "bytes"]
TOKENIZERS: tuple[Tokenizer, ...] = ("words", "bytes")
_PIECE = re.compile(r"\w+|[^\w\s]")
_TEMPLATE = {"words": (4, 3), "bytes": (6, 2)}  # per message, per prompt


def count(text: str, tokenizer: Tokenizer) -> int:
    if tokenizer == "bytes":
        return math.ceil(len(text.encode("utf-8")) / 4)
    return len(_PIECE.findall(text))


def prompt_tokens(messages: Sequence[str], tokenizer: Tokenizer) -> int:
    per_message, per_prompt = _TEMPLATE[tokenizer]
    return per_prompt + sum(per_message + count(m, tokenizer) for m in messages)
