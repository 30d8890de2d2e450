"""Optuna samplers by the names the command line takes (optuna imported only when one is built)."""

from __future__ import annotations

import importlib.util
from typing import Any

from advisor.errors import UserError

SAMPLERS = ("nsga2", "tpe", "gp", "random")
ALIASES = {"nsgaii": "nsga2", "nsga-ii": "nsga2"}
DEFAULT_SAMPLER = "tpe"
"""The sampler with the best worst-seed hypervolume at tight budgets in benchmarks/search_efficiency.py."""


def sampler_name(name: str) -> str:
    """The sampler `name` stands for (any case, aliases), one of `SAMPLERS`; `UserError` for an unknown one."""
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return key


def make_sampler(name: str, seed: int | None, n_objectives: int, *, population_size: int | None = None) -> Any:
    """The sampler named on the command line. All of them honour `trial.set_constraint` (Optuna >= 5)."""
    import warnings

    import optuna

    name = sampler_name(name)  # before optuna is configured: a bad name fails first
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size or 16)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    missing = [m for m in ("scipy", "torch") if importlib.util.find_spec(m) is None]  # gp
    if missing:
        raise UserError(f"the gp sampler needs {' and '.join(missing)}; pip install {' '.join(missing)}, "
                        "or use --sampler nsga2")
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)
