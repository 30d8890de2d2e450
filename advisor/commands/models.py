"""`advisor inspect MODEL`: what experts a model has and what each costs to move. Heavy imports stay inside."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from advisor.commands import device_budget, device_option, profiles_dir_option
from advisor.models import check_model_spec, dtype_name

if TYPE_CHECKING:
    from rich.table import Table

    from advisor.tune.config import ModelShape
    from advisor.tune.space import SearchSpace


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("inspect")
    def inspect(
        model: str = typer.Argument(
            "bundled", help="HF id (owner/name), local directory (its config.json alone will do: sizes counted from "
            "it, no weights read), tiny:<family>, or 'bundled'."
        ),
        dtype: str = typer.Option(None, "--dtype", help="Load in this dtype (bf16, fp16, fp32); default: as stored."),
        device: str = device_option(),
        budget: str = typer.Option(None, "--budget", help="Device memory budget, e.g. 8GiB: also print what fits "
                                   "(slots per layer per format) and whether the host has the RAM for each plan."),
        gpu: str = typer.Option(None, "--gpu", help="A GPU by name (catalogue or measured profile), e.g. 'RTX "
                                "4090': its memory is the budget, as for `advisor tune --gpu` (with --budget: at "
                                "most that)."),
        profiles_dir: Path | None = profiles_dir_option(),
        offload: bool = typer.Option(None, "--offload/--resident", help="Keep routed experts in the checkpoint / "
                                     "load the whole model. Default: offload when the checkpoint exceeds the "
                                     "budget (or the device's free memory)."),
        wide: bool = typer.Option(False, "--wide", help="Print the layer table whatever the terminal width "
                                  "(default: one block per layer when the table does not fit)."),
    ) -> None:
        """List every MoE layer: experts, top-k, expert shapes, dtype, bytes per expert, shared experts."""
        from rich.console import Console
        from rich.table import Table

        from advisor.errors import UserError, refuse_empty, refuse_without_cuda_driver
        from advisor.terminal import print_fitted, print_table, print_wrapped
        from advisor.tune.interrupt import import_runtime
        from advisor.units import format_bytes

        refuse_empty({"MODEL": model}, "a model (see `advisor inspect --help`)")  # '' loaded the current directory
        # "'80%' is not a size" did not say what does (tune and recommend say it)
        budget_bytes, profile, given = device_budget(budget, gpu, profiles_dir, lambda share: UserError(
            "--budget takes a size (e.g. 24GiB), not a share: inspect says what fits in that much device memory "
            "(each catalogue GPU's memory: `advisor profile --list`; or give --gpu NAME)"))
        if profile is not None and budget_bytes is None:  # no GPU memory to say what fits in: without a word, none
            raise UserError((f"--gpu {profile.name} is a CPU profile (`advisor profile --cpu`: a host memcpy, no "
                             f"GPU): its {format_bytes(profile.memory_bytes, 2)} is this host's RAM, no device "
                             "memory" if profile.host_only else f"--gpu {profile.name}'s profile ({profile.source}) "
                             "gives no memory") + " to say what fits in; give --budget SIZE, or a GPU's name")
        if dtype is not None:
            dtype_name(dtype)  # a mistyped --dtype before torch imports, as --device is
        # a mistyped MODEL before torch imports (after the options' own checks); a config.json alone is counted
        model = check_model_spec(model, weightless=True)
        refuse_without_cuda_driver(device)  # no CUDA at all: before torch's imports, as eval and trace
        import_runtime()
        from advisor.models.load import WEIGHTLESS_NOTE, decoding_text, load_model

        # named as typed and as its bytes, as `tune` names it: "--budget 8GB = 7.45 GiB" (8GB is SI, 8e9 bytes)
        of_budget = None if budget_bytes is None else (
            lambda counted, fp16: (budget_bytes, f"{given} = {format_bytes(budget_bytes, 2)}"))
        # config.json alone: weights meta (sizes only); zeros where --budget's fit table may probe activations
        loaded = load_model(model, device=device, dtype=dtype, offload=offload, budget=of_budget, weightless=True,
                            zeros=budget_bytes is not None)
        source = f"counted {WEIGHTLESS_NOTE}" if loaded.weightless else "counted"
        console = Console()
        table = Table(
            title=f"{loaded.name}  family={loaded.family}  diffusion={loaded.is_diffusion}  "
            f"fingerprint={loaded.fingerprint}",
            caption=f"bytes: {source if loaded.weightless else 'counted from the stored tensors'} (gate+up+down "
            "per routed expert)",
            title_justify="left", caption_justify="left",
        )
        columns = ("MoE", "module", "layer", "experts", "top-k", "expert shape (gate/up, down)", "dtype",
                   "per expert", "per layer", "shared", "router")  # in the unit each fills: 6 KiB read "0.01" in MiB
        for col in columns:
            table.add_column(col, justify="right" if col in {"MoE", "layer", "experts", "top-k", "per expert", "per layer"} else "left")
        records = []  # the narrow layout: one block per MoE layer, no cell cut
        total = 0
        for lay in loaded.moe:
            h, i = lay.hidden_size, lay.intermediate_size
            layer_bytes = lay.expert_nbytes * lay.num_experts
            total += layer_bytes
            shared = "-" if lay.shared is None else f"{type(lay.shared).__name__} ({format_bytes(lay.shared_nbytes, 2)})"
            name = lay.name + (f" (+{len(lay.aliases)} tied)" if lay.aliases else "")
            row = (str(lay.index), name, str(lay.decoder_layer), str(lay.num_experts), str(lay.top_k),
                   f"[{i},{h}] / [{h},{i}]", str(lay.dtype).removeprefix("torch."),
                   format_bytes(lay.expert_nbytes, 2), format_bytes(layer_bytes, 2), shared, type(lay.router).__name__ if lay.router is not None else "-")
            table.add_row(*row)
            records.append((f"MoE {row[0]}: {name}", list(zip(columns[2:], row[2:], strict=True))))
        print_fitted(console, table, records, wide=wide)
        print_wrapped(
            console, f"{len(loaded.moe)} MoE layers, {sum(lay.num_experts for lay in loaded.moe)} routed experts, "
            f"{format_bytes(total, 2)} of routed expert weights ({source}); {_mask_text(loaded)}; "
            f"default decoding: {decoding_text(loaded.gen_defaults)}"
        )
        if loaded.load_note:
            print_wrapped(console, f"loading: {loaded.load_note}")
        if budget_bytes is not None:
            shape, workload, space = study_shape(model, loaded)
            # the card's memory: where its figure came from, as tune's header says it ("catalogue (nominal)")
            card = f", {profile.source}" if profile is not None and budget is None else ""
            print_table(console, fit_table(shape, budget_bytes, workload, given + card, space, source))


FIT_FORMATS = ("bf16", "fp8", "int8", "int4", "nf4", "int3", "int2")


def study_shape(spec: str, loaded: Any) -> tuple[ModelShape, str, SearchSpace]:
    """The model's shape as `advisor tune` counts it with its default space and task (`ModelBackend`: offloaded,
    the activation allowance of its probe forward and staging buffers), that workload in words, and the space."""
    from advisor.eval.tasks import get_task
    from advisor.offload.cpu_profile import one_thread
    from advisor.tune.model_backend import ModelBackend
    from advisor.tune.space import default_space, load_space

    space = load_space(default_space(spec, loaded.is_diffusion))
    task = get_task(space.evaluation.task, seed=space.evaluation.seed)
    # the probe on one intra-op thread, as `advisor tune` runs it by default (--threads 1): its steps are many small
    # ops, which threads that wait for each other slowed on a busy host - Qwen3-30B-A3B's config.json alone, on 2
    # busy cores, 46 s on 2 threads, 7 s on 1 - for the same bytes (what it measures is the tensors held, not time)
    with one_thread():
        backend = ModelBackend(loaded, task, space.evaluation)
    prompts = (f"task {backend.task_name}" if loaded.tokenizer is not None else  # as tune's note says for it
               f"seeded random token ids (no tokenizer: not the {backend.task_name} task's prompts)")
    zeros = (" on zero weights of config.json's shapes, which route tokens otherwise than the checkpoint's: its "
             "allowance may differ a little" if loaded.weightless and backend.activation_source else "")
    return (backend.shape, f"{backend.activation_source}{zeros}; `advisor tune`'s default workload: space {space.name}, "
            f"{prompts}", space)


def fit_table(shape: ModelShape, budget: int, workload: str = "", given: str | None = None,
              space: SearchSpace | None = None, source: str = "counted") -> Table:
    """What fits a device budget (`given`: the option as typed, named beside its bytes), per uniform expert format:
    counted bytes, slots per MoE layer as a study at that budget counts them (`uniform_slots`; offloaded: per miss
    policy, copied misses hold staging buffers), host RAM. Where `space` (`advisor tune`'s default) cannot hold its
    least configuration at the budget, the title also says what that needs: the least slot of any format, with
    misses on the CPU, is below it where the space has no such format or no `cpu` misses (the bundled model's
    `quick`), and `advisor tune --budget` at that value was refused. `source`: how the resident weights were counted."""
    from rich.table import Table

    from advisor.hardware.profiles import format_bytes
    from advisor.models.load import HOST_RAM_SOURCE, host_available_bytes
    from advisor.tune.budget import least_uniform_peak, space_least_peak, uniform_slots
    from advisor.units import BUDGET_DIGITS, budget_text, size_argument

    resident, act = shape.resident_bytes, shape.activation_bytes
    host = host_available_bytes()
    free = budget - resident - act
    most = max(shape.num_experts)
    misses = ("copy", "cpu") if shape.staging and free > 0 else ("copy",)  # resident, or none fits: one column
    act_text = f"activation allowance {format_bytes(act, BUDGET_DIGITS)} ({workload}), " if shape.staging and budget > resident else ""
    # when no slot fits, what the least one needs (CPU misses stage nothing: the least peak)
    fmt = min(FIT_FORMATS, key=lambda f: least_uniform_peak(shape, f)[0])  # any space: CPU misses, no prefetch
    least = least_uniform_peak(shape, fmt)[0]
    needs = (f"one {fmt} slot per MoE layer needs {format_bytes(least, 2)}: --budget {size_argument(least)} or more"
             + (" (misses computed on the CPU)" if shape.staging else ""))
    tune_least = least if space is None else space_least_peak(space, shape)[0]
    default = ("" if tune_least <= budget or tune_least <= least else  # `advisor tune` as printed refuses below it
               f"; `advisor tune`'s default space {space.name} needs {format_bytes(tune_least, 2)}: --budget "
               f"{size_argument(tune_least)} or more")
    if free > 0:
        room = (f"{format_bytes(free, 2)} left for expert slots" + (" and staging" if shape.staging else "")
                + (f", too little for any: {needs}" if least > budget else "") + default)
    elif budget > resident:
        room = f"no room left for expert slots beside the activation allowance; {needs}{default}"
    else:  # a negative "left" said nothing; say by how much and what the least slot needs
        room = f"{format_bytes(resident - budget, 2)} short of them, so no expert slot fits; {needs}{default}"
    caption = "counted bytes (payload + scales); slots: uniform per MoE layer, "
    if shape.staging:
        caption += ("the most whose counted peak - resident weights, slots, activation allowance and, for copied "
                    "misses, staging buffers for a layer's streamed experts - fits the budget, as `advisor tune` "
                    "counts it (hybrid misses stage as copied ones; prefetch none: prev_step stages more)")
    else:
        caption += "the most that fit beside the resident weights (counted, as `advisor tune` counts them)"
    table = Table(title=f"budget {budget_text(budget, given)}: resident weights {format_bytes(resident, 2)} ({source}; "
                  f"embeddings, attention, norms, routers, shared experts, LM head), {act_text}{room}; "
                  f"host RAM {format_bytes(host)} ({HOST_RAM_SOURCE})", caption=caption,
                  title_justify="left", caption_justify="left")  # paragraphs: centred, their lines were ragged
    # no word wider than "slots/layer": at 80 columns rich narrows these columns to about that and cut
    # "slots/layer," to "slots/laye…" where a host RAM cell said "needs 54.0 GiB"
    heads = {"copy": "slots/layer (copied misses)" if len(misses) > 1 else "slots/layer that fit",
             "cpu": "slots/layer (CPU misses)"}
    for col in ("format", "per expert", "all experts", *(heads[m] for m in misses), "host RAM"):
        table.add_column(col, justify="left" if col == "format" else "right")
    shown = set()
    for fmt in FIT_FORMATS:
        per = [shape.expert_bytes(layer, fmt) for layer in range(shape.n_layers)]
        total = sum(p * n for p, n in zip(per, shape.num_experts, strict=True))
        cells = []
        for miss in misses:
            slots = uniform_slots(shape, fmt, budget, miss=miss)
            cells.append("none (resident > budget)" if budget <= resident else
                         f"{slots} ({slots / most:.0%})" if slots else "none")
        shown |= set(cells)
        table.add_row(fmt, format_bytes(per[0], 2), format_bytes(total, 2), *cells,
                      "fits" if total <= host else f"needs {format_bytes(total)}")
    if "none" in shown:  # a format that no slot of fits, where others fit some: said why
        table.caption = caption + ('; "none": not even one slot per MoE layer fits in what is left'
                                   + (" (for copied misses, with the layer's staging buffers)" if shape.staging else ""))
    return table


def _mask_text(loaded: Any) -> str:
    """What `inspect` says of the mask token: its id for a masked dLLM; an autoregressive model or DiffusionGemma
    (a noised canvas) has none to give, where "mask token: None" read as a missing setting."""
    if loaded.mask_token_id is not None:
        return f"mask token: {loaded.mask_token_id}"
    return ("no mask token (its denoising starts from random tokens)" if loaded.is_diffusion
            else "no mask token (autoregressive)")
