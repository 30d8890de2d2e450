"""`advisor profile --list` at 80 columns (a terminal, or piped): its lines ran to ~200 columns. Each profile is
now one entry, wrapped between its figures (`advisor.terminal.print_parts`), its CPU expert times under it."""

from __future__ import annotations

import json

from typer.testing import CliRunner


def test_profile_list_fits_80_columns_and_keeps_every_figure(tmp_path):
    from advisor.cli import app

    pts = [[1, 0.02], [256, 0.1]]
    measured = {"name": "NVIDIA GeForce RTX 4090", "memory_bytes": 24 << 30,
                "h2d_gbps_pinned": 21.7, "h2d_gbps_pageable": 9.8, "copy_latency_us": 14.0,
                "source": "measured:2026-12-01 cuda-events", "link": "PCIe 4.0 x16",
                "cpu_experts": {"table": {shape: {f: pts for f in ("bf16", "int8", "int4")}
                                          for shape in ("2048x1408", "4096x1536", "7168x2048")},
                                "host": "AMD EPYC 9654 96-Core Processor (a long CPU name, as lscpu reports it)",
                                "threads": 16, "source": "measured:2026-12-01 wall-clock expert matmuls"}}
    (tmp_path / "rtx.json").write_text(json.dumps(measured))
    res = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["profile", "--list", "--profiles-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(map(len, lines)) <= 80, [ln for ln in lines if len(ln) > 80]
    entries = " ".join(res.output.split("\n    ")).splitlines()  # an entry's continuation lines joined
    (mine,) = [e for e in entries if e.startswith(measured["name"] + ":")]
    text = " ".join(mine.split())
    assert ("24.00 GiB, pinned 21.7 GB/s, pageable 9.8 GB/s, 14.0 us/copy, PCIe 4.0 x16, device 1008 GB/s 165.2 "
            "TFLOP/s bf16 [measured:2026-12-01 cuda-events] CPU expert times for 2048x1408, 4096x1536, 7168x2048 on AMD EPYC "
            "9654 96-Core Processor (a long CPU name, as lscpu reports it), 16 threads [measured:2026-12-01 "
            "wall-clock expert matmuls]") in text, mine
    (rtx,) = [e for e in entries if e.startswith("RTX 4090 24GB:")]
    assert rtx.endswith("device 1008 GB/s 165.2 TFLOP/s bf16 [catalogue (nominal)]"), rtx
