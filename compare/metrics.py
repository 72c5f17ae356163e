"""The metrics ``compare`` scores with: any pyiqa metric, CLIPSIM, and FID over a set.

Each metric says whether it measures *consistency* (full-reference: how faithful the decoded
image is to the original) or *perception* (no-reference: how good it looks on its own; FID,
which compares the distributions of the two sets, is counted here as in the paper), and whether
lower is better, so the report can orient every curve the same way.

Real weights are used when they are where the libraries look (pyiqa's cache, open_clip's /
Hugging Face's cache, or a file given on the command line); ``pretrained=False`` builds every
network at random, which works offline and is only good for smoke runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cmc_common.hub import offline_unless_reachable
from compare.defaults import FID_DIMS, OFFLINE_METRICS
from train_iqa.model import MetricError
from train_iqa.scoring import MetricSpec, ScoreCache, Scorer, score_pairs

CONSISTENCY, PERCEPTION = "consistency", "perception"


@dataclass
class Settings:
    """How every metric is built: where it runs, and which weights it starts from."""

    device: str = "cpu"
    pretrained: bool = True
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    fid_dims: int = 2048


class Metric:
    """What the report needs of any metric: its column, its kind and its direction."""

    set_level = False

    def __init__(self, label: str, kind: str, lower_better: bool) -> None:
        self.label, self.kind, self.lower_better = label, kind, lower_better


class ImageMetric(Metric):
    """A score per (distorted, reference) pair of decoded images; subclasses say how."""

    def __call__(self, distorted: Image.Image, reference: Image.Image) -> float:
        raise NotImplementedError


class PyiqaMetric(Metric):
    """Any metric of pyiqa's registry (PSNR, SSIM, LPIPS, TOPIQ-FR/NR, CLIP-IQA, LIQE, …) or a
    fine-tuned checkpoint of one, scored by :mod:`train_iqa.scoring` — the step ``validate`` and
    the leaderboard use — so one image gets one score whoever asks, and the score cache serves
    them all. Native size; a fine-tuned checkpoint at the size it was trained at."""

    def __init__(self, spec: MetricSpec, settings: Settings) -> None:
        try:
            scorer = Scorer(spec, settings.pretrained, settings.device,
                            weights_option=f"--metric {spec.name}:FILE")  # fmt: skip
        except MetricError as error:
            if error.__cause__ is None or spec.weights is not None:
                raise  # an unknown name, a foreign checkpoint: the message says so already
            raise MetricError(_unbuildable(spec, error.__cause__)) from error
        kind = CONSISTENCY if scorer.full_reference else PERCEPTION
        super().__init__(spec.label, kind, scorer.lower_better)
        self.scorer = scorer

    def scores(self, distorted: list[str], references: list[str], cache: ScoreCache | None,
               progress: bool = True) -> np.ndarray:  # fmt: skip
        """Every pair's score, in order: from the cache when it holds them, else computed."""
        return score_pairs(self.scorer, distorted, references, cache, progress=progress)


class ClipSim(ImageMetric):
    """CLIPSIM: the cosine between the CLIP image embeddings of the two images (open_clip).

    ``model`` is an open_clip architecture name (``ViT-B-32``) or a JSON config file (how the
    tests build a tiny one offline); ``pretrained`` an open_clip tag (``openai``), a checkpoint
    file, or ``none`` for random weights.
    """

    def __init__(self, label: str, settings: Settings) -> None:
        super().__init__(label, CONSISTENCY, lower_better=False)
        import open_clip

        model = settings.clip_model
        if model.endswith(".json"):
            if not Path(model).is_file():
                raise MetricError(f"clipsim: {model}: no such CLIP config file")
            open_clip.add_model_config(model)
            model = Path(model).stem
        if model not in open_clip.list_models():
            raise MetricError(
                f"clipsim: unknown CLIP model '{model}' (see open_clip.list_models())"
            )
        tag = settings.clip_pretrained if settings.pretrained else "none"
        if tag.lower() not in ("none", "") and not Path(tag).is_file():
            offline_unless_reachable()  # open_clip fetches its tags from the hub
        try:
            net, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=None if tag.lower() in ("none", "") else tag,
                device=settings.device,
            )  # fmt: skip
        except Exception as error:  # downloads and bad files fail in many ways
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise MetricError(
                f"clipsim: cannot load CLIP {model} '{tag}' ({first[:200]}); put the weights in "
                "the Hugging Face cache, give --clip-pretrained FILE, or --no-pretrained"
            ) from error
        self.net, self.device = net.eval(), settings.device

    @torch.no_grad()
    def __call__(self, distorted: Image.Image, reference: Image.Image) -> float:
        batch = torch.stack([self.preprocess(distorted), self.preprocess(reference)])
        features = F.normalize(self.net.encode_image(batch.to(self.device)).float(), dim=-1)
        return float(features[0] @ features[1])


class Fid(Metric):
    """FID between a point's distorted images and the references they came from.

    Features are pyiqa's FID Inception (the TensorFlow FID weights, from pyiqa's cache) at the
    pooling layer of ``fid_dims`` (2048: the standard FID), spatially averaged; at random it is
    the same architecture, untrained. Each image's features are computed once and kept, since a
    reference serves every point. FID needs two images or more per set; the paper's sets hold
    hundreds, and with few images it is dominated by the covariance estimate.
    """

    set_level = True

    def __init__(self, label: str, settings: Settings) -> None:
        from pyiqa.archs import inception

        if settings.fid_dims not in FID_DIMS:
            raise MetricError(f"fid: --fid-dims must be one of {', '.join(map(str, FID_DIMS))}")
        super().__init__(label, PERCEPTION, lower_better=True)
        block = [inception.InceptionV3.BLOCK_INDEX_BY_DIM[settings.fid_dims]]
        try:
            if settings.pretrained:
                net = inception.InceptionV3(output_blocks=block)
            else:  # the same network, its weights left at their random initialisation
                with mock.patch.object(inception, "load_pretrained_network", _keep_random):
                    net = inception.InceptionV3(output_blocks=block)
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise MetricError(
                f"fid: cannot load the FID Inception weights ({first[:200]}); put "
                "pt_inception-2015-12-05-6726825d.pth in pyiqa's cache (~/.cache/torch/hub/pyiqa/"
                ", or $PYIQA_CACHE_DIR), or use --no-pretrained"
            ) from error
        self.net, self.device = net.eval().to(settings.device), settings.device
        self._features: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def features(self, key: str, image: Image.Image) -> np.ndarray:
        """The image's feature vector, computed once per key (its path)."""
        if key not in self._features:
            x = to_tensor(image, self.device)
            out = self.net(x, resize_input=True, normalize_input=True)[0]
            self._features[key] = out.mean(dim=(2, 3)).reshape(-1).cpu().double().numpy()
        return self._features[key]

    def distance(self, distorted: list[str], references: list[str]) -> float:
        """FID between the two sets of already-featurised images (NaN under two images)."""
        if len(distorted) < 2 or len(set(references)) < 2:
            return float("nan")
        a = np.stack([self._features[k] for k in distorted])
        b = np.stack([self._features[k] for k in dict.fromkeys(references)])
        return frechet_distance(a, b)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``.

    Exact, but computed in the span of the samples: with centred ``A`` (n × d) and ``B``
    (m × d), the non-zero eigenvalues of C_a·C_b are those of the small PSD matrix
    A·Bᵀ·B·Aᵀ / ((n−1)(m−1)), so Tr √(C_a·C_b) needs no d × d square root. pyiqa's version
    (``scipy.linalg.sqrtm`` of a 2048² product) takes seconds per point and warns about the
    singular covariances a point of a few hundred images always has; the tests check both agree.
    """
    a_c, b_c = a - a.mean(0), b - b.mean(0)
    n, m = len(a) - 1, len(b) - 1
    cross = a_c @ b_c.T
    eigenvalues = np.linalg.eigvalsh(cross @ cross.T / (n * m))
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    mean_term = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
    return float(mean_term + (a_c**2).sum() / n + (b_c**2).sum() / m - 2 * trace_sqrt)


def _unbuildable(spec: MetricSpec, cause: BaseException) -> str:
    """Why a metric's pretrained weights could not be had, and what ``compare`` can do instead."""
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return (
        f"{spec.label}: cannot build the metric ({first[:200]}). Its pretrained weights go in "
        "pyiqa's cache (~/.cache/torch/hub/pyiqa/, or $PYIQA_CACHE_DIR); a fine-tuned checkpoint "
        f"is --metric {spec.name}:FILE; without any weights "
        + ", ".join(f"--metric {name}" for name in OFFLINE_METRICS)
        + " work offline, and --no-pretrained builds every network at random (smoke runs only)"
    )


def _keep_random(net: torch.nn.Module, *args, **kwargs) -> None:
    """Stands in for pyiqa's weight download when the network is wanted at random."""


def build(spec: MetricSpec, settings: Settings) -> Metric:
    """The metric a spec names: ``clipsim`` and ``fid`` are ours, any other name is pyiqa's."""
    if spec.name == "clipsim":
        if spec.weights is not None:
            raise MetricError("clipsim: give CLIP's weights with --clip-pretrained, not NAME:FILE")
        return ClipSim(spec.label, settings)
    if spec.name == "fid":
        if spec.weights is not None:
            raise MetricError("fid: the Inception weights come from pyiqa's cache, not NAME:FILE")
        return Fid(spec.label, settings)
    if spec.weights is not None and not spec.weights.is_file():
        raise MetricError(f"{spec.label}: {spec.weights}: no such weights file")
    return PyiqaMetric(spec, settings)


def build_all(texts: list[str], settings: Settings) -> list[Metric]:
    """Every metric of the command line, refusing two with one label (they would share a column)."""
    specs = [MetricSpec.parse(text) for text in texts]
    labels = [spec.label for spec in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise MetricError(f"metric label '{repeated[0]}' is given twice: name one LABEL=NAME")
    return [build(spec, settings) for spec in specs]


def to_tensor(image: Image.Image, device: str) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1], as pyiqa's metrics take."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].to(device)
