"""Environment variables the model libraries parse as they are imported, checked before they are.

huggingface_hub, transformers and what transformers imports (accelerate, kernels) - datasets for GSM8K - read a few
variables with int(), float(), a strict yes/no or a logging level name at import: a value they cannot read
(HF_HUB_ETAG_TIMEOUT=abc, an empty USE_TORCH_XLA, NPU_FA2_SPARSE_MODE other than 2 or 3) was their ValueError, a traceback from every command that loads a
model, the bundled one too. `check_variables` refuses it in one line naming the variable and what to give, before
those imports (and torch's); standard library only. Read from the installed versions' sources: huggingface_hub
2.4 constants.py, transformers 5.25 integrations/npu_flash_attention.py, accelerate 1.16 utils/imports.py and
logging.py, kernels' _internals/layer/globals.py, datasets 5.2 config.py. Variables they read leniently (the
HF_HUB_* switches: anything but 1/ON/YES/TRUE is off; the verbosities: a warning) are not checked.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable


def _reads(convert: Callable[[str], object]) -> Callable[[str], bool]:
    """Whether `convert` (int, float) reads a value, as the libraries call it (int reads ' 10 ' and '1_000')."""
    def check(value: str) -> bool:
        try:
            convert(value)
        except ValueError:
            return False
        return True
    return check


_whole, _number = _reads(int), _reads(float)


def _mask_mode(value: str) -> bool:
    """Whether transformers' NPU flash attention takes `value`: int() of it, 2 or 3 (else its ValueError)."""
    return _whole(value) and int(value) in (2, 3)


def _yes_no(value: str) -> bool:
    """Whether accelerate's str_to_bool reads `value` (any case); it raises ValueError on anything else, '' too."""
    return value.lower() in {"y", "yes", "t", "true", "on", "1", "n", "no", "f", "false", "off", "0"}


def _level(value: str) -> bool:
    """Whether logging's setLevel takes `value` upper-cased, as accelerate's get_logger sets it."""
    return isinstance(logging.getLevelName(value.upper()), int)


YES_NO = "1 or 0 (true/false, yes/no, on/off)"
VARIABLES: tuple[tuple[str, str, Callable[[str], bool], str], ...] = (
    ("HF_HUB_ETAG_TIMEOUT", "huggingface_hub", _whole, "a whole number of seconds (10)"),
    ("HF_HUB_DOWNLOAD_TIMEOUT", "huggingface_hub", _whole, "a whole number of seconds (10)"),
    ("NPU_FA2_SPARSE_MODE", "transformers", _mask_mode, "2 or 3 (its Ascend NPU attention mask mode)"),
    ("DISABLE_KERNEL_MAPPING", "kernels", _whole, "1 or 0"),
    ("USE_TORCH_XLA", "accelerate", _yes_no, YES_NO),
    ("ACCELERATE_USE_MEGATRON_LM", "accelerate", _yes_no, YES_NO),
    ("ACCELERATE_ENABLE_RICH", "accelerate", _yes_no, YES_NO),  # read where rich is installed: the CLI's is
    ("ACCELERATE_LOG_LEVEL", "accelerate", _level, "a logging level (DEBUG, INFO, WARNING, ERROR or CRITICAL)"),
    ("HF_DATASETS_IN_MEMORY_MAX_SIZE", "datasets", _number, "a number of bytes"),
)
"""(variable, the library that reads it as it is imported, whether a value reads, what to give)."""

IMPORTS = {"huggingface_hub": ("huggingface_hub",),
           "transformers": ("huggingface_hub", "transformers", "kernels", "accelerate"),
           "datasets": ("huggingface_hub", "datasets")}
"""What importing each library imports of those that read `VARIABLES` (where installed)."""


def check_variables(library: str) -> None:
    """Before `library` ('huggingface_hub', 'transformers' or 'datasets') is imported: one line (`BadVariable`) for
    a variable of `VARIABLES` that a library it imports, where installed, cannot read (`advisor.hub.check_import`
    checks HF_ENDPOINT first). A command that imports none of them is not refused for their variables."""
    imported = IMPORTS[library]
    for name, reader, reads, give in VARIABLES:
        value = os.environ.get(name)
        if value is None or reads(value) or reader not in imported or importlib.util.find_spec(reader) is None:
            continue
        from advisor.errors import BadVariable

        shown = repr(value) if len(value) <= 24 else repr(value[:24]) + "..."
        raise BadVariable(f"{name} is {shown if value else 'empty'}, which {reader} refuses as it is imported; "
                        f"give {give}, or unset it")
