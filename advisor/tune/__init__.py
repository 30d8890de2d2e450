"""Tune: the search only - spaces (TOML files shipped in `spaces/` as package data), concrete trial
configurations, the objective, backends (a real model or a test fake), the Optuna study, live display, plots.

May import `advisor.results` (where it writes), `advisor.eval`, `advisor.offload`, `advisor.quant`,
`advisor.models`, `advisor.hardware` and the leaf modules. The read side never imports it.
"""
