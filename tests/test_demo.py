"""The README's first command: ``python -m dask_adadamp demo``."""
import argparse

import pytest

import dask_adadamp.__main__ as cli
from dask_adadamp.__main__ import demo, main


def test_demo_grows_the_batch_and_compares_with_constant_sgd(capsys):
    # GeoDamp doubles the batch after 4 epochs: the 5th takes half the updates
    results = demo(schedule="geodamp", epochs=5, initial=32, max_workers=2,
                   verbose=0)
    constant, adaptive = results["constant"], results["geodamp"]
    assert constant["examples"] == adaptive["examples"]
    assert adaptive["loss_examples"] == constant["loss_examples"] == 0
    assert adaptive["updates"] == constant["updates"] - constant["updates"] // 10
    out = capsys.readouterr().out
    assert "/adadamp" in out and "model updates" in out and "most workers used" in out
    # The claim is the measured ratio, whichever way it went.
    ratio = adaptive["seconds"] / constant["seconds"]
    assert f"{ratio:.2f}x the wall-clock time" in out
    assert "follows the number of updates" not in out
    assert adaptive["accuracy"] > 0.5 and constant["accuracy"] > 0.5


def test_demo_counts_adadamps_loss_evaluations_among_its_examples(capsys):
    results = demo(schedule="adadamp", epochs=2, initial=32, max_workers=1,
                   verbose=1)
    constant, adaptive = results["constant"], results["adadamp"]
    assert constant["gradient_examples"] == adaptive["gradient_examples"]
    assert adaptive["loss_examples"] > 0
    assert adaptive["examples"] == adaptive["gradient_examples"] + adaptive["loss_examples"]
    out = capsys.readouterr().out
    assert f"{adaptive['examples'] / constant['examples']:.2f}x the examples" in out
    # The epoch table has no list-valued columns (they print as []).
    assert "scale_lags_s" not in out and "workers_lost" not in out and "[]" not in out


def test_demo_help_describes_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    subparsers = next(a for a in cli._parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    options = [a for a in subparsers.choices["demo"]._actions if a.dest != "help"]
    assert len(options) == 8
    for action in options:
        assert action.option_strings[0] in out
        assert action.help and len(action.help.split()) >= 4, action.dest


def test_a_demo_that_did_not_learn_exits_1_saying_why(capsys, monkeypatch):
    learned = {"constant": {"accuracy": 0.95}, "geodamp": {"accuracy": 0.41}}
    monkeypatch.setattr(cli, "demo", lambda *args: learned)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "the geodamp fit reached a test accuracy of 0.410, below the 0.9" in err
    learned["geodamp"]["accuracy"] = 0.93
    assert main(["demo"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["demo", "--epochs", "0"], "--epochs=0 is not accepted"),
    (["demo", "--schedule", "fast"], "invalid choice: 'fast'"),
])
def test_demo_refuses_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
