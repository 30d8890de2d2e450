"""CLI commands of the quantization area: `advisor quant-report`. Heavy imports stay inside the command
body."""

from __future__ import annotations

import typer

from advisor.commands import SEED_RANGE, say_busy_host, set_threads, threads_option, user_path
from advisor.errors import UserError, refuse_empty
from advisor.models import check_model_spec, check_weights, spec_moe_layers
from advisor.quant.spec import canonical_name


def _layers(text: str | None) -> list[int] | None:
    """--layers as numbers, read as a precision plan reads its ranges (one parser, the same caps)."""
    if text is None:  # '' is refused below, not read as every layer
        return None
    from advisor.quant.plan import check_named, parse_range

    out: list[int] = []
    try:
        for part in text.split(","):
            out += parse_range(part)
            check_named(text, len(out))
    except ValueError as e:
        raise UserError(f"--layers '{text}': {e}; give numbers or ranges like 0-3,7") from None
    return out


def _refuse_layers_beyond(wanted: list[int] | None, name: str, n_moe: int) -> None:
    """--layers naming a MoE layer the model lacks: one refusal, asked before the load where the config counts
    the layers (`spec_moe_layers`) and after it otherwise (it was dropped without a word)."""
    beyond = sorted({i for i in wanted or [] if i >= n_moe})
    if beyond:
        from advisor.quant.plan import number_ranges

        raise UserError(f"--layers names MoE layer(s) {','.join(number_ranges(beyond))} but {name} has "
                        f"{n_moe} (0-{n_moe - 1})")


def _check_samples_fit(loaded, samples: int) -> None:
    """Refuse, before anything is allocated, a --samples whose fp32 activations cannot fit this host: the
    input, the reference and quantized outputs and the SwiGLU intermediates of one expert (about (4 x hidden +
    3 x FFN) x 4 bytes per sample); too many ended in torch's allocator traceback."""
    from advisor.hardware.profiles import format_bytes
    from advisor.models.load import host_available_bytes

    need = samples * max(4 * m.hidden_size + 3 * m.intermediate_size for m in loaded.moe) * 4
    have = host_available_bytes()
    if need > have:
        raise UserError(f"--samples {samples}: the activations need about {format_bytes(need)} of host memory, "
                        f"{format_bytes(have)} is available; use fewer (default 64)")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("quant-report")
    def quant_report(
        model: str = typer.Argument(..., help="HF id, local directory, tiny:<family> or 'bundled'."),
        formats: str = typer.Option("int8,int4,nf4", "--formats", "-f", help="Comma-separated format names."),
        samples: int = typer.Option(64, "--samples", help="Activation vectors per expert."),
        activations: str = typer.Option(
            "random",
            "--activations",
            help="'random' (standard normal) or 'captured' (hidden states of one forward over seeded random token ids).",
        ),
        layers: str = typer.Option(None, "--layers", help="Only these MoE layers, e.g. 0-3,7."),
        max_experts: int = typer.Option(
            None, "--max-experts", help="Only the first N experts of each layer."
        ),
        per_expert: bool = typer.Option(
            False, "--per-expert", help="Print one row per expert, not per layer."
        ),
        json_out: str = typer.Option(None, "--json", callback=user_path, help="Also write every row to this JSON file."),
        seed: int = typer.Option(0, "--seed", **SEED_RANGE, help="Seed of the random activations (with --activations "
                                 "captured: of the forward's random token ids)."),
        wide: bool = typer.Option(False, "--wide", help="Print the table whatever the terminal width (default: one "
                                  "block per row when the table does not fit)."),
        threads: int = threads_option(),
        offload: bool = typer.Option(None, "--offload/--resident", help="Read experts one at a time from the "
                                     "checkpoint / load the whole model. Default: offload when the checkpoint is "
                                     "bigger than the free host memory."),
    ) -> None:
        """Per expert and format: bytes, relative weight and output errors (raw data for sensitivity)."""
        refuse_empty({"--json": json_out}, "a file path")  # '' wrote no file, without a word
        refuse_empty({"MODEL": model}, "a model (see `advisor quant-report --help`)")  # '' loaded the current directory
        names = [f.strip() for f in formats.split(",") if f.strip()]
        if not names:
            raise UserError("--formats is empty; give e.g. int8,int4,nf4")
        # unknown names fail before torch imports (`parse_format` is torch-free: `--formats int9` was refused only
        # after ~8 s of imports); one format spelled twice (int4, int4:g128) is measured once
        fmts = list(dict.fromkeys(canonical_name(n) for n in names))
        if activations not in ("random", "captured"):
            raise UserError(f"--activations must be 'random' or 'captured', not '{activations}'")
        if samples < 1:
            raise UserError("--samples must be at least 1")
        if max_experts is not None and max_experts < 1:  # would select nothing, found only after the model loads
            raise UserError(f"--max-experts {max_experts} selects no expert; give 1 or more, or leave it out")
        wanted = _layers(layers)
        if json_out:
            from advisor.files import check_writable

            # before the model loads and every expert is measured (a missing directory is refused, as by every
            # file option)
            check_writable(json_out, create_dirs=False, option="--json")
        model = check_model_spec(model)  # a mistyped MODEL before torch imports (after the options' own checks)
        check_weights(model)  # a broken download too, and before a busy host's note
        if wanted and (n_moe := spec_moe_layers(model)) is not None:
            _refuse_layers_beyond(wanted, model, n_moe)  # before torch and the load (about 5 s on the bundled model)
        from advisor.tune.interrupt import import_runtime

        import_runtime()
        import torch
        from rich.console import Console
        from rich.table import Table

        from advisor.models.load import load_model
        from advisor.quant.quality import capture_activations, quality_report
        from advisor.terminal import print_rich
        from advisor.units import format_bytes

        busy = set_threads(threads)
        loaded = load_model(model, offload=offload)
        say_busy_host(busy)  # once the model has loaded: a model the load refuses is refused in one line, not after it
        if loaded.offloaded:  # as eval and trace say it: the experts are read from the checkpoint one at a time
            print_rich(Console(stderr=True), f"loading: {loaded.load_note}", markup=False)
        _refuse_layers_beyond(wanted, loaded.name, len(loaded.moe))  # where the config did not count them
        _check_samples_fit(loaded, samples)
        acts, captured_from = None, ""
        if activations == "captured":  # the input said in the source: it read as the model's own text
            vocab = int(loaded.model.get_input_embeddings().weight.shape[0])
            ids = torch.randint(0, vocab, (1, max(samples, 8)), generator=torch.Generator().manual_seed(seed))
            acts = capture_activations(loaded, ids, max_tokens=samples)
            captured_from = f"(one forward over {ids.shape[1]} random token ids, seed {seed})"
        rows = quality_report(
            loaded,
            fmts,
            n_samples=samples,
            seed=seed,
            activations=acts,
            captured_from=captured_from,
            layers=wanted,
            max_experts=max_experts,
        )
        if not rows:
            raise UserError(f"no experts selected (model has {len(loaded.moe)} MoE layers)")
        ref = {lay.index: 3 * lay.hidden_size * lay.intermediate_size * 2 for lay in loaded.moe}
        table = Table(title=f"expert quantization quality - {loaded.name} ({len(loaded.moe)} MoE layers)",
                      title_justify="left")
        spread = "" if per_expert else " (mean / max)"  # one expert a row: its error, not "x / x"
        decoder = {lay.index: lay.decoder_layer for lay in loaded.moe}  # `inspect`'s "layer": the decoder block
        for col in (
            "format",
            "MoE",
            "layer",
            "expert" if per_expert else "experts",
            "per expert",
            "vs fp16",
            f"weight err{spread}",
            f"output err{spread}",
        ):
            table.add_column(col, justify="left" if col == "format" else "right")
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            key = (r["format"], r["layer"], r["expert"] if per_expert else None)
            groups.setdefault(key, []).append(r)
        records = []  # the narrow layout (80 columns, piped to a file): one block per row, no cell cut
        for (fmt, layer, expert), rs in groups.items():
            nbytes = sum(r["nbytes"] for r in rs) / len(rs)
            errs = [[r[k] for r in rs] for k in ("weight_rel_err", "output_rel_err")]
            w, o = (f"{e[0]:.4f}" if per_expert else f"{sum(e) / len(e):.4f} / {max(e):.4f}" for e in errs)
            row = (fmt, str(layer), str(decoder[layer]), str(expert) if per_expert else str(len(rs)),
                   format_bytes(nbytes, 2), f"{nbytes / ref[layer]:.3f}", w, o)
            table.add_row(*row)
            heading = f"{fmt}, MoE {layer} (layer {decoder[layer]})" + (f", expert {expert}" if per_expert else "")
            records.append((heading, [("experts", row[3])] * (not per_expert) + [
                ("per expert", row[4]), ("vs fp16", row[5]), ("weight err", row[6]), ("output err", row[7])]))
        from advisor.terminal import print_fitted, print_wrapped

        console = Console()
        print_fitted(console, table, records, wide=wide)
        print_wrapped(console, f"bytes: counted (payload + scales/zeros). errors{spread}: relative Frobenius "
                               f"norms, {rows[0]['error_source']}, {rows[0]['n_samples']} samples, fp32 compute on "
                               f"{loaded.device.type}.")
        if json_out:
            import json

            from advisor.files import write_atomic

            target = write_atomic(json_out, json.dumps(
                {"model": loaded.name, "fingerprint": loaded.fingerprint, "device": loaded.device.type, "rows": rows},
                indent=1), create_dirs=False, option="--json")
            print_wrapped(console, f"wrote {len(rows)} rows to {target}")  # a path is plain text, not markup
