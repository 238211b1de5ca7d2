"""dask-adadamp's defaults in dask's config (``adadamp.*``), from the
packaged ``adadamp.yaml``, as distributed registers ``distributed.yaml``.

Imported with the package, in the client, the workers and the scheduler
alike, so that ``dask.config.get("adadamp.<key>")`` has a value everywhere.

>>> import dask
>>> import dask_adadamp
>>> dask.config.get("adadamp.recover-timeout")
60
"""
import os

import dask.config
import yaml

PATH = os.path.join(os.path.dirname(__file__), "adadamp.yaml")

with open(PATH) as f:
    DEFAULTS = yaml.safe_load(f)

dask.config.update_defaults(DEFAULTS)
