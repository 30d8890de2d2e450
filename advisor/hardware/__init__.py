"""Hardware: what a machine can hold and how fast it moves expert weights.

`profiles` (torch-free): GPU catalogue, hardware profiles (bandwidth, latency, memory), sizes and budgets.
`measure` (imports torch): measures a profile on this machine. May import `advisor.errors` and the standard
library and the leaf modules (`errors`, `files`); `measure` also torch. No other advisor package.
"""
