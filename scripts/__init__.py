"""Programs that are not part of the installed package (run from a checkout: `python -m scripts.NAME`)."""
