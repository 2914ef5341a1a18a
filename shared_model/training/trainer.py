"""The training loop: AdamW (decay on weight matrices only), seeded shuffles, early stopping.

The learning rate warms up linearly over the first ``warmup`` fraction of the planned steps,
then follows a cosine to nearly zero (OneCycle); validation mean NE is measured
``evals_per_epoch`` times an epoch and training stops after ``patience`` evaluations without a
new best, restoring the best weights. ``bf16`` runs the forward passes under bf16 autocast
(CUDA or CPU); the loss and the metrics stay in fp32.

The model returns logits; this loop owns the loss (``losses.multitask_bce``) and the metrics
(NE per head, paper eq. 2, and AUC as a sanity check).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from shared_model.losses import auc, multitask_bce, normalized_entropy

# idx (B,) -> (model inputs, labels (B, 2)); inputs are moved to the device by the loop
BatchFn = Callable[[np.ndarray], tuple[tuple, torch.Tensor]]
HEADS = ("ctr", "cvr")


@dataclass
class TrainConfig:
    epochs: int = 4
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.01
    patience: int = 1  # evaluations without improvement before stopping
    evals_per_epoch: int = 1
    max_train_rows: int = 0  # 0 = all; else a seeded subsample per run
    max_seconds: float = 0  # 0 = none; else evaluate and stop once training ran this long
    grad_clip: float = 1.0
    warmup: float = 0.1  # fraction of the planned steps spent warming the learning rate up
    final_div: float = 1e3  # the cosine ends at lr / (25 * final_div)
    bf16: bool = False  # bf16 autocast for the forward passes
    seed: int = 0
    progress: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**d)


@dataclass
class EvalResult:
    ne: list[float]  # per head: pCTR, pCVR
    auc: list[float]
    loss: float
    rows: int

    @property
    def ne_mean(self) -> float:
        return float(np.mean(self.ne))

    def to_dict(self) -> dict:
        return {**asdict(self), "ne_mean": self.ne_mean}

    def __str__(self) -> str:
        parts = [
            f"NE_{h}={n:.4f} AUC_{h}={a:.3f}"
            for h, n, a in zip(HEADS, self.ne, self.auc, strict=True)
        ]
        return " ".join(parts)


@dataclass
class FitResult:
    best: EvalResult
    best_epoch: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


def device_auto() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to(inputs: tuple, device: torch.device) -> tuple:
    return tuple(x.to(device) for x in inputs)


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    batch_fn: BatchFn,
    n: int,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> probabilities (n, 2) and labels (n, 2), in row order."""
    model.eval()
    probs, labels = [], []
    for lo in range(0, n, batch_size):
        inputs, y = batch_fn(np.arange(lo, min(lo + batch_size, n)))
        with autocast(device, bf16):
            logits = model(*_to(inputs, device))
        probs.append(torch.sigmoid(logits.float()).cpu())
        labels.append(y)
    return torch.cat(probs), torch.cat(labels)


def metrics(probs: torch.Tensor, labels: torch.Tensor, weights: list[float]) -> EvalResult:
    logits = torch.logit(probs.double().clamp(1e-7, 1 - 1e-7))
    loss = float(multitask_bce(logits, labels.double(), weights))
    ne = [normalized_entropy(probs[:, k], labels[:, k]) for k in range(labels.shape[1])]
    au = [auc(probs[:, k], labels[:, k]) for k in range(labels.shape[1])]
    return EvalResult(ne, au, loss, len(labels))


def evaluate(
    model, batch_fn: BatchFn, n: int, weights, batch_size=512, device=None, bf16: bool = False
) -> EvalResult:
    device = device or next(model.parameters()).device
    return metrics(*predict(model, batch_fn, n, batch_size, device, bf16), weights)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay only the >= 2-D weight matrices (as nanoGPT's configure_optimizers).

    Embedding tables (``nn.Embedding`` / ``nn.EmbeddingBag``), norm gains and biases are never
    decayed: decay pulls rarely-seen ids towards zero and fights the norms' scale.
    """
    tables = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding | torch.nn.EmbeddingBag)
    }
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in tables else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class _NoBar:
    def update(self, *_):
        pass

    set_postfix = set_description = update

    def close(self):
        pass


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:  # tqdm is imported only when a bar is shown
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def fit(
    model: torch.nn.Module,
    train_fn: BatchFn,
    n_train: int,
    val_fn: BatchFn,
    n_val: int,
    tc: TrainConfig,
    weights: list[float],
    desc: str = "train",
    device: torch.device | None = None,
) -> FitResult:
    """Train with early stopping on validation mean NE; the model ends with its best weights."""
    device = device or device_auto()
    model.to(device)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr)
    rows = n_train if not tc.max_train_rows else min(n_train, tc.max_train_rows)
    steps_per_epoch = max(1, math.ceil(rows / tc.batch_size))
    total = steps_per_epoch * tc.epochs
    if total >= 20:
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=tc.lr,
            total_steps=total,
            pct_start=tc.warmup,
            anneal_strategy="cos",
            cycle_momentum=False,
            final_div_factor=tc.final_div,
        )
    else:  # too few steps for a warm-up phase (OneCycleLR divides by its length)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    eval_at = {
        round(steps_per_epoch * (k + 1) / tc.evals_per_epoch) for k in range(tc.evals_per_epoch)
    }
    best, best_state, best_epoch, bad = None, None, 0.0, 0
    history: list[dict] = []
    start, step = time.perf_counter(), 0
    # summed on the device since the last evaluation: no per-step sync, so the next batch is
    # built on the CPU while the accelerator still runs this one
    train_loss, train_steps = torch.zeros((), device=device), 0
    bar = _progress_bar(total, desc, tc.progress)
    try:
        for epoch in range(tc.epochs):
            order = rng.permutation(n_train)[:rows]
            model.train()
            for k in range(steps_per_epoch):
                inputs, y = train_fn(np.sort(order[k * tc.batch_size : (k + 1) * tc.batch_size]))
                with autocast(device, tc.bf16):
                    logits = model(*_to(inputs, device))
                loss = multitask_bce(logits.float(), y.to(device), weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                opt.step()
                sched.step()
                step += 1
                train_loss, train_steps = train_loss + loss.detach(), train_steps + 1
                bar.update()
                if tc.progress:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                out_of_time = bool(tc.max_seconds) and (
                    time.perf_counter() - start > tc.max_seconds
                )
                if k + 1 not in eval_at and not out_of_time:
                    continue
                res = evaluate(model, val_fn, n_val, weights, device=device, bf16=tc.bf16)
                model.train()
                ep = epoch + (k + 1) / steps_per_epoch
                history.append(
                    {
                        "epoch": ep,
                        "step": step,
                        "lr": sched.get_last_lr()[0],
                        "train_loss": train_loss.item() / train_steps,
                        **res.to_dict(),
                    }
                )
                train_loss, train_steps = torch.zeros((), device=device), 0
                bar.set_description(f"{desc} val NE {res.ne_mean:.4f}")
                if best is None or res.ne_mean < best.ne_mean:
                    best, best_epoch, bad = res, ep, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
                if bad > tc.patience or out_of_time:
                    raise StopIteration
    except StopIteration:
        pass
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(best, best_epoch, history, time.perf_counter() - start, step)
