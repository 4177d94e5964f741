"""A word-level tokenizer saved in CLIP format, so ``CLIPTokenizer.from_pretrained`` loads it.

CLIP's tokenizer is byte-level BPE over lower-cased words ending in ``</w>``. Writing one merge
chain per word (``r e`` -> ``re``, ``re d</w>`` -> ``red</w>``) turns every known word into a single
token, while single characters stay in the vocabulary so unknown words still tokenize.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def corpus_words(captions: Iterable[str]) -> list[str]:
    """The distinct lower-case words (and punctuation) of ``captions``, in first-seen order."""
    seen: dict[str, None] = {}
    for text in captions:
        for word in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()):
            seen.setdefault(word, None)
    return list(seen)


def build_clip_tokenizer(words: Iterable[str], folder: str | Path, max_length: int = 20) -> CLIPTokenizer:
    """Write vocab.json/merges.txt for a word-level CLIP tokenizer and load it back."""
    words = list(dict.fromkeys(words))
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789,.!?'-")
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    merges = _word_merges(words)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    tokenizer = CLIPTokenizer(
        vocab=vocab, merges=merges, model_max_length=max_length, pad_token=EOS
    )
    tokenizer.save_pretrained(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    broken = [w for w in words if len(tokenizer.tokenize(w)) != 1]
    if broken:
        raise RuntimeError(f"the word-level merges did not make single tokens of {broken[:10]}")
    return tokenizer


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: merge the lowest-ranked adjacent pair until none applies."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    while len(pieces) > 1:
        pairs = [(ranks.get(p, len(ranks) + 1), i) for i, p in enumerate(zip(pieces, pieces[1:], strict=False))]
        rank, i = min(pairs)
        if rank > len(ranks):
            break
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def _word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges under which every word is one token: append the merge each word still lacks, to a fixed point."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for _ in range(100 * max(len(w) for w in words)):
        pending = [p for p in (_bpe(w, ranks) for w in words) if len(p) > 1]
        if not pending:
            return merges
        pair = (pending[0][0], pending[0][1])
        ranks[pair] = len(merges)
        merges.append(pair)
    raise RuntimeError("could not find word-level merges")
