"""New user 24's findings, through the CLI as a user runs it."""

from __future__ import annotations

import json
import sqlite3

from tests.cli_helpers import advisor_entry, advisor_in_process, flat, one_error_line

BF16_ONLY = """name = "bf16-only"
[precision]
formats = ["bf16"]
[cache]
slots_per_layer = [8]
policies = ["lru"]
[objectives]
h2d_bytes_per_token = "minimize"
fidelity_top1 = "maximize"
[evaluation]
trace_prompts = 1
fidelity_prompts = 4
"""


def test_a_bf16_plan_of_a_bf16_diffusion_gemma_agrees_with_its_reference(tmp_path):
    """A resident bf16 DiffusionGemma's full-precision reference ran transformers' default experts kernel
    (grouped_mm), its plans the advisor seam (eager's numbers): its own bf16 plan agreed on top-1 with it 0.969 of
    the time (0.812 on a 4-layer, 32-expert one), and the offloaded load of the same checkpoint said 1.000 - and
    the eval cache, shared by both loads, kept whichever ran first. The reference now computes through the seam,
    and a study scored against the old one is not resumed."""
    import torch

    from advisor.models.tiny import build_tiny

    build_tiny("diffusion_gemma", dtype=torch.bfloat16).save_pretrained(tmp_path / "dg")
    (tmp_path / "s.toml").write_text(BF16_ONLY)
    r = advisor_in_process("tune", "dg", "--space", "s.toml", "--resident", "--trials", "1", "--storage", "s.db",
                           cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "top-1 agree * 1.000" in flat(r.stdout), r.stdout
    # a fidelity the eval cache stored before the fix (its key had no reference) is not reused by a later study
    db = sqlite3.connect(tmp_path / "s.db")
    with db:
        [(settings,)] = db.execute("SELECT settings FROM advisor_eval_cache WHERE kind = 'fidelity'").fetchall()
        old = json.dumps({k: v for k, v in json.loads(settings).items() if k != "reference"}, sort_keys=True)
        db.execute("UPDATE advisor_eval_cache SET settings = ?, \"values\" = ? WHERE kind = 'fidelity'",
                   (old, json.dumps({"fidelity_top1": 0.812, "fidelity_kl": 0.5})))
    db.close()
    r = advisor_in_process("tune", "dg", "--space", "s.toml", "--resident", "--trials", "1", "--storage", "s.db",
                           "--study", "later", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "top-1 agree * 1.000" in flat(r.stdout), r.stdout
    # a study stored before the fix (no mark of its reference) scored its trials against the old reference: a
    # resume would put this run's 1.000 beside its 0.969 for the same plan, so it is refused in one line
    db = sqlite3.connect(tmp_path / "s.db")
    with db:
        db.execute("DELETE FROM study_user_attributes WHERE key = 'fidelity_reference' AND study_id = "
                   "(SELECT study_id FROM studies WHERE study_name = 'later')")
    db.close()
    r = advisor_entry("tune", "dg", "--space", "s.toml", "--resident", "--more", "1", "--storage", "s.db",
                      "--study", "later", cwd=tmp_path)
    one_error_line(r, "study 'later'", "transformers' default experts kernel", "use a new --study name")


def test_eval_without_a_precision_decodes_as_the_models_own_precision_plan(tmp_path):
    """`eval MODEL` (no --precision) decoded with transformers' default experts kernel (grouped_mm) while a tune
    trial's full-precision plan (and `eval --precision bf16`) computes through the advisor seam: on a bf16
    DiffusionGemma the two decoded other tokens, so the full-precision accuracy eval printed need not be a
    study's. It computes through the seam now, as the fidelity reference does: the same completions."""
    import shutil

    import torch

    from advisor.models.load import BUNDLED_DIR
    from advisor.models.tiny import build_tiny

    build_tiny("diffusion_gemma", dtype=torch.bfloat16).save_pretrained(tmp_path / "dg")
    for name in ("tokenizer.json", "tokenizer_config.json"):  # eval reads text: the bundled model's 99 ids fit
        shutil.copy(BUNDLED_DIR / name, tmp_path / "dg" / name)
    runs = []
    for precision in ([], ["--precision", "bf16", "--fidelity-prompts", "0"]):
        r = advisor_in_process("eval", "dg", "--limit", "1", "--max-new-tokens", "8", "--no-progress", *precision,
                               "--json", f"e{len(runs)}.json", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        runs.append([e["completion"] for e in json.loads((tmp_path / f"e{len(runs)}.json").read_text())["per_example"]])
    assert runs[0] == runs[1], runs


def test_export_json_names_the_shared_experts_module(tmp_path):
    """SCHEMA.md: `model.moe_layers[].shared` is the module path of the layer's shared experts. The export wrote the
    routed experts' path with '(shared)' appended ('model.layers.1.mlp.experts(shared)'), which names no module
    (LLaDA2's are `mlp.shared_experts`). It is the module's own path now."""
    import json

    from advisor.models.tiny import build_tiny

    r = advisor_in_process("tune", "tiny:llada2", "--space", "quick", "--trials", "1", "--storage", "s.db",
                           "--study", "s", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = advisor_in_process("export", "s", "0", "--storage", "s.db", "--to", "json", "-o", "e.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    layers = json.loads((tmp_path / "e.json").read_text())["model"]["moe_layers"]
    modules = dict(build_tiny("llada2").named_modules())
    assert [x["shared"] for x in layers] == [f"model.layers.{x['decoder_layer']}.mlp.shared_experts" for x in layers]
    assert all(x["shared"] in modules for x in layers)


def test_a_typo_in_a_measured_profiles_name_offers_it(tmp_path):
    """`--gpu` with a slip in the name of a profile `advisor profile` measured ('cpu x86_64' for 'cpu x86_64 vm', or
    'my hots' for 'my host') offered only catalogue GPUs, or said that no profile in the folder has that name,
    beside the one the user meant. The measured profiles are among the close matches now."""
    import dataclasses

    from advisor.hardware.profiles import CATALOGUE, save_profile

    save_profile(dataclasses.replace(CATALOGUE[0], name="cpu x86_64 vm"), tmp_path / "p")
    for typo in ("cpu x86_64", "cpu x86-64 wm"):
        r = advisor_entry("tune", "tiny:qwen3_moe", "--gpu", typo, "--profiles-dir", "p", "--storage", "s.db",
                          cwd=tmp_path)
        one_error_line(r, f"unknown GPU '{typo}'", "close matches: cpu x86_64 vm")


def test_quant_report_names_moe_layers_as_inspect_does(tmp_path):
    """`quant-report` headed its rows 'layer 0', 'layer 1' - the MoE layers counted from 0, as `--layers` and
    precision plans count them - where `inspect` calls 'layer' the decoder block: LLaDA2's first MoE layer
    (decoder block 1; block 0 is dense) was 'layer 0' in one and 'layer 1' in the other. quant-report now says
    'MoE 0 (layer 1)', with a MoE and a layer column in the table, as `inspect` does."""
    r = advisor_in_process("quant-report", "tiny:llada2", "--formats", "int8", "--max-experts", "1", "--threads", "1",
                           cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "int8, MoE 0 (layer 1)" in r.stdout and "int8, MoE 1 (layer 2)" in r.stdout, r.stdout
    assert "layer 0" not in r.stdout, r.stdout


def test_a_target_models_name_without_its_owner_is_offered_its_hub_id(tmp_path):
    """`inspect LLaDA2.0-mini` (the name without inclusionAI/) offline said 'hf download LLaDA2.0-mini', an id the
    hub does not serve: the published id of a model this tool targets is offered, any other name is said as given."""
    r = advisor_entry("inspect", "llada2.0-MINI", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    one_error_line(r, "model llada2.0-MINI is not available offline", "(hf download inclusionAI/LLaDA2.0-mini: hub ids "
                   "are OWNER/NAME)")
    r = advisor_entry("inspect", "acme-moe", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    one_error_line(r, "model acme-moe is not available offline", "(hf download acme-moe)")
