"""A model directory whose config.json or tokenizer_config.json names its own Python code (`auto_map`) for a class
transformers does not build itself: advisor never runs that code.

Without `trust_remote_code`, transformers asked "Do you wish to run the custom code? [y/N]" on the terminal (for
15 s, then its own error), ran the directory's Python files on a "y", and otherwise raised an error telling the
user to pass an argument advisor has no option for. Every `Auto*.from_pretrained` of a loader passes
`TRUST_NO_CODE`, so transformers raises at once, and `custom_code_refusal` turns that error into one line.
"""

from __future__ import annotations

from pathlib import Path

from advisor.errors import UserError

TRUST_NO_CODE = {"trust_remote_code": False}
"""The keyword arguments of every `Auto*.from_pretrained` a loader calls: never the model's own code, never a prompt."""


def custom_code_refusal(path: Path, what: str, error: BaseException) -> UserError | None:
    """The one-line refusal of `path`'s `what` ("model" or "tokenizer") where `error` is transformers' refusal to
    run the directory's own code; None for any other error."""
    if "trust_remote_code" not in str(error):
        return None
    import transformers

    takes = ("the model types transformers builds itself, and LLaDA-MoE and LLaDA2" if what == "model" else
             "tokenizers transformers builds itself (a tokenizer_class it knows)")
    return UserError(f"{path}: its {what} needs the Python code in the model's own files (auto_map), which advisor "
                     f"never runs; it loads {takes} - a transformers newer than {transformers.__version__} may "
                     "build this one")
