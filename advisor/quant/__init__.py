"""Expert precision: formats with exact byte counts, precision plans, applying plans, quality reports.

`spec` and `plan` are torch-free (read-only commands use them); `formats`, `expert`, `apply`, `quality` need
torch. Nothing is imported here, so importing the package stays cheap. The quantized-expert runtime
(`apply.QuantizedRuntime`, its dequantized fast path) lives here too. May import `advisor.models` and the
leaf modules (`errors`, `files`, `registry`).
"""
