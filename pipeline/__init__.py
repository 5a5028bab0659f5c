"""pipeline: build, publish and deploy the BizOSaaS services, as a Dagger module.

The package is importable without the Dagger engine: only ``pipeline.main``,
``pipeline.build``, ``pipeline.checks`` and ``pipeline.engine`` touch ``dag``.
The module runtime finds the main object through the ``dagger.mod`` entry
point (``pipeline.main:Pipeline``).
"""
