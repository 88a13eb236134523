"""The examples in the public docstrings run and print what they say."""
import doctest

import pytest
import mindspore as ms

import ms_optim


@pytest.mark.parametrize("obj", [ms_optim.Adam, ms_optim.Came, ms_optim.AdaBelief, ms_optim.Adagrad,
                                 ms_optim.Adagrad8bit, ms_optim.Adagrad32bit], ids=lambda o: o.__name__)
def test_docstring_example_runs(obj):
    ms.set_context(mode=ms.GRAPH_MODE)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(obj, obj.__name__, globs={})
    assert tests and tests[0].examples, "no example in the docstring"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted > 0
