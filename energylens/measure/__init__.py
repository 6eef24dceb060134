"""Measurement harness (``energylens[measure]``: torch + nvidia-ml-py) and record handling.

Importing this package (or any module in it) never imports torch or pynvml: they are imported inside
the functions that run a suite. Records (``records``), point planning (``plan``) and the fitted-profile
hook (``fitted``) work on any machine.
"""

from energylens.hardware.fitted import fitted_profile_path
from energylens.measure.records import (
    POINT_KINDS,
    SUITES,
    UNITS,
    Point,
    Record,
    load_records,
    read_record,
    write_record,
)

__all__ = [
    "POINT_KINDS",
    "SUITES",
    "UNITS",
    "Point",
    "Record",
    "fitted_profile_path",
    "load_records",
    "read_record",
    "write_record",
]
