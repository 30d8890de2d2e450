"""Offloaded loading: resident weights on the device, routed experts left in the checkpoint.

The model is built with every parameter on the meta device (nothing allocated), the non-expert weights
(embeddings, attention, norms, routers, expert bias, shared experts, LM head) are read from the shards one
tensor at a time straight onto the device, and each experts module gets a `CheckpointExperts` view: whoever
asks for an expert (the quantized host store, the full-precision reference) reads just that expert from the
checkpoint. The model's own expert parameters stay meta - they never exist in memory or on the device.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advisor.errors import UserError
from advisor.models import experts as seam
from advisor.models import quant_method
from advisor.models.checkpoint import Checkpoint, CheckpointExperts, key_mapping, model_keys


@contextmanager
def params_on_meta() -> Iterator[None]:
    """Every parameter registered inside goes to the meta device (buffers stay real: rotary tables etc.).
    Parameters are created first by their modules, but as untouched `torch.empty` pages, so nothing is
    resident. Each is marked `_is_hf_initialized`, transformers' flag for "loaded from the checkpoint": its
    `init_weights` then skips them (buffers are still initialised). Every one is read from the checkpoint or
    refused as missing (`build_offloaded`, `check_layout`); initialising them was ~0.9 s of a 1.2 s load of the
    bundled model (torch's python reference kernels on meta tensors, measured)."""
    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(self, name, param)
        p = self._parameters.get(name)
        if p is not None and not p.is_meta:
            meta = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)
            meta._is_hf_initialized = True  # type: ignore[attr-defined]
            self._parameters[name] = meta

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def release_large_frees() -> None:
    """Make glibc hand large freed buffers straight back to the OS (a fixed 128 KiB mmap threshold).

    Why: glibc raises its mmap threshold after large frees, so the per-expert temporaries of streaming then
    come from a heap that the long-lived packed buffers fragment; measured while packing experts one by one:
    RSS grew ~15 MB per 64 experts with the default, not at all with the fixed threshold."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except OSError:
        return


def _config_dtype(raw: dict[str, Any], checkpoint: Checkpoint | None) -> torch.dtype:
    """config.json's dtype (torch_dtype), else the checkpoint's first floating-point tensor's (none: float32)."""
    name = str(raw.get("dtype") or raw.get("torch_dtype") or "")
    dtype = getattr(torch, name, None)
    if isinstance(dtype, torch.dtype):
        return dtype
    floats = [t.dtype for t in (checkpoint.tensors.values() if checkpoint else ()) if t.dtype.is_floating_point]
    return floats[0] if floats else torch.float32


def refuse_prequantized(path: Path, raw: dict[str, Any]) -> None:
    """A pre-quantized checkpoint (config.json's `quantization_config`: FP8 with scales, GPTQ, AWQ, ...) cannot be
    streamed: offloaded loading reads each tensor as a plain bf16/fp16/fp32 weight, so FP8 values would be used
    without their scales (a silently wrong model) and packed integers not at all."""
    if (method := quant_method(raw)) is not None:
        raise UserError(f"{path} is a pre-quantized checkpoint (quantization_config: {method}); offloaded loading "
                        "streams unquantized bf16/fp16/fp32 weights: use the unquantized checkpoint, or load this "
                        "one whole (without --offload, with --budget above its size)")


def _experts_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from advisor.models.view import _is_experts_module

    return [(n, m) for n, m in model.named_modules() if _is_experts_module(m)]


try:  # a config.json field of the wrong type (transformers' configs are strict dataclasses of huggingface_hub)
    from huggingface_hub.errors import StrictDataclassError as _StrictFieldError
except ImportError:  # an older huggingface_hub: no such check
    _StrictFieldError = ValueError


def meta_model(path: Path, cls: Any, dtype: torch.dtype | None) -> nn.Module:
    """The model `path`'s config.json describes, every parameter on the meta device (nothing allocated);
    a config.json the model class cannot be built from is one line naming the file."""
    from transformers import AutoConfig

    from advisor.models.remote_code import TRUST_NO_CODE, custom_code_refusal

    config_class = getattr(cls, "config_class", None) or AutoConfig  # Auto* model classes have none
    trust = TRUST_NO_CODE if config_class is AutoConfig else {}  # a class of its own reads no auto_map
    config = None
    try:
        config = config_class.from_pretrained(str(path), local_files_only=True, **trust)
        with params_on_meta():
            if cls.__name__.startswith("Auto"):
                model = cls.from_config(config, dtype=dtype)
            else:
                model = cls._from_config(config, dtype=dtype)
    # RuntimeError: torch refusing a size (num_experts = -1: a negative dimension; 10**12: no memory for the
    # parameters, created before they move to the meta device); MemoryError: a per-layer list of 10**15 layers
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, ZeroDivisionError, RuntimeError,
            MemoryError, _StrictFieldError) as e:
        if refusal := custom_code_refusal(path, "model", e) or _not_a_language_model(path, config, e):
            raise refusal from e
        # a field of the wrong type: huggingface_hub's message runs over two lines; a MemoryError says nothing
        why = " ".join(str(e).split()) or "more memory than this host has"
        raise UserError(f"{path / 'config.json'} does not describe a model that can be built "
                        f"({type(e).__name__}: {why}); fix that field or re-download the model") from e
    return model.eval()


def _not_a_language_model(path: Path, config: Any, error: BaseException) -> UserError | None:
    """The one-line refusal of a config.json whose model_type transformers does not know, or knows as no causal
    language model (vit, t5): transformers' own messages ran to 700 characters (pip commands) and to 3,500 (every
    config class AutoModelForCausalLM takes), and were followed by 'fix that field'. None for other errors."""
    import transformers

    said = str(error)
    unknown = re.search(r"model type `([^`]*)` but Transformers does not recognize", said)
    if unknown:
        return UserError(f"{path / 'config.json'}: model_type '{unknown[1]}' is not one transformers "
                         f"{transformers.__version__} builds, nor LLaDA-MoE or LLaDA2 (advisor's own); a newer "
                         "transformers may build it (pip install -U transformers), or fix config.json's model_type")
    if config is not None and said.startswith("Unrecognized configuration class"):
        return UserError(f"{path / 'config.json'}: model_type '{config.model_type}' is no language model "
                         f"transformers {transformers.__version__} decodes (AutoModelForCausalLM takes no "
                         f"{type(config).__name__}); advisor runs MoE language models: point MODEL at one")
    return None


def check_layout(path: Path, model: nn.Module, checkpoint: Checkpoint, keys: dict[str, str]) -> None:
    """Refuse, in one line, a checkpoint that does not match the model its config.json builds: a tensor of
    another shape, a weight the checkpoint lacks, or layers/experts beyond what the config builds (which a
    load would silently drop or leave at random values, and every number measured on it would be wrong)."""
    import re

    fix = "fix config.json or re-download the model"
    for name, t in model.state_dict(keep_vars=True).items():
        key = keys.get(name)
        if key is not None and tuple(checkpoint.tensors[key].shape) != tuple(t.shape):
            raise UserError(f"{path}: config.json does not match the checkpoint: {key} is "
                            f"{list(checkpoint.tensors[key].shape)} in the checkpoint but {list(t.shape)} by "
                            f"config.json; {fix}")
        stored = checkpoint.tensors[key].dtype if key is not None else None
        if stored is not None and t.is_floating_point() and not stored.is_floating_point:
            # read as floats, its integers would be weights of ~1e9: a model that loads, runs and scores 0
            raise UserError(f"{path}: the checkpoint stores {key} as {str(stored).removeprefix('torch.')}, but it "
                            "is a floating-point weight (a corrupt header, or a checkpoint quantized by another "
                            "tool); re-download the checkpoint")
    prefixes = tuple(f"{n}." for n, _ in _experts_modules(model))
    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):  # tied weights: any one name will do
        aliases.setdefault(id(p), []).append(name)
    missing = [names[0] for names in aliases.values()
               if not any(n in keys or n.startswith(prefixes) for n in names)]
    if missing:
        raise UserError(f"{path}: the checkpoint has no tensor for {missing[0]} ({len(missing)} missing); "
                        f"it does not match the model config.json describes; {fix}")
    lists = {n: len(m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList)}
    ignore = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []]
    # multi-token-prediction layers follow the decoder layers in the checkpoint and are not part of the model
    mtp = getattr(model.config.get_text_config(), "num_nextn_predict_layers", 0)
    mtp = mtp if isinstance(mtp, int) else 0
    for name, key in keys.items():
        for m in re.finditer(r"\.(\d+)\.", name):
            prefix = name[:m.start()]
            allowed = lists.get(prefix, 0) + (mtp if prefix.endswith("layers") else 0)
            if prefix in lists and int(m.group(1)) >= allowed and not any(r.search(key) for r in ignore):
                raise UserError(f"{path}: the checkpoint has {key}, but config.json builds {lists[prefix]} "
                                f"entries of {prefix}; {fix}")


def check_checkpoint(path: Path, cls: Any, checkpoint: Checkpoint) -> None:
    """The checks an offloaded load makes, for a model about to be loaded whole: nothing is read but headers."""
    model = meta_model(path, cls, None)
    renames, names = key_mapping(str(getattr(model.config, "model_type", "")))
    keys = model_keys(checkpoint, renames)
    check_layout(path, model, checkpoint, keys)
    _attach_sources(checkpoint, keys, names, _experts_modules(model), torch.device("meta"), torch.float32)


def build_offloaded(path: Path, cls: Any, device: torch.device, dtype: torch.dtype | None,
                    checkpoint: Checkpoint | None = None) -> tuple[nn.Module, Any]:
    """(model with meta experts and resident weights on `device`, fingerprint sampler) from `path`
    (`checkpoint`: its already validated `Checkpoint`, when the caller opened one)."""
    checkpoint = Checkpoint(path) if checkpoint is None else checkpoint  # validates shards / truncation before anything is built
    release_large_frees()
    raw = json.loads((path / "config.json").read_text())
    refuse_prequantized(path, raw)
    dtype = dtype or _config_dtype(raw, checkpoint)
    model = meta_model(path, cls, dtype)
    config = model.config
    renames, names = key_mapping(str(getattr(config, "model_type", "")))
    keys = model_keys(checkpoint, renames)
    check_layout(path, model, checkpoint, keys)
    expert_modules = _experts_modules(model)
    prefixes = tuple(f"{n}." for n, _ in expert_modules)
    sources = _attach_sources(checkpoint, keys, names, expert_modules, device, dtype)
    state: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if name.startswith(prefixes) or name not in keys:
            continue
        want = t.dtype if t.is_floating_point() else None
        state[name] = checkpoint.read(keys[name], device=device, dtype=want)
    model.load_state_dict(state, strict=False, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    _buffers_to(model, device)
    missing = [n for n, p in model.named_parameters() if p.is_meta and not n.startswith(prefixes)]
    missing += [n for n, b in model.named_buffers() if b.is_meta]
    if missing:
        raise UserError(f"{path}: the checkpoint has no tensor for {missing[0]} ({len(missing)} missing); "
                        "it does not match this model's layout")
    model._advisor_checkpoint = checkpoint  # keeps the shard files open as long as the model lives

    def sample(name: str, p: torch.Tensor, flat: Sequence[int]) -> bytes:
        if name in keys:
            return checkpoint.elements(keys[name], flat)
        prefix, _, attr = name.rpartition(".")
        return sources[prefix].param_elements(attr, tuple(p.shape), flat)

    return model, sample


def build_weightless(path: Path, cls: Any, dtype: torch.dtype | None) -> nn.Module:
    """The model `path`'s config.json describes, as `build_offloaded` builds it (`meta_model`, at the dtype it
    would load in: config.json's), for a directory with no weights: every parameter meta, so its sizes are counted
    from its shapes with nothing allocated (Qwen3-30B-A3B's 3 GB of attention and embeddings included);
    `zero_weights` gives it weights an activation probe can run on."""
    raw = json.loads((path / "config.json").read_text())
    return meta_model(path, cls, dtype or _config_dtype(raw, None))


def zero_weights(model: nn.Module, device: torch.device) -> None:
    """Give a `build_weightless` model's weights but its routed experts (meta, as an offloaded model's) zero values
    on `device`, so an activation probe can run: one zero tensor per shape and dtype, every weight of that shape a
    parameter of its own on its storage - each still counted as itself, a forward computing what it computes on
    zeros of their own, and 48 decoder layers' weights taking one layer's memory (Qwen3-30B-A3B: 0.7 GB, not 3.1)."""
    prefixes = tuple(f"{n}." for n, _ in _experts_modules(model))
    zeros: dict[tuple[tuple[int, ...], torch.dtype], torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if t.is_meta and not name.startswith(prefixes):
            key = (tuple(t.shape), t.dtype)
            if key not in zeros:
                zeros[key] = torch.zeros(t.shape, dtype=t.dtype, device=device)
            state[name] = zeros[key]
    model.load_state_dict(state, strict=False, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    _buffers_to(model, device)


def _buffers_to(model: nn.Module, device: torch.device) -> None:
    """Buffers were built on the CPU; move them beside the weights."""
    for module in model.modules():
        for bname, b in module._buffers.items():
            if b is not None and not b.is_meta and b.device != device:
                module._buffers[bname] = b.to(device)


def _attach_sources(checkpoint: Checkpoint, keys: dict[str, str], names: tuple[str, str, str],
                    modules: list[tuple[str, nn.Module]], device: torch.device,
                    dtype: torch.dtype) -> dict[str, CheckpointExperts]:
    """Give every experts module its checkpoint view; tied twins (same meta parameters) share one."""
    sources: dict[str, CheckpointExperts] = {}
    by_param: dict[int, CheckpointExperts] = {}

    def attach(name: str, module: nn.Module, *, own_keys: bool) -> bool:
        first = id(next(iter(module.parameters())))
        source = by_param.get(first)
        if source is None:
            try:
                source = CheckpointExperts(checkpoint, keys, name, seam.expert_set(module), names,
                                           device=device, dtype=dtype)
            except UserError:
                if own_keys:
                    return False
                raise  # neither its own keys nor a twin's view
        by_param[first] = source
        module._advisor_source = source
        sources[name] = source
        return True

    # a twin whose own keys are absent takes its partner's view, once every module with keys has one
    left = [(name, module) for name, module in modules if not attach(name, module, own_keys=True)]
    for name, module in left:
        attach(name, module, own_keys=False)
    for name, source in sources.items():  # the checkpoint's experts have the shapes config.json gives them
        for e in sorted({0, source.num_experts - 1}):
            want, got = source.inner.get(e).tensors(), source.shapes(e).tensors()
            for part, w in want.items():
                if tuple(got[part].shape) != tuple(w.shape):
                    raise UserError(f"{checkpoint.dir}: config.json does not match the checkpoint: expert {e} of "
                                    f"{name} has {part} {list(got[part].shape)} in the checkpoint but "
                                    f"{list(w.shape)} by config.json; fix config.json or re-download the model")
    return sources
