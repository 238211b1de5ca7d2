"""What setup.py declares: every import, its tested lower bounds, and the
dask config defaults in the packaged adadamp.yaml."""
import ast
import pathlib
import re
import sys
from importlib.metadata import packages_distributions

import dask
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

import dask_adadamp

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = pathlib.Path(dask_adadamp.__file__).parent


def setup_kwargs():
    """install_requires, extras_require and package_data as setup.py writes them."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setup")
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords
            if k.arg in ("install_requires", "extras_require", "package_data")}


def name(requirement):
    return Requirement(requirement).name.lower().replace("_", "-")


def imported_modules():
    """Top-level modules the package imports, beside the standard library's."""
    found = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"dask_adadamp"}


def test_every_import_is_declared():
    kwargs = setup_kwargs()
    declared = {name(r) for r in kwargs["install_requires"]}
    optional = {name(r) for extra in kwargs["extras_require"].values() for r in extra}
    distributions = packages_distributions()
    missing = {}
    for module in imported_modules():
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not dists & (declared | optional):
            missing[module] = sorted(dists)
    assert missing == {}


def test_the_lower_bounds_tested_are_setup_pys():
    # .ci/lower-bounds installs .ci/lower-bounds.txt: each pin must be the
    # bound setup.py declares, or the test would prove another one.
    pins = {}
    for line in (ROOT / ".ci" / "lower-bounds.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            (pin,) = Requirement(line).specifier
            assert pin.operator == "==", line
            pins[name(line)] = Version(pin.version)
    for requirement in setup_kwargs()["install_requires"]:
        (bound,) = Requirement(requirement).specifier
        assert bound.operator == ">=", requirement
        if name(requirement) == "torch":  # the one CPU build reachable here (README)
            continue
        assert pins.get(name(requirement)) == Version(bound.version), requirement
    assert len(pins) == len(setup_kwargs()["install_requires"]) - 1


def test_the_config_keys_read_are_those_adadamp_yaml_defines():
    assert "adadamp.yaml" in setup_kwargs()["package_data"]["dask_adadamp"]
    defaults = yaml.safe_load((PACKAGE / "adadamp.yaml").read_text())["adadamp"]
    read = set()
    for path in PACKAGE.glob("*.py"):
        read.update(re.findall(r"""config\.get\(\s*["']adadamp\.([\w-]+)["']""",
                               path.read_text()))
    assert read == set(defaults)
    for key, value in defaults.items():
        assert dask.config.get(f"adadamp.{key}") == value
