"""Run skorch's own tests with the Dask classes swapped in.

    .venv/bin/python tests/skorch_compat/run.py            # all of them, minutes
    .venv/bin/python tests/skorch_compat/run.py -k dropout # extra pytest args

The tests are those of the installed skorch (its wheel ships them):
test_net.py, test_classifier.py, test_regressor.py and callbacks/. The
summary counts passes and failures among the tests that build a Dask class;
``SKORCH_COMPAT_JSON=path`` also writes every test's outcome. data/ holds
the files some tests load (skorch/tests/net_cuda.pkl, net_cuda.pt,
optimizer_cuda.pt from skorch's repository at v1.4.0, commit 5db0ddc9,
BSD-3-Clause; pickled on a CUDA machine), which skorch's wheel does not ship.
"""
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = ["test_net.py", "test_classifier.py", "test_regressor.py", "callbacks"]


def main(args):
    import pytest
    import skorch.tests

    tests = os.path.dirname(skorch.tests.__file__)
    sys.path.insert(0, HERE)
    if os.environ.get("SKORCH_COMPAT_JSON"):
        os.environ["SKORCH_COMPAT_JSON"] = os.path.abspath(os.environ["SKORCH_COMPAT_JSON"])
    # Some of skorch's tests write files (Checkpoint) where they run.
    os.chdir(tempfile.mkdtemp(prefix="skorch-compat-"))
    # Others read skorch's data files from skorch/tests/, as in skorch's
    # repository; its wheel does not ship them (data/ holds v1.4.0's).
    os.makedirs(os.path.join("skorch", "tests"))
    for name in os.listdir(os.path.join(HERE, "data")):
        shutil.copy(os.path.join(HERE, "data", name), os.path.join("skorch", "tests"))
    return pytest.main(
        [os.path.join(tests, f) for f in FILES]
        + ["-c", os.path.join(HERE, "pytest.ini"), "--rootdir", tests,
           "-p", "swap", "-p", "no:cacheprovider", "-q", *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
