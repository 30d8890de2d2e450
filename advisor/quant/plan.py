"""Precision plans: which format each routed expert (MoE layer, expert id) is stored in.

Only *routed* experts are governed by a plan. Routers, expert bias, norms, embeddings, the LM head and shared
experts always stay at the model's own precision: they are small, run for every token, and are the first place
quantization error turns into wrong routing.

A plan is three levels, most specific first: per-expert overrides, per-layer formats, a default. Format names
are canonicalised and entries equal to the level above are dropped, so the same mapping always has the same
`fingerprint` (used to cache accuracy per distinct plan) however it was written. Torch-free on purpose:
recommend/export read plans without importing torch.

String form (`parse`, `spec`): clauses separated by ';'
  ``int8`` or ``default=int4:g64``           the default format
  ``layers=0-1:int8,2-3:int4``               per-layer formats (inclusive ranges)
  ``experts=2.0-3:int8,2.7:int8``            per-expert overrides as LAYER.EXPERTS:FORMAT
or a path to a JSON file written by `to_json` (or inline JSON starting with '{'), whose "layers" and "experts"
keys may be ranges as in the string form ({"default": "int4", "layers": {"0-1": "int8"}}).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from advisor.errors import UserError
from advisor.parsing import loads_json
from advisor.quant.spec import canonical_name
from advisor.units import count

DEFAULT_FORMAT = "bf16"
EXPORT_SCHEMA = "moe-advisor/export"
"""Schema tag of `advisor export --to json` files, whose `precision` object `parse` accepts as a plan."""
_EXAMPLES = "e.g. 'int8', 'int4:g64', 'default=int4;layers=0-1:int8;experts=2.0-3:int8', or a plan JSON file"


def _bad(spec: str, why: str, *, path: bool = False) -> UserError:
    """The refusal of `spec`: a long inline plan is cut at 80 characters, a file's `path` never (it says where)."""
    shown = spec if path or len(spec) <= 80 else spec[:77] + "..."
    return UserError(f"bad precision plan '{shown}': {why}; expected {_EXAMPLES}")


def number_ranges(numbers: Sequence[int]) -> list[str]:
    """[0, 1, 2, 5] -> ["0-2", "5"]: runs of consecutive numbers as inclusive ranges."""
    out, nums = [], sorted(numbers)
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return out


def hot_experts(counts: Sequence[float], hot_fraction: float) -> list[int]:
    """The round(hot_fraction * E) most routed experts of a layer, hottest first (ties: the lower expert id is
    hotter). The one hot-set rule, for the tuner's plans and `PrecisionPlan.hot_cold` alike."""
    n_hot = min(len(counts), max(0, round(hot_fraction * len(counts))))
    return sorted(range(len(counts)), key=lambda e: (-counts[e], e))[:n_hot]


def _names_a_file(text: str, *, directory: bool = False) -> bool:
    """Whether `text` is the path of an existing file (`directory`: of a directory); False where it cannot be one
    (a long spec: ENAMETOOLONG)."""
    try:
        return Path(text).is_dir() if directory else Path(text).is_file()
    except OSError:
        return False


_A_DIRECTORY = "it is a directory, not a plan's .json file"
"""Why a `--precision` naming a directory is refused: `plans/` or `plan.json/` read as an unknown format or as "no
such file", though it is there."""


MAX_RANGE = 2**20
"""The most numbers one range of layers or experts (0-3) may span: more experts per layer than any MoE model has
(a million-expert layer is 2**20), while a range is expanded number by number (0-999999999 took every byte of
host memory, a wider one overflowed)."""


def check_span(text: str, lo: int, hi: int) -> None:
    """`ValueError` for a range `lo`-`hi` (as typed: `text`) that spans more than MAX_RANGE numbers."""
    if hi - lo + 1 > MAX_RANGE:
        raise ValueError(f"range '{text.strip()}' spans {hi - lo + 1} numbers; no MoE model has more than "
                         f"{MAX_RANGE} layers or experts per layer")


MAX_NAMED = 2**22
"""The most layers and experts one plan (or `quant-report --layers`) may name over all its ranges, and a routing
trace's meta over all its layers (`RoutingTrace.validate`): each range spans at most MAX_RANGE, but every number
is kept, so many of them (experts=0.0-1048575,1.0-1048575,... in a few kilobytes) took every byte of host memory
as one wide range did. The largest MoE models have ~25k experts in all."""


def check_named(text: str, named: int) -> None:
    """`ValueError` when the ranges of `text` (a plan or a --layers value) name more than MAX_NAMED numbers."""
    if named > MAX_NAMED:
        shown = text if len(text) <= 60 else f"{text[:40]}...{text[-17:]}"
        raise ValueError(f"'{shown}' names more than {MAX_NAMED} layers and experts in all; no MoE model has that "
                         "many")


def parse_range(text: str) -> list[int]:
    """"0-3" -> [0, 1, 2, 3], "5" -> [5]: one range of layers or experts, `ValueError` for a malformed, backwards
    or too wide one (`check_span`)."""
    a, sep, b = text.strip().partition("-")
    if not a.strip().isdigit() or (sep and not b.strip().isdigit()):
        raise ValueError(f"'{text}' is not a number or a range like 0-3")
    lo, hi = int(a), int(b) if sep else int(a)
    if hi < lo:
        raise ValueError(f"range '{text}' runs backwards")
    check_span(text, lo, hi)
    return list(range(lo, hi + 1))


@dataclass(frozen=True)
class PrecisionPlan:
    """Maps (MoE layer, routed expert) to a format name. Build with the constructors, not by hand."""

    default: str = DEFAULT_FORMAT
    layers: Mapping[int, str] = field(default_factory=dict)
    experts: Mapping[int, Mapping[int, str]] = field(default_factory=dict)
    note: str = field(default="", compare=False)
    """Where the plan came from (e.g. the hot/cold rule); shown by `describe`, not part of the identity."""

    def __post_init__(self) -> None:
        default = canonical_name(self.default)
        layers = {int(k): canonical_name(v) for k, v in self.layers.items()}
        layers = {k: v for k, v in sorted(layers.items()) if v != default}
        experts: dict[int, dict[int, str]] = {}
        for layer, per in sorted(((int(k), v) for k, v in self.experts.items()), key=lambda kv: kv[0]):
            base = layers.get(layer, default)
            kept = {int(e): canonical_name(f) for e, f in per.items()}
            kept = {e: f for e, f in sorted(kept.items()) if f != base}
            if kept:
                experts[layer] = kept
        if any(k < 0 for k in layers) or any(k < 0 or min(v) < 0 for k, v in experts.items()):
            raise UserError("precision plan: layer and expert numbers must be >= 0")
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "experts", experts)

    # ---- lookups -------------------------------------------------------------------------------------------
    def format_for(self, layer: int, expert: int) -> str:
        """Canonical format name of one routed expert."""
        per = self.experts.get(layer)
        if per is not None and expert in per:
            return per[expert]
        return self.layers.get(layer, self.default)

    def formats_used(self) -> set[str]:
        return {
            self.default,
            *self.layers.values(),
            *(f for per in self.experts.values() for f in per.values()),
        }

    def grid(self, num_experts: Sequence[int]) -> list[list[str]]:
        """The format of every routed expert, [MoE layer][expert], for a model with `num_experts` per layer."""
        return [[self.format_for(layer, e) for e in range(n)] for layer, n in enumerate(num_experts)]

    def max_layer(self) -> int:
        """Highest MoE layer the plan names explicitly (-1 if none): lets callers check it fits the model."""
        return max([*self.layers, *self.experts, -1])

    def check_layers(self, n_layers: int) -> None:
        """`UserError` if the plan names a MoE layer a model with `n_layers` lacks: `check_fits` once the model has
        loaded, and `advisor eval` before, from the count its config gives (`advisor.models.moe_layer_count`)."""
        if self.max_layer() >= n_layers:
            raise UserError(f"precision plan names MoE layer {self.max_layer()} but the model has {n_layers} "
                            f"(0-{n_layers - 1})")

    def check_fits(self, num_experts: Sequence[int]) -> None:
        """`UserError` if the plan names MoE layers or experts a model with `num_experts` per MoE layer lacks
        (a typo, or another model's plan)."""
        self.check_layers(len(num_experts))
        self.check_experts(lambda layer: num_experts[layer])

    def check_experts(self, experts_in: Callable[[int], int | None]) -> None:
        """`UserError` if the plan names an expert past the count `experts_in(layer)` gives its MoE layer (None:
        not known): `check_fits` once the model has loaded, and `advisor eval` before, from its config.json."""
        for layer, per in self.experts.items():
            if (n := experts_in(layer)) is not None and max(per) >= n:
                raise UserError(f"precision plan names expert {max(per)} of MoE layer {layer}, which has {n} experts")

    # ---- identity ------------------------------------------------------------------------------------------
    def _identity(self) -> dict:
        return {
            "default": self.default,
            "layers": {str(k): v for k, v in self.layers.items()},
            "experts": {str(k): {str(e): f for e, f in per.items()} for k, per in self.experts.items()},
        }

    @functools.cached_property
    def fingerprint(self) -> str:
        """Stable short id: equal plans (same mapping, any spelling or dict order) give the same id (hashed
        once per plan: it keys every cache lookup)."""
        blob = json.dumps(self._identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    # ---- constructors --------------------------------------------------------------------------------------
    @classmethod
    def uniform(cls, fmt: str) -> PrecisionPlan:
        return cls(default=fmt)

    @classmethod
    def from_grid(cls, formats: Sequence[Sequence[str]]) -> PrecisionPlan:
        """The plan giving expert e of layer l the format `formats[l][e]`. The most common format is the
        default, each layer's most common format its layer format (ties: alphabetical), the rest per-expert
        overrides, so one mapping always gets one spelling, hence one fingerprint."""
        counts: dict[str, int] = {}
        layer_base = []
        for fs in formats:
            c: dict[str, int] = {}
            for f in fs:
                c[f] = c.get(f, 0) + 1
                counts[f] = counts.get(f, 0) + 1
            layer_base.append(min(c, key=lambda f: (-c[f], f)))
        default = min(counts, key=lambda f: (-counts[f], f))
        experts = {layer: {e: f for e, f in enumerate(fs) if f != layer_base[layer]}
                   for layer, fs in enumerate(formats)}
        return cls(default=default, layers=dict(enumerate(layer_base)), experts=experts)

    @classmethod
    def per_layer(cls, formats: Mapping[int, str], default: str = DEFAULT_FORMAT) -> PrecisionPlan:
        return cls(default=default, layers=dict(formats))

    @classmethod
    def hot_cold(
        cls,
        hot_fmt: str,
        cold_fmt: str,
        hot_fraction: float,
        frequencies: Mapping[int, Sequence[float]],
        base: PrecisionPlan | None = None,
    ) -> PrecisionPlan:
        """In each layer of `frequencies` the round(hot_fraction * E) most routed experts get `hot_fmt`, the
        rest `cold_fmt` (ties: the lower expert id is hotter). Other layers keep `base` (default: cold_fmt).
        """
        if not 0.0 <= float(hot_fraction) <= 1.0:
            raise UserError(f"hot fraction must be between 0 and 1, got {hot_fraction}")
        base = base if base is not None else cls.uniform(cold_fmt)
        layers = dict(base.layers)
        experts = {k: dict(v) for k, v in base.experts.items()}
        for layer, counts in frequencies.items():
            counts = [float(c) for c in counts]
            if any(c < 0 for c in counts):
                raise UserError(f"routing frequencies of layer {layer} must be >= 0")
            layers[int(layer)] = cold_fmt
            experts[int(layer)] = dict.fromkeys(hot_experts(counts, hot_fraction), hot_fmt)
        where = f"layer{'s' if len(frequencies) > 1 else ''} {'+'.join(number_ranges(list(frequencies)))}"
        note = (
            f"hot/cold: top {hot_fraction:.0%} most routed experts {canonical_name(hot_fmt)}, "
            f"rest {canonical_name(cold_fmt)}, in {where}"
        )
        return cls(default=base.default, layers=layers, experts=experts, note=note)

    @classmethod
    def parse(cls, spec: str | PrecisionPlan) -> PrecisionPlan:
        """A plan from its string form, inline JSON, or a JSON file path; one-line `UserError` if bad."""
        if isinstance(spec, PrecisionPlan):
            return spec
        if not isinstance(spec, str) or not spec.strip():
            raise _bad(str(spec), "empty")
        text = spec.strip()
        if text.startswith("{"):
            return cls.from_json(text)
        if text.endswith(".json") or _names_a_file(text):
            path = Path(text)
            if not _names_a_file(text):
                raise _bad(text, _A_DIRECTORY if _names_a_file(text, directory=True) else "no such file", path=True)
            try:
                text = path.read_text(encoding="utf-8-sig")  # a BOM (a Windows editor's) is no error
            except OSError as e:
                raise _bad(text, f"cannot read it ({e.strerror})", path=True) from None
            except UnicodeDecodeError as e:
                raise _bad(text, f"not UTF-8 text (byte {e.start})", path=True) from None
            try:
                doc = loads_json(text)
            except json.JSONDecodeError:  # (from_json below says why)
                doc = None
            if isinstance(doc, dict) and doc.get("schema") == EXPORT_SCHEMA:  # an `advisor export --to json` file
                return cls.from_json(doc.get("precision") or {}, shown=str(path))
            return cls.from_json(text, shown=str(path))  # the file's name, not its lines, in a refusal
        default, layers, experts = DEFAULT_FORMAT, {}, {}
        named = 0  # numbers the ranges expanded to, over the whole plan (`check_named`)
        try:
            for clause in filter(None, (c.strip() for c in text.split(";"))):
                key, eq, value = clause.partition("=")
                key = key.strip().lower()
                if not eq:
                    default = canonical_name(clause)
                elif key == "default":
                    default = canonical_name(value)
                elif key in ("layers", "experts"):
                    for entry in filter(None, (e.strip() for e in value.split(","))):
                        where, colon, fmt = entry.partition(":")
                        if not colon:
                            raise ValueError(f"entry '{entry}' lacks ':FORMAT'")
                        fmt = canonical_name(fmt)
                        if key == "layers":
                            numbers = parse_range(where)
                            named += len(numbers)
                            check_named(text, named)
                            layers.update(dict.fromkeys(numbers, fmt))
                            continue
                        layer, dot, ids = where.partition(".")
                        if not dot or not layer.strip().isdigit():
                            raise ValueError(f"expert entry '{entry}' must look like LAYER.EXPERTS:FORMAT")
                        numbers = parse_range(ids)
                        named += len(numbers)
                        check_named(text, named)
                        experts.setdefault(int(layer), {}).update(dict.fromkeys(numbers, fmt))
                else:
                    raise ValueError(f"unknown clause '{key}' (use default=, layers=, experts=)")
        except (UserError, ValueError) as e:
            # a format name that is also a directory here (an export's folder `int8`) stays the format
            raise _bad(text, _A_DIRECTORY if _names_a_file(text, directory=True) else str(e)) from None
        return cls(default=default, layers=layers, experts=experts)

    # ---- serialisation -------------------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The compact string form; `PrecisionPlan.parse(plan.spec) == plan`."""
        clauses = [self.default]
        if self.layers:
            by_fmt: dict[str, list[int]] = {}
            for layer, fmt in self.layers.items():
                by_fmt.setdefault(fmt, []).append(layer)
            entries = [f"{r}:{fmt}" for fmt, ls in by_fmt.items() for r in number_ranges(ls)]
            clauses.append("layers=" + ",".join(entries))
        if self.experts:
            entries = []
            for layer, per in self.experts.items():
                by_fmt = {}
                for e, fmt in per.items():
                    by_fmt.setdefault(fmt, []).append(e)
                entries += [f"{layer}.{r}:{fmt}" for fmt, es in by_fmt.items() for r in number_ranges(es)]
            clauses.append("experts=" + ",".join(entries))
        return ";".join(clauses)

    def to_json(self) -> str:
        doc = {"version": 1, **self._identity(), "fingerprint": self.fingerprint}
        if self.note:
            doc["note"] = self.note
        return json.dumps(doc, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, data: str | Mapping, *, shown: str | None = None) -> PrecisionPlan:
        """Inverse of `to_json` (a stored "fingerprint" is informational and recomputed); `shown`: what a refusal
        quotes (a file's path), else the JSON itself."""
        is_path = shown is not None
        shown = shown or (data if isinstance(data, str) else json.dumps(data))
        try:
            doc = loads_json(data) if isinstance(data, str) else dict(data)
        except json.JSONDecodeError as e:
            raise _bad(shown, f"invalid JSON ({e.msg} at line {e.lineno})", path=is_path) from None
        if not isinstance(doc, dict) or "default" not in doc:
            raise _bad(shown, "JSON must be an object with at least a 'default' format", path=is_path)
        unknown = set(doc) - {"version", "default", "layers", "experts", "fingerprint", "note"}
        if unknown:
            raise _bad(shown, f"unknown keys {sorted(unknown)}", path=is_path)
        named = 0  # numbers the keys' ranges expanded to, over the whole plan (`check_named`)

        def numbers(key: object) -> list[int]:  # "3", or a range "0-3" as the string form takes it
            nonlocal named
            out = parse_range(str(key))
            named += len(out)
            check_named(shown, named)
            return out

        def mapping(value: object, what: str) -> Mapping:
            if not isinstance(value, Mapping):
                raise ValueError(f"{what} must be an object, not {json.dumps(value)[:40]}")
            return value

        try:
            layers = {n: str(v) for k, v in mapping(doc.get("layers") or {}, "layers").items() for n in numbers(k)}
            experts: dict[int, dict[int, str]] = {}
            for k, per in mapping(doc.get("experts") or {}, "experts").items():
                if not str(k).strip().isdigit():
                    raise ValueError(f"expert key '{k}' must be one MoE layer's number, mapping experts to formats")
                per = mapping(per, f"experts of layer {k}")
                experts.setdefault(int(k), {}).update({n: str(f) for e, f in per.items() for n in numbers(e)})
            return cls(
                default=str(doc["default"]), layers=layers, experts=experts, note=str(doc.get("note", ""))
            )
        except (ValueError, TypeError, AttributeError) as e:
            raise _bad(shown, f"layers/experts must map numbers to format names ({e})", path=is_path) from None
        except UserError as e:
            raise _bad(shown, str(e), path=is_path) from None

    # ---- people --------------------------------------------------------------------------------
    def describe(self, num_experts: Sequence[int] | None = None) -> str:
        """Readable, e.g. "int4 by default; layers 0-1: int8; layer 2: 4 experts int8 (others int4)".

        Given the model's experts per layer, the short form tables and stored configurations show instead:
        "int8", or "L0-1:int8 L2-3:int4 (+hot bf16 x2/layer)"."""
        if num_experts is not None:
            return _short(self.grid(num_experts))
        parts = [
            f"{self.default} by default"
            if (self.layers or self.experts)
            else f"{self.default} for every expert"
        ]
        by_fmt: dict[str, list[int]] = {}
        for layer, fmt in self.layers.items():
            by_fmt.setdefault(fmt, []).append(layer)
        for fmt, ls in by_fmt.items():
            word = "layer" if len(ls) == 1 else "layers"
            parts.append(f"{word} {'+'.join(number_ranges(ls))}: {fmt}")
        for layer, per in self.experts.items():
            counts: dict[str, int] = {}
            for fmt in per.values():
                counts[fmt] = counts.get(fmt, 0) + 1
            shown = ", ".join(f"{count(n, 'expert')} {fmt}" for fmt, n in counts.items())
            parts.append(f"layer {layer}: {shown} (others {self.layers.get(layer, self.default)})")
        text = "; ".join(parts)
        return f"{text} [{self.note}]" if self.note else text


def _short(grid: Sequence[Sequence[str]]) -> str:
    """Runs of layers by their most common format, then the hot formats and their count per layer."""
    parts, hot = [], set()
    for fs in grid:
        counts: dict[str, int] = {}
        for f in fs:
            counts[f] = counts.get(f, 0) + 1
        base = max(counts, key=lambda f: counts[f])
        parts.append(base)
        hot |= {(f, c) for f, c in counts.items() if f != base}
    runs: list[str] = []
    start = 0
    for i in range(1, len(parts) + 1):
        if i == len(parts) or parts[i] != parts[start]:
            runs.append(parts[start] if (start == 0 and i == len(parts)) else
                        f"L{start}{'' if i - 1 == start else f'-{i - 1}'}:{parts[start]}")
            start = i
    text = " ".join(runs)
    if hot:
        text += " (+hot " + ", ".join(f"{f} x{c}/layer" for f, c in sorted(hot)) + ")"
    return text
