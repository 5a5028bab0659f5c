"""Fixtures shared across the suite: the real parts each test starts for itself."""

pytest_plugins = [
    "tests.support.registry",
    "tests.support.dokploy_double",
    "tests.support.github_double",
    "tests.support.engine_double",
    "tests.support.world",
]
