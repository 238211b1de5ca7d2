"""The README's first command: ``python -m dask_adadamp demo``."""
import pytest

from dask_adadamp.__main__ import demo, main


def test_demo_grows_the_batch_and_compares_with_constant_sgd(capsys):
    # GeoDamp doubles the batch after 4 epochs: the 5th takes half the updates
    results = demo(schedule="geodamp", epochs=5, initial=32, max_workers=2,
                   verbose=0)
    constant, adaptive = results["constant"], results["geodamp"]
    assert constant["examples"] == adaptive["examples"]
    assert adaptive["updates"] == constant["updates"] - constant["updates"] // 10
    out = capsys.readouterr().out
    assert "/adadamp" in out and "model updates" in out and "most workers used" in out
    assert adaptive["accuracy"] > 0.5 and constant["accuracy"] > 0.5


def test_demo_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--schedule", "--data", "--epochs", "--max-workers"):
        assert option in out


@pytest.mark.parametrize("argv, message", [
    (["demo", "--epochs", "0"], "--epochs=0 is not accepted"),
    (["demo", "--schedule", "fast"], "invalid choice: 'fast'"),
])
def test_demo_refuses_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
