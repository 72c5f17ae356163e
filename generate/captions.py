"""The encoder's text: captions (I2T), from a CSV, a local vision-language model, or the OpenAI API.

The paper fixes GPT-4o's captions (``gpt4v.csv`` of the public CMC-Bench repository, in
``../shared/data/cmc-bench/``) when it compares decoders; these are the default. Other I2T models
are asked with the paper's prompt templates (A.4) for 5, 10, 20 or 50 words.
"""

from __future__ import annotations

import base64
import io
import os
from abc import ABC, abstractmethod
from pathlib import Path

from cmc_common.hub import is_hub_id, offline_unless_reachable

PROMPTS = {
    5: "Generate an informative paragraph in 5 words based on the image.",
    10: "Generate an informative paragraph in 10 words based on the image. Considering Light, "
    "Color.",
    20: "Generate an informative paragraph in 20 words based on the image. Considering Light, "
    "Color, Clarity.",
    50: "Generate an informative paragraph in 50 words based on the image. Considering Light, "
    "Color, Clarity, Dense Caption, and Region Semantic.",
}
"""CMC-Bench A.4: the I2T prompt for each output length."""


class CaptionError(ValueError):
    """A caption that cannot be had; the message says why."""


def text_bits(caption: str) -> int:
    """What the caption costs: its UTF-8 bytes × 8 (no entropy coding is assumed)."""
    return len(caption.encode("utf-8")) * 8


class Captioner(ABC):
    """Gives the caption of a reference image."""

    name: str

    words: int | None = None
    """The caption length asked for (None: a fixed list, whose captions are what they are)."""

    @abstractmethod
    def caption(self, reference: str, image_path: Path, words: int | None = None) -> str:
        """The caption of the reference named ``reference`` (its file name) at ``image_path``,
        ``words`` long (a caption-length sweep; None = :attr:`words`)."""

    def check(self, references: list[str]) -> None:
        """Fail before any image is made if some reference cannot be captioned (a model can
        caption anything; a fixed list may lack a name)."""
        return None


class CsvCaptions(Captioner):
    """Captions looked up by reference file name in a CSV with columns ``name`` and ``text``."""

    name = "csv"

    def __init__(self, path: str | Path) -> None:
        import pandas as pd  # here, not at the top: `python -m generate --help` stays quick

        path = Path(path)
        try:
            frame = pd.read_csv(path, encoding="utf-8-sig")
        except (OSError, pd.errors.ParserError) as error:
            raise CaptionError(f"{path}: cannot read the captions ({error})") from error
        if not {"name", "text"} <= set(frame.columns):
            raise CaptionError(f"{path}: a caption CSV needs the columns 'name' and 'text'")
        self.source = path
        self.texts = dict(zip(frame["name"].astype(str), frame["text"].astype(str), strict=True))

    def check(self, references: list[str]) -> None:
        absent = [name for name in references if name not in self.texts]
        if absent:
            raise CaptionError(
                f"{self.source} has no caption for {len(absent)} of the plan's references "
                f"(first: {absent[0]})"
            )

    def caption(self, reference: str, image_path: Path, words: int | None = None) -> str:
        if words is not None:
            raise CaptionError(
                f"{self.source} is a fixed caption list: a plan that sweeps the caption length "
                "needs a captioner that takes one (a transformers VLM or openai)"
            )
        try:
            return self.texts[reference]
        except KeyError:
            raise CaptionError(f"{self.source} has no caption for {reference}") from None


class TransformersCaptioner(Captioner):
    """A local vision-language model from transformers (BLIP, BLIP-2, LLaVA, Qwen2-VL … by id or
    folder), asked with the paper's template for ``words`` words where the model takes a prompt.

    BLIP-style captioners take no instruction; chat models (LLaVA, Qwen2-VL) get the template as
    the user turn through their processor's chat template.
    """

    name = "transformers"

    def __init__(self, model: str, words: int = 20, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if words not in PROMPTS:
            raise CaptionError(f"caption length must be one of {sorted(PROMPTS)} words")
        self.words = words
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if is_hub_id(model):
            offline_unless_reachable()
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = AutoModelForImageTextToText.from_pretrained(
                model, dtype=torch.float16 if self.device == "cuda" else torch.float32
            ).to(self.device)
        except OSError as error:
            raise CaptionError(
                f"captioner '{model}': weights not found ({str(error).splitlines()[0]}); give a "
                "local folder with --captions or download the model on a machine with access"
            ) from error
        self.chat = getattr(self.processor, "chat_template", None) is not None

    def caption(self, reference: str, image_path: Path, words: int | None = None) -> str:
        import torch

        from studydb.images import read_rgb  # here: `python -m generate --help` stays quick

        words = _length(words or self.words)
        image = read_rgb(image_path)
        if self.chat:
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": PROMPTS[words]}],
                }
            ]
            prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = self.processor(images=image, text=prompt, return_tensors="pt")
        else:
            inputs = self.processor(images=image, return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=4 * words + 16)
        if self.chat:
            output = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(output, skip_special_tokens=True)[0].strip()


class OpenAICaptioner(Captioner):
    """GPT-4o (or another OpenAI vision model) through the API, when ``OPENAI_API_KEY`` is set.

    ``openai`` is an optional dependency: ``pip install openai``.
    """

    name = "openai"

    def __init__(self, model: str = "gpt-4o", words: int = 20) -> None:
        if not os.environ.get("OPENAI_API_KEY"):
            raise CaptionError("the OpenAI captioner needs OPENAI_API_KEY in the environment")
        try:
            import openai
        except ImportError as error:
            raise CaptionError(
                "the OpenAI captioner needs the package: pip install openai"
            ) from error
        if words not in PROMPTS:
            raise CaptionError(f"caption length must be one of {sorted(PROMPTS)} words")
        self.client = openai.OpenAI()
        self.model, self.words = model, words

    def caption(self, reference: str, image_path: Path, words: int | None = None) -> str:
        from studydb.images import read_rgb

        words = _length(words or self.words)
        buffer = io.BytesIO()
        read_rgb(image_path).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": PROMPTS[words]},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
        )
        return response.choices[0].message.content.strip()


def _length(words: int) -> int:
    if words not in PROMPTS:
        raise CaptionError(f"caption length must be one of {sorted(PROMPTS)} words, got {words}")
    return words


def make_captioner(source: str, words: int = 20) -> Captioner:
    """``source``: a CSV path, ``openai[:MODEL]``, or a transformers model id / folder."""
    if source.startswith("openai"):
        _, _, model = source.partition(":")
        return OpenAICaptioner(model or "gpt-4o", words)
    if source.lower().endswith(".csv"):
        return CsvCaptions(source)
    return TransformersCaptioner(source, words)
