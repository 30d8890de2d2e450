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
    ) -> None:
        """List every MoE layer: experts, top-k, expert shapes, dtype, bytes per expert, shared experts."""
        from rich.console import Console
        from rich.table import Table

        from advisor.models.load import load_model

        loaded = load_model(model, device=device, dtype=dtype)
        console = Console()
        table = Table(
            title=f"{loaded.name}  family={loaded.family}  diffusion={loaded.is_diffusion}  "
            f"fingerprint={loaded.fingerprint}",
            caption="bytes: counted from the stored tensors (gate+up+down per routed expert)",
        )
        for col in ("MoE", "module", "layer", "experts", "top-k", "expert shape (gate/up, down)", "dtype",
                    "MiB/expert", "MiB/layer", "shared", "router"):
            table.add_column(col, justify="right" if col in {"MoE", "layer", "experts", "top-k"} else "left")
        total = 0
        for lay in loaded.moe:
            h, i = lay.hidden_size, lay.intermediate_size
            layer_bytes = lay.expert_nbytes * lay.num_experts
            total += layer_bytes
            shared = "-" if lay.shared is None else f"{type(lay.shared).__name__} ({_mib(lay.shared_nbytes)} MiB)"
            name = lay.name + (f" (+{len(lay.aliases)} tied)" if lay.aliases else "")
            table.add_row(
                str(lay.index), name, str(lay.decoder_layer), str(lay.num_experts), str(lay.top_k),
                f"[{i},{h}] / [{h},{i}]", str(lay.dtype).removeprefix("torch."), _mib(lay.expert_nbytes),
                _mib(layer_bytes), shared, type(lay.router).__name__ if lay.router is not None else "-",
            )
        console.print(table)
        console.print(
            f"{len(loaded.moe)} MoE layers, {sum(lay.num_experts for lay in loaded.moe)} routed experts, "
            f"{_mib(total)} MiB of routed expert weights (counted); mask token: {loaded.mask_token_id}; "
            f"default decoding: {loaded.gen_defaults}"
        )
