"""Fine-tuning a pyiqa metric on the study's MOS (CMC-Bench A.3: Adam, lr 2e-5, MSE, 50 epochs,
80/20 split), evaluated after every epoch on a validation split (carved from the training images,
to choose ``best.pt``) and on the untouched test split (to report).

Reproducible by construction: every random choice comes from ``--seed`` (the split, the weights'
initialization, each epoch's shuffle order — a function of the seed and the epoch alone — and
dropout, whose generator state is saved); ``last.pt`` holds the whole state, written atomically,
so a run killed at any point (even while saving) resumes to the same numbers, bit for bit on the
CPU, as a run never interrupted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from train_iqa.data import DataError, ImagePairs, split
from train_iqa.model import Metric, MetricError, read_checkpoint
from train_iqa.stats import correlations

SCALE = 5.0  # MOS 0–5 is learned as MOS / 5, the 0–1 range of pyiqa's scores
FORMAT = 2  # of the checkpoints; 1 (no settings, no split) is refused on --resume
RESUMABLE = ("epochs", "device", "workers", "save_every")
"""Settings a resumed run may change: they change neither the data nor the sequence of updates
(``device`` may change the last bits of the numbers, as any change of hardware does)."""
KILL_HOOK = "TRAIN_IQA_TEST_KILL"
"""Test hook: ``step:E:S`` kills the process (SIGKILL) before step S of epoch E (both from 1),
``save:N`` half-way through writing the N-th checkpoint file. Used by the resume tests only."""


@dataclass
class TrainSettings:
    """Everything a run depends on; stored in its checkpoints, checked on ``--resume`` and used by
    validate / the leaderboard (image size, test images)."""

    epochs: int = 50
    lr: float = 2e-5
    batch_size: int = 8
    size: int = 384
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    select_on: str = "val"  # "val": best.pt by validation SRCC; "test": the paper's choice
    by_content: bool = True
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    workers: int = 0
    save_every: int = 0  # also write last.pt every this many steps (0: at each epoch's end)
    metric: str = ""
    target: str = ""
    pretrained: bool = False
    weights: str | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU), and ask cuDNN for deterministic kernels:
    call before the metric is built, since its random initialization draws from torch's RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def train(
    metric: Metric, frame: pd.DataFrame, settings: TrainSettings, out: Path, resume: bool
) -> dict:
    """Train; write ``last.pt`` (whole state) every epoch, ``best.pt`` at the best selection SRCC
    (validation, or test with ``select_on="test"``), ``metrics.json`` and ``scatter.png``; return
    the selected epoch's record."""
    out.mkdir(parents=True, exist_ok=True)
    rows = splits(frame, settings)
    sets = {
        name: ImagePairs(frame.iloc[r], settings.size, settings.device) for name, r in rows.items()
    }
    stimuli = {name: frame.iloc[r]["stimulus"].astype(str).tolist() for name, r in rows.items()}
    run = {"metric": metric.name, "settings": asdict(settings), "data": fingerprint(frame)}
    optimizer = torch.optim.Adam(metric.net.parameters(), lr=settings.lr)
    state = {"epoch": 0, "step": 0, "losses": [], "history": [], "best": None}
    if resume and (out / "last.pt").exists():
        state = _restore(out / "last.pt", run, metric, optimizer)
    saves = _Saver(out)
    use_amp = settings.amp and settings.device.startswith("cuda")
    if not state["history"]:  # the untrained metric: what fine-tuning is measured against
        state["history"].append(
            _evaluate(metric, sets, settings, {"epoch": 0, "train_loss": None})[0]
        )
        _write_json(out, run, state, stimuli)
    per_epoch = len(epoch_batches(len(sets["train"]), settings.batch_size, settings.seed, 0))
    progress = tqdm(
        total=settings.epochs * per_epoch, initial=state["epoch"] * per_epoch + state["step"],
        desc=f"training {metric.name}", unit="step",
    )  # fmt: skip
    for epoch in range(state["epoch"], settings.epochs):
        progress.set_postfix_str(f"epoch {epoch + 1}/{settings.epochs}")
        batches = epoch_batches(len(sets["train"]), settings.batch_size, settings.seed, epoch)
        # With CUDA the decoded images already sit on the GPU: worker processes would only get in
        # the way (they cannot share CUDA tensors), so batches are assembled in the main process.
        loader = DataLoader(
            sets["train"], batch_sampler=batches[state["step"] :],
            num_workers=0 if settings.device.startswith("cuda") else settings.workers,
            generator=_own_generator(settings.seed),
        )  # fmt: skip
        metric.train_mode()
        for distorted, reference, target in loader:
            state["step"] += 1
            _kill_hook("step", epoch + 1, state["step"])
            goal = _goal(target.to(settings.device), metric.lower_better)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                pred = metric(distorted.to(settings.device), reference.to(settings.device))
                loss = torch.nn.functional.mse_loss(pred, goal)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state["losses"].append(loss.item())
            progress.update()
            if settings.save_every and state["step"] % settings.save_every == 0:
                saves.last({**run, **state}, metric, optimizer)
        record, scores = _evaluate(
            metric,
            sets,
            settings,
            {"epoch": epoch + 1, "train_loss": float(np.mean(state["losses"]))},
        )
        state["history"].append(record)
        chosen = record[settings.select_on]["srcc"]
        if state["best"] is None or chosen > state["best"][settings.select_on]["srcc"] or (
            not np.isfinite(state["best"][settings.select_on]["srcc"]) and np.isfinite(chosen)
        ):  # fmt: skip
            state["best"] = record
            saves.best(run, record, stimuli, metric)
            _scatter(
                out, metric, record, scores["test"], sets["test"].targets.numpy(), settings.target
            )
        state.update(epoch=epoch + 1, step=0, losses=[])
        _write_json(out, run, state, stimuli)
        saves.last({**run, **state}, metric, optimizer)
        tqdm.write(_line(record, settings.select_on))
    progress.close()
    return state["best"]


def _evaluate(metric: Metric, sets: dict, settings: TrainSettings, record: dict):
    """``record`` with the validation and test figures, and the raw scores behind them."""
    scores = {}
    for name in ("val", "test"):
        if name in sets:
            scores[name] = predict(metric, sets[name], settings)
            record[name] = _figures(scores[name], sets[name], metric)
    return record, scores


def splits(frame: pd.DataFrame, settings: TrainSettings) -> dict[str, np.ndarray]:
    """Row indices of ``train``, ``val`` (unless selecting on test: the paper's way) and ``test``.

    The test split is drawn from the seed; the validation split is carved from the training rows
    the same way (content-disjoint unless ``by_content`` is off), with the next seed."""
    train_rows, test_rows = split(frame, settings.test_fraction, settings.seed, settings.by_content)
    unit = "references" if settings.by_content else "images"
    if len(test_rows) < 3:  # no correlation from fewer: every test figure would be NaN
        raise DataError(
            f"the test split holds {len(test_rows)} of {len(frame)} images (--test-fraction "
            f"{settings.test_fraction:g} of the {unit}); at least 3 are needed: raise it or add data"
        )
    if len(train_rows) == 0:
        raise DataError(
            f"the training split is empty (--test-fraction {settings.test_fraction:g} of "
            f"{frame['reference'].nunique() if settings.by_content else len(frame)} {unit} "
            "leaves none to train on): lower it or add data"
        )
    if settings.select_on == "test":
        return {"train": train_rows, "test": test_rows}
    part = frame.iloc[train_rows].reset_index(drop=True)
    fit, val = split(part, settings.val_fraction, settings.seed + 1, settings.by_content)
    if len(fit) == 0 or len(val) < 3:  # a validation SRCC needs 3 images, or best.pt never moves
        raise DataError(
            f"too few {unit} to carve a validation split of at least 3 images "
            f"(--val-fraction {settings.val_fraction:g}) from {len(train_rows)} training images; add data, or select on test (the paper's way)"
        )
    return {"train": train_rows[fit], "val": train_rows[val], "test": test_rows}


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The training batches of one epoch: a permutation drawn from (seed, epoch) alone, so that a
    resumed run, at any step, sees exactly the order an uninterrupted one does."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of the stimuli, their targets and images: a resume on other data is refused."""
    columns = ["stimulus", "target", "distorted_path", "reference_path", "reference"]
    text = frame[columns].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()


@torch.inference_mode()
def predict(metric: Metric, data: ImagePairs, settings: TrainSettings) -> np.ndarray:
    """The metric's raw scores on ``data``, in order."""
    metric.net.eval()
    loader = DataLoader(
        data, batch_size=settings.batch_size, shuffle=False, generator=_own_generator(0)
    )
    scores = [
        metric(d.to(settings.device), r.to(settings.device)).float().cpu().numpy()
        for d, r, _ in loader
    ]
    return np.concatenate(scores) if scores else np.zeros(0)


def to_mos(scores, lower_better: bool) -> np.ndarray:
    """A fine-tuned metric's raw scores on the MOS scale (0–5, higher = better): the inverse of
    what it was trained on (MOS/5, or 1 − MOS/5 for a lower-is-better metric)."""
    scores = np.asarray(scores, float)
    return SCALE * (1.0 - scores if lower_better else scores)


def _figures(scores: np.ndarray, data: ImagePairs, metric: Metric) -> dict[str, float]:
    """Correlations of one split; all NaN if training diverged to non-finite scores (the epoch is
    then never selected, and the history shows it)."""
    if not np.isfinite(scores).all():
        return {"srcc": np.nan, "krcc": np.nan, "plcc": np.nan, "rmse": np.nan}
    return correlations(scores, data.targets.numpy(), metric.lower_better)


def _own_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator: without one, creating its iterator draws a seed from torch's
    global RNG, and a run resumed mid-epoch would draw one more time than an uninterrupted one."""
    return torch.Generator().manual_seed(seed)


def _goal(target: torch.Tensor, lower_better: bool) -> torch.Tensor:
    """The training target: MOS/5, or 1 − MOS/5 for a lower-is-better metric (keeping its
    direction); :func:`to_mos` inverts it."""
    scaled = target / SCALE
    return 1.0 - scaled if lower_better else scaled


class _Saver:
    """Atomic checkpoint writes: each file is written whole to a temporary name, flushed to disk,
    then renamed over the old one, so a kill at any moment leaves the old file or the new one,
    never a truncated one."""

    def __init__(self, out: Path) -> None:
        self.out, self.count = out, 0

    def last(self, state: dict, metric: Metric, optimizer: torch.optim.Optimizer) -> None:
        self._write(
            {**state, "format": FORMAT, "model": metric.net.state_dict(),
             "optimizer": optimizer.state_dict(), "rng": _rng_state()},
            self.out / "last.pt",
        )  # fmt: skip

    def best(self, run: dict, record: dict, stimuli: dict, metric: Metric) -> None:
        self._write(
            {**run, "format": FORMAT, "model": metric.net.state_dict(), "record": record,
             "stimuli": stimuli},
            self.out / "best.pt",
        )  # fmt: skip

    def _write(self, payload: dict, path: Path) -> None:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        self.count += 1
        atomic_write(path, buffer.getvalue(), hook=self.count)


def atomic_write(path: Path, data: bytes, hook: int | None = None) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename (atomic on POSIX)."""
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "wb") as file:
        file.write(data[: len(data) // 2])
        if hook is not None:
            _kill_hook("save", hook)
        file.write(data[len(data) // 2 :])
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _kill_hook(*where) -> None:
    if os.environ.get(KILL_HOOK) == ":".join(map(str, where)):
        os.kill(os.getpid(), signal.SIGKILL)


def _rng_state() -> dict:
    """Every generator a step may draw from (dropout uses torch's), as plain data for
    ``weights_only`` loading."""
    bit_generator = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": json.dumps(bit_generator, default=lambda a: a.tolist()),
        "python": json.dumps(random.getstate()),
    }


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = json.loads(rng["numpy"])
    state["state"]["key"] = np.array(state["state"]["key"], dtype=np.uint32)
    np.random.set_state(state)
    version, internal, gauss = json.loads(rng["python"])
    random.setstate((version, tuple(internal), gauss))


def _restore(path: Path, run: dict, metric: Metric, optimizer) -> dict:
    """The state saved in ``last.pt``, after checking it belongs to the same run: same metric,
    same data and the same settings but for those in ``RESUMABLE``."""
    saved = read_checkpoint(path)
    if saved.get("format") != FORMAT or "settings" not in saved:
        raise MetricError(f"{path}: not a resumable train_iqa checkpoint (an older format?)")
    if saved["metric"] != run["metric"]:
        raise MetricError(f"{path}: a run of {saved['metric']}, not {run['metric']}")
    if saved["data"] != run["data"]:
        raise MetricError(f"{path}: trained on other data (MOS file or images differ)")
    changed = [
        f"--{name.replace('_', '-')} {saved['settings'].get(name)!r} → {value!r}"
        for name, value in run["settings"].items()
        if name not in RESUMABLE and saved["settings"].get(name) != value
    ]
    if changed:
        raise MetricError(
            f"{path}: cannot resume with changed settings ({'; '.join(changed)}); "
            "use the original ones, or a new --out"
        )
    metric.net.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    _set_rng_state(saved["rng"])
    return {k: saved[k] for k in ("epoch", "step", "losses", "history", "best")}


def _write_json(out: Path, run: dict, state: dict, stimuli: dict) -> None:
    """Every epoch: the whole history, the selected epoch and the final one, the settings and
    the stimuli of each split, beside the checkpoints."""
    report = {
        "metric": run["metric"],
        "selected_on": run["settings"]["select_on"],
        "best": state["best"],
        "final": state["history"][-1],
        "history": state["history"],
        "settings": run["settings"],
        **{f"{name}_size": len(stimuli.get(name, [])) for name in ("train", "val", "test")},
        "test_stimuli": stimuli["test"],
        "val_stimuli": stimuli.get("val", []),
    }
    atomic_write(out / "metrics.json", json.dumps(report, indent=2).encode())


def _line(record: dict, select_on: str) -> str:
    test = record["test"]
    chosen = f"  val SRCC {record['val']['srcc']:.3f}" if "val" in record else ""
    return (
        f"epoch {record['epoch']}: loss {record['train_loss']:.4f}{chosen}  test SRCC "
        f"{test['srcc']:.3f}  KRCC {test['krcc']:.3f}  PLCC {test['plcc']:.3f}  "
        f"RMSE {test['rmse']:.3f}"
    )


def _scatter(out, metric, record, scores, mos, target: str) -> None:
    """The selected epoch's test predictions against the MOS, both on the MOS scale (the raw
    0–1 output turned back by :func:`to_mos`), the target named on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(to_mos(scores, metric.lower_better), mos, s=8, alpha=0.6)
    ax.plot([0, SCALE], [0, SCALE], color="grey", linewidth=0.8, linestyle="--")
    ax.set(xlabel=f"{metric.name}'s predicted {target} (MOS scale)", ylabel=f"{target} (MOS)",
           xlim=(0, SCALE), ylim=(0, SCALE),
           title=f"test split, epoch {record['epoch']}: SRCC {record['test']['srcc']:.3f}")  # fmt: skip
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(out / "scatter.png", buffer.getvalue())
