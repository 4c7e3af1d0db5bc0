"""Training the neural user tower (recsys.sequence_model) with PyTorch.

Next-item prediction: for each user's sequence (recsys.sequence_model.recent_items order), every
position predicts the item after it, causal attention, cross-entropy over the full catalogue
(softmax over u_t . E_i) when it has at most `full_softmax_max_items` items, otherwise over
the batch's targets plus `negatives` uniformly sampled items (sampled softmax). Sequences
longer than the window are cut into consecutive windows (each target predicted once per epoch).

Deterministic for one seed and thread count; torch threads follow `threads` (the trainer's
fit threads setting); epochs stop when `time_budget_s` is exceeded. torch is imported lazily:
the rest of the system runs without the `neural` extra.

The torch module mirrors the numpy forward pass exactly (tests hold them equal); its weights
are exported as the numpy arrays the core reads.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.errors import RecsysError
from recsys.sequence_model import LAYER_NORM_EPS, TOWER_ARRAYS, UserTower, recent_items

log = logging.getLogger(__name__)


class NeuralUnavailable(RecsysError):
    """PyTorch (the `neural` extra) is not installed."""


def import_torch():  # noqa: ANN201 - the torch module
    try:
        import torch
    except ImportError:
        raise NeuralUnavailable(
            "training a neural model needs PyTorch: pip install '.[neural]' "
            "(torch==2.13.0, the CPU build)") from None
    return torch


@dataclass(frozen=True)
class NeuralParams:
    dim: int = 64
    window: int = 50
    horizon: int = 1
    hidden: int = 128
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    dropout: float = 0.2
    time_budget_s: float = 120.0
    full_softmax_max_items: int = 20_000
    negatives: int = 1_000
    exclude_seen: bool = True  # seen items out of the softmax (seen_so_far)
    seed: int = 42
    threads: int = 0  # 0 = all cores


@dataclass
class NeuralModel:
    item_factors: np.ndarray  # (n_items, d) float32: tied input/output embeddings
    weights: dict[str, np.ndarray]  # TOWER_ARRAYS
    params: NeuralParams
    seconds: float = 0.0
    epochs_run: int = 0
    losses: list[float] = field(default_factory=list)

    def tower(self) -> UserTower:
        return UserTower(self.item_factors, self.weights)


def user_sequences(user_rows: np.ndarray, item_cols: np.ndarray, timestamps: np.ndarray,
                   item_ids: np.ndarray, n_users: int) -> list[list[int]]:
    """Per user row, the item columns of their events as a sequence (distinct items by last
    time, ties by item id: recsys.sequence_model.recent_items, the stream's rule)."""
    histories: list[dict[str, list[float]]] = [{} for _ in range(n_users)]
    ids = np.asarray(item_ids).astype(str)
    col_of = {item: col for col, item in enumerate(ids.tolist())}
    for user, col, ts in zip(np.asarray(user_rows).tolist(), np.asarray(item_cols).tolist(),
                             np.asarray(timestamps).tolist(), strict=True):
        entry = histories[user].get(ids[col])
        if entry is None:
            histories[user][ids[col]] = [1.0, ts]
        elif ts > entry[1]:
            entry[1] = ts
    return [[col_of[item] for item in recent_items(h)] for h in histories]


def _windows(sequences: Sequence[Sequence[int]], window: int, horizon: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Training chunks: inputs (n, window), left-padded with -1, and per input position its
    next `horizon` items (n, window, horizon), -1 where the sequence ends. Consecutive chunks
    cover every position that has a next item once."""
    inputs: list[list[int]] = []
    targets: list[np.ndarray] = []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        end = len(seq) - 1  # the last item has nothing after it
        ahead = np.full(len(seq) + horizon, -1, dtype=np.int64)
        ahead[:len(seq)] = seq
        while end > 0:
            start = max(0, end - window)
            pad = window - (end - start)
            inputs.append([-1] * pad + seq[start:end].tolist())
            block = np.full((window, horizon), -1, dtype=np.int64)
            positions = np.arange(start, end)
            block[pad:] = ahead[positions[:, None] + 1 + np.arange(horizon)[None, :]]
            targets.append(block)
            end = start
    return (np.asarray(inputs, dtype=np.int64).reshape(-1, window),
            np.asarray(targets, dtype=np.int64).reshape(-1, window, horizon))


def training_device(torch: Any) -> Any:
    """A CUDA GPU when torch sees one, else the CPU. Exported weights are numpy either way;
    bit-for-bit reproducibility holds for one device kind and thread count."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_module(n_items: int, params: NeuralParams):  # noqa: ANN201 - a torch.nn.Module
    torch = import_torch()
    nn = torch.nn
    functional = torch.nn.functional

    class Tower(nn.Module):
        """recsys.sequence_model's forward pass, for every position (causal)."""

        def __init__(self) -> None:
            super().__init__()
            d, window = params.dim, params.window
            self.items = nn.Embedding(n_items + 1, d, padding_idx=n_items)  # last row = pad
            nn.init.normal_(self.items.weight, std=1.0 / np.sqrt(d))
            with torch.no_grad():
                self.items.weight[n_items].zero_()
            self.pos = nn.Parameter(torch.randn(window, d) * 0.02)
            self.ln1, self.ln2, self.lnf = (nn.LayerNorm(d, eps=LAYER_NORM_EPS)
                                            for _ in range(3))
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.ff1, self.ff2 = nn.Linear(d, params.hidden), nn.Linear(params.hidden, d)
            self.drop = nn.Dropout(params.dropout)
            self.n_items = n_items

        def forward(self, seqs):  # noqa: ANN001, ANN202 - (B, L) rows, pad = n_items
            length = seqs.shape[1]
            pad = seqs == self.n_items
            x = self.drop(self.items(seqs) + self.pos[self.window - length:])
            z = self.ln1(x)
            q, k, v = self.q(z), self.k(z), self.v(z)
            logits = q @ k.transpose(1, 2) / np.sqrt(x.shape[-1])
            causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).triu(1)
            blocked = causal[None] | pad[:, None, :]
            # a padded query sees only padding: a finite fill keeps its (unused) row finite
            logits = logits.masked_fill(blocked, -1e9)
            att = self.drop(torch.softmax(logits, dim=-1))
            h = x + self.drop(self.o(att @ v))
            h = h + self.drop(self.ff2(functional.relu(self.ff1(self.ln2(h)))))
            return self.lnf(h)

        @property
        def window(self) -> int:
            return int(self.pos.shape[0])

    return Tower()


def export_weights(module: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(item factors, tower arrays) of a trained module, as numpy float32. torch's Linear
    computes x W^T + b; the numpy tower computes x W + b."""
    def arr(t: Any) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32).copy()

    weights = {
        "pos": arr(module.pos),
        "ln1_g": arr(module.ln1.weight), "ln1_b": arr(module.ln1.bias),
        "wq": arr(module.q.weight).T.copy(), "bq": arr(module.q.bias),
        "wk": arr(module.k.weight).T.copy(), "bk": arr(module.k.bias),
        "wv": arr(module.v.weight).T.copy(), "bv": arr(module.v.bias),
        "wo": arr(module.o.weight).T.copy(), "bo": arr(module.o.bias),
        "ln2_g": arr(module.ln2.weight), "ln2_b": arr(module.ln2.bias),
        "w1": arr(module.ff1.weight).T.copy(), "b1": arr(module.ff1.bias),
        "w2": arr(module.ff2.weight).T.copy(), "b2": arr(module.ff2.bias),
        "lnf_g": arr(module.lnf.weight), "lnf_b": arr(module.lnf.bias),
    }
    assert set(weights) == set(TOWER_ARRAYS)
    return arr(module.items.weight)[:module.n_items], weights


def seen_so_far(torch: Any, columns: Any, width: int) -> Any:
    """(B, L, width) bool: at each position of a window, the logit columns of the items up to
    and including it. `columns` (B, L) holds each input's logit column, `width` for padding
    and for items without a column (not sampled). A sequence holds distinct items, so the
    next one is never among them: masking them takes the seen items out of the softmax, as
    serving takes them out of the ranking."""
    b, length = columns.shape
    earlier = torch.ones(length, length, dtype=torch.bool,
                         device=columns.device).tril()  # [t, s]: s <= t
    index = columns[:, None, :].expand(b, length, length)
    index = torch.where(earlier[None], index, torch.full_like(index, width))
    seen = torch.zeros(b, length, width + 1, dtype=torch.bool, device=columns.device)
    seen.scatter_(2, index, True)
    return seen[..., :width]


def fit_neural(sequences: Sequence[Sequence[int]], n_items: int, params: NeuralParams,
               on_epoch: Callable[[int, NeuralModel], None] | None = None) -> NeuralModel:
    """Train on item-column sequences (oldest first) over `n_items` columns. `on_epoch` gets
    each epoch's model (exported weights), for learning curves."""
    torch = import_torch()
    started = time.perf_counter()
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads or os.cpu_count() or 1)
    rng = np.random.default_rng(params.seed)
    inputs_all, targets_all = _windows(sequences, params.window, params.horizon)
    if len(inputs_all) == 0:
        raise ValueError("no sequence has two items: nothing to learn from")
    inputs_all[inputs_all < 0] = n_items  # the padding row
    device = training_device(torch)
    log.info("neural training on %s", device)
    module = build_module(n_items, params).to(device)
    optimiser = torch.optim.Adam(module.parameters(), lr=params.learning_rate,
                                 weight_decay=params.weight_decay)
    full = n_items <= params.full_softmax_max_items
    losses: list[float] = []
    epochs = 0
    module.train()
    for epoch in range(params.epochs):
        total, count = 0.0, 0
        order = rng.permutation(len(inputs_all))
        for start in range(0, len(inputs_all), params.batch_size):
            pick = order[start:start + params.batch_size]
            inputs = torch.from_numpy(inputs_all[pick]).to(device)
            targets = torch.from_numpy(targets_all[pick]).to(device)
            keep = inputs != n_items
            out = module(inputs)[keep]  # (T, d)
            target = targets[keep]  # (T, horizon), -1 = none
            present = target >= 0
            items = module.items.weight[:n_items]
            if full:
                logits = out @ items.T
                if params.exclude_seen:  # padding is column n_items: cut off
                    logits = logits.masked_fill(seen_so_far(torch, inputs, n_items)[keep],
                                                float("-inf"))
                index = target.clamp(min=0)
            else:
                sampled = torch.from_numpy(rng.integers(0, n_items, params.negatives)).to(device)
                candidates, inverse = torch.unique(
                    torch.cat([target[present], sampled]), return_inverse=True)
                logits = out @ items[candidates].T
                if params.exclude_seen:
                    width = len(candidates)
                    column = torch.full((n_items + 1,), width, dtype=torch.int64, device=device)
                    column[candidates] = torch.arange(width, device=device)
                    logits = logits.masked_fill(
                        seen_so_far(torch, column[inputs], width)[keep], float("-inf"))
                index = torch.zeros_like(target)
                index[present] = inverse[:int(present.sum())]
            # softmax cross-entropy against each of the next `horizon` items
            log_p = torch.log_softmax(logits, dim=-1).gather(1, index)
            n_targets = int(present.sum())
            # where() not a product: an absent target's gathered entry may be a masked -inf
            loss = -torch.where(present, log_p, 0.0).sum() / max(n_targets, 1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * n_targets
            count += n_targets
        epochs = epoch + 1
        losses.append(total / max(count, 1))
        elapsed = time.perf_counter() - started
        log.info("neural epoch %d: loss %.4f (%.1fs)", epochs, losses[-1], elapsed)
        if on_epoch is not None:
            module.eval()
            on_epoch(epochs, NeuralModel(*export_weights(module), params, elapsed, epochs))
            module.train()
        if elapsed > params.time_budget_s:
            log.info("neural training stops after %d epochs: time budget %.0fs exceeded",
                     epochs, params.time_budget_s)
            break
    module.eval()
    item_factors, weights = export_weights(module)
    for name, array in {"item_factors": item_factors, **weights}.items():
        if not np.isfinite(array).all():
            raise ValueError(f"neural training produced NaN/Inf in {name}")
    return NeuralModel(item_factors, weights, params, time.perf_counter() - started, epochs,
                       losses)


def fit_neural_on(events: Any, mask: np.ndarray, params: NeuralParams
                  ) -> tuple[NeuralModel, list[list[int]]]:
    """Train on the events under `mask` of a trainer.matrix-style IndexedEvents (rows, cols,
    timestamps, item_ids); returns the model over all its item columns and the per-user-row
    sequences it was trained on."""
    sequences = user_sequences(events.rows[mask], events.cols[mask], events.timestamps[mask],
                               events.item_ids, events.shape[0])
    return fit_neural(sequences, events.shape[1], params), sequences


def neural_params(settings: Any, **overrides: Any) -> NeuralParams:
    """NeuralParams from the settings (recsys.settings.Settings' `neural_*` fields)."""
    values: dict[str, Any] = dict(
        dim=settings.neural_dim, window=settings.neural_window, hidden=settings.neural_hidden,
        horizon=settings.neural_horizon, exclude_seen=settings.neural_exclude_seen,
        epochs=settings.neural_epochs, learning_rate=settings.neural_learning_rate,
        dropout=settings.neural_dropout, time_budget_s=settings.neural_time_budget_s,
        seed=settings.random_seed, threads=settings.trainer_fit_threads)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return NeuralParams(**values)
