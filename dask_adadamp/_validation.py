"""Checks of parameter values, with one wording for every error.

A *kind* is the phrase an error message uses for what is accepted ("a
positive integer"); :data:`KINDS` maps it to its test. Schedules,
:class:`~dask_adadamp.simulate.Cluster`, :func:`~dask_adadamp.simulate.simulate`
and the estimators all check through here.
"""
import math
import numbers


def is_number(value):
    """A finite real number, not a bool."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def is_positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


KINDS = {
    "a positive integer": is_positive_int,
    "None or a positive integer": lambda v: v is None or is_positive_int(v),
    "a positive number": lambda v: is_number(v) and v > 0,
    "a number >= 0": lambda v: is_number(v) and v >= 0,
    "a number >= 1": lambda v: is_number(v) and v >= 1,
    "a finite number": is_number,
    "a number in [0, 1)": lambda v: is_number(v) and 0 <= v < 1,
    "None or a number in (0, 1]": lambda v: v is None or (is_number(v) and 0 < v <= 1),
}


def check_argument(name, value, kind):
    """Raise ValueError naming ``name=value`` unless ``value`` is ``kind``.

    >>> check_argument("n_params", 0, "a positive integer")
    Traceback (most recent call last):
    ...
    ValueError: n_params=0 is not accepted; n_params must be a positive integer
    """
    if not KINDS[kind](value):
        raise ValueError(f"{name}={value!r} is not accepted; {name} must be {kind}")


def check_fields(owner, checks):
    """Check ``owner``'s attributes by ``{name: kind}``; the error names the
    owner's class, as its constructor would be written.

    >>> from dask_adadamp.dampers import GeoDamp
    >>> check_fields(GeoDamp(), {"factor": "a number >= 1"})
    >>> check_fields(GeoDamp(factor=0.5), {"factor": "a number >= 1"})
    Traceback (most recent call last):
    ...
    ValueError: GeoDamp(factor=0.5) is not accepted; factor must be a number >= 1
    """
    for name, kind in checks.items():
        value = getattr(owner, name)
        if not KINDS[kind](value):
            raise ValueError(f"{type(owner).__name__}({name}={value!r}) is not "
                             f"accepted; {name} must be {kind}")
