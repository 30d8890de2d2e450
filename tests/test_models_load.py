"""Loading by spec (tiny, directory, hub id, bundled), fingerprints, and per-family generation with hooks."""

import time

import pytest
import torch

from advisor.errors import UserError
from advisor.models import load as load_mod
from advisor.models.generate import ForwardInfo, generate, generate_text
from advisor.models.load import fingerprint, load_model
from advisor.models.tiny import MASK_TOKEN_ID, TINY_FAMILIES, sample_inputs


def _prompt(batch=2, length=5):
    return torch.randint(3, 200, (batch, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("spec", ["", "not a model id!", "./no/such/dir", "tiny:nope", "a/b/c", "/abs/missing"])
def test_bad_spec_is_one_clear_user_error(spec):
    with pytest.raises(UserError):
        load_model(spec)


def test_uncached_hub_id_offline_fails_fast_with_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"not available offline.*hf download advisor-test/nothing-here"):
        load_model("advisor-test/nothing-here")
    assert time.monotonic() - start < 10


def test_unreachable_hub_counts_as_offline_without_hanging(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://127.0.0.1")  # nothing listens on :443
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    assert load_mod.hub_reachable(timeout=1.0) is False
    assert time.monotonic() - start < 3


def test_cached_hub_id_loads_offline(tmp_path, monkeypatch):
    """A model in the local hub cache loads by its id with no network."""
    snapshot = tmp_path / "models--advisor-test--tiny-olmoe" / "snapshots" / ("0" * 40)
    load_model("tiny:olmoe").model.save_pretrained(snapshot)
    (tmp_path / "models--advisor-test--tiny-olmoe" / "refs").mkdir()
    (tmp_path / "models--advisor-test--tiny-olmoe" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    lm = load_model("advisor-test/tiny-olmoe")
    assert lm.family == "olmoe" and len(lm.moe) == 2 and lm.name == "advisor-test/tiny-olmoe"


def test_missing_bundled_model_says_how_to_train_it(tmp_path, monkeypatch):
    monkeypatch.setattr(load_mod, "BUNDLED_DIR", tmp_path / "bundled")
    with pytest.raises(UserError, match=r"python -m scripts.train_bundled"):
        load_model("bundled")


def test_cuda_request_without_gpu_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="no CUDA"):
        load_model("tiny:mixtral", device="cuda")


def test_fingerprint_is_stable_and_tracks_weights():
    a, b = load_model("tiny:mixtral"), load_model("tiny:mixtral")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    assert a.fingerprint != load_model("tiny:olmoe").fingerprint
    with torch.no_grad():
        next(a.model.parameters()).add_(1.0)
    assert fingerprint(a.model) != b.fingerprint


@pytest.mark.parametrize("family", ["llada_moe", "llada2", "qwen3_moe", "diffusion_gemma"])
def test_directory_roundtrip_keeps_family_experts_and_logits(tmp_path, family):
    tiny = load_model(f"tiny:{family}")
    tiny.model.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    assert lm.family == family and lm.is_diffusion == tiny.is_diffusion
    assert [(x.name, x.num_experts, x.top_k) for x in lm.moe] == [(x.name, x.num_experts, x.top_k) for x in tiny.moe]
    kwargs = sample_inputs(family)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(**kwargs).logits, tiny.model(**kwargs).logits)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_generate_returns_new_tokens_and_reports_every_forward(family):
    lm = load_model(f"tiny:{family}")
    infos: list[ForwardInfo] = []
    kw = {"max_new_tokens": 8, "steps": 4, "block_length": 4}  # few denoising steps: seconds, not minutes
    out = generate(lm, _prompt(), on_forward=infos.append, **kw)
    assert out.shape == (2, 8) and out.dtype == torch.long
    assert torch.equal(out, generate(lm, _prompt(), **kw))  # seeded: repeatable
    assert [i.index for i in infos] == list(range(len(infos))) and infos
    if lm.mask_token_id is not None:
        assert lm.mask_token_id == MASK_TOKEN_ID and not (out == MASK_TOKEN_ID).any()


def test_llada_moe_steps_and_blocks_follow_the_request():
    lm = load_model("tiny:llada_moe")
    infos = []
    generate(lm, _prompt(), max_new_tokens=12, steps=6, block_length=4, on_forward=infos.append)
    assert len(infos) == 6
    assert [(i.block, i.step) for i in infos] == [(b, s) for b in range(3) for s in range(2)]


def test_diffusion_gemma_encoder_opens_each_canvas_block():
    lm = load_model("tiny:diffusion_gemma")
    infos = []
    out = generate(lm, _prompt(), max_new_tokens=8, steps=3, block_length=4, on_forward=infos.append)
    assert out.shape == (2, 8)
    assert sorted({i.block for i in infos}) == [0, 1]
    starts = [i for i in infos if i.step == -1]  # no denoising step: the encoder pass, over none of the block
    assert [i.block for i in starts] == [0, 1] and {i.block_span for i in starts} == {(0, 0)}  # one per canvas
    assert max(i.step for i in infos) <= 2  # the decoder passes: denoising steps 0, 1, 2
    assert lm.model.config.canvas_length == 8  # restored after generate


def test_autoregressive_generate_reports_one_forward_per_token():
    lm = load_model("tiny:qwen3_moe")
    infos = []
    out = generate(lm, _prompt(1), max_new_tokens=6, on_forward=infos.append)
    with torch.no_grad():
        greedy = lm.model.generate(_prompt(1), max_new_tokens=6, do_sample=False, pad_token_id=0)[:, 5:]
    assert torch.equal(out[:, : greedy.shape[1]], greedy)
    assert len(infos) == greedy.shape[1]


def test_generate_text_needs_a_tokenizer():
    with pytest.raises(UserError, match="no tokenizer"):
        generate_text(load_model("tiny:olmoe"), ["hi"], max_new_tokens=4)


def test_generate_text_with_a_saved_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, **{chr(c): c - 29 for c in range(32, 127)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    tiny = load_model("tiny:llada_moe")
    tiny.model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    assert lm.tokenizer is not None
    texts = generate_text(lm, ["1+1=", "abc"], max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_cli_inspect_lists_experts_and_rejects_bad_specs():
    from typer.testing import CliRunner

    from advisor.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["inspect", "tiny:deepseek_v3"], env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert "deepseek_v3" in ok.output and "DeepseekV3MLP" in ok.output and "2 MoE layers" in ok.output
    bad = runner.invoke(app, ["inspect", "tiny:nope"])
    assert isinstance(bad.exception, UserError) and "tiny family" in str(bad.exception)


def test_a_truncated_tokenizer_is_one_line_not_a_traceback(tmp_path):
    """A tokenizer.json cut short by an interrupted download was a JSONDecodeError traceback out of every command
    that loads the model."""
    import shutil

    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.models import tiny
    from advisor.models.load import BUNDLED_DIR

    tiny.build_tiny("qwen3_moe").save_pretrained(str(tmp_path))
    shutil.copy(BUNDLED_DIR / "tokenizer_config.json", tmp_path)
    (tmp_path / "tokenizer.json").write_bytes((BUNDLED_DIR / "tokenizer.json").read_bytes()[:300])
    for args in (["inspect", str(tmp_path)], ["inspect", str(tmp_path), "--offload"]):
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, UserError) and result.exception.exit_code == 2, result.output
        assert f"cannot read the tokenizer in {tmp_path}" in str(result.exception)
        assert "\n" not in str(result.exception)
