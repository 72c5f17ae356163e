"""Fine-tuning a pyiqa metric on the study's MOS (CMC-Bench A.3: Adam, lr 2e-5, MSE, 50 epochs,
80/20 split), evaluated on the test split after every epoch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from train_iqa.data import ImagePairs, split
from train_iqa.model import Metric
from train_iqa.stats import correlations, oriented

SCALE = 5.0  # MOS 0–5 is learned as MOS / 5, the 0–1 range of pyiqa's scores


@dataclass
class TrainSettings:
    epochs: int = 50
    lr: float = 2e-5
    batch_size: int = 8
    size: int = 384
    test_fraction: float = 0.2
    by_content: bool = True
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    workers: int = 0


def train(
    metric: Metric, frame: pd.DataFrame, settings: TrainSettings, out: Path, resume: bool
) -> dict:
    """Train; write ``last.pt`` every epoch, ``best.pt`` and ``metrics.json`` at the best test
    SRCC, and ``scatter.png``; return the best epoch's figures."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    train_rows, test_rows = split(frame, settings.test_fraction, settings.seed, settings.by_content)
    train_set = ImagePairs(frame.iloc[train_rows], settings.size, settings.device)
    test_set = ImagePairs(frame.iloc[test_rows], settings.size, settings.device)
    # A lower-is-better metric learns 1 − MOS/5, keeping its direction.
    sign = -1.0 if metric.lower_better else 1.0
    optimizer = torch.optim.Adam(metric.net.parameters(), lr=settings.lr)
    history: list[dict] = []
    start = 0
    best = {"srcc": -np.inf}
    if resume and (out / "last.pt").exists():
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        metric.net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history, best = state["epoch"], state["history"], state["best"]
    # With CUDA the decoded images already sit on the GPU: worker processes would only get in the
    # way (they cannot share CUDA tensors), so batches are assembled in the main process.
    workers = 0 if settings.device.startswith("cuda") else settings.workers
    loader = DataLoader(
        train_set, batch_size=settings.batch_size, shuffle=True, num_workers=workers,
        generator=torch.Generator().manual_seed(settings.seed + start),
    )  # fmt: skip
    use_amp = settings.amp and settings.device.startswith("cuda")
    for epoch in tqdm(range(start, settings.epochs), desc=f"training {metric.name}", unit="epoch"):
        metric.net.train()
        losses = []
        for distorted, reference, target in loader:
            distorted, reference = distorted.to(settings.device), reference.to(settings.device)
            goal = _goal(target.to(settings.device), sign)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                loss = torch.nn.functional.mse_loss(metric(distorted, reference), goal)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scores = predict(metric, test_set, settings)
        figures = correlations(scores, test_set.targets.numpy(), metric.lower_better)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **figures}
        history.append(record)
        if figures["srcc"] > best["srcc"] or not np.isfinite(best["srcc"]):
            best = record
            torch.save({"model": metric.net.state_dict(), "metric": metric.name}, out / "best.pt")
            _scatter(out, metric, record, scores, test_set.targets.numpy())
        _write_json(out, metric, settings, best, history, frame, test_rows)
        torch.save(
            {"model": metric.net.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": epoch + 1, "history": history, "best": best},
            out / "last.pt",
        )  # fmt: skip
        tqdm.write(
            f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  SRCC {figures['srcc']:.3f}  "
            f"KRCC {figures['krcc']:.3f}  PLCC {figures['plcc']:.3f}  RMSE {figures['rmse']:.3f}"
        )
    return best


@torch.inference_mode()
def predict(metric: Metric, data: ImagePairs, settings: TrainSettings) -> np.ndarray:
    """The metric's raw scores on ``data``, in order."""
    metric.net.eval()
    loader = DataLoader(data, batch_size=settings.batch_size, shuffle=False)
    scores = [
        metric(d.to(settings.device), r.to(settings.device)).float().cpu().numpy()
        for d, r, _ in loader
    ]
    return np.concatenate(scores) if scores else np.zeros(0)


def _goal(target: torch.Tensor, sign: float) -> torch.Tensor:
    scaled = target / SCALE
    return scaled if sign > 0 else 1.0 - scaled


def _write_json(out, metric, settings, best, history, frame, test_rows) -> None:
    """Every epoch: the whole history, the best epoch (by test SRCC, as the paper reports — an
    optimistic choice) and the final one, beside the checkpoints."""
    (out / "metrics.json").write_text(
        json.dumps(
            {"metric": metric.name, "best": best, "final": history[-1], "history": history,
             "settings": asdict(settings), "train_size": len(frame) - len(test_rows),
             "test_size": len(test_rows),
             "test_stimuli": frame.iloc[test_rows]["stimulus"].tolist()},
            indent=2,
        )
    )  # fmt: skip


def _scatter(out, metric, record, scores, mos) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(oriented(scores, metric.lower_better), mos, s=8, alpha=0.6)
    ax.set(xlabel=f"{metric.name} prediction", ylabel="MOS",
           title=f"test split, epoch {record['epoch']}: SRCC {record['srcc']:.3f}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(out / "scatter.png", dpi=110)
    plt.close(fig)
