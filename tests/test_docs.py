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


_CLASSES = [ms_optim.Adam, ms_optim.Came, ms_optim.AdaBelief, ms_optim.Adagrad, ms_optim.Adagrad8bit,
            ms_optim.Adagrad32bit]


def _documented_args(doc):
    """{argument: its text} from the Args section of a MindSpore-style docstring."""
    import re
    section = doc.split("Args:", 1)[1]
    section = re.split(r"\n\s*(Inputs|Outputs|Raises|Supported Platforms|Examples):", section)[0]
    entries = re.split(r"\n {8}(?=\*{0,2}\w+ \()", "\n" + section)
    return {re.match(r"\*{0,2}(\w+)", e.strip()).group(1): e for e in entries if e.strip()}


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda o: o.__name__)
def test_every_argument_is_documented_and_defaults_are_marked_optional(cls):
    """Each constructor argument has an Args entry; one with a default says "optional" and "Default:" (as MindSpore
    and mindformers docstrings do; mindformers' docstring test checks this)."""
    import inspect
    documented = _documented_args(cls.__doc__)
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self":
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:  # nn.Adam's style: "kwargs:" and a list of the keys
            assert f"\n        {name}:" in cls.__doc__.split("Args:", 1)[1], f"{cls.__name__}: '{name}' is not in Args"
            continue
        assert name in documented, f"{cls.__name__}: '{name}' is not in Args"
        if param.default is not inspect.Parameter.empty:
            text = documented[name]
            assert "optional" in text.split(":", 1)[0], f"{cls.__name__}: '{name}' has a default, not marked optional"
            assert "Default:" in text, f"{cls.__name__}: '{name}' has a default but no 'Default:'"
