"""Test configuration: float64 everywhere (set here, never by the library at import), and a
private derivation cache so tests neither read nor write the user's cache."""

import os
import tempfile

import jax

jax.config.update("jax_enable_x64", True)
os.environ.setdefault("HILDLIMITS_CACHE_DIR", tempfile.mkdtemp(prefix="hildlimits-test-cache-"))
