"""CLIP's real BPE tokenizer, built offline from the vocabulary that ships in ``open_clip_torch``.

The diffusers pipelines need a CLIPTokenizer, whose files normally come from the hub. The GPU
benchmark (random-weight models, no download) and the tests' tiny pipelines build it from
open_clip's ``bpe_simple_vocab_16e6.txt.gz`` instead: the same 49,408-token vocabulary.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode


def clip_tokenizer() -> CLIPTokenizer:
    """CLIP's tokenizer (model_max_length 77); needs ``open_clip_torch`` (a test extra)
    installed, though not importable: only its vocabulary file is read (the GPU machine lacks
    open_clip's own dependencies)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("CLIP's vocabulary comes from open_clip_torch: pip install it")
    source = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(source).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(vocab)},
        merges=[tuple(m.split()) for m in merges],
        model_max_length=77,
    )
