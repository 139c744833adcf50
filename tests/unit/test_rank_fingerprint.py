"""The incremental rank stage's keys (batch/ranker/fingerprint.py): a user's fingerprint
is stable for the same model inputs and changes when any one of them does; the run key
changes with each run-wide part."""

from __future__ import annotations

import numpy as np

from batch.ranker.fingerprint import run_key, user_fingerprint

USER = 17


def _inputs(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = np.array([4, 9, 23, 40, 41], np.int32)
    bits = np.array([1, 3, 2, 8, 1], np.int32)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    x[1, 2] = np.nan  # absent source: NaN features are hashed like any value
    return items, bits, x


def test_stable_for_the_same_inputs_whatever_their_memory_layout() -> None:
    items, bits, x = _inputs()
    first = user_fingerprint(USER, items, bits, x)
    assert user_fingerprint(USER, items.copy(), bits.copy(), x.copy()) == first
    # The same values from other dtypes and non-contiguous storage hash the same.
    assert user_fingerprint(USER, items.astype(np.int64), bits.astype(np.int64),
                            np.asfortranarray(x)) == first
    assert user_fingerprint(USER, *_inputs()) == first
    hi, lo = first
    assert all(-(2**63) <= v < 2**63 for v in (hi, lo))  # fits Spark's LongType


def test_changes_when_any_single_feature_value_changes() -> None:
    items, bits, x = _inputs()
    base = user_fingerprint(USER, items, bits, x)
    seen = {base}
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            changed = x.copy()
            # The smallest float32 step (or a value where NaN was): every bit counts.
            changed[i, j] = (np.float32(0.5) if np.isnan(x[i, j])
                             else np.nextafter(x[i, j], np.float32(np.inf)))
            fp = user_fingerprint(USER, items, bits, changed)
            assert fp != base, (i, j)
            seen.add(fp)
    assert len(seen) == x.size + 1  # all distinct


def test_changes_with_items_their_order_sources_user_and_shape() -> None:
    items, bits, x = _inputs()
    base = user_fingerprint(USER, items, bits, x)
    other_item = items.copy()
    other_item[2] = 24
    reordered = [0, 2, 1, 3, 4]
    other_bits = bits.copy()
    other_bits[4] = 5
    variants = {
        "item": user_fingerprint(USER, other_item, bits, x),
        "order": user_fingerprint(USER, items[reordered], bits[reordered], x[reordered]),
        "sources": user_fingerprint(USER, items, other_bits, x),
        "user": user_fingerprint(USER + 1, items, bits, x),
        "one row fewer": user_fingerprint(USER, items[:4], bits[:4], x[:4]),
        # The same bytes split into other rows and columns are other inputs.
        "shape": user_fingerprint(USER, items, bits, x.reshape(6, 5)),
    }
    for name, fp in variants.items():
        assert fp != base, name
    assert len(set(variants.values())) == len(variants)


def test_run_key_changes_with_each_part() -> None:
    model, features = b"onnx-bytes", ("a", "b", "c")
    base = run_key(model, 100, features, "1.32.0")
    assert run_key(model, 100, list(features), "1.32.0") == base
    assert len(base) == 64
    others = [
        run_key(b"onnx-bytez", 100, features, "1.32.0"),
        run_key(model, 200, features, "1.32.0"),
        run_key(model, 100, ("a", "b"), "1.32.0"),
        run_key(model, 100, ("a", "c", "b"), "1.32.0"),
        run_key(model, 100, ("ab", "c"), "1.32.0"),
        run_key(model, 100, features, "1.33.0"),
    ]
    assert base not in others and len(set(others)) == len(others)
