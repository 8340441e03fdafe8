"""The repository's tools, each run from the repository root as ``python -m scripts.<name>``:
there ``scripts`` and ``tasks`` import as packages, with no edit of ``sys.path``."""
