"""Commands: the CLI, one module per area (`tune`, `recommend`, `export`, `report`, `evaluate`, `quant`,
`offload`, `models`); each parses options, checks them before any model loads, and calls the domain.

May import every other advisor package; nothing imports it except `advisor.cli` (and its own modules, for the
shared option texts below). Heavy imports (torch,
optuna) stay inside command bodies, so `--help` and the read-only commands stay fast.
"""

# `eval` and `trace`: their default is every core (fastest on a quiet host); `tune` and `profile` default to 1
THREADS_HELP = ("torch CPU threads; 0: every core. On a host busy with other work, 1 or 2 can be many times faster "
                "(waiting threads spin).")
