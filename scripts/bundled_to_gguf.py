"""Convert the bundled model (or another toy checkpoint) to GGUF with llama.cpp's own converter.

llama.cpp's `convert_hf_to_gguf.py` refuses the bundled model's toy tokenizer ("BPE pre-tokenizer was not
recognized"), so this runs that converter with the tokenizer written as a byte-level BPE vocabulary (special
tokens as control tokens; a checkpoint without tokenizer.json gets the 256 byte tokens) and the checkpoint's
own mask token id; everything else is the converter's code. Run it with a python that has the converter's
dependencies (torch, numpy, transformers), from a llama.cpp checkout or the tools `benchmarks/build_llamacpp.sh`
caches:

    python scripts/bundled_to_gguf.py ~/.cache/moe-advisor/llama.cpp advisor/models/bundled \\
        --outtype bf16 --outfile model-bf16.gguf

The arguments after the llama.cpp directory are the converter's own. `advisor export ... --to llama.cpp` of a
bundled-model study names this command as where its SRC_GGUF comes from.
"""

import json
import sys
from pathlib import Path

if len(sys.argv) < 3:
    sys.exit("usage: python scripts/bundled_to_gguf.py LLAMA_CPP_DIR MODEL_DIR --outtype bf16 --outfile OUT.gguf")
llama = Path(sys.argv[1]).expanduser()
sys.path[:0] = [str(llama / "gguf-py"), str(llama)]
import convert_hf_to_gguf as conv  # noqa: E402 - from the llama.cpp directory given
from conversion.base import TextModel  # noqa: E402
from conversion.llada import LLaDAMoEModel  # noqa: E402

BYTES = {b: chr(b) for b in [*range(33, 127), *range(161, 173), *range(174, 256)]}  # GPT-2 byte-to-unicode
BYTES |= {b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in BYTES)}


def byte_level(text):
    return "".join(BYTES[b] for b in text.encode())


def toy_vocab(self):
    """A byte-level BPE vocabulary for the toy tokenizers: special tokens as control tokens."""
    n = self.hparams["vocab_size"]
    tok_file = Path(self.dir_model) / "tokenizer.json"
    if tok_file.is_file():
        tj = json.loads(tok_file.read_text())
        special = {t["id"] for t in tj["added_tokens"]}
        by_id = {i: t for t, i in tj["model"]["vocab"].items()}
        by_id |= {t["id"]: t["content"] for t in tj["added_tokens"]}  # some are listed only there
        tokens = [by_id[i] if i in special else byte_level(by_id[i]) if i in by_id else f"[PAD{i}]" for i in range(n)]
        types = [3 if i in special else 1 if i in by_id else 5 for i in range(n)]  # 5: unused (vocab padding)
    else:
        tokens = [BYTES[i] if i < 256 else f"<x{i}>" for i in range(n)]
        types = [1] * n
    w = self.gguf_writer
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["~ ~"])
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")  # the prompt as given
    for key, add in (("eos_token_id", w.add_eos_token_id), ("pad_token_id", w.add_pad_token_id),
                     ("mask_token_id", w.add_mask_token_id)):
        if self.hparams.get(key) is not None:
            add(int(self.hparams[key]))


TextModel._set_vocab_gpt2 = toy_vocab
_params = LLaDAMoEModel.set_gguf_parameters


def _llada_params(self):
    _params(self)
    self.gguf_writer.add_mask_token_id(int(self.hparams.get("mask_token_id", 156895)))  # the checkpoint's own


LLaDAMoEModel.set_gguf_parameters = _llada_params
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
conv.main()
