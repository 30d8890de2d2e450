"""User-facing errors: one clear line, exit code 2, no traceback."""

from __future__ import annotations

import re
from collections.abc import Sequence


class UserError(Exception):
    """Bad input or an unavailable resource. The message says what is wrong and what to do."""

    exit_code = 2


class NothingMeets(UserError):
    """The input was fine, but no stored configuration meets it (`export --from-recommend`): exit code 1, as
    `advisor recommend` answers the same query, so a script tells "nothing fits" from a mistyped option."""

    exit_code = 1


class BadVariable(UserError):
    """An environment variable a library reads as it is imported cannot be read (`advisor.libenv`,
    `advisor.hub`): refused wherever it is met. A caller that reads past a `UserError` (a stored point that
    records too little to read a note from) lets this one through: it hid the variable and dropped what was read."""


STORAGE_WHAT = "a database URL or SQLite path (without it: sqlite:///studies/advisor.db)"
"""What `--storage ''` (an unset "$DB") is asked for: taking the default file there instead tuned, read or exported
another database - for a worker of a shared PostgreSQL study, a private SQLite file - without a word."""


def refuse_empty(options: dict[str, str | None], what: str = "a value") -> None:
    """`UserError` for an option given as '' (an unset "$VAR"): taking the default instead (another model,
    space, study, or no memory cap) would change the answer without a word."""
    for flag, value in options.items():
        if value is not None and not value.strip():
            raise UserError(f"{flag} is empty; give {what} or leave the option out")


def choose(value: str, names: Sequence[str], flag: str) -> str:
    """The one of `names` (fixed lower-case names) that `value` spells in any case, as `--sampler TPE`, `--task
    GSM8K` and `--to HF` are read; else one line naming them. A path is never a choice: it keeps its case."""
    key = value.strip().lower()
    if key not in names:
        raise UserError(f"{flag} {value!r} is not one of: {', '.join(names)}")
    return key


INTERRUPTED = "interrupted; nothing is half-written - run the same command again"
"""The one line (after `error: `, exit code 130) for Ctrl-C/SIGTERM in any command."""


_DEVICE = re.compile(r"(cpu|cuda)(:(0|[1-9][0-9]*))?")  # as torch.device spells them (no 'cuda: 0', 'cuda:01'); any case


def check_device_name(device: str) -> str:
    """`device` when it names one the offload runtime runs on, cpu or cuda[:N]; else the one-line refusal. It
    needs no torch, so a command's --device is checked as its options are read: a mistyped `--device gpu` was
    refused only once torch had imported, seconds later. Read in any case, spaces around it dropped, as every fixed
    name is (`choose`)."""
    key = device.strip().lower()
    if not _DEVICE.fullmatch(key):
        raise UserError(f"device '{device}' is not supported: the offload runtime runs on cpu or cuda; use cpu, cuda "
                        "or cuda:N")
    return key


def no_cuda(device: str) -> UserError:
    """The refusal of a cuda `device` on a host where CUDA cannot run: torch's answer (`models.load.check_device`)
    and, before torch, `refuse_without_cuda_driver`'s, in the same words."""
    return UserError(f"device '{device}' requested but no CUDA GPU is available here; use --device cpu")


ROCM_DEVICE = "/dev/kfd"
"""AMD's GPU compute device: where it is, torch's ROCm build runs `--device cuda` on it, no libcuda needed."""


def refuse_without_cuda_driver(device: str) -> None:
    """Refuse, without torch, a cuda `device` on a host that has no NVIDIA driver's CUDA library (libcuda) to load
    and no AMD GPU driver (`ROCM_DEVICE`: torch's ROCm build calls that GPU cuda), where torch's CUDA can never
    run: `eval --device cuda` read its task first (GSM8K's hub lookup) and imported torch before it learned so.
    Where either is there, torch decides once imported (`check_device`: hidden GPUs, a CPU-only torch, an index
    past the GPUs)."""
    if not check_device_name(device).startswith("cuda"):
        return
    import ctypes
    import os
    import sys

    if os.path.exists(ROCM_DEVICE):  # torch's ROCm build: its 'cuda' is an AMD GPU, with no libcuda to load
        return
    try:
        ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")  # (macOS: none; torch has no CUDA)
    except OSError:
        raise no_cuda(device) from None
