"""The clipped relative index ``clip(j - i, -k, k) + k`` (Shaw et al. 2018, Sec. 3.2)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import relpos
from relpos import RelativeIndex, relative_position_index
from relpos.attention import resolve_clipping, table_size

PROPERTY = settings(max_examples=40, deadline=None)

lengths = st.integers(min_value=0, max_value=12)
distances = st.integers(min_value=0, max_value=8)
offsets = st.integers(min_value=-20, max_value=20)


def expected_entry(i: int, j: int, left: int, right: int) -> int:
    """The formula, written independently of the tensor code."""
    return min(max(j - i, -left), right) + left


# --- the seed's worked examples ---------------------------------------------------------------


def test_seed_sentence_of_length_five_k4():
    # "I think therefore I am": 2k+1 = 9 vectors, row 4 is "myself".
    tokens = "I think therefore I am".split()
    index = relative_position_index(len(tokens), len(tokens), 4)
    therefore = tokens.index("therefore")
    first_i, second_i = 0, 3
    assert index[first_i, therefore].item() == 6  # distance +2
    assert index[second_i, therefore].item() == 3  # distance -1
    assert index.diagonal().tolist() == [4] * 5
    assert index.min().item() == 0 and index.max().item() == 8  # no clipping at length 5, k = 4


def test_seed_matrix_length_ten_k3():
    expected = [
        [3, 4, 5, 6, 6, 6, 6, 6, 6, 6],
        [2, 3, 4, 5, 6, 6, 6, 6, 6, 6],
        [1, 2, 3, 4, 5, 6, 6, 6, 6, 6],
        [0, 1, 2, 3, 4, 5, 6, 6, 6, 6],
        [0, 0, 1, 2, 3, 4, 5, 6, 6, 6],
        [0, 0, 0, 1, 2, 3, 4, 5, 6, 6],
        [0, 0, 0, 0, 1, 2, 3, 4, 5, 6],
        [0, 0, 0, 0, 0, 1, 2, 3, 4, 5],
        [0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
        [0, 0, 0, 0, 0, 0, 0, 1, 2, 3],
    ]
    index = relative_position_index(10, 10, 3)
    assert index.dtype == torch.long
    assert index.shape == (10, 10)
    assert index.tolist() == expected


def test_k_zero_is_a_single_vector():
    assert relative_position_index(4, 6, 0).tolist() == [[0] * 6] * 4


def test_rectangular_query_shorter_than_keys():
    # Lq = 2, Lk = 5, k = 2: rows are queries 0 and 1.
    assert relative_position_index(2, 5, 2).tolist() == [[2, 3, 4, 4, 4], [1, 2, 3, 4, 4]]


# --- asymmetric clipping ----------------------------------------------------------------------


def test_asymmetric_clipping_literal():
    # left 1, right 3: distances clip to [-1, 3], row = distance + 1, table of 5 rows.
    index = relative_position_index(5, 5, max_left=1, max_right=3)
    assert index.tolist() == [
        [1, 2, 3, 4, 4],
        [0, 1, 2, 3, 4],
        [0, 0, 1, 2, 3],
        [0, 0, 0, 1, 2],
        [0, 0, 0, 0, 1],
    ]
    assert table_size(1, 3) == 5


def test_asymmetric_clipping_overrides_one_side_of_max_distance():
    # max_right defaults to max_distance when only max_left is given.
    index = relative_position_index(6, 6, 2, max_left=0)
    assert index.min().item() == 0 and index.max().item() == 2
    assert index[5, 0].item() == 0  # far left clipped at -0
    assert index[0, 5].item() == 2  # far right clipped at +2
    assert resolve_clipping(2, max_left=0) == (0, 2)
    assert resolve_clipping(None, max_left=3, max_right=1) == (3, 1)


# --- offsets ----------------------------------------------------------------------------------


def test_query_offset_is_the_last_row_for_cached_decoding():
    # One new query at absolute position 7 against 8 keys: the last row of the full matrix.
    full = relative_position_index(8, 8, 3)
    step = relative_position_index(1, 8, 3, query_offset=7)
    assert step.tolist() == full[7:].tolist()
    assert step.tolist() == [[0, 0, 0, 0, 0, 1, 2, 3]]


def test_key_offset_selects_columns():
    full = relative_position_index(6, 10, 2)
    assert torch.equal(relative_position_index(6, 4, 2, key_offset=6), full[:, 6:])


# --- properties -------------------------------------------------------------------------------


@PROPERTY
@given(q_len=lengths, k_len=lengths, left=distances, right=distances, q_off=offsets, k_off=offsets)
def test_index_matches_formula_and_range(q_len, k_len, left, right, q_off, k_off):
    index = relative_position_index(
        q_len, k_len, query_offset=q_off, key_offset=k_off, max_left=left, max_right=right
    )
    assert index.shape == (q_len, k_len) and index.dtype == torch.long
    if index.numel():
        assert 0 <= index.min().item() and index.max().item() <= left + right
    expected = [
        [expected_entry(q_off + r, k_off + c, left, right) for c in range(k_len)]
        for r in range(q_len)
    ]
    assert index.tolist() == expected


@PROPERTY
@given(q_len=lengths, k_len=lengths, k=distances, q_off=offsets, k_off=offsets)
def test_index_is_toeplitz(q_len, k_len, k, q_off, k_off):
    index = relative_position_index(q_len, k_len, k, query_offset=q_off, key_offset=k_off)
    # Constant along every diagonal: it depends on j - i only.
    assert torch.equal(index[1:, 1:], index[:-1, :-1])


@PROPERTY
@given(q_len=lengths, k_len=lengths, k=distances, q_off=offsets, k_off=offsets, shift=offsets)
def test_index_translation_invariance(q_len, k_len, k, q_off, k_off, shift):
    base = relative_position_index(q_len, k_len, k, query_offset=q_off, key_offset=k_off)
    shifted = relative_position_index(
        q_len, k_len, k, query_offset=q_off + shift, key_offset=k_off + shift
    )
    assert torch.equal(base, shifted)
    # Moving only the queries by +s is the same as moving only the keys by -s.
    only_queries = relative_position_index(q_len, k_len, k, query_offset=q_off + shift)
    only_keys = relative_position_index(q_len, k_len, k, key_offset=-(q_off + shift))
    assert torch.equal(only_queries, only_keys)


@PROPERTY
@given(length=lengths, k=distances)
def test_symmetric_index_is_mirror_symmetric(length, k):
    # Distance j - i and i - j land at mirror rows around k.
    index = relative_position_index(length, length, k)
    assert torch.equal(index + index.T, torch.full_like(index, 2 * k))


@PROPERTY
@given(q_len=lengths, k_len=lengths, left=distances, right=distances, q_off=offsets, k_off=offsets)
def test_relative_index_dense_equals_function(q_len, k_len, left, right, q_off, k_off):
    compact = RelativeIndex(q_len, k_len, left, right, q_off, k_off)
    dense = compact.dense()
    expected = relative_position_index(
        q_len, k_len, query_offset=q_off, key_offset=k_off, max_left=left, max_right=right
    )
    assert torch.equal(dense, expected)
    assert compact.num_buckets == left + right + 1
    # diagonal_shift: j - i = c - r - diagonal_shift.
    for r in range(min(q_len, 3)):
        for c in range(min(k_len, 3)):
            distance = c - r - compact.diagonal_shift
            assert dense[r, c].item() == min(max(distance, -left), right) + left


def test_index_device_argument():
    assert relative_position_index(2, 3, 1, device="meta").device.type == "meta"


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(max_distance=-1), ValueError, r"max_distance must be >= 0, got -1"),
        (dict(max_distance=2.0), TypeError, r"max_distance must be a non-negative int, got float"),
        (dict(max_distance=True), TypeError, r"max_distance .* got bool"),
        (dict(max_distance="3"), TypeError, r"max_distance .* got str"),
        (dict(max_distance=None), ValueError, r"give max_distance, or both max_left and max_right"),
        (dict(max_distance=None, max_left=2), ValueError, r"max_right=None"),
        (dict(max_distance=2, max_left=-1), ValueError, r"max_left must be >= 0, got -1"),
        (dict(max_distance=2, max_right=1.5), TypeError, r"max_right must be a non-negative int"),
        (dict(max_distance=2, query_offset=1.0), TypeError, r"query_offset must be an int"),
        (dict(max_distance=2, key_offset=None), TypeError, r"key_offset must be an int"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, match):
    with pytest.raises(error, match=match):
        relative_position_index(3, 3, **kwargs)


@pytest.mark.parametrize(
    "q_len, k_len, error, match",
    [
        (-1, 3, ValueError, r"query_len must be >= 0, got -1"),
        (3, -2, ValueError, r"key_len must be >= 0, got -2"),
        (3.0, 3, TypeError, r"query_len must be a non-negative int, got float"),
        (3, torch.tensor(3), TypeError, r"key_len must be a non-negative int, got Tensor"),
    ],
)
def test_bad_lengths_name_themselves(q_len, k_len, error, match):
    with pytest.raises(error, match=match):
        relative_position_index(q_len, k_len, 2)


@pytest.mark.parametrize("width", [1, 2, 5])
def test_swin_index_is_query_minus_key_unlike_shaws(width):
    # Along one axis Swin's row is (x_i - x_j) + W - 1 and Shaw's (unclipped) j - i + W - 1: the
    # same table rows with the pair reversed, as the swin.py docstring says.
    swin = relpos.swin_relative_position_index(1, width)
    shaw = relative_position_index(width, width, width - 1)
    assert torch.equal(swin, shaw.T)
    assert not torch.equal(swin, shaw) or width == 1
