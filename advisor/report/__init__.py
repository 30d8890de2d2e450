"""Report: `advisor report`, the study write-up as Markdown + self-contained HTML with plots.

`study` builds it (select trials, replay, compose, write atomically); `data` reads the stored study; `replay`
and `blocks` re-run traces through the simulator; `plots` draws; `render` writes the document. May import
`advisor.results`, `advisor.tune`, `advisor.offload`, `advisor.quant`, `advisor.models`, `advisor.eval`,
`advisor.hardware`; nothing imports it except `advisor.commands` and benchmarks.
"""
