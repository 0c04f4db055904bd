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
from dataclasses import asdict, dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class ProbeOptions:
    """How a probe is trained (the module docstring gives the defaults' sources)."""

    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 512
    max_epochs: int = 100
    patience: int = 20
    min_delta: float = 0.0
    device: str = "cpu"
    rule: str = "loss"


@dataclass
class _Data:
    """Training and validation tensors, labels as class columns (validation rows of unknown classes dropped)."""

    classes: np.ndarray
    Xt: Any
    Yt: Any
    Xv: Any
    Yv: Any


def _tensors(X_train, y_train, X_val, y_val, classes, device: str) -> _Data:
    import torch

    classes_arr = np.asarray(sorted(set(np.asarray(y_train).tolist())) if classes is None else list(classes))
    if classes_arr.size < 2:
        raise ValueError("a linear probe needs at least two classes in the training labels")
    col = {int(c): j for j, c in enumerate(classes_arr)}
    yt = np.array([col[int(v)] for v in y_train], dtype=np.int64)
    keep_val = np.array([int(v) in col for v in y_val], dtype=bool)
    yv = np.array([col[int(v)] for v in np.asarray(y_val)[keep_val]], dtype=np.int64)
    dev = torch.device(device)
    return _Data(
        classes_arr,
        torch.as_tensor(np.asarray(X_train, dtype=np.float32), device=dev),
        torch.as_tensor(yt, device=dev),
        torch.as_tensor(np.asarray(X_val, dtype=np.float32)[keep_val], device=dev),
        torch.as_tensor(yv, device=dev),
    )


@dataclass
class _Stopping:
    """Early stopping on the validation criterion (``loss``: lower by more than ``min_delta``;
    ``paper``: strictly higher accuracy), keeping the best epoch's weights."""

    rule: str
    min_delta: float
    patience: int
    best: float
    best_epoch: int = 0
    best_state: dict = field(default_factory=dict)
    stale: int = 0

    @classmethod
    def start(cls, opts: ProbeOptions, model: Any) -> _Stopping:
        out = cls(opts.rule, opts.min_delta, opts.patience, float("inf") if opts.rule == "loss" else 0.0)
        out.keep(0, model)
        return out

    def keep(self, epoch: int, model: Any) -> None:
        self.best_epoch = epoch
        self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def stop(self, epoch: int, model: Any, vloss: float, vacc: float) -> bool:
        """Record one epoch's validation result; true once it has not improved for ``patience`` epochs."""
        better = vloss < self.best - self.min_delta if self.rule == "loss" else vacc > self.best
        if better:
            self.best, self.stale = (vloss if self.rule == "loss" else vacc), 0
            self.keep(epoch, model)
            return False
        self.stale += 1
        return self.stale >= self.patience


def _new_model(d: _Data, opts: ProbeOptions) -> Any:
    """``nn.Linear`` with torch's default initialisation, or N(0, 0.01), bias 0 for the paper rule."""
    from torch import nn

    model = nn.Linear(d.Xt.shape[1], d.classes.size).to(d.Xt.device)
    if opts.rule == "paper":  # src/linear_probing.py: LinearClassifier.__init__
        import torch

        with torch.no_grad():
            model.weight.normal_(mean=0.0, std=0.01)
            model.bias.zero_()
    return model


def _train_epoch(model, opt, loss_fn, d: _Data, gen, batch_size: int) -> float:
    """One pass over the training data in seeded random batches; returns the mean training loss."""
    import torch

    model.train()
    perm = torch.randperm(d.Xt.shape[0], generator=gen).to(d.Xt.device)
    total = 0.0
    for start in range(0, d.Xt.shape[0], batch_size):
        idx = perm[start : start + batch_size]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(d.Xt[idx]), d.Yt[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach()) * idx.numel()
    return total / d.Xt.shape[0]


def _validate(model, loss_fn, d: _Data) -> tuple[float, float]:
    """Mean validation cross-entropy and accuracy."""
    import torch

    model.eval()
    with torch.no_grad():
        vlogits = model(d.Xv)
        return float(loss_fn(vlogits, d.Yv)), float((vlogits.argmax(dim=1) == d.Yv).float().mean())


@dataclass
class _History:
    """Per-epoch training loss, validation loss and accuracy; epochs run and whether it stopped early."""

    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    epochs: int = 0
    stopped: bool = False


def train_linear_probe(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
    **options: Any,
) -> LinearProbe:
    """Train a linear classifier with early stopping on the validation set (``rule``: module docstring;
    ``options``: the fields of :class:`ProbeOptions`).

    After each epoch the validation criterion is computed (``loss``: mean cross-entropy, better when
    lower by more than ``min_delta``; ``paper``: accuracy, better when strictly higher); training stops
    once it has not improved for ``patience`` epochs, and the best epoch's weights are kept. Without
    validation data it runs ``max_epochs`` and keeps the last weights.
    """
    import torch
    from torch import nn

    opts = ProbeOptions(**options)
    if opts.rule not in RULES:
        raise ValueError(f"unknown linear-probe rule {opts.rule!r}: use {' or '.join(RULES)}")
    d = _tensors(X_train, y_train, X_val, y_val, classes, opts.device)
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    model = _new_model(d, opts)
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    has_val = d.Xv.shape[0] > 0
    stopping = _Stopping.start(opts, model)
    hist = _History()
    for epoch in range(1, opts.max_epochs + 1):
        hist.train.append(_train_epoch(model, opt, loss_fn, d, gen, opts.batch_size))
        vloss, vacc = _validate(model, loss_fn, d) if has_val else (float("nan"), None)
        hist.val.append(vloss)
        hist.epochs = epoch
        if on_epoch:
            on_epoch(epoch, hist.train[-1], vloss)
        if not has_val:
            stopping.keep(epoch, model)
            continue
        hist.accuracy.append(vacc)
        if stopping.stop(epoch, model, vloss, vacc):
            hist.stopped = True
            break
    model.load_state_dict(stopping.best_state)
    return LinearProbe(
        weight=model.weight.detach().cpu().numpy().astype(np.float64),
        bias=model.bias.detach().cpu().numpy().astype(np.float64),
        classes=d.classes,
        epochs_run=hist.epochs,
        best_epoch=stopping.best_epoch,
        stopped_early=hist.stopped,
        train_loss=hist.train,
        val_loss=hist.val,
        val_accuracy=hist.accuracy,
        rule=opts.rule,
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


def _load(
    db: Database, model: str, split_names: tuple[str, str, str], datasets
) -> tuple[Any, Any, Any, bool]:
    """The labelled train, validation and test images with their vectors, and whether every image in
    scope has one; an error when the training split has none."""
    from cbir_pg.eval import data, scope

    all_embedded = scope.check(db, model, datasets, split_names)
    splits = {s: data.load_split(db, model, s, datasets) for s in split_names}
    tr, va, te = (splits[s] for s in split_names)
    if tr.ids.size == 0:
        from cbir_pg.errors import NotFoundError

        raise NotFoundError(f"no {split_names[0]!r} embeddings with a label for model {model!r}")
    return tr, va, te, all_embedded


def _split_metrics(probe: LinearProbe, split: Any, classes: list[int]) -> ClassificationMetrics:
    if split.ids.size == 0:
        return classification_metrics(split.labels, split.labels, np.zeros((0, len(classes))), classes)
    return classification_metrics(split.labels, probe.predict(split.X), probe.scores(split.X), classes)


def _params(opts: ProbeOptions, probe: LinearProbe, **scope: Any) -> dict[str, Any]:
    """The stored run's parameters: how the probe was trained, on what, and how training ended."""
    loss = opts.rule == "loss"
    return {
        **{k: v for k, v in asdict(opts).items() if k != "min_delta"},
        "early_stopping": "val_loss" if loss else "val_accuracy",
        "init": "torch default" if loss else "normal(0, 0.01), bias 0",
        **scope,
        "epochs_run": probe.epochs_run,
        "best_epoch": probe.best_epoch,
        "stopped_early": probe.stopped_early,
    }


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
    if rule not in RULES:
        from cbir_pg.errors import ConfigError

        raise ConfigError(f"unknown linear-probe rule {rule!r}: use {' or '.join(RULES)}")
    opts = ProbeOptions(seed, lr, weight_decay, batch_size, max_epochs, patience, device=device, rule=rule)
    t0 = time.perf_counter()
    f = _fit(db, model, opts, (train_split, val_split, test_split), datasets)
    scope = dict(train_split=train_split, val_split=val_split, test_split=test_split)
    params = _params(opts, f.probe, profile=profile, **scope, datasets=list(datasets) if datasets else None)
    seconds = time.perf_counter() - t0
    run_id = _store(db, model, f, params, seconds) if store else None
    p = f.probe
    return LinearResult(
        model,
        run_id,
        f.test,
        f.val,
        f.classes,
        *f.sizes(),
        p.epochs_run,
        p.best_epoch,
        p.stopped_early,
        seed,
        params,
        seconds,
    )


@dataclass
class _Fitted:
    """A probe trained on one evaluation's splits and its metrics on validation and test."""

    probe: LinearProbe
    train: Any  # data.SplitData
    val_split: Any
    test_split: Any
    classes: list[int]
    test: ClassificationMetrics
    val: ClassificationMetrics
    all_embedded: bool

    def sizes(self) -> tuple[int, int, int]:
        return int(self.train.ids.size), int(self.val_split.ids.size), int(self.test_split.ids.size)


def _fit(
    db: Database, model: str, opts: ProbeOptions, split_names: tuple[str, str, str], datasets
) -> _Fitted:
    """Load the splits, train on the first (stopping early on the second), evaluate on the last two."""
    tr, va, te, all_embedded = _load(db, model, split_names, datasets)
    classes = sorted(set(tr.labels.tolist()))
    probe = train_linear_probe(tr.X, tr.labels, va.X, va.labels, classes=classes, **asdict(opts))
    return _Fitted(
        probe,
        tr,
        va,
        te,
        classes,
        _split_metrics(probe, te, classes),
        _split_metrics(probe, va, classes),
        all_embedded,
    )


def _store(db: Database, model: str, f: _Fitted, params: dict[str, Any], seconds: float) -> int:
    """The run (kind ``linear``): test and validation metrics, per-class test values with class sizes."""
    from cbir_pg.eval import data, runs

    return runs.store_classification_run(
        db,
        "linear",
        model,
        mode=None,
        params=params,
        test=f.test,
        val=f.val,
        at=0,
        seed=params["seed"],
        n_queries=int(f.test_split.ids.size),
        n_index=int(f.train.ids.size),
        seconds=seconds,
        extra_metrics={"epochs_run": f.probe.epochs_run, "best_epoch": f.probe.best_epoch},
        class_sizes=data.class_sizes(f.train.labels),
        test_class_counts=data.class_sizes(f.test_split.labels),
        all_embedded=f.all_embedded,
    )
