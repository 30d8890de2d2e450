"""`advisor inspect MODEL`: what experts a model has and what each costs to move. Heavy imports stay inside."""

from __future__ import annotations

import typer


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f}"


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("inspect")
    def inspect(
        model: str = typer.Argument(
            "bundled", help="HF id (owner/name), local directory, tiny:<family>, or 'bundled'."
        ),
        dtype: str = typer.Option(None, "--dtype", help="Load in this dtype (bf16, fp16, fp32); default: as stored."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
        budget: str = typer.Option(None, "--budget", help="Device memory budget, e.g. 8GiB: also print what fits "
                                   "(slots per layer per format) and whether the host has the RAM for each plan."),
        offload: bool = typer.Option(None, "--offload/--resident", help="Keep routed experts in the checkpoint / "
                                     "load the whole model. Default: offload when the checkpoint exceeds the "
                                     "budget (or the device's free memory)."),
        wide: bool = typer.Option(False, "--wide", help="Print the layer table whatever the terminal width "
                                  "(default: one block per layer when the table does not fit)."),
    ) -> None:
        """List every MoE layer: experts, top-k, expert shapes, dtype, bytes per expert, shared experts."""
        from rich.console import Console
        from rich.table import Table

        from advisor.hardware.profiles import parse_budget
        from advisor.tune.fit import print_fitted
        from advisor.tune.interrupt import import_runtime

        budget_bytes = parse_budget(budget) if budget is not None else None  # an empty "$BUDGET" is refused
        import_runtime()
        from advisor.models.load import load_model

        loaded = load_model(model, device=device, dtype=dtype, offload=offload, budget=budget_bytes)
        console = Console()
        table = Table(
            title=f"{loaded.name}  family={loaded.family}  diffusion={loaded.is_diffusion}  "
            f"fingerprint={loaded.fingerprint}",
            caption="bytes: counted from the stored tensors (gate+up+down per routed expert)",
        )
        columns = ("MoE", "module", "layer", "experts", "top-k", "expert shape (gate/up, down)", "dtype",
                   "MiB/expert", "MiB/layer", "shared", "router")
        for col in columns:
            table.add_column(col, justify="right" if col in {"MoE", "layer", "experts", "top-k"} else "left")
        records = []  # the narrow layout: one block per MoE layer, no cell cut
        total = 0
        for lay in loaded.moe:
            h, i = lay.hidden_size, lay.intermediate_size
            layer_bytes = lay.expert_nbytes * lay.num_experts
            total += layer_bytes
            shared = "-" if lay.shared is None else f"{type(lay.shared).__name__} ({_mib(lay.shared_nbytes)} MiB)"
            name = lay.name + (f" (+{len(lay.aliases)} tied)" if lay.aliases else "")
            row = (str(lay.index), name, str(lay.decoder_layer), str(lay.num_experts), str(lay.top_k),
                   f"[{i},{h}] / [{h},{i}]", str(lay.dtype).removeprefix("torch."), _mib(lay.expert_nbytes),
                   _mib(layer_bytes), shared, type(lay.router).__name__ if lay.router is not None else "-")
            table.add_row(*row)
            records.append((f"MoE {row[0]}: {name}", list(zip(columns[2:], row[2:], strict=True))))
        print_fitted(console, table, records, wide=wide)
        console.print(
            f"{len(loaded.moe)} MoE layers, {sum(lay.num_experts for lay in loaded.moe)} routed experts, "
            f"{_mib(total)} MiB of routed expert weights (counted); mask token: {loaded.mask_token_id}; "
            f"default decoding: {loaded.gen_defaults}"
        )
        if loaded.load_note:
            console.print(f"loading: {loaded.load_note}")
        if budget_bytes is not None:
            console.print(fit_table(loaded, budget_bytes))


FIT_FORMATS = ("bf16", "fp8", "int8", "int4", "nf4", "int3", "int2")


def fit_table(loaded, budget: int):
    """What fits a device budget, per uniform expert format: counted bytes, slots per MoE layer, host RAM."""
    from rich.table import Table

    from advisor.hardware.profiles import format_bytes
    from advisor.models.load import host_available_bytes
    from advisor.quant.spec import expert_nbytes_of
    from advisor.tune.model_backend import model_shape

    resident = model_shape(loaded).resident_bytes
    host = host_available_bytes()
    free = budget - resident
    per_layer = {f: [expert_nbytes_of(f, m.hidden_size, m.intermediate_size) for m in loaded.moe] for f in FIT_FORMATS}
    if free > 0:
        room = f"{format_bytes(free, 2)} left for expert slots"
    else:  # a negative "left" said nothing; say by how much and what the least slot needs
        fmt = min(per_layer, key=lambda f: sum(per_layer[f]))
        room = (f"{format_bytes(-free, 2)} short of them, so no expert slot fits; one {fmt} slot per MoE layer "
                f"needs --budget {format_bytes(resident + sum(per_layer[fmt]), 2)} or more")
    table = Table(title=f"budget {format_bytes(budget, 2)}: resident weights {format_bytes(resident, 2)} (counted; "
                  f"embeddings, attention, norms, routers, shared experts, LM head), {room}; "
                  f"host RAM available {format_bytes(host)} (measured now)",
                  caption="counted bytes (payload + scales); slots: uniform per MoE layer, before staging and "
                  "activations (tune measures those per trial)")
    for col in ("format", "per expert", "all experts", "slots/layer that fit", "of experts", "host RAM"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for fmt, per in per_layer.items():
        total = sum(p * m.num_experts for p, m in zip(per, loaded.moe, strict=True))
        slots = free // sum(per) if free > 0 else 0
        slots = min(slots, max(m.num_experts for m in loaded.moe))
        table.add_row(fmt, format_bytes(per[0], 2), format_bytes(total, 2),
                      str(slots) if free > 0 else "none (resident > budget)",
                      f"{slots / max(m.num_experts for m in loaded.moe):.0%}",
                      "fits" if total <= host else f"needs {format_bytes(total)}")
    return table
