"""Budget-aware search: a configuration that cannot fit the GPU memory budget is never proposed.

A configuration's GPU bytes are counted before anything runs (`build_config`), so a study under a budget
draws the hot format and every other categorical knob first; then, where two or more layer groups' formats are
searched, each group's format in turn within the formats that fit beside the groups drawn before it (the later
ones at their cheapest) - two formats that each fit beside the others' cheapest may not fit together; then the
hot fraction within the fractions that fit beside them with some cache size, and the cache size last, within the
sizes that fit beside them all (`BudgetFit.suggest`: one mechanism, `BudgetFit.within`, for all three); a format
that cannot fit one expert per layer with everything else at its smallest is not offered at all. Measured on the
bundled model at a budget of 10% of the experts' bf16 bytes, drawing every knob blindly put 74% of NSGA-II's
trials and 52% of TPE's over budget; drawn this way, none (benchmarks/search_efficiency.py). With the hot fraction still drawn over its
whole domain, at 1% of those bytes (no bf16 hot set fits) 28% of TPE's trials and 38% of NSGA-II's were over
budget, every one a hot set; drawn within what fits, none
(benchmarks/results/2026-12-06_cpu-2-cores-shared_search_efficiency_hot_fill.txt). With a format per half of the
layers drawn each over its domain, at 1%, 6% of TPE's trials, 18% of NSGA-II's and 28% of random search's were over
budget, every one a pair of formats; drawn in turn within what fits, none
(benchmarks/results/2026-12-06_cpu-2-cores-shared_search_efficiency_fmt_fill.txt).

Every study also starts from the analytically strongest configurations (`warm_start`): for each precision
plan the most cache that fits, since more slots only cut transfers. They are enqueued unless the study
already holds them, so resuming or starting another worker does not repeat them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from advisor.errors import UserError
from advisor.tune.config import ModelShape, allocate_slots, build_config, layer_slots, uniform_peak_bytes
from advisor.tune.space import FILL, FMT_FILL, HOT_FILL, Domain, SearchSpace, draw
from advisor.units import decimal, digits_apart, format_bytes

WARM_AXES = ("miss",)
"""Categorical cache knobs that change what a budget buys (e.g. copying misses vs computing them on the CPU):
each of their choices gets its own warm-start points when the space searches the knob."""

PLAN_KNOBS = ("hot_fraction", "hot_format")
"""Precision knobs besides the per-group formats `fmt_g*`."""


class BudgetTooSmall(UserError):
    """No configuration of the space fits the study's budget. Its line names the budget's source when the user gave
    none (`named`): a space's default share of the model refused as 'raise --budget' left them to guess where a
    budget they never typed came from."""

    def __init__(self, budget: int, what: str, alternative: str, digits: int = 2):
        self.budget, self.what, self.alternative, self.digits = budget, what, alternative, digits
        super().__init__(f"a budget of {format_bytes(budget, digits)} {what}: raise --budget{alternative}")

    def named(self, source: str) -> UserError:
        """The same refusal for a budget that `source` set (e.g. the space's default share of the model)."""
        option = "--budgets" if "--budgets" in source else "--budget"
        return UserError(f"a budget of {format_bytes(self.budget, self.digits)} ({source}) {self.what}: give a larger one "
                         f"with {option}{self.alternative}")


class BudgetFit:
    """Which layer-group formats, hot fractions and cache sizes fit `budget_bytes` (None: every one) beside the
    other knobs, for one space and model.

    `counts` gives calibration routing counts, needed only when slots are allocated by frequency. `fill_hot`
    False draws the hot fraction over its whole domain, as `hot_fraction`: how a study begun before it was drawn
    within the budget goes on (`holds_blind_hot_draws`); `fill_formats` False, the same for the layer groups'
    formats, as `fmt_g*` (`holds_blind_format_draws`)."""

    def __init__(self, space: SearchSpace, shape: ModelShape, budget_bytes: int | None,
                 counts: Callable[[], Mapping[int, Sequence[int]]] | None = None, fill_hot: bool = True,
                 fill_formats: bool = True):
        self.space, self.shape, self.budget = space, shape, budget_bytes
        self.counts = counts
        self.knobs = space.knobs(shape.n_layers, shape.min_experts)
        self.size = space.size_knob
        self.values = self.knobs[self.size].values()
        self.left_out = self._restrict_formats()
        # under a budget, the searched knobs drawn last, in this order, each within what fits beside those drawn
        # before it -> its Optuna parameter (`draw`): the formats' bytes bound the hot set's, and both the cache's.
        # One searched group's format fits beside the others' (fixed) by `_restrict_formats`; two can overrun together
        searched = self._searched_formats()
        formats = {k: FMT_FILL.format(group=k[len("fmt_g"):]) for k in searched} if len(searched) > 1 else {}
        late = {**(formats if fill_formats else {}), **({"hot_fraction": HOT_FILL} if fill_hot else {}),
                self.size: FILL}
        self.fills = {} if budget_bytes is None else {
            k: p for k, p in late.items() if k in self.knobs and self.knobs[k].fixed is None}

    def _restrict_formats(self) -> dict[str, list[str]]:
        """Drop each layer group's formats that fit with no cache size (the smallest, or - an offloaded model's
        staging falling again - the largest: `largest_index`) and every other group at its cheapest format (a study
        keeps one budget, so its distributions stay fixed); return them. `BudgetTooSmall` when no format of some
        group fits - or, the space's formats fixed, when they do not: the budget cannot hold one expert per layer
        (a fixed format over it recorded every trial over budget without running, and the run ended without a
        front)."""
        if self.budget is None:
            return {}
        fmt_knobs = self._searched_formats()
        cheapest = min(self.space.formats.values(), key=lambda f: self.shape.expert_bytes(0, f))
        base = {**self.defaults(), **{k: cheapest for k in fmt_knobs}, self.size: self.values[0]}
        if "hot_fraction" in self.knobs:
            base["hot_fraction"] = min(self.knobs["hot_fraction"].values())
        # a miss policy can change what fits (`cpu` misses stream nothing, so they hold no staging buffers): a
        # format is kept when some choice fits. Dropping it by the first choice alone made the warm start, which
        # enqueues every choice, fix a format the distribution no longer had: a ValueError traceback in trial 0
        combos = self._axis_choices()
        if not fmt_knobs and not any(self.largest({**base, **a}) is not None for a in combos):
            raise self._too_small(base, combos)
        left_out: dict[str, list[str]] = {}
        for k in fmt_knobs:
            keep = [c for c in self.knobs[k].choices or ()
                    if any(self.largest({**base, **a, k: c}) is not None for a in combos)]
            if not keep:
                raise self._too_small({**base, k: cheapest}, combos)
            if len(keep) < len(self.knobs[k].choices or ()):
                left_out[k] = [c for c in self.knobs[k].choices or () if c not in keep]
                self.knobs[k] = Domain(choices=tuple(keep))
        return left_out

    def _too_small(self, least: Mapping[str, Any], combos: list[dict[str, Any]]) -> BudgetTooSmall:
        """The refusal of a budget that `least` (every format at its cheapest, the smallest hot set) fits with no
        cache size and no choice of `combos`: what is resident, and what the smallest configuration needs."""
        assert self.budget is not None
        also = ""  # an offloaded model's peak also holds these (`peak_gpu_bytes`)
        if self.shape.activation_bytes:
            also += f", {format_bytes(self.shape.activation_bytes, 2)} of activations"
        if self.shape.staging:
            also += ", and staging buffers for the experts that stream past the cache"
        least_peak = min(self.peak_bytes({**least, **a, self.size: v}) for a in combos
                         for v in (self.values[0], self.values[-1]))  # least at an end
        digits = digits_apart(least_peak, self.budget, 2)  # "a budget of 1.83 MiB ... needs 1.83 MiB" read as a fit
        need = format_bytes(least_peak, digits)
        if self.shape.resident_bytes >= self.budget:
            return BudgetTooSmall(self.budget, f"cannot hold even the resident (non-expert) weights, "
                                  f"{format_bytes(self.shape.resident_bytes, 2)} (counted: embeddings, attention, "
                                  f"norms, routers, shared experts, LM head); the smallest configuration of the "
                                  f"space needs {need}", "", digits)
        return BudgetTooSmall(self.budget, f"cannot hold the resident weights and one expert per MoE layer in "
                              f"any format of the space ({format_bytes(self.shape.resident_bytes, 2)} are "
                              f"resident{also}; the smallest configuration needs {need})", " or add a smaller format",
                              digits)

    def _searched_formats(self) -> list[str]:
        """The layer groups' format knobs (`fmt_g*`) the space searches (not fixed)."""
        return [k for k in self.knobs if k.startswith("fmt_g") and self.knobs[k].fixed is None]

    @property
    def draws_formats_blind(self) -> bool:
        """Whether two or more searched layer-group formats are drawn each over its own domain under the budget
        (`fill_formats` False: a study begun before they were drawn in turn within it, `holds_blind_format_draws`),
        so that a pair too large together for the smallest cache can still be drawn."""
        searched = self._searched_formats()
        return self.budget is not None and len(searched) > 1 and not any(k in self.fills for k in searched)

    @property
    def draws_hot_blind(self) -> bool:
        """Whether a searched hot fraction is drawn over its whole domain under the budget (`fill_hot` False: a
        study begun before it was drawn within the budget, `holds_blind_hot_draws`)."""
        searched = self.knobs["hot_fraction"].fixed is None
        return self.budget is not None and searched and "hot_fraction" not in self.fills

    def _axis_choices(self) -> list[dict[str, Any]]:
        """Every combination of the searched `WARM_AXES` knobs ([{}] when the space fixes them all)."""
        axes = [a for a in WARM_AXES if a in self.knobs and self.knobs[a].fixed is None]
        return [dict(zip(axes, c, strict=True)) for c in itertools.product(*(self.knobs[a].values() for a in axes))]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Every knob from an Optuna trial: under a budget, the layer groups' formats (two or more searched), the
        hot fraction and then the cache size last, each within what fits beside those drawn before it (`within`)."""
        return draw(trial, self.knobs, self.fills, self.within)

    def fits(self, params: Mapping[str, Any], budget: float | None = None) -> bool:
        """Whether a complete configuration fits `budget` bytes (default: the study's), from counted bytes
        (nothing runs)."""
        limit = self.budget if budget is None else budget
        return limit is None or self.peak_bytes(params) <= limit

    def peak_bytes(self, params: Mapping[str, Any]) -> int:
        """Counted peak GPU bytes of a complete configuration."""
        counts = self.counts() if self.counts and params.get("allocation") == "by_frequency" else None
        return build_config(self.space, params, self.shape, counts).peak_bytes

    def largest(self, params: Mapping[str, Any], budget: float | None = None) -> int | None:
        """Index of the largest size value that fits beside `params` within `budget` (default: the study's),
        None when none does (`largest_index`: bytes grow with the size, then may fall again)."""
        return largest_index(len(self.values), lambda i: self.fits({**params, self.size: self.values[i]}, budget))

    def within(self, knob: str, params: Mapping[str, Any], share: float) -> Any:
        """The value of `knob` (the cache size, the hot fraction or a layer group's format) that `share` selects
        beside `params`: that share of the way from its smallest value to the largest that fits - the cache size:
        beside everything else; the hot fraction (drawn before the size): with some cache size, the smallest or,
        where bytes fall again, the largest (`_fitting`); a format: see `_format_within`. When nothing fits (the
        other knobs drawn are too big), the smallest: the objective then records the trial over budget without
        running it."""
        if knob.startswith("fmt_g"):
            return self._format_within(knob, params, share)
        values, fits = self._ordered(knob), self._fitting(knob, params)
        k = largest_index(len(values), fits)
        if k is None:
            return values[0]
        i = round(min(max(share, 0.0), 1.0) * k)
        while i > 0 and not fits(i):
            i -= 1  # allocation rounding can make bytes non-monotone by a slot; never return an overrun
        if i == 0 < k and not fits(0):
            i = k  # only values near the largest fit (bytes that fall again there: `largest_index`)
        return values[i]

    def share(self, knob: str, params: Mapping[str, Any]) -> float:
        """The share that selects `params[knob]`, a value that fits, beside the rest of `params` (`within`)."""
        if knob.startswith("fmt_g"):
            fitting = self._fitting_formats(knob, params, params[knob])
            i = fitting.index(params[knob])
            return i / (len(fitting) - 1) if len(fitting) > 1 else 0.0
        values = self._ordered(knob)
        k = largest_index(len(values), self._fitting(knob, params))
        return values.index(params[knob]) / k if k else 0.0

    def _ordered(self, knob: str) -> list[Any]:
        """`knob`'s values from the fewest bytes up (formats: by one expert's bytes, ties in the space's order)."""
        if knob.startswith("fmt_g"):
            return sorted(self.knobs[knob].values(), key=lambda f: self.shape.expert_bytes(0, f))
        return self.values if knob == self.size else sorted(self.knobs[knob].values())

    def _format_within(self, knob: str, params: Mapping[str, Any], share: float) -> str:
        """The format of layer group `knob` that `share` selects among those that fit beside `params` (the knobs
        drawn before it: every categorical one and the earlier groups' formats), in equal parts from the fewest
        bytes up, so that a share drawn at random picks each fitting format as often: a format is a choice, not
        a point on a scale of sizes. The cheapest when none fits (the categorical knobs drawn are too big)."""
        fitting = self._fitting_formats(knob, params)
        if not fitting:
            return self._ordered(knob)[0]
        return fitting[min(int(min(max(share, 0.0), 1.0) * len(fitting)), len(fitting) - 1)]

    def _fitting_formats(self, knob: str, params: Mapping[str, Any], own: Any = None) -> list[str]:
        """The formats of layer group `knob` that fit beside `params`, from the fewest bytes up: with every later
        group at its cheapest format, and the hot fraction (where drawn after them) and the cache size each at
        the end where counted bytes are least (`largest_index`; a hot set in a format cheaper than the layers'
        saves bytes). `own` (a warm-start point's format, whose whole configuration fits) counts as fitting."""
        late = list(self.fills)
        later = {k: self._ordered(k)[0] for k in late[late.index(knob) + 1:] if k.startswith("fmt_g")}
        hot = self.knobs["hot_fraction"].values()
        hots = [{"hot_fraction": h} for h in {min(hot), max(hot)}] if "hot_fraction" in self.fills else [{}]
        sizes = {self.values[0], self.values[-1]}
        base = {**params, **later}
        return [f for f in self._ordered(knob) if f == own or any(
            self.fits({**base, **h, knob: f, self.size: s}) for h in hots for s in sizes)]

    def _fitting(self, knob: str, params: Mapping[str, Any]) -> Callable[[int], bool]:
        """Whether the i-th value of `knob` fits beside `params`: the cache size as it is; a hot fraction with the
        smallest or the largest cache, where counted bytes are least (`largest_index`)."""
        values = self._ordered(knob)
        if knob == self.size:
            return lambda i: self.fits({**params, knob: values[i]})
        ends = {self.values[0], self.values[-1]}
        return lambda i: any(self.fits({**params, knob: values[i], self.size: s}) for s in ends)

    def uniform_plans(self) -> list[dict[str, Any]]:
        """Precision-knob settings of each format in every layer group, without a hot set."""
        fmt_knobs = [k for k in self.knobs if k.startswith("fmt_g")]
        base = {n: min(self.knobs[n].values()) if n == "hot_fraction" else self.knobs[n].values()[0]
                for n in PLAN_KNOBS if n in self.knobs}
        return self._distinct([{**{k: f for k in fmt_knobs}, **base} for f in self.space.formats.values()])

    def plans(self, max_plans: int) -> list[dict[str, Any]]:
        """Precision-knob settings, one per distinct plan, uniform ones first: every plan when the space has at
        most `max_plans`, else the uniform ones."""
        names = [k for k in self.knobs if k.startswith("fmt_g")] + [k for k in PLAN_KNOBS if k in self.knobs]
        combos = [dict(zip(names, c, strict=True)) for c in itertools.product(*(self.knobs[n].values() for n in names))]
        uniform = self.uniform_plans()
        return self._distinct(uniform + combos) if len(combos) <= max_plans else uniform

    def _distinct(self, settings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One settings dict per distinct plan (a hot set in the layers' own format is no hot set)."""
        out, seen = [], set()
        for c in settings:
            plan = build_config(self.space, {**self.defaults(), **c}, self.shape, None).plan.fingerprint
            if plan not in seen:
                seen.add(plan)
                out.append(c)
        return out

    def defaults(self) -> dict[str, Any]:
        """Every knob at its first value (ranges at their low end); the size at its largest."""
        d = {n: dom.values()[0] for n, dom in self.knobs.items()}
        d[self.size] = self.values[-1]
        return d

    def warm_start(self, max_plans: int = 8, limit: int = 24) -> list[dict[str, Any]]:
        """The analytically strongest configurations as Optuna parameters (to enqueue), for each choice of a
        `WARM_AXES` knob: for each plan (see `plans`) the most cache that fits - more slots only cut transfers -
        then each uniform format at the smallest cache, the other end of the memory objective (measured: the
        front's low-memory end is otherwise found late). Other knobs at their first choice; plans that cannot
        fit even the smallest cache are left out. `limit` cuts most-cache points only: every smallest-cache one
        is kept (the `default` and `dllm` spaces: 3 formats x 3 miss policies at each end, 18 in all)."""
        ends = [(p, 1.0) for p in self.plans(max_plans)] + [(p, 0.0) for p in self.uniform_plans()]
        most: list[dict[str, Any]] = []
        least: list[dict[str, Any]] = []
        configs: set[str] = set()
        for plan, fill in ends:  # per plan, every choice of the axes, so a `limit` cuts plans, not a whole axis
            for combo in self._axis_choices():
                params = {**self.defaults(), **plan, **combo}
                params[self.size] = self.within(self.size, params, fill)
                key = repr(sorted(params.items()))
                if key not in configs and self.fits(params):  # a plan whose largest cache is its smallest: once
                    configs.add(key)
                    (least if fill == 0.0 else most).append(self.point(params, fill))
        return most[: max(0, limit - len(least))] + least

    def point(self, params: dict[str, Any], fill: float) -> dict[str, Any]:
        """The Optuna parameters that draw `params`, a configuration that fits (its size being the one `fill`
        selects; its hot fraction the one its `share` selects)."""
        point = {n: v for n, v in params.items() if self.knobs[n].fixed is None}
        for knob, param in self.fills.items():
            point[param] = fill if knob == self.size else self.share(knob, params)
            del point[knob]
        return point


def holds_blind_hot_draws(drawn: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a study's trials (their Optuna parameters `drawn`) drew `hot_fraction` itself: under a budget, a
    study begun before the hot fraction was drawn within it as `hot_fill`. Such a study goes on drawing it so
    (`BudgetFit` with fill_hot False): a sampler models each parameter from the trials that hold it, and the
    warm-start points it holds, under `hot_fraction`, would otherwise be queued again under `hot_fill`."""
    return any("hot_fraction" in p for p in drawn)


def holds_blind_format_draws(drawn: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a study's trials (their Optuna parameters `drawn`) drew the layer groups' formats `fmt_g*`
    themselves: under a budget, a study begun before two or more of them were drawn in turn within it, as
    `fmt_fill_g*`. Such a study goes on drawing them so (`BudgetFit` with fill_formats False), for the reasons
    `holds_blind_hot_draws` gives."""
    return any(k.startswith("fmt_g") for p in drawn for k in p)


def largest_index(n: int, fits: Callable[[int], bool]) -> int | None:
    """The largest i in [0, n) with `fits(i)`, None when none does: the largest size when it fits, else a binary
    search (a dozen counts on a 256-expert model). Counted bytes grow with the size and may fall again towards the
    largest, never rise twice: an offloaded model's staging buffers - prefetch stages up to min(slots, experts
    without a slot) per layer, and copied misses of a hot/cold plan stream the large hot experts while slots add
    small cold ones - shrink as slots are added. Every expert on the GPU then fits where half of them does not
    (int4 with prev_step: 16 slots per layer fitted a budget that the search gave 6), so the sizes that fit are
    some smallest ones and some largest ones."""
    if n <= 0:
        return None
    if fits(n - 1):
        return n - 1
    if not fits(0):
        return None
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def uniform_slots(shape: ModelShape, fmt: str, budget: int, miss: str = "copy", prefetch: str = "none") -> int:
    """The most slots per MoE layer, every expert in `fmt`, whose counted peak (`uniform_peak_bytes`: resident
    weights, slots and, offloaded, staging and activations) fits `budget` - the largest cache a study at that
    budget accepts for the plan (`BudgetFit.largest`, same count, same search); 0 when not even one slot fits."""
    i = largest_index(max(shape.num_experts, default=0),
                      lambda i: uniform_peak_bytes(shape, fmt, i + 1, prefetch, miss) <= budget)
    return 0 if i is None else i + 1


def smallest_cache(space: SearchSpace, shape: ModelShape) -> tuple[int, ...]:
    """Slots per MoE layer of `space`'s smallest cache: its first cache size - one slot per layer in the shipped
    spaces, more where a file's sizes begin higher - an expert budget split equally (`allocate_slots`)."""
    first = int(space.knobs(shape.n_layers, shape.min_experts)[space.size_knob].values()[0])
    if space.size_knob == "slots":
        return tuple(min(first, e) for e in shape.num_experts)
    return tuple(allocate_slots(first, shape, "uniform", None))


def least_uniform_peak(shape: ModelShape, fmt: str, misses: Sequence[str] = ("cpu",),
                       prefetches: Sequence[str] = ("none",), slots: int | Sequence[int] = 1) -> tuple[int, str]:
    """(counted peak, what it counts) of the least configuration of `fmt` experts that a space with these miss
    policies, prefetch settings and smallest cache (`slots` per MoE layer, `smallest_cache`; one slot per layer,
    the least any space holds, by default - only a --budgets baseline keeps none) holds, at the setting that counts
    least (`uniform_peak_bytes`). Misses computed on the CPU stage nothing on an offloaded model; copied (or
    hybrid) ones stage a layer's streamed experts, so a space without "cpu" needs more. Above a budget, no
    configuration of the format fits it: `advisor tune` leaves the format out (and names a --budgets value that no
    format fits), `advisor inspect --budget` says what one slot needs (any space: CPU misses), `advisor report`
    says so in its row (the study's own space)."""
    peak, miss, prefetch = min((uniform_peak_bytes(shape, fmt, slots, p, m), m, p) for m in misses for p in prefetches)
    staged = shape.staging  # a resident model stages nothing, whatever the miss policy
    per_layer = set(layer_slots(shape, slots))
    cache = (f"one {fmt} expert per MoE layer" if per_layer == {1} else
             f"{per_layer.pop()} {fmt} experts per MoE layer" if len(per_layer) == 1 else
             f"{min(per_layer)} to {max(per_layer)} {fmt} experts per MoE layer")
    what = ["the resident weights", *["the activation allowance"] * staged, cache,
            *[f"the staging buffers of its {'copied' if miss == 'copy' else miss} misses"] * (staged and miss != "cpu"),
            *[f"what {prefetch} prefetch stages"] * (staged and prefetch != "none")]
    text = ", ".join(what[:-1]) + f" and {what[-1]}"
    return peak, text + (", misses computed on the CPU" if staged and miss == "cpu" else "")


def space_least_peak(space: SearchSpace, shape: ModelShape) -> tuple[int, str]:
    """(counted peak, what it counts) of `space`'s least configuration on the model as it runs (`shape`: an
    offloaded one's activation allowance and staging counted): the least `least_uniform_peak` of its formats, with
    its smallest cache and its miss and prefetch choices. No budget below it holds anything of the space."""
    choices = tuple(map(str, space.miss.values())), tuple(map(str, space.prefetch.values()))
    return min(least_uniform_peak(shape, str(f), *choices, smallest_cache(space, shape))
               for f in space.formats.values())


def study_budget(budget_bytes: int | None, note: str, budgets: Sequence[str], space: SearchSpace,
                 shape: ModelShape) -> tuple[int | None, str]:
    """(bytes, where they come from) of the study's budget once the model's `shape` is known: the given one, else
    the largest of --budgets, else the space's share of the model (`default_budget`), else none."""
    if budget_bytes is None and budgets:
        return int(max(budget_memory(b, shape)[0] for b in budgets)), "the largest of --budgets"
    if budget_bytes is None and space.budget_fraction:
        return default_budget(space, shape)
    return budget_bytes, note


def default_budget(space: SearchSpace, shape: ModelShape) -> tuple[int, str]:
    """(bytes, where they come from) of a study's budget when none is given: the space's `budget_fraction` of the
    model's counted bytes - or, where that cannot hold the space's least configuration as the model runs, the same
    share of the way from that least configuration to the whole model. Offloaded, a small model's activation
    allowance and staging buffers come on top of its weights: a saved tiny Qwen3-MoE (93.38 KiB counted) got 56.02
    KiB, which its least configuration (64.45 KiB) is over, and `advisor tune DIR --space quick` refused the budget
    it had chosen itself, where the same model as `tiny:qwen3_moe` (built in memory, never offloaded) ran. Where
    even that least configuration is the whole model or more, the share stands and the study's refusal says what
    the least needs."""
    frac, whole = float(space.budget_fraction or 0.0), shape.full_bytes()
    share = int(frac * whole)
    least, _ = space_least_peak(space, shape)
    if least <= share or least >= whole:
        return share, f"{frac:g} x the model's counted bytes, {space.name} space default"  # shown in brackets
    return int(least + frac * (whole - least)), (
        f"{space.name} space default: {frac:g} of the way from its least configuration as the model runs, "
        f"{format_bytes(least, 2)}, to the model's counted {format_bytes(whole, 2)}; {frac:g} x the model's, "
        f"{format_bytes(share, 2)}, cannot hold that configuration")


def memory_spec(spec: str, option: str = "--memory") -> float | int:
    """One GPU budget (`advisor report --memory`, `advisor tune --budgets`) checked before any model loads: a
    share in (0, 1] ("25%": of the FP16 expert bytes, beside the resident weights), or a size in bytes. A zero in
    any unit, or none, is refused as `--budget 0` is (`is_zero_size`), not as no share or a size short of bytes."""
    from advisor.hardware.profiles import is_zero_size, parse_budget

    spec = spec.strip()
    if is_zero_size(spec):
        raise UserError(f"{option} {spec!r} must be positive")
    if not spec.endswith("%"):
        try:
            return parse_budget(spec, f"{option} ")  # named as --budget's are: "--budgets 'abc' is not a size"
        except UserError as e:  # and the shares it also takes
            raise UserError(f"{e}; or a share such as 25% (of the FP16 expert bytes, beside the resident "
                            "weights)") from e
    number = decimal(spec[:-1])  # the number syntax of a size ('1e-3%' is no more a share than '1e3KB' a size)
    if number is None:
        raise UserError(f"{option} {spec!r} is not a share; give a decimal number of percent, e.g. 25% or 12.5%")
    share = number / 100
    if not 0 < share <= 1:
        raise UserError(f"{option} {spec!r}: a share must be between 0% and 100%, e.g. 25%")
    return share


def budget_key(spec: str) -> tuple[bool, float] | str:
    """A budget spelling as the budget it names (`memory_spec`'s value, and whether it is a share), so that two
    spellings of one budget ("90.5KiB", "90.5 KiB"; "25%", "25.0%") compare equal wherever budgets are matched
    (`memory_specs`, a study's stored `--budgets` baselines against `report --memory`). A share and a size stay
    apart: a share's bytes depend on the model. A value that is no budget (no-cache's "-") is its own key. A
    lowercase-b spelling a study stored before such units were refused as bits ("12Gb") is the bytes it was then
    (`stored_spelling`)."""
    spec = stored_spelling(spec)
    try:
        value = memory_spec(spec)
    except UserError:
        return spec
    return spec.endswith("%"), float(value)


def stored_spelling(spec: str) -> str:
    """A budget a study stored, spelled as `memory_spec` takes it today: a lowercase-b unit stored before such units
    were refused as bits ("12Gb", then read as 12 GB) with a B ("12GB"), so the resume a refusal tells the user to
    run is not refused in turn; any other as stored (stripped)."""
    spec = spec.strip()
    for spelling in (spec, f"{spec[:-1]}B") if spec.endswith("b") else (spec,):
        try:
            memory_spec(spelling)
        except UserError:
            continue
        return spelling
    return spec


def memory_specs(spec: str | None, option: str) -> tuple[str, ...]:
    """The comma-separated budgets of `option` (None: not given), each checked by `memory_spec`, as the user spelled
    them; a budget given twice (`budget_key`: "90.5KiB,90.5 KiB") is kept once. Given but empty is refused:
    `--budgets "$B"` with B unset ran a whole study without them, without a word."""
    if spec is None:
        return ()
    given = [s.strip() for s in spec.split(",") if s.strip()]
    if not given:
        raise UserError(f"{option} {spec!r} names no budget; give e.g. {option} 10%,25%,50%, or leave it out")
    for s in given:
        memory_spec(s, option)
    first: dict[tuple[bool, float] | str, str] = {}
    for s in given:
        first.setdefault(budget_key(s), s)
    return tuple(first.values())


def budget_memory(spec: str, shape: Any) -> tuple[float, str]:
    """GPU memory of one `--memory` value: a size ("1.5MiB"), or "25%" = the resident (non-expert) weights plus
    that share of every routed expert at FP16 - the budgets real offloading runs under."""
    value = memory_spec(spec)
    if isinstance(value, int):
        return float(value), f"{spec.strip()}, given with --memory"
    experts = sum(n * shape.expert_bytes(layer, "fp16") for layer, n in enumerate(shape.num_experts))
    return shape.resident_bytes + value * experts, f"resident weights + {spec.strip()} of the FP16 expert bytes"
