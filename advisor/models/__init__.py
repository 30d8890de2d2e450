"""Models: load any supported MoE model, view its experts, decode it the family's way.

Imports are lazy so that `import advisor.models` (and the read-only CLI commands) never pull in torch:

* `load.load_model(spec)` -> `LoadedModel` (HF id, local directory, ``tiny:<family>``, ``bundled``)
* `view.moe_layers(model)`, `view.attach_runtime(model, runtime, observers)`, `view.detach_runtime(model)`
* `generate.generate(loaded, input_ids, max_new_tokens=..., on_forward=...)`, `generate.generate_text`
* `experts` - the seam every expert computes through; `tiny` - tiny random models of each family

* `model_name(spec)` - the name a loaded model carries, known without torch (a study's default name)
* `spec_config(spec)` - the config.json settings of a tiny:<family>, 'bundled', local directory or cached hub id,
  read without torch (None where none can be read); `config_family(config)` - that model's family
* `moe_layer_count(config)` - the MoE layers a config.json's model has, counted without torch (None: not known)
* `spec_moe_layers(spec)` - `moe_layer_count` of a spec's `spec_config`
* `moe_expert_count(config)` - the routed experts of each of those layers, read without torch (None: not known)
* `config_positions(config)` - a config.json's maximum positions (of its text config too), read without torch
* `spec_path(spec)` - the local path a spec may name, '~' expanded
* `cached_hub_snapshot(repo_id)` - the local hub cache's directory of a hub id's config.json, without the network
* `canonical_spec(spec)` - 'bundled' and `tiny:<family>` as typed in any case, spelled as the loaders compare them
* `check_model_spec(spec)` - refuses, without torch, a MODEL no loader could take; else its `canonical_spec`
* `read_config(path)` - a model directory's config.json, refused in one line where it cannot be read
* `has_no_weights(path)` - a model directory with no weight files (config.json alone: `advisor inspect` counts it)
* `check_weights(spec)` - refuses, without torch, a local directory whose safetensors files are missing or truncated
* `check_tokenizer(spec)` - refuses, without torch, a MODEL known to have no tokenizer (for `advisor eval`)
* `dtype_name(dtype)` - a --dtype's torch name, checked without torch
* `quant_method(config)` - a pre-quantized checkpoint's own quantization method, from its config.json

The bottom of the stack: may import only `advisor.errors`, `advisor.units` and `advisor.files` (standard library
only), and torch/transformers lazily.
"""

from __future__ import annotations

import difflib
import logging
import re
from importlib import import_module
from pathlib import Path
from typing import Any

from advisor.files import home_path
from advisor.parsing import loads_json

QUIET_LOGGERS = ("torchao", "torch.utils._pytree")
"""transformers imports torchao whenever it is installed (`pip install "moe-advisor[hf]"`), and torchao warns at
import about CUDA kernels a CPU build cannot load (torch's pytree about enums torchao registers): noise that
buries the CLI's one-line messages and an exported recipe's output. Quieted to errors when this package is
imported, before the model stack imports transformers - unless the program set those loggers' levels itself."""

for _name in QUIET_LOGGERS:
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.ERROR)

_LAZY = {
    "load_model": "advisor.models.load",
    "LoadedModel": "advisor.models.load",
    "moe_layers": "advisor.models.view",
    "MoELayer": "advisor.models.view",
    "attach_runtime": "advisor.models.view",
    "detach_runtime": "advisor.models.view",
    "ForwardInfo": "advisor.models.samplers",
}

__all__ = sorted([*_LAZY, "SUPPORTED_TEXT", "model_name", "spec_path", "canonical_spec", "quant_method",
                  "check_model_spec", "check_tokenizer", "read_config", "no_tokenizer", "check_tiny_family",
                  "dtype_name", "DTYPES", "TINY_FAMILIES", "TOKENIZER_FILES", "DIFFUSION_FAMILIES", "family_of",
                  "config_family", "spec_config", "config_positions", "moe_layer_count", "spec_moe_layers",
                  "moe_expert_count", "check_weights", "is_count",
                  "unavailable_offline", "cached_hub_snapshot"])

TINY_FAMILIES = ("llada_moe", "llada2", "qwen3_moe", "olmoe", "mixtral", "deepseek_v3", "diffusion_gemma")
"""The families `tiny:<family>` builds (`advisor.models.tiny`)."""

DIFFUSION_FAMILIES = frozenset({"llada_moe", "llada2", "diffusion_gemma"})
"""The families that decode by denoising (steps, blocks); every other decodes autoregressively."""

_LLADA_MOE_TYPES = {"llada_moe", "lladamoe", "llada-moe", "llada"}  # "llada": llada_moe.MODEL_TYPE, as published
_LLADA2_TYPES = {"llada2", "llada2_moe", "llada2moe"}  # "llada2_moe": llada2.MODEL_TYPE, as published
"""Published config.json model_type names of the LLaDA checkpoints, besides the project's own family names."""

BUNDLED_DIR = Path(__file__).parent / "bundled"
"""The bundled model's directory (MODEL 'bundled')."""

SUPPORTED_TEXT = (
    "LLaDA-MoE, LLaDA2 (project definitions), DiffusionGemma, Qwen3-MoE, OLMoE, Mixtral, DeepSeek-V3 and other "
    "transformers 5.x MoE models with fused gated experts (gate_up_proj/down_proj)"
)
"""The models this tool reads, as its refusals name them."""

DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "half": "float16",
          "fp32": "float32", "float32": "float32", "float": "float32"}
"""The dtypes a model loads in (`--dtype`), by every name taken, to torch's name of it."""


def dtype_name(dtype: str) -> str | None:
    """torch's name of the dtype `dtype` names (`DTYPES`, any case, `torch.` prefix or none), None for "auto" (as
    stored); else the one-line refusal. Torch-free, so `inspect --dtype bf61` is answered as the options are read,
    as a mistyped --device is, not once torch has imported (5 s)."""
    from advisor.errors import UserError

    key = str(dtype).strip().lower().removeprefix("torch.")
    if key == "auto":
        return None
    if key not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use one of: auto, {', '.join(sorted(DTYPES))}")
    return DTYPES[key]


_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")


def spec_path(spec: str) -> Path:
    """A MODEL spec as the local path it may name, a leading '~' expanded (`home_path`)."""
    return Path(home_path(str(spec).strip()))


def canonical_spec(spec: str) -> str:
    """`spec` with its built-in names read in any case: 'Bundled' is 'bundled', 'TINY:Mixtral' is 'tiny:mixtral'
    (they were refused, "did you mean 'bundled'?"), as `--sampler TPE` and `--task GSM8K` are read. Only these
    names: a path or hub id keeps its case, and a directory named as typed ('Bundled', 'Tiny:x') stays that
    directory - only the exact 'bundled' and 'tiny:' spellings name the built-ins whatever is on disk. An unknown
    family keeps its spelling, for `check_tiny_family` to name."""
    spec = str(spec).strip()
    key = spec.lower()
    if key != "bundled" and not key.startswith("tiny:"):
        return spec
    if not (spec == "bundled" or spec.startswith("tiny:")) and spec_path(spec).is_dir():
        return spec
    family = key.removeprefix("tiny:")
    return key if key == "bundled" or family in TINY_FAMILIES else f"tiny:{spec[5:]}"


def model_name(spec: str) -> str:
    """The name a model loaded from `spec` carries (`LoadedModel.name`, part of default study names): a local
    directory's path, else the spec itself (`canonical_spec`)."""
    spec = canonical_spec(spec)
    if spec == "bundled" or spec.startswith("tiny:"):
        return spec
    path = spec_path(spec)
    return str(path) if path.is_dir() else spec


def family_of(model_type: str) -> str:
    """The project family name of a config.json `model_type`."""
    mt = model_type.lower()
    if mt in _LLADA_MOE_TYPES:
        return "llada_moe"
    if mt in _LLADA2_TYPES:
        return "llada2"
    return mt


def config_family(config: dict[str, Any] | None) -> str | None:
    """The family of the model of config.json settings `config` (`spec_config`'s), known without torch; None where
    its config cannot be read (known, or refused, once the model loads). Lets a command refuse options the family
    does not take (`trace --steps` for an autoregressive model) before seconds of imports and the load."""
    return family_of(str(config["model_type"])) if config is not None else None


def spec_config(spec: str) -> dict[str, Any] | None:
    """The config.json settings of the model a checked spec (`check_model_spec`) names, read without torch: a
    tiny:<family>'s sizes (`tiny_sizes`), the file (`read_config`) of 'bundled', of a local directory, or of a hub
    id in the local hub cache (never the network: an id not downloaded is looked up only by loading it); None where
    there is none, or `read_config` refuses it (known, or refused in these words, once the model loads). What a
    command checks its options against before the imports and the load."""
    from advisor.errors import UserError

    if spec.startswith("tiny:"):
        from advisor.models.tiny_sizes import tiny_fields

        family = spec.removeprefix("tiny:")
        return {"model_type": family, **tiny_fields(family)} if family in TINY_FAMILIES else None
    path = BUNDLED_DIR if spec == "bundled" else spec_path(spec)
    if not path.is_dir():  # a hub id
        path = cached_hub_snapshot(spec)
        if path is None:
            return None
    try:
        return read_config(path)
    except UserError:  # refused by the load, in these words
        return None


def cached_hub_snapshot(repo_id: str) -> Path | None:
    """The directory of hub model `repo_id` in the local hub cache that holds its config.json (its main revision,
    as the loader reads it offline), found without the network; None when it is not there."""
    from advisor.hub import check_import

    check_import("huggingface_hub")  # the variables its import reads (HF_ENDPOINT, ...): one line for a bad one
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # huggingface_hub's id validation (HFValidationError)
        return None
    return Path(found).parent if isinstance(found, str) else None


def spec_moe_layers(spec: str) -> int | None:
    """The MoE layers of the model a checked spec names, counted without torch (`spec_config`, `moe_layer_count`):
    what `quant-report --layers` is checked against before the load; None: not known."""
    config = spec_config(spec)
    return None if config is None else moe_layer_count(config)


_EXPERTS_FIELDS = {"mixtral": ("num_local_experts",), "deepseek_v3": ("n_routed_experts",),
                   "qwen3_moe": ("num_experts", "num_local_experts")}  # published; transformers 5 writes the second
"""config.json's fields of the routed experts per MoE layer (the first present), where not `num_experts`."""


def moe_expert_count(config: dict[str, Any]) -> int | None:
    """The routed experts of each MoE layer of a model of config.json settings `config` (every family here gives
    each MoE layer the same count; DiffusionGemma's in its text_config); None for another family or a field left
    out (its config class's default is not read here) or not a positive count."""
    family = family_of(str(config.get("model_type", "")))
    if family == "diffusion_gemma":
        config = config.get("text_config")
        if not isinstance(config, dict):
            return None
    if family not in TINY_FAMILIES:  # the families whose fields are known here
        return None
    n = next((config[f] for f in _EXPERTS_FIELDS.get(family, ("num_experts",)) if f in config), None)
    return n if is_count(n) and n > 0 else None


def moe_layer_count(config: dict[str, Any]) -> int | None:
    """How many MoE layers a model of config.json settings `config` has, counted as its family's model class builds
    them, without torch: every decoder layer but the dense ones its config names (LLaDA-MoE's zero `moe_layer_freq`
    entries; the first `first_k_dense_replace` of LLaDA2 and DeepSeek-V3; Qwen3-MoE's `mlp_only_layers` and the
    layers `decoder_sparse_step` skips), a field left out taking its config class's default; DiffusionGemma's text
    layers (its encoder's experts are its decoder's). None for another family, settings not of the expected kinds,
    or no MoE layer at all (refused as no MoE model by the load): the count is then known once the model loads."""
    family = family_of(str(config.get("model_type", "")))
    if family == "diffusion_gemma":
        config = config.get("text_config")
        if not isinstance(config, dict):
            return None
    n = config.get("num_hidden_layers")
    if not is_count(n):
        return None
    found: int | None = None
    if family in ("mixtral", "olmoe", "diffusion_gemma"):
        found = n
    elif family in ("llada2", "deepseek_v3"):  # LLaDA2MoeConfig's default 1, DeepseekV3Config's 3
        k = config.get("first_k_dense_replace", 1 if family == "llada2" else 3)
        found = max(n - k, 0) if is_count(k) else None
    elif family == "llada_moe":  # LLaDAMoEConfig's default: every layer MoE
        freq = config.get("moe_layer_freq")
        if freq is None:
            found = n
        elif isinstance(freq, list) and len(freq) == n:
            found = sum(1 for f in freq if f != 0)
    elif family == "qwen3_moe":  # Qwen3MoeConfig's defaults: step 1, no MLP-only layers
        step, dense = config.get("decoder_sparse_step", 1), config.get("mlp_only_layers") or []
        # 0: no layer is MoE; none given: Qwen3MoeConfig's default (some)
        experts = next((config[f] for f in _EXPERTS_FIELDS["qwen3_moe"] if f in config), 1)
        if is_count(step) and step > 0 and isinstance(dense, list) and experts != 0:
            # counted, not looped: a crafted num_hidden_layers of 10**15 must not hang before torch
            found = n // step - len({i for i in dense if is_count(i) and i < n and (i + 1) % step == 0})
    return found or None


def config_positions(config: dict[str, Any] | None) -> int | None:
    """The maximum positions (`max_position_embeddings`, also of a nested `text_config`) of a model of config.json
    settings `config`, as `advisor.eval.run.model_positions` reads them once it loads; None where none is given."""
    for c in (config, (config or {}).get("text_config")):
        value = c.get("max_position_embeddings") if isinstance(c, dict) else None
        if is_count(value) and value > 0:
            return value
    return None


def is_count(value: Any) -> bool:
    """Whether a value read from JSON (a config.json, a stored record) is a count (an int >= 0; a bool is none)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_tiny_family(family: str) -> str:
    """`family` as `TINY_FAMILIES` spells it, read in any case ('Mixtral'); else the refusal naming those that
    `advisor.models.tiny` builds."""
    from advisor.errors import UserError

    key = family.lower()
    if key not in TINY_FAMILIES:
        raise UserError(f"unknown tiny family '{family}'; choose one of: {', '.join(TINY_FAMILIES)}")
    return key


def check_model_spec(spec: str, *, weightless: bool = False) -> str:
    """`spec` as the loaders read it (`canonical_spec`); refused when no loader could take it - an unknown tiny
    family, a path that is no model directory, a name that is no hub id, one a letter or two from 'bundled' -
    knowing only the spec and the file system. The commands call it before torch and transformers import
    (seconds), so such a typo is answered at once, not after them, and go on with what it returns; `load_model`
    calls it too. A hub id is looked up only by loading it, but one neither in the local hub cache nor reachable
    (offline mode, or the hub does not answer a connect within `advisor.hub.PROBE_S`) is refused here: it was
    refused only after those imports, 6-7 s on an idle 2-core host with no network, 10-40 s on a busy one.
    `weightless` (`advisor inspect`): a directory with a config.json and no weights (`has_no_weights`) is taken."""
    from advisor.errors import UserError

    spec = canonical_spec(spec)
    if spec.startswith("tiny:"):
        return f"tiny:{check_tiny_family(spec.split(':', 1)[1])}"
    path = spec_path(spec)
    if spec == "bundled":
        return spec
    if path.is_dir():
        read_config(path)
        # a safetensors index without its shards passes here: the load names the shards missing (a cut download)
        if not weightless and has_no_weights(path) and not (path / WEIGHT_INDEXES[0]).is_file():
            raise UserError(f"{path} holds no weights (no *.safetensors, {', '.join(WEIGHT_INDEXES)}); point at "
                            f"the model's directory, or re-download the model (`advisor inspect {spec} --budget "
                            "SIZE` counts its sizes, and what fits, from config.json alone)")
        return spec
    from advisor.models.missing import missing_directory, not_a_directory

    if (missing := missing_directory(spec) or not_a_directory(spec)) is not None:  # ./LLaDA-MoE-7B, ./m/config.json:
        raise UserError(missing)  # "neither a model directory, a tiny config, ..." hid what was wrong
    if path.exists() or spec.startswith((".", "/", "~")) or not _HF_ID.match(spec):
        raise UserError(f"'{spec}' is neither a model directory, a tiny config (tiny:<family>; families: "
                        f"{', '.join(TINY_FAMILIES)}), 'bundled', nor a Hugging Face model id (owner/name)")
    if "/" not in spec and difflib.get_close_matches(spec.lower(), ["bundled"], cutoff=0.75):
        raise UserError(f"'{spec}' is no model directory here, and a hub id is owner/name: did you mean 'bundled' "
                        "(the bundled model)?")
    snapshot = cached_hub_snapshot(spec)
    if snapshot is None or (not weightless and has_no_weights(snapshot)):
        from advisor.hub import hub_reachable, unreachable_note

        if not hub_reachable():
            if snapshot is None:
                raise unavailable_offline(spec)
            # `hf download ID config.json` alone, offline: the load found no weights after the imports and said so
            # with the snapshot's hash path, where a directory of config.json alone is refused here with the hint
            # (an index downloaded beside it names shards it lacks: not "config.json alone")
            held = (f"config.json and {WEIGHT_INDEXES[0]}, none of its shards"
                    if (snapshot / WEIGHT_INDEXES[0]).is_file() else "config.json alone")
            raise UserError(f"{spec}'s snapshot in the local hub cache holds no weights ({held}), and "
                            f"they cannot be fetched ({unreachable_note()}); download them on a connected machine "
                            f"(hf download {spec}), or count its sizes, and what fits, from config.json alone: "
                            f"`advisor inspect {spec} --budget SIZE`")
    return spec


def unavailable_offline(repo_id: str, why: str | None = None) -> Exception:
    """The refusal of hub id `repo_id` that cannot be had from the local hub cache: why (default: why the hub counts
    as unreachable - offline mode, or no answer) and what to do; first, where the id reads as a local path that is
    not there, that (`missing.as_local_path`)."""
    from advisor.errors import UserError
    from advisor.hub import unreachable_note
    from advisor.models.missing import as_local_path

    owned = next((k for k in TARGET_HUB_IDS if "/" not in repo_id and k.split("/")[1].lower() == repo_id.lower()), None)
    fetch = f"hf download {owned}: hub ids are OWNER/NAME" if owned else f"hf download {repo_id}"
    return UserError(as_local_path(repo_id, f"model {repo_id} is not available offline ({why or unreachable_note()}); "
                                   f"download it on a connected machine ({fetch}) or pass a local directory"))


TARGET_HUB_IDS = ("inclusionAI/LLaDA-MoE-7B-A1B-Base", "inclusionAI/LLaDA-MoE-7B-A1B-Instruct",
                  "inclusionAI/LLaDA2.0-mini", "inclusionAI/LLaDA2.0-flash")
"""The published hub ids of the MoE dLLMs this tool targets: a name typed without its owner (`LLaDA2.0-mini`) is
offered the id to download."""


WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
"""Besides *.safetensors shards, the weight files a model directory may hold (transformers' names)."""


def has_no_weights(path: Path) -> bool:
    """Whether model directory `path` holds no weight files at all - a config.json downloaded alone, perhaps with
    the safetensors index naming shards not downloaded - which `advisor inspect` counts from config.json alone."""
    return not any(path.glob("*.safetensors")) and not any((path / n).is_file() for n in WEIGHT_INDEXES[1:])


def read_config(path: Path) -> dict[str, Any]:
    """A model directory's config.json, refused in one line where no loader could read it (missing, not JSON,
    not an object, no model_type): without torch, so `check_model_spec` says it before the seconds of importing
    it, not after."""
    from advisor.errors import UserError

    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"{path} has no config.json; point at a model directory (config.json + *.safetensors)")
    try:
        raw = loads_json(config_file.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
        raise UserError(f"{config_file} is not valid JSON ({e}); re-download or re-save the model") from e
    if not isinstance(raw, dict):  # a list or a number: `.get` was an AttributeError traceback
        raise UserError(f"{config_file} holds a JSON {type(raw).__name__}, not an object of settings; re-download "
                        "or re-save the model")
    if not raw.get("model_type"):
        raise UserError(f"{config_file} has no model_type; it is not a transformers model directory")
    if not _names_experts(raw):  # a dense model: refused now, not after transformers built it (and warned)
        raise UserError(f"{path}: model type '{raw['model_type']}' is no MoE model (its config.json names no "
                        f"experts); supported: {SUPPORTED_TEXT}")
    return raw


def _names_experts(config: dict[str, Any]) -> bool:
    """Whether a config.json is of a family this tool reads (`TINY_FAMILIES`, any LLaDA name) or names experts
    anywhere (num_experts, num_local_experts, n_routed_experts, a text_config's moe_* ...): every MoE config
    does, a dense one (bert, llama) does not."""
    kind = str(config.get("model_type", "")).lower()
    if kind in TINY_FAMILIES or kind.startswith("llada"):
        return True
    return any("expert" in str(k).lower() or "moe" in str(k).lower()
               or (isinstance(v, dict) and _names_experts({**v, "model_type": ""})) for k, v in config.items())


def check_weights(spec: str) -> None:
    """Refuse, without torch, a local model directory (or 'bundled') whose safetensors files its load would refuse -
    a shard its index names missing, a file truncated or with a corrupt header - read as the load reads them
    (`shards.stored_tensors`). The commands that print a note before the load (eval, trace, quant-report: a busy
    host's) call it before torch imports: the refusal came after the note and the imports, not as one line. A tiny
    model has no files; a hub id's are its snapshot in the local hub cache, what an offline load reads (online, the
    load may fetch a newer revision: broken cached files are then left to it), checked as it loads when not there."""
    if spec.startswith("tiny:"):
        return
    path = BUNDLED_DIR if spec == "bundled" else spec_path(spec)
    hub = not path.is_dir()
    if hub and (path := cached_hub_snapshot(spec)) is None:
        return
    from advisor.errors import UserError
    from advisor.models.shards import has_safetensors, stored_tensors

    try:
        if has_safetensors(path):  # as the load decides to read them
            stored_tensors(path)
    except UserError:
        from advisor.hub import hub_reachable

        if not (hub and hub_reachable()):
            raise


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
"""A model directory has a tokenizer when it holds one of these (`load._tokenizer` then reads it)."""


def check_tokenizer(spec: str) -> None:
    """Refuse, without torch, a MODEL known to load without a tokenizer - a tiny:<family>, a local directory with
    none of `TOKENIZER_FILES`, or a hub id whose snapshot in the local hub cache has none while the hub cannot be
    reached (what the load then reads) - for a command that must encode text (`advisor eval`): the refusal after
    loading (`no_tokenizer`) came once the whole checkpoint had loaded, 10 s for 316 MiB, minutes for a 7B. A hub
    id the hub answers for may fetch its tokenizer as it loads. tune and trace take such a model (seeded random
    token ids) and do not call this."""
    spec = canonical_spec(spec)
    if spec.startswith("tiny:"):
        raise no_tokenizer(model_name(spec))
    if spec == "bundled":
        return
    path = spec_path(spec)
    if path.is_dir():
        if not _has_tokenizer(path):
            raise no_tokenizer(model_name(spec))
        return
    snapshot = cached_hub_snapshot(spec)
    if snapshot is not None and not _has_tokenizer(snapshot):
        from advisor.hub import hub_reachable

        if not hub_reachable():
            raise no_tokenizer(spec, cached=True)


def _has_tokenizer(path: Path) -> bool:
    return any((path / n).is_file() for n in TOKENIZER_FILES)


def no_tokenizer(name: str, cached: bool = False) -> Exception:
    """The refusal of a text task for model `name`, which has no tokenizer: its prompts cannot be encoded.
    `cached`: `name` is a hub id whose snapshot in the local hub cache, all there is offline, holds none."""
    from advisor.errors import UserError

    if cached:
        from advisor.hub import unreachable_note

        return UserError(f"{name} has no tokenizer in the local hub cache (its snapshot holds none of "
                         f"{', '.join(TOKENIZER_FILES)}), and none can be fetched ({unreachable_note()}), so it "
                         f"cannot be evaluated on a text task; download them on a connected machine (hf download "
                         f"{name}), or compare "
                         f"precisions without one: `advisor tune {name}` (a shipped --space tunes fidelity_top1 in "
                         "place of accuracy), or `advisor quant-report`")
    return UserError(f"{name} has no tokenizer, so it cannot be evaluated on a text task; give a model directory "
                     f"with its tokenizer files, or compare precisions without one: `advisor tune {name}` (a shipped "
                     "--space tunes top-1 agreement with the full-precision model, fidelity_top1, in place of "
                     "accuracy), or `advisor quant-report`")


def quant_method(config: dict[str, Any]) -> str | None:
    """The checkpoint's own quantization method, as its config.json (`config`, the parsed file) names it: the
    `quant_method` of its `quantization_config`, or of its `text_config`'s (multimodal wrappers) - "fp8", "gptq",
    "awq", "compressed-tensors", ... ("unknown" when the config names none); None for an unquantized checkpoint.
    Read from the file, not from a loaded model's config: transformers drops `quantization_config` from the
    config of a model it dequantizes as it loads (FP8 on a host without an FP8 GPU: bf16)."""
    text = config.get("text_config")  # a hand-edited file may give anything here: no nested config then
    quant = config.get("quantization_config") or (text.get("quantization_config") if isinstance(text, dict) else None)
    if not quant:
        return None
    return str((quant.get("quant_method") if isinstance(quant, dict) else None) or "unknown")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'advisor.models' has no attribute {name!r}")
