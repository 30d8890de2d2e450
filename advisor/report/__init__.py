"""Report: `advisor report`, the study write-up as Markdown + self-contained HTML with plots.

`study` builds it (`build_report`); `data` reads the stored study; `select` picks the trials and rows;
`workbench` rebuilds the study's model and task; `replay` and `blocks` re-run traces through the simulator;
`plots` draws; `document` composes the text and `report.json`; `render` writes Markdown/HTML. May import
everything below it (`advisor.recommend`, `advisor.tune`, `advisor.results`, `advisor.offload`,
`advisor.eval`, `advisor.quant`, `advisor.models`, `advisor.hardware`, leaf modules); only
`advisor.commands` and benchmarks import it.
"""
