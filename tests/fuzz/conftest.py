"""Registers the fuzz profiles (``ci`` by default, ``long`` with SIPROC_FUZZ=long): see profiles.py.

The profiles are applied per test through ``profiles.fuzz_settings()``, never loaded globally,
so that the property tests elsewhere in the suite keep their own settings.
"""

from tests.fuzz import profiles  # noqa: F401  (registers the profiles)
