"""A character-level tokenizer for the bundled model, saved as a standard HF fast tokenizer.

Why characters: digits must be single tokens for arithmetic to be learnable by a model trained in
minutes, and decoding must give back the exact text (``#### 42``), which a word-level vocabulary with
space-joining decoders does not. Any printable ASCII character is in the vocabulary, so GSM8K or code
prompts still encode (the bundled model just was not trained on them).
"""

from __future__ import annotations

MASK = "<|mask|>"
EOS = "<|eos|>"
UNK = "<|unk|>"
SPECIALS = (EOS, MASK, UNK)
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]


def build_tokenizer():
    """A `PreTrainedTokenizerFast` with one token per character, an EOS (also used as padding) and a mask."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *CHARS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, mask_token=MASK, unk_token=UNK,
        model_max_length=512, padding_side="left",
    )
