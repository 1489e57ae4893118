"""Per-domain compositions of the medprune library.

Each sub-package (``thermography``, ...) composes library parts for one imaging domain and owns
its data-set adapters (e.g. :func:`pipelines.thermography.index_dmr`) and presets. Pipelines stay
thin: reusable machinery belongs in ``medprune/``.
"""
