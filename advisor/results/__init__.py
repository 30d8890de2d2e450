"""Results: what a study stored and how to read it back.

The front point record and its metric names (`front`), the one reader of a stored trial configuration
(`config_view`), storage URLs (`storage`), the front/registry/eval-cache tables (`store`, `registry`,
`evalcache`). The read side (recommend, export, report, studies, pareto) depends on this package, never on
the tuner. May import: `advisor.errors`, `advisor.quant.spec`/`plan` (torch-free), the standard library and
SQLAlchemy (lazily on the SQLite fast path). Never torch or optuna.
"""
