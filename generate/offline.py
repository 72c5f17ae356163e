"""CLIP's real BPE tokenizer, built offline from the vocabulary that ships in ``open_clip_torch``.

The diffusers pipelines need a CLIPTokenizer, whose files normally come from the hub. The GPU
benchmark (random-weight models, no download) and the tests' tiny pipelines build it from
open_clip's ``bpe_simple_vocab_16e6.txt.gz`` instead: the same 49,408-token vocabulary.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode


def clip_tokenizer() -> CLIPTokenizer:
    """CLIP's tokenizer (model_max_length 77); needs ``open_clip_torch`` (a test extra)."""
    import open_clip

    source = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(source).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(vocab)},
        merges=[tuple(m.split()) for m in merges],
        model_max_length=77,
    )
