"""The one source bitmask scheme: bit b = ALL_SOURCES[b], the batch sources first."""

from __future__ import annotations

import pytest

from shared import sources
from shared.sources import ALL_SOURCES, BATCH_MASK, SOURCES, bit, mask_of, names_of


def test_batch_sources_keep_their_bits_and_the_service_sources_follow() -> None:
    assert ALL_SOURCES[: len(SOURCES)] == SOURCES == ("ann", "cooc", "ease", "popular")
    assert list(SOURCES) == sorted(SOURCES)  # the `sources` lists of the candidates are sorted
    assert [bit(s) for s in ALL_SOURCES] == [1 << b for b in range(len(ALL_SOURCES))]
    assert (sources.ANN, sources.COOC, sources.EASE, sources.POPULAR) == (1, 2, 4, 8)
    assert (sources.PRECOMPUTED, sources.RECENT, sources.CALLER) == (16, 32, 64)
    assert BATCH_MASK == mask_of(SOURCES)


def test_names_of_a_mask_are_in_bit_order_and_round_trip() -> None:
    assert names_of(mask_of(["precomputed", "cooc", "ann"])) == ("ann", "cooc", "precomputed")
    assert names_of(0) == ()
    for mask in range(1 << len(ALL_SOURCES)):
        assert mask_of(names_of(mask)) == mask
    assert names_of(5) is names_of(5)  # one shared tuple per mask


def test_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown source 'mystery'"):
        bit("mystery")
