"""The neural user tower: numpy forward pass == the torch module's, sequences, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.sequence_model import (
    TOWER_FORMAT,
    TowerFormatError,
    UserTower,
    load_tower,
    pack_tower,
    recent_items,
    tie_key,
    to_rows,
    tower_manifest,
)
from recsys.sequence_train import NeuralParams, build_module, export_weights, user_sequences

torch = pytest.importorskip("torch", reason="the neural extra is installed by make test")


def _trained_like_module(n_items: int, params: NeuralParams):  # noqa: ANN202
    torch.manual_seed(3)
    module = build_module(n_items, params)
    with torch.no_grad():  # move every weight off its initial value (LN gains 1, biases 0)
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
        module.items.weight[n_items].zero_()
    return module.eval()


@pytest.mark.parametrize("lengths", [[1], [5, 1, 8], [8, 8], [3, 12, 7]])
def test_numpy_forward_equals_torch_module(lengths: list[int]) -> None:
    n_items, params = 40, NeuralParams(dim=16, window=8, hidden=24, dropout=0.3)
    module = _trained_like_module(n_items, params)
    item_factors, weights = export_weights(module)
    tower = UserTower(item_factors, weights)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, n_items, n) for n in lengths]
    got = tower.user_vectors(sequences)
    for seq, vector in zip(sequences, got, strict=True):
        seq = seq[-params.window:]  # longer sequences: their newest `window` items
        padded = np.full(params.window, n_items)
        padded[params.window - len(seq):] = seq
        with torch.no_grad():
            want = module(torch.from_numpy(padded)[None])[0, -1].numpy()
        assert np.linalg.norm(vector - want) / np.linalg.norm(want) < 1e-4


def test_batch_vectors_equal_one_at_a_time() -> None:
    n_items, params = 30, NeuralParams(dim=8, window=6, hidden=8)
    tower = UserTower(*export_weights(_trained_like_module(n_items, params)))
    sequences = [np.array([1, 2, 3]), np.array([4]), np.array([5, 6, 7, 8, 9, 10])]
    together = tower.user_vectors(sequences)
    alone = np.vstack([tower.user_vectors([s]) for s in sequences])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_sequence_order_is_last_touch_then_item_id_everywhere() -> None:
    history = {"b": [1.0, 20], "a": [3.0, 20], "c": [1.0, 5], "d": [2.0, 30]}
    tied = sorted(["a", "b"], key=tie_key)
    assert recent_items(history) == ["c", *tied, "d"]
    assert recent_items(dict(reversed(list(history.items())))) == recent_items(history)
    # the trainer's sequences from raw events follow the same rule (repeats: last time)
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    rows = np.zeros(6, dtype=np.int32)
    cols = np.array([0, 1, 2, 3, 0, 2])
    ts = np.array([1, 20, 5, 30, 20, 2])
    tied_cols = [0, 1] if tied == ["a", "b"] else [1, 0]
    assert user_sequences(rows, cols, ts, ids, 1) == [[2, *tied_cols, 3]]


def test_unknown_items_are_skipped_and_counted_long_sequences_truncated() -> None:
    index = {"a": 0, "b": 1, "c": 2}
    out = to_rows([["a", "x", "b", "c", "y"], ["z"], ["c"]], index, window=2)
    assert [r.tolist() for r in out.rows] == [[1, 2], [], [2]]
    assert out.unknown == 3 and out.truncated == 1


def test_tower_round_trips_through_bytes_and_refuses_unknown_formats() -> None:
    n_items, params = 12, NeuralParams(dim=8, window=4, hidden=8)
    item_factors, weights = export_weights(_trained_like_module(n_items, params))
    manifest = {"tower": tower_manifest(params.window, params.dim, params.hidden)}
    tower = load_tower(item_factors, manifest, pack_tower(weights))
    np.testing.assert_array_equal(tower.user_vectors([np.array([1, 2])]),
                                  UserTower(item_factors, weights).user_vectors([[1, 2]]))
    with pytest.raises(TowerFormatError, match="unsupported tower format"):
        load_tower(item_factors, {"tower": {"format": "sasrec9", "window": 4}},
                   pack_tower(weights))
    with pytest.raises(TowerFormatError, match="missing"):
        load_tower(item_factors, manifest, None)
    with pytest.raises(TowerFormatError, match="not an npz"):
        load_tower(item_factors, manifest, b"garbage")
    with pytest.raises(TowerFormatError, match="shape"):
        UserTower(item_factors[:, :4], weights)
    assert manifest["tower"]["format"] == TOWER_FORMAT


def test_seen_so_far_marks_the_items_up_to_each_position() -> None:
    from recsys.sequence_train import seen_so_far

    pad = 5
    columns = torch.tensor([[pad, 3, 1, 2], [0, pad, 4, pad]])  # pad: no column
    seen = seen_so_far(torch, columns, pad).numpy()
    want = [[set(), {3}, {3, 1}, {3, 1, 2}], [{0}, {0}, {0, 4}, {0, 4}]]
    for row, positions in enumerate(want):
        for position, items in enumerate(positions):
            assert set(np.flatnonzero(seen[row, position])) == items


@pytest.mark.parametrize("full_softmax_max_items", [1_000, 0])  # full softmax, sampled
def test_training_with_seen_items_out_of_the_softmax_learns_the_next_item(
        full_softmax_max_items: int) -> None:
    from recsys.sequence_train import fit_neural

    n_items = 12  # every sequence walks the same cycle 0 -> 1 -> ... -> 11 -> 0
    rng = np.random.default_rng(1)
    starts = rng.integers(0, n_items, 300)
    sequences = [[(s + i) % n_items for i in range(5)] for s in starts]
    params = NeuralParams(dim=16, window=4, hidden=16, epochs=25, learning_rate=0.01,
                          dropout=0.0, exclude_seen=True, negatives=6, threads=1,
                          full_softmax_max_items=full_softmax_max_items)
    model = fit_neural(sequences, n_items, params)
    tower = model.tower()
    last = np.arange(n_items)
    inputs = np.stack([(last - 1) % n_items, last], axis=1)
    scores = tower.user_vectors(list(inputs)) @ model.item_factors.T
    np.put_along_axis(scores, inputs, -np.inf, axis=1)  # ranked without the seen items
    best = np.argmax(scores, axis=1)
    assert (best == (last + 1) % n_items).mean() >= 0.9
