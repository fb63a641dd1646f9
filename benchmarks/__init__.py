"""winnow's benchmarks, one package behind one command: ``python -m benchmarks list``.

Not part of the winnow wheel (``pyproject.toml`` packages ``winnow*`` only); run from the
repository root. Shared helpers: :mod:`benchmarks.common`; results and their manifests:
``benchmarks/results/<suite>/``; the results page: ``docs/results.md``.
"""
