"""Optuna's RDB storage for a SQLite file, with an atomic claim of a queued trial.

Optuna starts a queued (WAITING) trial by reading it and setting it RUNNING under `SELECT ... FOR UPDATE`,
which SQLite ignores: two workers reading the queue at the same instant both ran the trial, and the later one's
tell crashed ("Cannot tell a COMPLETE trial"). Here that one transition takes the file's lock
(`storage.sqlite_lock`, the turn SQLite workers take) and Optuna re-reads the state under it, so the second
worker finds the trial RUNNING and takes the next one. Imported only where Optuna already is.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

from advisor.results.storage import sqlite_lock


class SQLiteFileStorage(optuna.storages.RDBStorage):
    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        if state != TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)
        with sqlite_lock(self.url):
            return super().set_trial_state_values(trial_id, state, values)
