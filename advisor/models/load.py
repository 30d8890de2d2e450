"""Load any supported MoE model from one spec string: HF id, local directory, `tiny:<family>` or `bundled`.

Whatever the source, the result is a `LoadedModel`: the model in eval mode, its expert view, a stable
fingerprint (so stored studies can tell which model they measured) and the family's default decoding.
Loading never hangs offline: an uncached hub id fails at once with a line saying what to do.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advisor.errors import UserError, check_device_name, no_cuda
from advisor.hub import hub_reachable, network_errors
from advisor.models import (
    BUNDLED_DIR,
    DIFFUSION_FAMILIES,
    TOKENIZER_FILES,
    check_model_spec,
    dtype_name,
    family_of,
    has_no_weights,
    model_name,
    quant_method,
    read_config,
    spec_path,
    tiny,
    unavailable_offline,
)
from advisor.models.missing import as_local_path
from advisor.models.probe import verify_experts_path
from advisor.models.shards import INDEX_NAME, has_safetensors
from advisor.models.view import MoELayer, moe_layers, use_seam
from advisor.units import format_bytes

_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""What a write into the local hub cache fails with that no network error is: a full disk or quota, a file past
the size limit, a read-only file system (a write() names no file, as a reset connection names none)."""
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]
_WEIGHT_FILES = "*.safetensors"
# Published mask token ids, used when a config does not carry one.
_MASK_DEFAULTS = {"llada_moe": 156895, "llada2": 156895}


BudgetOf = Callable[[int, int], tuple[int, str]]
"""A device budget known only with the checkpoint (a share of the model, `advisor tune --budgets 25%`): (bytes to
compare its counted bytes with, the budget as the load note names it) from its counted bytes and its bytes at 16
bits per element (`Checkpoint.fp16_nbytes`, which FP16 shares are taken of)."""


@dataclass
class LoadedModel:
    """A model ready for the advisor: its expert view, identity and default decoding."""

    model: nn.Module
    tokenizer: Any | None
    family: str
    is_diffusion: bool
    name: str
    fingerprint: str
    moe: list[MoELayer]
    mask_token_id: int | None
    gen_defaults: dict[str, Any] = field(default_factory=dict)
    offloaded: bool = False
    """Routed experts stay in the checkpoint (meta parameters); see `advisor.models.offloaded`."""
    load_note: str = ""
    """Why the model was loaded as it was (offloaded or resident), for run headers."""
    load_limit: tuple[int, str] | None = None
    """The budget `load_note` compares the counted bytes with - (bytes, its text in the note) - where it is one:
    `advisor tune` names the study's own budget instead when that was set once the model had loaded."""
    path: str = ""
    """A local directory's absolute path (empty for hub ids, `bundled` and tiny models): what exports point
    runtimes at, wherever they run (`name` keeps the spec as given, e.g. a relative path)."""
    weightless: bool = False
    """Built from a config.json alone (`_load_weightless`): sizes to count, no weights to fingerprint; every weight
    meta (no `device` to ask) unless loaded with `zeros` (then all but the routed experts' are zeros, to probe)."""
    quant_method: str | None = None
    """A pre-quantized checkpoint's own quantization method (`advisor.models.quant_method` of its config.json:
    "fp8", "gptq", ...; None otherwise), whatever transformers loaded it as (on a CPU host it dequantizes FP8 to
    bf16, so `dtype` does not say it): what other runtimes serve it in."""

    @property
    def device(self) -> torch.device:
        return next(p for p in self.model.parameters() if not p.is_meta).device

    def device_param_bytes(self) -> int:
        """Bytes of the parameters that exist on the device (meta expert parameters excluded): counted."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters() if not p.is_meta)

    @property
    def dtype(self) -> torch.dtype:
        return self.moe[0].dtype

    @property
    def checkpoint(self) -> Any | None:
        """The `advisor.models.checkpoint.Checkpoint` an offloaded model reads its routed experts from (None when
        resident): its `bytes_read` / `read_seconds` say what the reads cost."""
        return getattr(self.model, "_advisor_checkpoint", None)


def model_meta(loaded: LoadedModel) -> dict[str, Any]:
    """The model's description as every record keeps it: a front point's `config["model_meta"]` (read back by
    `advisor.results.config_view`) and, reshaped, a routing trace's meta. Per layer and for the first layer.
    `dtype` is the experts' dtype as loaded; `quant_method`, recorded only for a pre-quantized checkpoint (so the
    records of others are unchanged), is the checkpoint's own quantization, which exports serve it in;
    `num_hidden_layers` (recorded since 2026-12-05) the decoder layers, dense ones included (`decoder_layers`)."""
    moe = loaded.moe
    paths = {id(mod): name for name, mod in loaded.model.named_modules()}  # the shared experts' module paths
    return {
        "family": loaded.family,
        "name": loaded.name,
        **({"path": loaded.path} if loaded.path else {}),
        "fingerprint": loaded.fingerprint,
        "is_diffusion": bool(loaded.is_diffusion),
        "layout": moe[0].layout if moe else "",
        "layers": [{"index": m.index, "decoder_layer": m.decoder_layer, "name": m.name,
                    "num_experts": m.num_experts, "shared": None if m.shared is None else paths.get(id(m.shared)),
                    "top_k": int(m.top_k), "hidden_size": int(m.hidden_size),
                    "intermediate_size": int(m.intermediate_size)}
                   for m in moe],
        "num_experts": max((m.num_experts for m in moe), default=0),
        "hidden_size": moe[0].hidden_size if moe else 0,
        "intermediate_size": moe[0].intermediate_size if moe else 0,
        "top_k": moe[0].top_k if moe else 0,
        "expert_nbytes": moe[0].expert_nbytes if moe else 0,
        "dtype": str(moe[0].dtype).replace("torch.", "") if moe else "",
        **({"quant_method": loaded.quant_method} if loaded.quant_method else {}),
        **({"num_hidden_layers": n} if (n := decoder_layers(loaded.model)) else {}),
    }


def decoder_layers(model: nn.Module) -> int | None:
    """The checkpoint's decoder layers, dense ones included: its config's `num_hidden_layers` (a multimodal
    wrapper's `text_config`'s), what runtimes size per-layer tables by (kt-kernel's expert counts file); None when
    the config names none."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    n = getattr(config, "num_hidden_layers", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def load_model(spec: str = "bundled", *, device: str | torch.device = "cpu", dtype: Any = None,
               offload: bool | None = None, budget: int | BudgetOf | None = None,
               quantization_config: Any = None, weightless: bool = False, zeros: bool = False) -> LoadedModel:
    """Load `spec` (HF id, local directory, ``tiny:<family>``, or ``bundled``) onto `device`.

    `offload`: True keeps the routed experts in the checkpoint (offloaded loading), False loads everything;
    None (default) offloads when the checkpoint's counted bytes exceed `budget` (bytes, or a `BudgetOf` of the
    checkpoint; default: the device's free memory - the GPU's, or the host's available RAM for ``cpu``).
    `quantization_config` (e.g. a transformers `BitsAndBytesConfig`) is handed to `from_pretrained`, which
    quantizes on load onto `device` (resident); tiny models are built in code and cannot take one.
    `weightless` (`advisor inspect`): a local directory, or a hub id's snapshot in the local hub cache, with a
    config.json and no weights is built from its config (`_load_weightless`: sizes only, every weight meta; with
    `zeros`, the weights but the routed experts zeros on `device`, for an activation probe) instead of refused."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI prints its own progress; errors must stay one line
    torch_dtype = _parse_dtype(dtype)
    device = check_device(device)
    spec = check_model_spec(spec, weightless=weightless)  # 'Bundled', 'tiny:Mixtral': read in any case
    if spec.startswith("tiny:"):
        if quantization_config is not None:
            raise UserError("tiny models are built in code: a quantization_config needs a model directory or hub id")
        family = spec.split(":", 1)[1]
        if offload:
            raise UserError("--offload reads experts from a checkpoint directory; tiny:<family> models are built in "
                            "memory (save one with save_pretrained and pass its directory)")
        model = tiny.build_tiny(family, dtype=torch_dtype or torch.float32)
        loaded = loaded_from(model, None, family, spec, device)
        if budget is not None and offload is None:  # loaded whole whatever the budget: said where it is over it
            params = list(model.parameters())
            counted = sum(p.numel() * p.element_size() for p in params)
            limit, what = (budget(counted, sum(p.numel() * 2 for p in params)) if callable(budget)
                           else (budget, f"--budget {format_bytes(budget, 2)}"))
            if counted > limit:
                loaded.load_note = (f"resident: the whole model on {loaded.device.type}, not offloaded: {spec} is "
                                    f"built in memory, with no checkpoint for its experts to stream from (counted "
                                    f"{format_bytes(counted, 2)} of parameters > {what})")
                loaded.load_limit = (limit, what)
        return loaded
    if spec == "bundled":
        if not (BUNDLED_DIR / "config.json").is_file():
            raise UserError(
                f"the bundled model is missing ({BUNDLED_DIR}); train it from a repository checkout with `python -m scripts.train_bundled` "
                "or pass a model id / directory"
            )
        return _load_dir(BUNDLED_DIR, "bundled", device, torch_dtype, offload, budget, quantization_config)
    path = spec_path(spec)
    if path.is_dir():
        if weightless and has_no_weights(path):
            loaded = _load_weightless(path, model_name(spec), device, torch_dtype, offload, budget, zeros)
        else:
            loaded = _load_dir(path, model_name(spec), device, torch_dtype, offload, budget, quantization_config)
        loaded.path = str(path.resolve())
        return loaded
    # `weightless`: no weights fetched where none are cached (config.json will do: `hub_files`); a snapshot holding
    # them (or some), or a pre-quantized checkpoint's (its bytes are its stored tensors'), goes the weights' path
    local = _resolve_hub(spec, hub_files(weights=False)) if weightless else None
    if local is None or not has_no_weights(local) or quant_method(read_config(local)) is not None:
        local = _resolve_hub(spec, hub_files())  # offline: the same snapshot (a pre-quantized one refused below)
    if weightless and has_no_weights(local):  # config.json alone (or `hf download ID config.json`, offline)
        fetched = ", where inspect fetched no weights," if hub_reachable() else ""
        return _load_weightless(local, spec, device, torch_dtype, offload, budget, zeros,
                                f"{spec}'s snapshot in the local hub cache{fetched}")
    return _load_dir(local, spec, device, torch_dtype, offload, budget, quantization_config)


def _parse_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = dtype_name(dtype)
    return None if name is None else getattr(torch, name)


def check_device(device: str | torch.device) -> torch.device:
    """`device` as torch's, refused in one line where the loader, runtime and copies cannot run (mps, xpu, meta ...:
    torch parses them; a traceback came from the first tensor moved there) or this host has no such GPU. Commands
    call it before their busy-host note (`advisor.commands.say_busy_host`), which came first: the refusal was not one
    line."""
    dev = torch.device(check_device_name(str(device)))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise no_cuda(str(device))
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device '{device}' requested but this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                        f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return dev


# ---- hub -------------------------------------------------------------------------------------------------


def hub_files(weights: bool = True) -> list[str]:
    """The files of a hub repository a load fetches (`allow_patterns`): its config.json, generation_config.json,
    tokenizer and safetensors weights; without `weights` all but the weights - config.json, the safetensors index
    and the tokenizer, kilobytes to megabytes - which is all `advisor inspect` counts an unquantized checkpoint
    from (`_load_weightless`: every size from config.json, the same table)."""
    return _HUB_FILES if weights else [f for f in _HUB_FILES if f != _WEIGHT_FILES]


def _resolve_hub(repo_id: str, files: list[str]) -> Path:
    """A local snapshot of `repo_id`: from the cache when offline, its `files` (`hub_files`) downloaded if online."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    online = hub_reachable()
    try:
        with _quiet_no_match():
            local = snapshot_download(repo_id, allow_patterns=files, local_files_only=not online)
    except (LocalEntryNotFoundError, FileNotFoundError) as e:
        if not online:
            raise unavailable_offline(repo_id) from e
        # the hub took the connect but the lookup failed (a 404 for an id it does not know, a proxy's answer):
        # huggingface_hub then looks in the cache and says it is not there, the HTTP error in its first line
        said = str(e).splitlines()[0].removeprefix("Got: ") if str(e) else e.__class__.__name__
        raise UserError(as_local_path(repo_id, f"model {repo_id} could not be fetched from the hub ({said}); check "
                                      "the id, or pass a local directory")) from e
    except HfHubHTTPError as e:
        raise UserError(as_local_path(repo_id, f"model {repo_id} could not be fetched from the hub "
                                      f"({e.__class__.__name__}); check the id, or pass a local directory")) from e
    except Exception as e:  # the network failed under the request (a proxy that resets it): a traceback before
        if not isinstance(e, network_errors()):
            raise
        if isinstance(e, OSError) and (e.filename is not None or e.errno in _STORAGE_ERRNOS):  # the cache's, not
            # the network's: a cache directory not writable, a file where a directory belongs (the error names a
            # file; a reset connection names none), a full disk or a file-size limit (a write(), naming none)
            from huggingface_hub import constants

            where = e.filename if e.filename is not None else constants.HF_HUB_CACHE
            raise UserError(f"model {repo_id} could not be stored in the local hub cache ({e.strerror or e}: "
                            f"{where}); make the cache a directory you can write (or set HF_HUB_CACHE or "
                            "HF_HOME to one), or pass a local directory") from e
        said = " ".join(str(e).split()) or "no answer"
        raise UserError(as_local_path(repo_id, f"model {repo_id} could not be fetched from the hub "
                                      f"({e.__class__.__name__}: {said}); check the network or proxy settings, or "
                                      "pass a local directory")) from e
    if not (Path(local) / "config.json").is_file():
        revision = Path(local).name[:12]  # the snapshot's folder is named by its commit
        if online:  # the hub answered with the repository's files, and none is a config.json
            raise UserError(f"model {repo_id} has no config.json on the hub (revision {revision}), so it is no "
                            "transformers checkpoint (a GGUF-only or dataset repository?); check the id, or pass a "
                            "local directory")
        raise unavailable_offline(repo_id, f"its snapshot in the local hub cache (revision {revision}) holds no "
                                  "config.json")
    return Path(local)


@contextmanager
def _quiet_no_match() -> Iterator[None]:
    """huggingface_hub's warning that no file of the repository matched `hub_files` ("No files matched
    allow_patterns=[...]") held back: the refusal that follows says it in one line (no config.json)."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No files matched")

    logger = logging.getLogger("huggingface_hub._snapshot_download")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


# ---- directories -----------------------------------------------------------------------------------------


def device_free_bytes(device: torch.device) -> int:
    """Free memory of `device`: the GPU's (CUDA driver), or the host's available RAM for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return host_available_bytes()


HOST_RAM_SOURCE = "available RAM, measured now"
"""How `host_available_bytes` is labelled where it is shown (`inspect`'s table, `tune`'s header): one wording."""


def host_available_bytes() -> int:
    """The host's available RAM (MemAvailable), or physical pages x page size where /proc is absent."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _budget_limit(budget: int | BudgetOf | None, counted: int, fp16: int, device: torch.device) -> tuple[int, str]:
    """What a checkpoint of `counted` bytes (`fp16` at 16 bits per element) is compared with to decide whether it is
    offloaded - `budget`, or the device's free memory - and how the load note names it."""
    if callable(budget):
        return budget(counted, fp16)
    if budget is not None:
        return budget, f"--budget {format_bytes(budget, 2)}"
    # measured, and said so: "free cpu memory 18.38 GiB" gave the one measured number of the note no source
    limit = device_free_bytes(device)
    source = HOST_RAM_SOURCE if device.type == "cpu" else "CUDA driver, measured now"
    return limit, f"free {device.type} memory {format_bytes(limit, 2)} ({source})"


def _load_dir(path: Path, name: str, device: torch.device, dtype: torch.dtype | None,
              offload: bool | None = None, budget: int | BudgetOf | None = None,
              quantization_config: Any = None) -> LoadedModel:
    raw = read_config(path)
    model_type = str(raw["model_type"])
    family = family_of(model_type)
    kwargs: dict[str, Any] = {"dtype": dtype or "auto"}
    safetensors = has_safetensors(path)
    note, checkpoint, limit_used = "", None, None
    if quantization_config is not None:  # quantized on load by from_pretrained: resident, never streamed
        if offload:
            raise UserError("--offload streams bf16 experts from the checkpoint; it cannot take a quantization_config")
        kwargs |= {"quantization_config": quantization_config, "device_map": str(device)}
        offload, note = False, f"quantized on load ({type(quantization_config).__name__})"
    if offload is None and not safetensors:
        offload, note = False, "no safetensors shards to stream from"
    elif offload is None:
        from advisor.models.checkpoint import Checkpoint

        checkpoint = Checkpoint(path)  # its headers, read once: also the offloaded model's source
        counted = checkpoint.nbytes
        limit, what = _budget_limit(budget, counted, checkpoint.fp16_nbytes, device)
        offload = counted > limit
        note = f"counted {format_bytes(counted, 2)} of checkpoint tensors {'>' if offload else '<='} {what}"
        limit_used = (limit, what)
    elif not note:
        note = "--offload" if offload else "resident (asked)"
    if safetensors:  # config sizes against the headers, before a model of those sizes is built
        from advisor.models.checkpoint import Checkpoint, check_config_sizes

        checkpoint = checkpoint or Checkpoint(path)
        check_config_sizes(path, raw, checkpoint)
    try:
        cls = _model_class(family)
        if offload:
            from advisor.models.offloaded import build_offloaded

            model, sample = build_offloaded(path, cls, device, dtype, checkpoint)
            loaded = loaded_from(model, _tokenizer(path), family, name, device, sample=sample)
            loaded.load_note = f"offloaded: routed experts stream from the checkpoint ({note})"
            loaded.load_limit = limit_used
            return loaded
        if safetensors:  # the offloaded load's checks, before from_pretrained would
            from advisor.models.checkpoint import Checkpoint  # fill missing weights with random values
            from advisor.models.offloaded import check_checkpoint

            check_checkpoint(path, cls, checkpoint or Checkpoint(path))
        if cls.__name__.startswith("Auto"):
            from advisor.models.remote_code import TRUST_NO_CODE

            kwargs |= TRUST_NO_CODE
        model = cls.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (ValueError, KeyError, OSError) as e:
        from advisor.models.remote_code import custom_code_refusal

        if refusal := custom_code_refusal(path, "model", e):
            raise refusal from e
        raise UserError(f"cannot load model type '{model_type}' from {path}: {e}") from e
    loaded = loaded_from(model.eval(), _tokenizer(path), family, name, device)
    loaded.load_note = f"resident: the whole model on {device.type} ({note})" if note else ""
    loaded.load_limit = limit_used
    loaded.quant_method = quant_method(raw)  # the file's: a model dequantized on load has none in its config
    return loaded


def _model_class(family: str) -> Any:
    """The class a checkpoint of `family` loads as."""
    if family == "llada_moe":
        from advisor.models.llada_moe import LLaDAMoEModelLM
        return LLaDAMoEModelLM
    if family == "llada2":
        from advisor.models.llada2 import LLaDA2MoeModelLM
        return LLaDA2MoeModelLM
    if family == "diffusion_gemma":
        from transformers import DiffusionGemmaForBlockDiffusion
        return DiffusionGemmaForBlockDiffusion
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM


WEIGHTLESS_NOTE = "from config.json; no weights read"
"""How every size of a model built from its config.json alone (`_load_weightless`) is labelled."""


def _load_weightless(path: Path, name: str, device: torch.device, dtype: torch.dtype | None,
                     offload: bool | None, budget: int | BudgetOf | None, zeros: bool = False,
                     where: str | None = None) -> LoadedModel:
    """A directory's model built from its config.json alone (no weight files: `has_no_weights`; `where` names the
    directory, default its path), as an offloaded load builds it (`build_weightless`: every weight meta), so every
    size is counted as the checkpoint's would be - in config.json's dtype - with nothing allocated; with `zeros`,
    the weights but the routed experts are zeros on `device` (`zero_weights`), for an activation probe. The bytes
    of the tensors a save would write stand for the checkpoint's in the offload decision. No fingerprint: no values
    were read."""
    from advisor.models.offloaded import build_weightless, zero_weights

    where = where or str(path)
    raw = read_config(path)
    if (method := quant_method(raw)) is not None:  # its tensors are not of the shapes and dtype the model builds
        raise UserError(f"{where} is a pre-quantized checkpoint (quantization_config: {method}) with no weight "
                        "files: its stored bytes cannot be counted from config.json alone; download its "
                        f"{INDEX_NAME} and shards, or inspect the unquantized checkpoint's config.json")
    family = family_of(str(raw["model_type"]))
    try:
        model = build_weightless(path, _model_class(family), dtype)
    except (ValueError, KeyError, OSError) as e:
        from advisor.models.remote_code import custom_code_refusal

        if refusal := custom_code_refusal(path, "model", e):
            raise refusal from e
        raise UserError(f"cannot build model type '{raw['model_type']}' from {path / 'config.json'}: {e}") from e
    loaded = loaded_from(model, _tokenizer(path), family, name, device, sample=lambda *_: b"")
    loaded.fingerprint, loaded.weightless = "none (no weights)", True
    # what a save writes, every float in the checkpoint's dtype (config.json's): a router the model class keeps in
    # float32 (DeepSeek-V3's) is stored as the rest
    stored = list({id(t): t for t in model.state_dict(keep_vars=True).values()}.values())
    size = loaded.dtype.itemsize
    counted = sum(t.numel() * (size if t.is_floating_point() else t.element_size()) for t in stored)
    if offload is None:
        limit, what = _budget_limit(budget, counted, sum(t.numel() * 2 for t in stored), device)
        offload, loaded.load_limit = counted > limit, (limit, what)
        why = f"counted {format_bytes(counted, 2)} of tensors to store {'>' if offload else '<='} {what}"
    else:
        why = "--offload" if offload else "resident (asked)"
    named = str(loaded.dtype).removeprefix("torch.")
    key = "dtype" if raw.get("dtype") else "torch_dtype"  # transformers 5 writes "dtype", older ones "torch_dtype"
    dtype_said = (f"--dtype {named}" if dtype else f"the checkpoint's dtype, config.json's {key} {named}"
                  if raw.get(key) else
                  "float32: config.json names no dtype (the checkpoint's own dtype may differ)")
    loaded.offloaded = offload
    if zeros:
        zero_weights(model, device)
    loaded.load_note = (f"{WEIGHTLESS_NOTE} ({where} holds no weight files): every size is counted from the model "
                        f"config.json builds, in {dtype_said}; counted as {'offloaded' if offload else 'resident'} "
                        f"({why})")
    return loaded


def _tokenizer(path: Path) -> Any | None:
    if not any((path / n).is_file() for n in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    from advisor.models.remote_code import TRUST_NO_CODE, custom_code_refusal

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, **TRUST_NO_CODE)
    except Exception as e:  # a truncated tokenizer.json, a missing vocab file: JSON, OS or tokenizers' own errors
        if refusal := custom_code_refusal(path, "tokenizer", e):
            raise refusal from e
        reason = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        raise UserError(f"cannot read the tokenizer in {path} ({type(e).__name__}: {reason}); re-download its "
                        "tokenizer files") from e


# ---- identity and defaults -------------------------------------------------------------------------------


def loaded_from(
    model: nn.Module, tokenizer: Any | None, family: str, name: str, device: torch.device | str = "cpu",
    *, sample: Any = None,
) -> LoadedModel:
    """Wrap a model built in code (benchmarks, experiments) exactly as `load_model` wraps a loaded one.

    `sample` (offloaded models, already placed): reads fingerprint samples of meta parameters from the
    checkpoint."""
    device = torch.device(device)
    moe = moe_layers(model)  # raises UserError for models without MoE layers, before moving anything
    if sample is None:
        model = model.to(device)
    model = model.eval()
    moe = moe_layers(model)
    if sample is None:  # an offloaded model's own expert weights are meta: no resident probe can run
        verify_experts_path(model, moe, family)  # refuses models whose forward bypasses the experts seam
    else:
        use_seam(model, moe)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        family=family,
        is_diffusion=family in DIFFUSION_FAMILIES,
        name=name,
        fingerprint=fingerprint(model, sample=sample),
        moe=moe,
        mask_token_id=_mask_token_id(model, family),
        gen_defaults=gen_defaults(model, family),
        offloaded=sample is not None,
    )


def _mask_token_id(model: nn.Module, family: str) -> int | None:
    if family not in ("llada_moe", "llada2"):
        return None  # DiffusionGemma starts from a uniformly random canvas; AR models have no mask
    value = getattr(model.config, "mask_token_id", None)
    return int(value) if value is not None else _MASK_DEFAULTS[family]


def gen_defaults(model: nn.Module, family: str) -> dict[str, Any]:
    """The decoding each family was published with (kwargs of `advisor.models.generate.generate`), updated by
    `advisor_generation` in the model's config when a checkpoint records its own (the bundled model does)."""
    own = getattr(getattr(model, "config", None), "advisor_generation", None) or {}
    return {**_published_decoding(model, family), **own}


def decoding_text(decoding: dict[str, Any]) -> str:
    """Decoding settings as people read them, `key=value` joined by ', ' (`advisor inspect` printed the dict's
    repr, `{'steps': None, ...}`). LLaDA-MoE's unset steps is its published one token per step: as many steps
    as new tokens."""
    def value(key: str, v: Any) -> str:
        if v is None:
            return "one per new token" if key == "steps" else "unset"
        return str(v)

    return ", ".join(f"{k}={value(k, v)}" for k, v in decoding.items()) or "none"


def _published_decoding(model: nn.Module, family: str) -> dict[str, Any]:
    if family == "llada_moe":  # LLaDA low-confidence remasking: one token per step, 32-token blocks
        return {"steps": None, "block_length": 32, "temperature": 0.0, "remasking": "low_confidence"}
    if family == "llada2":  # block-causal threshold decoding
        return {"steps": 32, "block_length": 32, "threshold": 0.95, "temperature": 0.0}
    if family == "diffusion_gemma":  # native generate: canvas (block) length from config, denoising steps
        return {"steps": 48, "block_length": int(model.config.canvas_length)}
    return {"do_sample": False}


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        volatile = {"transformers_version", "_name_or_path", "_commit_hash", "dtype", "torch_dtype"}
        items = sorted(((str(k), v) for k, v in obj.items()), key=lambda kv: kv[0])
        return {k: _canonical(v) for k, v in items if k not in volatile and not k.startswith("_")}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    return obj


def fingerprint(model: nn.Module, elements: int = 64, *, sample: Any = None) -> str:
    """A stable short sha256 over the config, every parameter's name/shape/dtype, and an evenly strided
    sample of `elements` values from every parameter (cheap even for 30B-parameter models). Meta parameters
    (an offloaded model's experts) are sampled from the checkpoint by `sample(name, param, flat_indices)`,
    so an offloaded model has the fingerprint of the same model loaded whole."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        h.update(json.dumps(_canonical(config.to_dict()), sort_keys=True, default=str).encode())
    for name, p in sorted(model.named_parameters(), key=lambda item: item[0]):
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        if p.is_meta and sample is not None:
            h.update(sample(name, p, range(0, p.numel(), max(1, p.numel() // elements))[:elements]))
            continue
        flat = p.detach().reshape(-1)
        values = flat[:: max(1, flat.numel() // elements)][:elements].cpu().contiguous()
        h.update(values.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
