"""One prepared run of every CUDA measurement the project needs, for a lent GPU with little time.

`python -m benchmarks.gpu_check [--out DIR] [--only a,b]` runs each area's `gpu_checks()` in turn with a
time limit per section, writes everything measured to DIR/gpu_results.json (with date, device, versions)
and prints a short summary. A failing section is recorded with its error and the run goes on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import signal
import time
import traceback
from pathlib import Path

SECTIONS: dict[str, tuple[str, str, int]] = {
    # name: (module, function, seconds allowed); ordered by value per device-second
    "models_equality": ("advisor.models.tiny", "gpu_checks", 35),
    "hardware_profile": ("advisor.hardware.measure", "measure_profile", 20),
    "quant": ("benchmarks.quant_formats", "gpu_checks", 45),
    "tune": ("benchmarks.search_efficiency", "gpu_checks", 70),
    "offload": ("benchmarks.offload_gpu", "gpu_checks", 120),
    "eval": ("benchmarks.accuracy_vs_precision", "gpu_checks", 90),
}


class _Timeout(BaseException):
    """A section's time limit: a BaseException, so the `except Exception` a section keeps going with (one tiny
    family, one format failing) does not take it for that item's error and run on past its limit unbounded."""


def _alarm(_signum, _frame):
    raise _Timeout()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    import torch

    results: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sections": {},
    }
    try:
        import transformers

        results["transformers"] = transformers.__version__
    except Exception as e:
        results["transformers"] = f"unavailable: {e}"
    only = {s for s in args.only.split(",") if s}
    signal.signal(signal.SIGALRM, _alarm)
    for name, (mod, fn, limit) in SECTIONS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        signal.alarm(limit)
        try:
            value = getattr(importlib.import_module(mod), fn)()
            value = value.to_dict() if hasattr(value, "to_dict") else value
            # a section's gpu_checks() returns {"skipped": why} without CUDA: nothing measured, so not "ok"
            status = f"skipped: {value['skipped']}" if isinstance(value, dict) and "skipped" in value else "ok"
        except _Timeout:
            value, status = None, f"timeout after {limit}s"
        except Exception as e:
            value, status = {"traceback": traceback.format_exc(limit=6)}, f"error: {type(e).__name__}: {e}"
        finally:
            signal.alarm(0)
        results["sections"][name] = {"status": status, "seconds": round(time.perf_counter() - t0, 1), "result": value}
        print(f"[{name}] {status} in {time.perf_counter() - t0:.1f}s", flush=True)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Path(args.out, "gpu_results.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=1, default=str)[-6000:])
    sections = results["sections"].values()
    print(f"RESULT sections_ok={sum(s['status'] == 'ok' for s in sections)} "
          f"sections_skipped={sum(s['status'].startswith('skipped') for s in sections)} sections_run={len(sections)}")


if __name__ == "__main__":
    main()
