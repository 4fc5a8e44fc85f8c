"""Quick end-to-end checks that the package imports and its core agrees with the paper's example."""

import relpos


def test_seed_worked_example():
    # "I think therefore I am", k = 4: "therefore" (2) from the first "I" (0) -> entry 6,
    # from the second "I" (3) -> entry 3.
    index = relpos.relative_position_index(5, 5, 4)
    assert index[0, 2].item() == 6
    assert index[3, 2].item() == 3
