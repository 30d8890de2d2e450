"""Results: what a study stored and how to read it back.

The front point record and its metric names (`front`), the fast stdlib reader of stored fronts (`read`)
and of any one trial from Optuna's tables (`trials`),
the one reader of a stored trial configuration (`config_view`), Optuna storages (`storage`; storage URLs:
`urls`; connections: `connections`; the lines for storage failures: `storage_errors`; the workers' locks:
`locks`; `reconnect`: riding out a PostgreSQL restart, waiting for a server that stops answering; `sqlite_storage`: Optuna's storage with beats that
outlive a brief failure and atomic queue claims on SQLite), the project's tables (`store`) and their queries (`registry`: studies; `evalcache`: plan-only
measurements). The read side (recommend, export, report, studies, pareto) depends on this package, never on
the tuner. May import `advisor.quant.spec`/`plan` (torch-free), the leaf modules, the standard library and
SQLAlchemy (never on the SQLite fast path); optuna only inside `storage.open_storage`, for
the tuner. Never torch.
"""
