"""skorch tests that do not run against the Dask classes, each with why.

Keys are substrings of pytest node ids (``test_file.py::Class::test``).
"""
EXCLUDED = {
}
