"""Build a CLIP byte-level BPE tokenizer folder whose merges make every shapes-world word a single token.

transformers 5 ignores `vocab_file=`/`merges_file=` arguments, so the tokenizer is always loaded from a folder
and its size is checked (`load_tokenizer`).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins CLIP/GPT-2 use for bytes (printable Latin-1 maps to itself)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Plain BPE training (most frequent pair first) until every word is one symbol; ties break by pair order."""
    corpus = {w: list(w[:-1]) + [w[-1] + "</w>"] for w in words}
    merges = []
    while True:
        pairs = Counter(p for syms in corpus.values() for p in zip(syms, syms[1:]))
        if not pairs:
            return merges
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        for w, syms in corpus.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            corpus[w] = out


def write_tokenizer(folder: str | Path, words: list[str]) -> int:
    """Write vocab.json, merges.txt and tokenizer_config.json; return the vocabulary size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(sorted(set(words)))
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {"model_max_length": 77, "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS,
              "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return len(vocab)


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """Load a CLIP tokenizer from a folder and check it really read the folder's vocabulary."""
    folder = Path(folder)
    expected = len(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    if len(tokenizer) != expected:
        raise ValueError(f"tokenizer in {folder} has {len(tokenizer)} tokens, expected {expected}")
    return tokenizer
