"""Search spaces: which knobs a study tunes and their domains, read from a TOML file and checked on load.

A space file says *what may vary*; the model decides the sizes (how many MoE layers, experts per layer), so
one file serves every model. Every problem found while loading is reported as one line naming the file,
the line and the key (`UserError`), because a study that starts on a mistyped domain wastes hours.

Knobs (Optuna parameter names in brackets):
  precision.formats       expert format per layer group          [fmt_g0 .. fmt_g{G-1}]
  precision.groups        G consecutive layer groups, or "per_layer" (a shipped space's G is cut to a
                          smaller model's MoE layers, with a note; a file's larger G is refused)
  precision.hot_cold      hot fraction per layer and the hot format (hottest experts by calibration routing
                          counts keep the hot format, the rest take their group's format)
                                                                 [hot_fraction, hot_format]
  cache.slots_per_layer   GPU expert slots in every MoE layer    [slots]
  cache.expert_budget     ...or a total of slots over all layers [expert_budget] split by
  cache.allocation        "uniform" | "by_frequency"             [allocation]
  cache.policies          eviction policy                        [policy]
  cache.prefetch          prefetch strategy: "none" | "prev_step" | "lookahead" (--mode live only: replay
                          would predict with the recorded routing)  [prefetch]
  cache.miss              where a missed expert computes: "copy" | "cpu" | "hybrid"   [miss]
  cache.tau               refresh interval of the "tide" policy (denoising steps; only with "tide")  [tau]
Domains are lists of choices or { low, high, step } ranges; "all" (a range's high only) is the model's size,
and a range of fractions needs a step.
Under a memory budget the layer groups' formats (where two or more are searched), the hot fraction and then the
cache size are drawn last, as [fmt_fill_g0 .. fmt_fill_g{G-1}], [hot_fill] and [cache_fill], each within what fits
beside the knobs drawn before it (`draw`): two formats that each fit beside the other groups' cheapest may not fit
together.
A knob whose domain holds one value is fixed: it is recorded in the configuration but not searched.

Other keys (not searched):
  name, description       the space's name (default: the file's stem; part of the default study name)
  [objectives]            metric = "minimize" | "maximize", metrics of `advisor.results.front.METRICS`
                          (default: time_per_token, accuracy, peak_gpu_bytes); for a model without a
                          tokenizer a shipped space's accuracy is tuned as fidelity_top1 (`without_tokenizer`)
  [evaluation]            task, limit (problems per accuracy run; beyond the task's: all), trace_prompts and
                          fidelity_prompts (1 to `MAX_PROMPTS`), seed,
                          staging (full accuracy only for plans that can still reach the front), fidelity_floor
                          (skip the accuracy run below this top-1 agreement), max_new_tokens (`EvaluationSettings`)
  [budget]                fraction_of_model: the GPU budget without --budget/--gpu/--budgets, a share of the
                          model's counted bytes
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, NoReturn

from advisor.errors import UserError
from advisor.offload.miss import MISS_POLICIES
from advisor.offload.policies import DEFAULT_TAU
from advisor.parsing import loads_toml
from advisor.results.front import METRICS, NO_TOKENIZER
from advisor.units import MAX_LENGTH, MAX_PROMPTS, SEED_MAX, SEED_MIN, count

SPACES_DIR = resources.files("advisor.tune") / "spaces"
"""The shipped space files (package data, so an installed wheel can tune); `resolve_space` also accepts any path."""

DIRECTIONS = ("minimize", "maximize")
DEFAULT_OBJECTIVES = {"time_per_token": "minimize", "accuracy": "maximize", "peak_gpu_bytes": "minimize"}
"""time_per_token: ms of expert work per generated token (device compute + copies + CPU compute, overlapped);
modelled in replay, measured wall-clock live (see advisor.offload.timing)."""
ALLOCATIONS = ("uniform", "by_frequency")
FILL = "cache_fill"
"""Optuna parameter of a study under a memory budget: the cache size as a share of the sizes that fit."""
FMT_FILL = "fmt_fill_g{group}"
"""Optuna parameter of a study under a memory budget that searches two or more layer groups' formats: group g's
format as a share of the formats that fit beside the groups drawn before it (a study begun before it drew
`fmt_g{group}`: `BudgetFit`)."""
HOT_FILL = "hot_fill"
"""Optuna parameter of a study under a memory budget that searches a hot fraction: the hot fraction as a share of
the hot fractions that fit with some cache size (a study begun before it drew `hot_fraction`: `BudgetFit`)."""
_TOP_KEYS = {"name", "description", "precision", "cache", "objectives", "evaluation", "budget"}


@dataclass(frozen=True)
class Domain:
    """A knob's domain: a list of choices, or an int/float range (with optional step)."""

    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | str | None = None  # "all" (slots only) = the model's experts per layer
    step: float | None = None
    is_int: bool = False

    @property
    def fixed(self) -> Any | None:
        """The only value, when the domain holds just one (a knob that is recorded but not searched)."""
        if self.choices is not None and len(self.choices) == 1:
            return self.choices[0]
        if self.choices is None and self.low == self.high:
            return int(self.low) if self.is_int else self.low
        return None

    def resolved(self, all_value: int) -> Domain:
        """This domain with "all" replaced by the model's value."""
        if self.high == "all":
            return Domain(self.choices, self.low, float(all_value), self.step, self.is_int)
        return self

    def values(self) -> list[Any]:
        """Every value (for exhaustive enumeration); a float range needs a step."""
        if self.choices is not None:
            return list(self.choices)
        assert self.low is not None and isinstance(self.high, (int, float))
        if self.is_int:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if not self.step:
            raise UserError("a float range without `step` cannot be enumerated; give it a step")
        n = int(round((self.high - self.low) / self.step))
        return [round(self.low + i * self.step, 12) for i in range(n + 1)]

    def to_json(self) -> Any:
        if self.choices is not None:
            return list(self.choices)
        return {k: v for k, v in (("low", self.low), ("high", self.high), ("step", self.step)) if v is not None}


@dataclass(frozen=True)
class EvaluationSettings:
    """How a trial measures accuracy, fidelity and transfers. Part of the accuracy-cache key."""

    task: str = "toy"
    limit: int = 32
    trace_prompts: int = 4
    fidelity_prompts: int = 4
    seed: int = 0
    staging: bool = True
    fidelity_floor: float = 0.0
    """Plans whose top-1 agreement with full precision is below this skip full accuracy (0 = never)."""
    max_new_tokens: int | None = None
    """Override of the task's generation length (None: the task's own)."""

    def key(self, task: str, data_sha256: str | None = None, kind: str = "accuracy") -> str:
        """Stable text of the settings that change a `kind` ("accuracy" or "fidelity") number: the task (name
        given explicitly, and the digest of its --data file: another file is another set of problems), and for
        fidelity the number of prompts it compares on."""
        d: dict[str, Any] = {"task": task, "limit": self.limit, "seed": self.seed,
                             "max_new_tokens": self.max_new_tokens}
        if data_sha256 is not None:  # absent for bundled / hub data, so their keys stay as stored before
            d["data_sha256"] = data_sha256
        if kind == "fidelity":
            d["fidelity_prompts"] = self.fidelity_prompts
            d["reference"] = FIDELITY_REFERENCE
        return json.dumps(d, sort_keys=True)


FIDELITY_REFERENCE = "seam"
"""How the full-precision reference of fidelity is computed, in its cache key: through the advisor's experts seam as
every plan is (since 2026-12-07). Before, a resident model's reference ran transformers' default experts kernel
(grouped_mm): a bf16 DiffusionGemma's own bf16 plan agreed 0.81-0.97 on top-1, and the eval cache kept that number
for every later study of the model; rows of the old key are not reused, so such a plan is measured again."""


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see the module docstring for the knobs)."""

    name: str
    description: str
    source: str  # file path, or "<builtin>"
    text: str  # the file's TOML text, stored with the study and its front
    formats: Domain
    groups: int | str  # int, or "per_layer"
    hot_fraction: Domain
    hot_formats: Domain
    slots: Domain | None
    expert_budget: Domain | None
    allocation: Domain
    policies: Domain
    prefetch: Domain
    objectives: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))
    miss: Domain = field(default_factory=lambda: Domain(choices=("copy",)))
    tau: Domain = field(default_factory=lambda: Domain(choices=(DEFAULT_TAU,)))
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    budget_fraction: float | None = None
    """Default memory budget as a fraction of the model's counted bytes at its own dtype (no --budget/--gpu)."""
    fidelity_for_accuracy: bool = False
    """A shipped space whose `accuracy` objective is tuned as `fidelity_top1` (`without_tokenizer`)."""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    def n_groups(self, n_layers: int) -> int:
        return n_layers if self.groups == "per_layer" else max(1, min(int(self.groups), n_layers))

    def group_of(self, layer: int, n_layers: int) -> int:
        """Consecutive, near-equal layer groups: layer l belongs to group floor(l * G / n)."""
        return layer * self.n_groups(n_layers) // n_layers

    def knobs(self, n_layers: int, num_experts: int) -> dict[str, Domain]:
        """Every knob (fixed ones included), with model-dependent bounds resolved, in a stable order."""
        k: dict[str, Domain] = {}
        for g in range(self.n_groups(n_layers)):
            k[f"fmt_g{g}"] = self.formats
        k["hot_fraction"] = self.hot_fraction
        # without a hot fraction above 0 no expert is hot: the hot format is recorded, not searched for nothing
        k["hot_format"] = self.hot_formats if self._most_hot() > 0 else Domain(self.hot_formats.values()[:1])
        if self.slots is not None:
            d = self.slots.resolved(num_experts)
            if d.choices is not None:  # a list of slot counts: those the model has room for
                k["slots"] = Domain(tuple(sorted({min(int(c), num_experts) for c in d.choices})))
            else:
                lo = max(1.0, d.low or 1)
                k["slots"] = Domain(None, lo, _on_grid(lo, min(float(d.high), num_experts), d.step), d.step, True)
        else:
            assert self.expert_budget is not None
            cap = num_experts * n_layers
            d = self.expert_budget.resolved(cap)
            if d.choices is not None:  # a list of totals (check_model refused those below one slot per layer)
                k["expert_budget"] = Domain(tuple(sorted({min(int(c), cap) for c in d.choices})))
            else:
                lo = max(float(n_layers), d.low or 1)
                k["expert_budget"] = Domain(None, lo, _on_grid(lo, min(float(d.high), cap), d.step), d.step, True)
            k["allocation"] = self.allocation
        k["policy"] = self.policies
        k["prefetch"] = self.prefetch
        k["miss"] = self.miss
        if "tide" in self.policies.values():
            k["tau"] = self.tau
        return k

    @property
    def size_knob(self) -> str:
        """The knob that sizes the GPU cache: "slots" or "expert_budget"."""
        return "slots" if self.slots is not None else "expert_budget"

    def _most_hot(self) -> float:
        """The largest hot fraction a trial can draw (0: no expert is ever hot)."""
        hot = self.hot_fraction
        return max(hot.choices) if hot.choices is not None else float(hot.high)

    def packed_formats(self) -> set[str]:
        """Every format a plan of this space can put in the host store: the layer formats, and the hot formats
        only when a hot fraction above 0 can be drawn (without [precision.hot_cold] none is ever packed)."""
        return set(self.formats.values()) | (set(self.hot_formats.values()) if self._most_hot() > 0 else set())

    @property
    def shipped(self) -> bool:
        """One of the spaces shipped with the package, however its path was given (`is_shipped`)."""
        return is_shipped(self.source)

    def groups_note(self, n_layers: int) -> str:
        """The line saying a shipped space's layer groups were cut to the model's MoE layers ("" where they were
        not): `check_model` lets a shipped space through where it refuses the user's own file."""
        if not self.shipped or self.groups == "per_layer" or int(self.groups) <= n_layers:
            return ""
        return (f"the {self.name} space's precision.groups = {self.groups} is more than the model's "
                f"{count(n_layers, 'MoE layer')}: tuning {count(n_layers, 'group')}, one per layer")

    def refuse(self, key: str, what: str) -> NoReturn:
        """Refuse the value of dotted `key` in this space's file with its file:line, as its parser does."""
        raise UserError(f"{_where(self.source, self.text, key)}: {key}: {what}")

    def without_tokenizer(self, model: str) -> SearchSpace:
        """The space a model without a tokenizer (`model`) tunes, which has no task accuracy: this one when no
        objective is `accuracy`; a shipped space with its `accuracy` objective tuned as `fidelity_top1` (top-1
        agreement with the full-precision model on the random-token prompts such a model is traced and compared
        on), as `fidelity_note` says; a file the user wrote with `accuracy` is refused, saying what works. The
        derived space's text - stored with the study, its fingerprint compared on resume - names fidelity_top1
        on the objective's line (same line numbers), so every reader of the study sees what was tuned."""
        if "accuracy" not in self.objectives:
            return self
        if not self.shipped:
            self.refuse("objectives.accuracy", f"{model} has no tokenizer, so task accuracy cannot be measured; leave "
                        "--space out or give a shipped space (--space quick, default or dllm: their accuracy objective "
                        "is then tuned as fidelity_top1, top-1 agreement with full precision), or write fidelity_top1 "
                        "= \"maximize\" in this file instead of accuracy")
        text, n = re.subn(r"(?m)^(\s*)accuracy(\s*=.*)$",
                          r"\1fidelity_top1\2  # accuracy in the shipped file: " + NO_TOKENIZER, self.text)
        derived = parse_space(text, self.source)
        want = {("fidelity_top1" if m == "accuracy" else m): d for m, d in self.objectives.items()}
        if n != 1 or derived.objectives != want or list(derived.objectives) != list(want):
            raise RuntimeError(f"{self.source}: the accuracy objective could not be rewritten as fidelity_top1")
        return replace(derived, fidelity_for_accuracy=True)

    def fidelity_note(self, model: str) -> str:
        """The line saying a shipped space's accuracy objective is tuned as fidelity_top1 ("" where it is not)."""
        if not self.fidelity_for_accuracy:
            return ""
        return (f"{model} has no tokenizer, so no task accuracy: the {self.name} space's accuracy objective is tuned "
                "as fidelity_top1 (top-1 agreement with the full-precision model on those random-id prompts)")

    def autoregressive_note(self, model: str, family: str, is_diffusion: bool) -> str:
        """The line saying the shipped dllm space, made for diffusion LLMs, tunes an autoregressive model ("" for
        any other space or model): it ran without a word, its block-aware knobs degenerate there."""
        if is_diffusion or not self.shipped or self.name != "dllm":
            return ""
        return (f"the dllm space is made for diffusion LLMs; {model} ({family}) decodes autoregressively, one token "
                "per forward, each forward a block of its own: its block_aware policy then protects the previous "
                "token's experts (near lru) and tide refreshes every tau forwards; the default space (what tune "
                "takes for an autoregressive model without --space) has neither")

    def check_model(self, n_layers: int, num_experts: int) -> None:
        """Refuse layer groups and cache sizes the model cannot have (9 groups of 4 layers, 999 slots in a layer
        of 16 experts), naming the file and line: silently clamping them would tune another space than the one
        written. A shipped space's groups (dllm's 4) are cut to the layers instead, as `groups_note` says: its
        user wrote no number, and a small model would otherwise have no shipped space to tune with."""
        if self.groups != "per_layer" and int(self.groups) > n_layers and not self.shipped:
            self.refuse("precision.groups", f"{self.groups} exceeds the model's {n_layers} MoE layers; use at most "
                        f"{n_layers} or \"per_layer\"")
        for key, dom, cap, what in (("cache.slots_per_layer", self.slots, num_experts, "experts per layer"),
                                    ("cache.expert_budget", self.expert_budget, num_experts * n_layers,
                                     "experts in all MoE layers")):
            if dom is None:
                continue
            values = dom.choices if dom.choices is not None else (dom.low, dom.high)
            bad = [v for v in values if v != "all" and v is not None and v > cap]
            if bad:
                shown = ", ".join(f"{v:g}" for v in bad)
                verb = "exceeds" if len(bad) == 1 else "exceed"
                self.refuse(key, f"{shown} {verb} the model's {cap} {what}; use at most {cap} or \"all\"")
        if self.expert_budget is not None:  # every MoE layer keeps at least one slot
            dom = self.expert_budget
            small = [v for v in (dom.choices or (dom.high,)) if v != "all" and v < n_layers]
            if small:
                shown = ", ".join(f"{v:g}" for v in small)
                self.refuse("cache.expert_budget", f"{shown} is fewer slots than the model's {n_layers} MoE layers "
                            f"(each keeps one); use at least {n_layers} or \"all\"")

    def check_mode(self, mode: str) -> None:
        """Refuse `lookahead` prefetch in a `--mode replay` study, naming the file and line: replay predicts the
        next layer's experts from the recorded routing (a perfect predictor), which the runtime's router-based
        prediction is not, so its oracle-optimistic bytes and times would win the front."""
        if mode == "replay" and "lookahead" in self.prefetch.values():
            self.refuse("cache.prefetch", "\"lookahead\" replays with the recorded next-layer routing as a perfect "
                        "predictor, which the runtime does not have; use \"none\" or \"prev_step\", or --mode live (it "
                        "predicts with the next router)")

    def suggest(self, trial: Any, n_layers: int, num_experts: int) -> dict[str, Any]:
        """Draw every searched knob from an Optuna trial; fixed knobs are filled in without a suggestion.
        Under a memory budget, studies draw through `advisor.tune.budget.BudgetFit.suggest` instead."""
        return draw(trial, self.knobs(n_layers, num_experts))

    def enumerate(self, n_layers: int, num_experts: int) -> Iterator[dict[str, Any]]:
        """Every point of the space (exhaustive search on small spaces)."""
        knobs = self.knobs(n_layers, num_experts)
        names = list(knobs)
        for combo in itertools.product(*(knobs[n].values() for n in names)):
            yield dict(zip(names, combo, strict=True))

    def size(self, n_layers: int, num_experts: int) -> int:
        n = 1
        for d in self.knobs(n_layers, num_experts).values():
            n *= len(d.values())
        return n


def draw(trial: Any, knobs: dict[str, Domain], fills: Mapping[str, str] | None = None,
         fill: Callable[[str, dict[str, Any], float], Any] | None = None) -> dict[str, Any]:
    """Every knob from an Optuna trial, in order; fixed knobs without a suggestion.

    With `fills` (a memory budget: each knob drawn within what fits -> its Optuna parameter, in drawing order,
    e.g. each layer group's format -> `fmt_fill_g*`, the hot fraction -> `hot_fill`, then the cache size ->
    `cache_fill`) and `fill`, those knobs are drawn last, define-by-run: each as its parameter in [0, 1] - a share
    of the values that fit beside the knobs already drawn - which `fill(knob, params, share)` makes concrete. One
    distribution in every trial is what TPE and NSGA-II need to model and recombine a parameter (a categorical
    parameter's choices cannot change between trials, and one drawn under changing names drops out of their
    joint model); its meaning follows the plan."""
    late = {n: p for n, p in (fills or {}).items() if n in knobs and knobs[n].fixed is None}
    params: dict[str, Any] = {}
    for name, d in knobs.items():
        if d.fixed is not None:
            params[name] = d.fixed
        elif name in late:
            continue
        elif d.choices is not None:
            params[name] = trial.suggest_categorical(name, list(d.choices))
        elif d.is_int:
            params[name] = trial.suggest_int(name, int(d.low), int(d.high), step=int(d.step or 1))
        else:
            params[name] = trial.suggest_float(name, float(d.low), float(d.high), step=d.step)
    for name, param in late.items():
        assert fill is not None
        params[name] = fill(name, params, trial.suggest_float(param, 0.0, 1.0))
    return {name: params[name] for name in knobs}


# ---------------------------------------------------------------- loading


def is_shipped(path: str | Path | Traversable) -> bool:
    """Whether a space file is one of those shipped with the package, not a file the user wrote: it resolves
    (symlinks followed, relative paths made absolute) to a file of `SPACES_DIR`. `--space dllm`, the package
    path, `search_spaces/dllm.toml` (the checkout's link to the same directory) and a relative path into it are
    all the same shipped file; a copy elsewhere is the user's. The one rule `SearchSpace.shipped` applies."""
    try:
        target = Path(str(path)).resolve()
        return any(target == Path(str(f)).resolve() for f in SPACES_DIR.iterdir() if f.name.endswith(".toml"))
    except (OSError, RuntimeError):  # a path that cannot be resolved (a symlink loop) is no shipped file
        return False


def resolve_space(name_or_path: str | Path | None) -> Path | Traversable:
    """A space file: an existing path, or the name of a shipped space ("default", "dllm", "quick", any case). A path
    keeps the spelling the user gave (messages name it); whether it is shipped is `is_shipped`'s rule."""
    if name_or_path is None:
        name_or_path = "default"
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.is_dir():
        raise UserError(f"search space {str(name_or_path)!r} is a directory; give a TOML file path or a shipped space")
    shipped = SPACES_DIR / f"{str(name_or_path).lower()}.toml"  # a name in any case (`choose`); a path keeps its own
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(f.name[: -len(".toml")] for f in SPACES_DIR.iterdir() if f.name.endswith(".toml")))
    names = names or "none found"
    raise UserError(f"search space {str(name_or_path)!r} not found; give a TOML file path or a shipped space ({names})")


def default_space(spec: str, is_diffusion: bool | None = None) -> str | None:
    """The space `advisor tune` searches without --space: "quick" for the bundled model (known before it
    loads), "dllm" for a diffusion model, else "default"; None while a loaded model's kind is unknown."""
    if spec == "bundled":
        return "quick"
    if is_diffusion is None:
        return None
    return "dllm" if is_diffusion else "default"


def load_space(
    name_or_path: str | Path | None = None,
    *,
    known_formats: Sequence[str] | None = None,
    known_policies: Sequence[str] | None = None,
    known_prefetch: Sequence[str] | None = None,
) -> SearchSpace:
    """Read and validate a space file. Unknown formats/policies are checked against the given lists."""
    path = resolve_space(name_or_path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (a Windows editor's) is no error: TOML allows none
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read search space ({e}); give a UTF-8 TOML file") from e
    return parse_space(text, str(path), known_formats=known_formats, known_policies=known_policies,
                       known_prefetch=known_prefetch)


def parse_space(
    text: str,
    source: str = "<string>",
    *,
    known_formats: Sequence[str] | None = None,
    known_policies: Sequence[str] | None = None,
    known_prefetch: Sequence[str] | None = None,
) -> SearchSpace:
    try:
        data = loads_toml(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e)).strip()
        if m:
            where = f"{source}:{m.group(1)}:{m.group(2)}"
        else:  # "at end of document": the last line
            where = f"{source}:{max(1, len(text.splitlines()))}"
        raise UserError(f"{where}: malformed TOML: {msg}; fix the file (see {SPACES_DIR / 'default.toml'})") from None
    if known_policies is None or known_prefetch is None:
        pol, pre = _offload_names()
        known_policies = pol if known_policies is None else known_policies
        known_prefetch = pre if known_prefetch is None else known_prefetch
    return _Validator(text, source, known_formats, known_policies, known_prefetch).build(data)


def _offload_names() -> tuple[list[str] | None, list[str] | None]:
    """Policy and prefetch names the offload package implements (torch-free modules)."""
    try:
        from advisor.offload.policies import POLICIES
    except ImportError:
        POLICIES = None  # noqa: N806
    try:
        from advisor.offload.slots import PREFETCH
    except ImportError:
        PREFETCH = None  # noqa: N806
    return (list(POLICIES) if POLICIES else None, list(PREFETCH) if PREFETCH else None)


class _Validator:
    def __init__(self, text: str, source: str, formats, policies, prefetch):
        self.text, self.source = text, source
        self.known = {"format": formats, "policy": policies, "prefetch": prefetch}

    # -- error reporting with the line of the offending key
    def fail(self, key: str, what: str) -> None:
        raise UserError(f"{_where(self.source, self.text, key)}: {key}: {what}")

    def table(self, data: dict, key: str, allowed: set[str]) -> dict:
        t = data.get(key.rsplit(".", 1)[-1], {})
        if not isinstance(t, dict):
            self.fail(key, "must be a table ([" + key + "])")
        for k in t:
            if k not in allowed:
                self.fail(f"{key}.{k}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return t

    def choices(self, t: dict, key: str, default: list | None, kind: str | None = None,
                validate: Callable[[Any], bool] | None = None, expect: str = "") -> Domain:
        leaf = key.rsplit(".", 1)[-1]
        v = t.get(leaf, default)
        if v is None:
            self.fail(key, "is required")
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, list) or not v:
            self.fail(key, f"must be a non-empty list of choices{expect}")
        if len(set(map(str, v))) != len(v):
            self.fail(key, "lists a choice twice")
        for c in v:
            if validate is not None and not validate(c):
                self.fail(key, f"invalid choice {c!r}{expect}")
            if kind == "format":
                self._check_format(key, c)
                continue
            known = self.known.get(kind or "")
            if known is not None and str(c) not in known:
                self.fail(key, f"unknown {kind} {c!r}; choose from {', '.join(known)}")
        return Domain(choices=tuple(v))

    def _check_format(self, key: str, name: Any) -> None:
        known = self.known.get("format")
        if known is not None:
            if str(name) not in known:
                self.fail(key, f"unknown format {name!r}; choose from {', '.join(known)}")
            return
        from advisor.quant.spec import parse_format  # torch-free exact format grammar

        try:
            parse_format(str(name))
        except UserError as e:
            self.fail(key, str(e))

    def number_domain(self, t: dict, key: str, *, is_int: bool, lo: float, hi: float | None,
                      allow_all: bool = False, default: Any = None) -> Domain | None:
        leaf = key.rsplit(".", 1)[-1]
        v = t.get(leaf, default)
        if v is None:
            return None
        num = (int,) if is_int else (int, float)
        kind, a_kind = ("integer", "an integer") if is_int else ("number", "a number")
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"

        # "all" (the model's size) is a range's upper end only: a list or a single value holds numbers
        all_hint = ' ("all" only as a range\'s high: { low = 1, high = "all" })' if allow_all else ""

        def ok(x: Any) -> bool:
            return isinstance(x, num) and not isinstance(x, bool) and x >= lo and (hi is None or x <= hi)

        if isinstance(v, list):
            if not v or not all(ok(x) for x in v):
                self.fail(key, f"every choice must be {a_kind} {rng}{all_hint}")
            if len(set(v)) != len(v):
                self.fail(key, "lists a choice twice")
            return Domain(choices=tuple(v))
        if ok(v):
            return Domain(choices=(v,))
        if not isinstance(v, dict):
            self.fail(key, f"must be {a_kind} {rng}, a list of them, or a table {{low = .., high = .., step = ..}}"
                      f"{all_hint}")
        for k in v:
            if k not in {"low", "high", "step"}:
                self.fail(f"{key}.{k}", "unknown key; allowed: high, low, step")
        if "low" not in v or "high" not in v:
            self.fail(key, "a range needs both `low` and `high`")
        low, high, step = v["low"], v["high"], v.get("step")
        if not ok(low):
            self.fail(key, f"low must be {a_kind} {rng}")
        if not (ok(high) or (allow_all and high == "all")):
            self.fail(key, f"high must be {a_kind} {rng}" + (' or "all"' if allow_all else ""))
        if high != "all" and high < low:
            self.fail(key, f"high ({high}) is below low ({low})")
        if step is not None and (not isinstance(step, num) or isinstance(step, bool) or step <= 0):
            self.fail(key, f"step must be a positive {kind}")
        if step is None and not is_int:  # studies count and warm-start over a grid of the values
            self.fail(key, f"a range of numbers needs a step, e.g. {{ low = {low}, high = {high}, step = 0.125 }}")
        if step is not None and high != "all" and _steps(low, high, step) is None:
            # Optuna would cut the range to the last step below high (with a warning per trial), while the
            # space's own grid (its size, the warm start) went one step past it
            last = low + int((high - low) / step + 1e-9) * step
            self.fail(key, f"high ({high:g}) is not low ({low:g}) plus a whole number of steps ({step:g}); the "
                      f"range would end at {last:g}: make high - low a multiple of step")
        return Domain(low=float(low), high=high if high == "all" else float(high),
                      step=None if step is None else float(step), is_int=is_int)

    def build(self, data: dict) -> SearchSpace:
        for k in data:
            if k not in _TOP_KEYS:
                self.fail(k, f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
        name = data.get("name", Path(self.source).stem)
        if not isinstance(name, str) or not name:
            self.fail("name", "must be a non-empty string")
        description = data.get("description", "")
        if not isinstance(description, str):
            self.fail("description", "must be a string")

        prec = self.table(data, "precision", {"formats", "groups", "hot_cold"})
        formats = self.choices(prec, "precision.formats", None, "format",
                               lambda c: isinstance(c, str), " (format names such as \"int8\")")
        groups = prec.get("groups", 1)
        if not (groups == "per_layer" or (isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1)):
            self.fail("precision.groups", 'must be a positive integer or "per_layer"')
        hc = prec.get("hot_cold", {})
        if not isinstance(hc, dict):
            self.fail("precision.hot_cold", "must be a table ([precision.hot_cold])")
        for k in hc:
            if k not in {"hot_fraction", "hot_formats"}:
                self.fail(f"precision.hot_cold.{k}", "unknown key; allowed: hot_formats, hot_fraction")
        hot_fraction = self.number_domain(hc, "precision.hot_cold.hot_fraction", is_int=False, lo=0.0, hi=1.0,
                                          default=0.0)
        hot_formats = self.choices(hc, "precision.hot_cold.hot_formats", ["bf16"], "format",
                                   lambda c: isinstance(c, str))

        cache = self.table(data, "cache", {"slots_per_layer", "expert_budget", "allocation", "policies", "prefetch",
                                           "miss", "tau"})
        if "slots_per_layer" in cache and "expert_budget" in cache:
            self.fail("cache.expert_budget", "give either slots_per_layer or expert_budget, not both")
        slots = self.number_domain(cache, "cache.slots_per_layer", is_int=True, lo=1, hi=None, allow_all=True)
        budget = self.number_domain(cache, "cache.expert_budget", is_int=True, lo=1, hi=None, allow_all=True)
        if slots is None and budget is None:
            slots = Domain(low=1.0, high="all", is_int=True)
        if budget is None and "allocation" in cache:
            self.fail("cache.allocation", "applies only with cache.expert_budget")
        allocation = self.choices(cache, "cache.allocation", ["uniform"], None, lambda c: c in ALLOCATIONS,
                                  f" (one of {', '.join(ALLOCATIONS)})")
        policies = self.choices(cache, "cache.policies", ["lru"], "policy", lambda c: isinstance(c, str))
        prefetch = self.choices(cache, "cache.prefetch", ["none"], "prefetch", lambda c: isinstance(c, str))
        miss = self.choices(cache, "cache.miss", ["copy"], None, lambda c: c in MISS_POLICIES,
                            f" (one of {', '.join(MISS_POLICIES)})")
        tau = self.choices(cache, "cache.tau", [DEFAULT_TAU], None,
                           lambda c: isinstance(c, int) and not isinstance(c, bool) and c >= 1, " (positive integers)")
        if "tau" in cache and "tide" not in policies.values():  # as allocation: never searched, never recorded
            self.fail("cache.tau", 'applies only with the "tide" policy in cache.policies')

        objectives = data.get("objectives", dict(DEFAULT_OBJECTIVES))
        if not isinstance(objectives, dict) or not objectives:
            self.fail("objectives", "must be a table of metric = \"minimize\" | \"maximize\"")
        for metric, direction in objectives.items():
            if metric not in METRICS:
                self.fail(f"objectives.{metric}", f"unknown metric; choose from {', '.join(METRICS)}")
            if direction not in DIRECTIONS:
                self.fail(f"objectives.{metric}", 'direction must be "minimize" or "maximize"')

        ev = self.table(data, "evaluation", {"task", "limit", "trace_prompts", "fidelity_prompts", "seed",
                                             "staging", "fidelity_floor", "max_new_tokens"})
        settings = EvaluationSettings(
            task=self._typed(ev, "evaluation.task", str, "toy"),
            limit=self._positive(ev, "evaluation.limit", 32),
            trace_prompts=self._positive(ev, "evaluation.trace_prompts", 4),
            fidelity_prompts=self._positive(ev, "evaluation.fidelity_prompts", 4),
            seed=self._typed(ev, "evaluation.seed", int, 0),
            staging=self._typed(ev, "evaluation.staging", bool, True),
            fidelity_floor=float(self._typed(ev, "evaluation.fidelity_floor", (int, float), 0.0)),
            max_new_tokens=self._positive(ev, "evaluation.max_new_tokens", None),
        )
        for key in ("trace_prompts", "fidelity_prompts"):  # decoded by every plan: 10**11 ran until interrupted
            if (n := getattr(settings, key)) > MAX_PROMPTS:  # (`limit` beyond the task is all of it, decodes no more)
                self.fail(f"evaluation.{key}", f"must be between 1 and {MAX_PROMPTS} prompts, got {n}; a task with "
                          "fewer prompts uses all it has")
        if not SEED_MIN <= settings.seed <= SEED_MAX:  # torch's manual_seed overflowed in the first trial
            self.fail("evaluation.seed", f"must be between {SEED_MIN} and {SEED_MAX}")
        if (settings.max_new_tokens or 0) > MAX_LENGTH:  # torch's size arithmetic overflowed: a traceback
            self.fail("evaluation.max_new_tokens", f"must be at most {MAX_LENGTH}")
        if not 0.0 <= settings.fidelity_floor <= 1.0:
            self.fail("evaluation.fidelity_floor", "must be between 0 and 1")
        if settings.fidelity_floor > 0 and ("accuracy" not in objectives or not settings.staging):
            # the floor acts in the staging of accuracy runs (advisor.tune.objective): elsewhere it did nothing
            why = ("accuracy is not among [objectives]; remove the floor or add accuracy = \"maximize\""
                   if "accuracy" not in objectives else "staging = false measures every plan; remove the floor or "
                   "set staging = true")
            self.fail("evaluation.fidelity_floor", f"skips the accuracy run of plans whose top-1 agreement is below "
                      f"it, but {why}")

        bud = self.table(data, "budget", {"fraction_of_model"})
        frac = bud.get("fraction_of_model")
        if frac is not None and (isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1):
            self.fail("budget.fraction_of_model", "must be a number in (0, 1]: the budget is this fraction of the "
                      "model's counted bytes, and a larger one constrains nothing")

        return SearchSpace(
            name=name, description=description, source=self.source, text=self.text,
            formats=formats, groups=groups, hot_fraction=hot_fraction, hot_formats=hot_formats,
            slots=slots, expert_budget=budget, allocation=allocation, policies=policies, prefetch=prefetch,
            objectives=dict(objectives), evaluation=settings, miss=miss, tau=tau,
            budget_fraction=None if frac is None else float(frac),
        )

    def _typed(self, t: dict, key: str, typ: Any, default: Any) -> Any:
        v = t.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)) or (
                typ == (int, float) and isinstance(v, bool)):
            self.fail(key, "must be " + {bool: "a boolean", int: "an integer", str: "a string"}.get(typ, "a number"))
        return v

    def _positive(self, t: dict, key: str, default: int | None) -> int | None:
        v = t.get(key.rsplit(".", 1)[-1], default)
        if v is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            self.fail(key, "must be a positive integer")
        return v


def _steps(low: float, high: float, step: float) -> int | None:
    """How many steps of `step` lead from `low` to `high`; None when it is not a whole number."""
    n = (high - low) / step
    return round(n) if abs(n - round(n)) <= 1e-9 * max(1.0, n) else None


def _on_grid(low: float, high: float, step: float | None) -> float:
    """`high` lowered to the last value of low + k * step (a range's "all" is the model's size, which the step
    need not divide; Optuna cuts such a range with a warning per trial)."""
    return high if not step else low + ((high - low) // step) * step


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\s\"]+?)\s*\]\s*(#.*)?$")
_KEYLINE = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def _where(source: str, text: str, dotted: str) -> str:
    """`file:line` of a dotted key for a refusal, or the file alone where the key is not written in it (a required
    key left out: line 1 named the first table, which says nothing of it)."""
    line = _line_of(text, dotted)
    return f"{source}:{line}" if line is not None else source


def _line_of(text: str, dotted: str) -> int | None:
    """1-based line of a dotted key (`a.b.c`) in TOML text: its `c = ...` line inside `[a.b]`, a
    `b = {...}`/`b.c = ...` line inside `[a]`, or its table header; None where none of them is there."""
    parts = dotted.split(".")
    table: list[str] = []
    header_line = None
    best = None
    for i, line in enumerate(text.splitlines(), start=1):
        h = _HEADER.match(line)
        if h:
            table = [p.strip().strip('"') for p in h.group(1).split(".")]
            if table == parts and header_line is None:
                header_line = i
            continue
        k = _KEYLINE.match(line)
        if not k:
            # a dotted key `a.b = ...` inside a table
            m = re.match(r"^\s*([A-Za-z0-9_\-.]+)\s*=", line)
            if m and (table + m.group(1).split("."))[: len(parts)] == parts:  # the key, or a key inside it
                return i
            continue
        full = table + [k.group(1)]
        if full == parts:
            return i
        if best is None and len(full) < len(parts) and parts[: len(full)] == full:
            best = i  # an inline table or a parent key holding the offending one
    return header_line or best
