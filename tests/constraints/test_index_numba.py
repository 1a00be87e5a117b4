"""index_numba.py's reading of outlines-core's binary Index against the reference (`Index.get_transitions`).

The regexes reach the varint widths bincode uses for state ids (one byte, 2 and 4 bytes: an automaton of
thousands of states) and the EOS token (256: two bytes); a byte string that is not an Index's layout must
give None, never arrays."""

import sys

import numpy as np
import pytest
from outlines_core import Index

import constraints.byte_automaton as ba
from constraints.index_numba import decode_index, leaf_table

REGEXES = [
    "a",
    "[a-c]x|d",
    '(?:[^"\\\\\\x00-\\x1f]|\\\\["\\\\/bfnrt]){0,64}',
    "é+[\\x{10000}-\\x{10FFFF}]{3}",
    "(?:[0-9]{1,3}\\.){3}[0-9]{1,3}",
    "[a-z]{0,300}",  # thousands of states: 2- and 4-byte state ids
]


def edges_sorted(edges):
    src, tok, dst = edges
    order = np.lexsort((tok, src))
    return src[order], tok[order], dst[order]


@pytest.mark.parametrize("regex", REGEXES)
def test_decoded_transitions_are_the_indexs(regex):
    index = Index(f"\\x01(?:{regex})\\x00", ba._BYTE_VOCAB)
    got = decode_index(index, ba._BYTE_EOS)
    assert got is not None
    for a, b in zip(edges_sorted(got), edges_sorted(ba._index_edges(index))):
        assert np.array_equal(a, b)
    # and the byte automaton read through either is the same table
    fast, ref = ba._outlines_dfa(regex, ba._decoded_edges), ba._outlines_dfa(regex)
    assert np.array_equal(fast[0], ref[0]) and np.array_equal(fast[1], ref[1])


@pytest.mark.parametrize("regex", REGEXES + ["(?:ab|a)(?:c|)", "x{0}", "[a-z]+\\.[a-z]{2,3}|tr(?:ue)?"])
def test_the_fused_leaf_table_is_the_reference_leaf(regex):
    """leaf_table: the trimmed table of `_trim(*_outlines_dfa(...))`, array for array."""
    ref = ba._trim(*ba._outlines_dfa(regex))
    got = leaf_table(Index(f"\\x01(?:{regex})\\x00", ba._BYTE_VOCAB), ba._BYTE_EOS)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
    assert ba.leaf_dfa(regex, ba.compiled_steps())[0].shape == ref[0].shape
    whole, untrimmed = ba._outlines_dfa(regex), leaf_table(ba._index(regex), ba._BYTE_EOS, trim=False)
    assert np.array_equal(untrimmed[0], whole[0]) and np.array_equal(untrimmed[1], whole[1])


@pytest.mark.parametrize("regex", REGEXES)
def test_a_whole_regex_gives_the_same_automaton_with_numba_loaded_or_not(monkeypatch, regex):
    """byte_dfa reads the Index with the compiled twin only where numba is loaded already."""
    with_numba = ba.byte_dfa(regex)
    monkeypatch.delitem(sys.modules, "numba")
    without = ba.byte_dfa(regex)
    assert np.array_equal(with_numba[0], without[0]) and np.array_equal(with_numba[1], without[1])


class _Blob:
    """An Index whose binary form is `blob` (its other answers the real one's)."""

    def __init__(self, index, blob: bytes):
        self.index, self.blob = index, blob

    def __reduce__(self):
        return (Index.from_binary, (self.blob,))

    def get_initial_state(self):
        return self.index.get_initial_state()

    def get_final_states(self):
        return self.index.get_final_states()


def test_a_wrong_eos_a_cut_or_a_foreign_blob_is_refused():
    index = Index("\\x01(?:[a-c]x|d)\\x00", ba._BYTE_VOCAB)
    assert decode_index(index, 7) is None
    blob = index.__reduce__()[1][0]
    assert decode_index(_Blob(index, blob), ba._BYTE_EOS) is not None
    for cut in range(blob.__len__()):  # every truncation, and one byte too many
        assert decode_index(_Blob(index, blob[:cut]), ba._BYTE_EOS) is None
    assert decode_index(_Blob(index, blob + b"\x00"), ba._BYTE_EOS) is None
    assert decode_index(_Blob(index, bytes([254]) * 16), ba._BYTE_EOS) is None  # a u128 tag
