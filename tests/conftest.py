"""Test configuration: float64 everywhere (set here, never by the library at import), and a
private derivation cache so tests neither read nor write the user's cache."""

import os
import tempfile

import jax

jax.config.update("jax_enable_x64", True)
# always a fresh directory: an exported HILDLIMITS_CACHE_DIR (the user's cache) is never used
os.environ["HILDLIMITS_CACHE_DIR"] = tempfile.mkdtemp(prefix="hildlimits-test-cache-")
