"""Optuna samplers by the names the command line takes (optuna imported only when one is built)."""

from __future__ import annotations

import importlib.util
from typing import Any

from advisor.errors import UserError


def make_sampler(name: str, seed: int | None, n_objectives: int, *, population_size: int | None = None) -> Any:
    """The sampler named on the command line. All of them honour `trial.set_constraint` (Optuna >= 5)."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    name = name.lower()
    if name in ("nsga2", "nsgaii", "nsga-ii"):
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size or 16)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        missing = [m for m in ("scipy", "torch") if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(f"the gp sampler needs {' and '.join(missing)}; pip install {' '.join(missing)}, "
                            "or use --sampler nsga2")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)
    raise UserError(f"unknown sampler {name!r}; choose one of: nsga2, tpe, gp, random")


SAMPLERS = ("nsga2", "tpe", "gp", "random")
DEFAULT_SAMPLER = "tpe"
"""The sampler with the best worst-seed hypervolume at tight budgets in benchmarks/search_efficiency.py."""
