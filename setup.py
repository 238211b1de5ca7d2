from setuptools import find_packages, setup

setup(
    name="dask-adadamp",
    version="0.1.0",
    description="Train PyTorch models on Dask clusters with adaptive batch sizes",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dask_adadamp", "dask_adadamp.*"]),
    python_requires=">=3.10",
    # Lower bounds: the versions .ci/lower-bounds installs (.ci/lower-bounds.txt)
    # and tests; see README, "Dependencies".
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "skorch>=1.2",  # 1.1: nets are BaseEstimators; 1.2: unpickled under torch 2.6's weights_only
        "scikit-learn>=1.3",
        "scipy>=1.10",  # sparse X
        "threadpoolctl>=3",  # the client's BLAS threads during training
        "dask[array]>=2024.7",
        # 2024.7: distributed.client.FuturesCancelledError, and the scheduler's
        # event broker, whose log the dashboard plugin keeps bounded
        # (Scheduler._broker; before, Scheduler.events)
        "distributed>=2024.7",
        "bokeh>=3.1",  # the Dask dashboard and its /adadamp page
        "tornado>=6.2",  # the /adadamp page's handlers
        "dask-ml>=2024.4.4",
        "cloudpickle>=2.2",  # 2.2: Python 3.11
        "pandas>=2.0",
        "toolz>=0.12",  # 0.10-0.11: tlz fails to import on Python 3.11
        "pyyaml>=6.0.1",  # adadamp.yaml, the dask config defaults
        "tqdm>=4.64",  # ProgressBar (older: sys.setcheckinterval, gone in Python 3.9)
    ],
    package_data={"dask_adadamp": ["adadamp.yaml"]},
    extras_require={
        # flaky, safetensors: skorch's own tests use them (tests/skorch_compat);
        # cryptography: a TLS cluster in tests (Security.temporary)
        # dask[dataframe], pyarrow: dask DataFrames and Parquet as training data
        "test": ["pytest>=7", "pytest-timeout>=2", "matplotlib", "selenium", "flaky",
                 "safetensors", "cryptography", "dask[dataframe]", "pyarrow"],
        "dataframe": ["dask[dataframe]", "pyarrow"],
        # The Sphinx site (docs/): README's docs command, .ci/run
        "docs": ["sphinx>=7", "pydata-sphinx-theme", "numpydoc>=1.6",
                 "sphinx-gallery>=0.15", "myst-parser>=2", "matplotlib",
                 "mnist1d>=0.0.2", "dask[dataframe]", "pyarrow"],
        "plot": ["matplotlib"],
        "demo": ["mnist1d>=0.0.2"],
    },
    entry_points={"console_scripts": ["dask-adadamp=dask_adadamp.__main__:main"]},
)
