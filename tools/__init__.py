"""Development tools of the repository (not part of the wheel): ``python -m tools.docgen``."""
