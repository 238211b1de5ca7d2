#!/usr/bin/env bash
# Here (with internet to PyPI): the wheels the device machine lacks, for its
# Python 3.12 image (torch, numpy, scikit-learn, pytest, ... are there already;
# nothing can be installed from a registry there). Into .gpuwheels/, which
# .git/info/exclude should ignore and `run`'s carry should name.
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
python3 -m pip download -q --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 -d "$tmp" \
    "dask[array,dataframe]" distributed dask-ml skorch bokeh tornado flaky cryptography
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 -d "$tmp" dask-cuda
mkdir -p .gpuwheels
# Only what the image lacks (2026-12: about 16 MB).
for p in bokeh cffi cryptography dask-2 dask_cuda dask_glm dask_ml distributed flaky \
         importlib_metadata lazy_importer locket partd pycparser skorch sparse tblib \
         tornado xyzservices zict tzdata; do
    cp "$tmp"/${p}*.whl .gpuwheels/
done
cp .ci/gpu/check.sh .gpuwheels/
