"""pyiqa metrics as trainable networks: building, weights, and which can be fine-tuned.

The paper fine-tunes TOPIQ-FR (Consistency) and TOPIQ-NR (Perception) and compares four more FR
(AHIQ, DISTS, LPIPS, PieAPP) and four more NR metrics (CLIP-IQA, CNNIQA, DBCNN, HyperIQA).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

PAPER_METRICS = (
    "topiq_fr", "ahiq", "dists", "lpips", "pieapp",
    "topiq_nr", "clipiqa", "cnniqa", "dbcnn", "hyperiqa",
)  # fmt: skip


class MetricError(ValueError):
    """A metric that cannot be built, loaded or trained; the message says why and what to do."""


class Metric:
    """A pyiqa architecture with what training needs: the network, FR or NR, and its direction."""

    def __init__(self, name: str, pretrained: bool, weights: Path | None, device: str) -> None:
        wrapper = create(name, pretrained, weights, device, as_loss=True)
        self.name = name
        self.net = wrapper.net
        self.full_reference = wrapper.metric_mode == "FR"
        self.lower_better = bool(wrapper.lower_better)
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        if not trainable:
            raise MetricError(
                f"{name}: has no trainable parameters in pyiqa: it cannot be fine-tuned"
            )

    def train_mode(self) -> None:
        """Training mode for the network, except BatchNorm layers whose affine parameters are
        frozen: they stay in eval mode so their running statistics (ImageNet's, for a pretrained
        backbone) never move. ``net.train()`` alone would put them in training mode, and pyiqa's
        TOPIQ only re-freezes them after its first forward pass — every epoch's first batch
        would update them."""
        self.net.train()
        for module in frozen_batchnorms(self.net):
            module.eval()

    def __call__(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        out = self.net(distorted, reference) if self.full_reference else self.net(distorted)
        return out.reshape(-1).float()


def frozen_batchnorms(net: torch.nn.Module) -> list[torch.nn.Module]:
    """BatchNorm layers of ``net`` whose parameters are all frozen (``requires_grad`` False)."""
    return [
        m
        for m in net.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and not any(p.requires_grad for p in m.parameters())
    ]


def read_checkpoint(path: Path) -> dict:
    """A checkpoint file's contents, loaded as data only (``weights_only=True``: unpickling a
    file may run code, and a checkpoint is data); a MetricError for anything else."""
    if not Path(path).is_file():
        raise MetricError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or holding code: all unusable
        raise MetricError(f"{path}: {_unreadable(path, error)}") from error
    if not isinstance(state, dict):
        raise MetricError(f"{path}: not a checkpoint (holds a {type(state).__name__})")
    return state


def _unreadable(path: Path, error: Exception) -> str:
    """Why torch.load refused a file, in words: for a file that is not a checkpoint at all its
    own message is a bare internal key such as "(101)"."""
    if not zipfile.is_zipfile(path):  # every torch.save since PyTorch 1.6 is a zip archive
        return "not a PyTorch checkpoint (give a best.pt of python -m train_iqa, or pyiqa weights)"
    text = str(error)
    if "weights_only" in text:
        return "a checkpoint holding code, not only weights: refused (loading could run it)"
    first = (text.strip().splitlines() or [type(error).__name__])[0][:160]
    return f"not a readable checkpoint ({first})"


def create(
    name: str,
    pretrained: bool,
    weights: Path | None,
    device: str,
    as_loss: bool,
    weights_option: str = "--weights FILE",
):
    """The pyiqa wrapper for ``name``, offline-able and with a checkpoint loaded strictly.

    Shared by training (``as_loss=True``: gradients flow) and scoring (``compare``: inference).
    Without ``pretrained`` the architecture is built at random (its backbone too, for TOPIQ),
    so it builds offline; metrics without weights (PSNR, SSIM) take no such option.
    ``weights_option`` is how the caller's command line names a checkpoint, for the error.
    """
    import pyiqa

    if name not in pyiqa.list_models():
        raise MetricError(f"unknown pyiqa metric '{name}'")
    # With a checkpoint, every weight comes from it: nothing needs downloading first.
    pretrained = pretrained and weights is None
    options = {} if pretrained else {"pretrained": False}
    if not pretrained and name.startswith("topiq"):
        options["backbone_pretrain"] = False
    try:
        wrapper = _create_metric(pyiqa, name, as_loss, device, options)
    except Exception as error:  # downloads fail in many ways offline
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        fix = (
            f"give a checkpoint with {weights_option}, or build it at random with --no-pretrained"
            if pretrained
            else "even at random, this metric builds its backbone from downloaded weights"
        )
        raise MetricError(
            f"{name}: cannot build the metric ({first}). Its pretrained weights go in pyiqa's "
            f"cache (~/.cache/torch/hub/pyiqa/, or $PYIQA_CACHE_DIR); {fix}"
        ) from error
    if weights is not None:
        load_weights(wrapper.net, weights)
    return wrapper


def _create_metric(pyiqa, name: str, as_loss: bool, device: str, options: dict):
    """``pyiqa.create_metric`` with only the options its architecture declares: PSNR and SSIM
    have no ``pretrained`` (no weights to skip), and PSNR would pass it on to its formula."""
    import inspect

    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY

    arch = DEFAULT_CONFIGS.get(name, {}).get("metric_opts", {}).get("type")
    try:
        from pyiqa.archs import _lazy_import_arch  # registers the class on first use

        _lazy_import_arch(arch)
        declared = inspect.signature(ARCH_REGISTRY.get(arch).__init__).parameters
        options = {key: value for key, value in options.items() if key in declared}
    except Exception:  # another pyiqa layout: pass the options as they are
        pass
    return pyiqa.create_metric(name, as_loss=as_loss, device=device, **options)


def load_weights(net: torch.nn.Module, path: Path) -> None:
    """Load a checkpoint strictly: pyiqa itself loads with strict=False, which would silently
    keep random layers where names differ. Accepts our checkpoints and pyiqa's ('params' key)."""
    state = read_checkpoint(path)
    for key in ("model", "params", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricError(f"{path}: not a checkpoint of network weights")
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        raise MetricError(
            f"{path} does not match this metric: {len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(mismatched)} mis-shaped tensors (first: "
            f"{(missing + unexpected + mismatched)[0]})"
        )
    net.load_state_dict(state, strict=True)
