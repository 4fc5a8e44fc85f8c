"""Every public name says what it is: a researcher's first `help(relpos.X)` should not be empty."""

import inspect

import pytest

import relpos
import relpos.attention
import relpos.experiments
import relpos.models
import relpos.tasks
import relpos.training

MODULES = [
    relpos,
    relpos.attention,
    relpos.models,
    relpos.training,
    relpos.tasks,
    relpos.experiments,
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_name_exists_and_has_a_docstring(module):
    for name in module.__all__:
        obj = getattr(module, name)  # AttributeError: __all__ names something that is not there
        if callable(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"
