"""Linear probe on the stored embeddings (Table 4 of the paper), trained with torch.

One ``nn.Linear`` layer on the frozen embeddings, cross-entropy, AdamW (lr 1e-3, weight decay 0.01),
batches of 512, at most 100 epochs, early stopping with patience 20; the weights of the best
validation epoch are restored. Seeded: the same seed gives the same weights. Two stopping rules
(``rule``, see :data:`RULES`):

* ``loss`` (our default): torch's default initialisation of ``nn.Linear``; the best epoch is the one
  with the lowest mean **validation cross-entropy** (a smooth criterion that ties rarely);
* ``paper``: as the paper's ``src/linear_probing.py``: weights drawn from N(0, 0.01²) (``std=0.01``),
  bias 0; the best epoch is the first with the highest **validation accuracy** (strictly better than
  every earlier one), and training stops after ``patience`` epochs without a strictly better accuracy.
Test scores are the softmax probabilities, so AUPRC and AUROC use a proper ranking.

:func:`train_linear_probe` is pure (arrays in, probe out); :func:`evaluate_linear` reads the
embeddings of the train/val/test splits from PostgreSQL, trains, evaluates on test and stores the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cbir_pg.db.database import Database
from cbir_pg.eval.classification import ClassificationMetrics, classification_metrics

#: early-stopping rules: ``loss`` (ours, validation loss) and ``paper`` (validation accuracy, N(0, 0.01) init)
RULES = ("loss", "paper")


@dataclass
class LinearProbe:
    """A trained probe: weight ``(C, d)``, bias ``(C,)``, its class labels, and its training history."""

    weight: np.ndarray
    bias: np.ndarray
    classes: np.ndarray
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    rule: str = "loss"

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(n, C)``."""
        logits = np.asarray(X, dtype=np.float64) @ self.weight.T.astype(np.float64) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes[np.argmax(self.scores(X), axis=1)]


def train_linear_probe(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    seed: int = 0,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    batch_size: int = 512,
    max_epochs: int = 100,
    patience: int = 20,
    min_delta: float = 0.0,
    device: str = "cpu",
    rule: str = "loss",
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> LinearProbe:
    """Train a linear classifier with early stopping on the validation set (``rule``: module docstring).

    After each epoch the validation criterion is computed (``loss``: mean cross-entropy, better when
    lower by more than ``min_delta``; ``paper``: accuracy, better when strictly higher); training stops
    once it has not improved for ``patience`` epochs, and the best epoch's weights are kept. Without
    validation data it runs ``max_epochs`` and keeps the last weights.
    """
    import torch
    from torch import nn

    if rule not in RULES:
        raise ValueError(f"unknown linear-probe rule {rule!r}: use {' or '.join(RULES)}")

    classes_arr = np.asarray(sorted(set(np.asarray(y_train).tolist())) if classes is None else list(classes))
    if classes_arr.size < 2:
        raise ValueError("a linear probe needs at least two classes in the training labels")
    col = {int(c): j for j, c in enumerate(classes_arr)}
    yt = np.array([col[int(v)] for v in y_train], dtype=np.int64)
    keep_val = np.array([int(v) in col for v in y_val], dtype=bool)
    yv = np.array([col[int(v)] for v in np.asarray(y_val)[keep_val]], dtype=np.int64)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device(device)
    Xt = torch.as_tensor(np.asarray(X_train, dtype=np.float32), device=dev)
    Yt = torch.as_tensor(yt, device=dev)
    Xv = torch.as_tensor(np.asarray(X_val, dtype=np.float32)[keep_val], device=dev)
    Yv = torch.as_tensor(yv, device=dev)

    model = nn.Linear(Xt.shape[1], classes_arr.size).to(dev)
    if rule == "paper":  # src/linear_probing.py: LinearClassifier.__init__
        with torch.no_grad():
            model.weight.normal_(mean=0.0, std=0.01)
            model.bias.zero_()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    has_val = Xv.shape[0] > 0

    best = float("inf") if rule == "loss" else 0.0
    best_epoch = 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_hist: list[float] = []
    val_hist: list[float] = []
    acc_hist: list[float] = []
    stale = 0
    epoch = 0
    stopped = False
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = torch.randperm(Xt.shape[0], generator=gen).to(dev)
        total = 0.0
        for start in range(0, Xt.shape[0], batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xt[idx]), Yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        train_hist.append(total / Xt.shape[0])
        if not has_val:
            val_hist.append(float("nan"))
            best_epoch = epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if on_epoch:
                on_epoch(epoch, train_hist[-1], float("nan"))
            continue
        model.eval()
        with torch.no_grad():
            vlogits = model(Xv)
            vloss = float(loss_fn(vlogits, Yv))
            vacc = float((vlogits.argmax(dim=1) == Yv).float().mean())
        val_hist.append(vloss)
        acc_hist.append(vacc)
        if on_epoch:
            on_epoch(epoch, train_hist[-1], vloss)
        better = vloss < best - min_delta if rule == "loss" else vacc > best
        if better:
            best, best_epoch, stale = (vloss if rule == "loss" else vacc), epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                stopped = True
                break
    model.load_state_dict(best_state)
    return LinearProbe(
        weight=model.weight.detach().cpu().numpy().astype(np.float64),
        bias=model.bias.detach().cpu().numpy().astype(np.float64),
        classes=classes_arr,
        epochs_run=epoch,
        best_epoch=best_epoch,
        stopped_early=stopped,
        train_loss=train_hist,
        val_loss=val_hist,
        val_accuracy=acc_hist,
        rule=rule,
    )


@dataclass
class LinearResult:
    """A linear-probe evaluation: test metrics, training history and the stored run id."""

    model: str
    run_id: int | None
    test: ClassificationMetrics
    val: ClassificationMetrics
    classes: list[int]
    n_train: int
    n_val: int
    n_test: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    seed: int
    params: dict
    seconds: float


def evaluate_linear(
    db: Database,
    model: str,
    *,
    seed: int = 0,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    batch_size: int = 512,
    max_epochs: int = 100,
    patience: int = 20,
    train_split: str = "train",
    val_split: str = "val",
    test_split: str = "test",
    datasets: Sequence[str] | None = None,
    device: str = "cpu",
    rule: str = "loss",
    profile: str = "default",
    store: bool = True,
    progress: bool = True,
) -> LinearResult:
    """Train a linear probe on ``train_split`` embeddings, stop early on ``val_split``, report on
    ``test_split``, and store the run (kind ``linear``) with its metrics."""
    from cbir_pg.eval import data, runs, scope

    if rule not in RULES:
        from cbir_pg.errors import ConfigError

        raise ConfigError(f"unknown linear-probe rule {rule!r}: use {' or '.join(RULES)}")
    t0 = time.perf_counter()
    all_embedded = scope.check(db, model, datasets, (train_split, val_split, test_split))
    splits = {s: data.load_split(db, model, s, datasets) for s in (train_split, val_split, test_split)}
    tr, va, te = splits[train_split], splits[val_split], splits[test_split]
    if tr.ids.size == 0:
        from cbir_pg.errors import NotFoundError

        raise NotFoundError(f"no {train_split!r} embeddings with a label for model {model!r}")
    classes = sorted(set(tr.labels.tolist()))
    probe = train_linear_probe(
        tr.X,
        tr.labels,
        va.X,
        va.labels,
        classes=classes,
        seed=seed,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        max_epochs=max_epochs,
        patience=patience,
        device=device,
        rule=rule,
    )

    def metrics(split) -> ClassificationMetrics:
        if split.ids.size == 0:
            return classification_metrics(split.labels, split.labels, np.zeros((0, len(classes))), classes)
        return classification_metrics(split.labels, probe.predict(split.X), probe.scores(split.X), classes)

    test_m, val_m = metrics(te), metrics(va)
    params = {
        "seed": seed,
        "lr": lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "max_epochs": max_epochs,
        "patience": patience,
        "early_stopping": "val_loss" if rule == "loss" else "val_accuracy",
        "rule": rule,
        "init": "torch default" if rule == "loss" else "normal(0, 0.01), bias 0",
        "profile": profile,
        "train_split": train_split,
        "val_split": val_split,
        "test_split": test_split,
        "datasets": list(datasets) if datasets else None,
        "device": device,
        "epochs_run": probe.epochs_run,
        "best_epoch": probe.best_epoch,
        "stopped_early": probe.stopped_early,
    }
    seconds = time.perf_counter() - t0
    run_id = None
    if store:
        run_id = runs.store_classification_run(
            db,
            "linear",
            model,
            mode=None,
            params=params,
            test=test_m,
            val=val_m,
            at=0,
            seed=seed,
            n_queries=int(te.ids.size),
            n_index=int(tr.ids.size),
            seconds=seconds,
            extra_metrics={"epochs_run": probe.epochs_run, "best_epoch": probe.best_epoch},
            class_sizes=data.class_sizes(tr.labels),
            test_class_counts=data.class_sizes(te.labels),
            all_embedded=all_embedded,
        )
    return LinearResult(
        model,
        run_id,
        test_m,
        val_m,
        classes,
        int(tr.ids.size),
        int(va.ids.size),
        int(te.ids.size),
        probe.epochs_run,
        probe.best_epoch,
        probe.stopped_early,
        seed,
        params,
        seconds,
    )
