"""Hardware profiles: how much GPU memory there is and how fast experts cross the host link.

Used by read-only commands (`recommend`, `export`), so this module never imports torch; measuring a
profile lives in `advisor.hardware.measure`.

Catalogue figures are nominal, not measured: memory as sold, pinned host-to-device bandwidth from the
host-link generation (PCIe 3.0 x16 ~12 GB/s, 4.0 ~25, 5.0 ~50; an x8 link half that), pageable about half
of pinned, ~10 us per copy; and, for the device side of the time model (`NominalDevice`, priced by
`advisor.offload.timing.device_roofline`), device memory bandwidth and dense bf16 tensor TFLOP/s from vendor
spec sheets - without sparsity and with FP32 accumulate, the rate a PyTorch bf16 matmul gets (half the
advertised FP16-accumulate rate on GeForce cards; fp16 on T4/V100, which lack bf16). Their `source` says
"catalogue (nominal)". A profile measured with `advisor profile` is stored as JSON under a profiles
directory and wins over the catalogue entry of the same GPU.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import platform
import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.errors import UserError
from advisor.files import check_folder, home_path, write_atomic
from advisor.parsing import loads_json
from advisor.units import DECIMAL, budget_text, format_bytes  # noqa: F401 - defined in a leaf module; budgets are read with it here

GiB = 1 << 30
DEFAULT_PROFILES_DIR = Path("studies/profiles")
PROFILES_DIR_ENV = "ADVISOR_PROFILES_DIR"

CATALOGUE_SOURCE = "catalogue (nominal)"


@dataclass(frozen=True)
class HardwareProfile:
    """Memory and host-link speed of one device; enough to model the time of expert copies."""

    name: str
    memory_bytes: int  # 0 = not specified (e.g. the default modelling profile)
    h2d_gbps_pinned: float  # GB/s (1e9 bytes per second), host->device from pinned memory
    h2d_gbps_pageable: float
    copy_latency_us: float  # fixed cost per copy (launch + DMA setup)
    source: str  # "catalogue (nominal)" | "measured:<date>" | "assumption:..." | "measured-cpu:<date>"
    link: str = ""  # e.g. "PCIe 4.0 x16"
    free_bytes: int | None = None  # free device memory when measured (other processes hold the rest)
    cpu_experts: dict[str, Any] | None = None  # this host's measured CPU expert times (advisor.offload.timing)
    device: str | None = None  # the measured device's own name when stored under another (`advisor profile --name`)

    @property
    def host_only(self) -> bool:
        """Measured by `advisor profile --cpu` (a host memcpy, no GPU): its memory is the host's RAM, no GPU
        budget - `--gpu` of it prices the link and CPU experts, and the budget comes from elsewhere."""
        return self.source.startswith("measured-cpu")

    @property
    def gpu_memory_bytes(self) -> int:
        """The memory `--gpu` budgets without `--budget`: 0 where unknown or where there is no GPU (`host_only`)."""
        return 0 if self.host_only else self.memory_bytes

    @property
    def tag(self) -> str:
        """The short form quoted as a metric source, e.g. `pcie(bw=25.0GB/s,lat=10us)`; a `host_only` profile's
        figures are a host memory copy, not a host-to-device link, and say so: `host-copy(bw=2.8GB/s,...)`."""
        link = "host-copy" if self.host_only else "pcie"
        return f"{link}(bw={self.h2d_gbps_pinned:.1f}GB/s,lat={self.copy_latency_us:g}us)"

    def transfer_ms(self, nbytes: float, copies: float = 1.0, pinned: bool = True) -> float:
        """Modelled time of `copies` copies moving `nbytes` in total: bytes / bandwidth + latency per copy.
        The project's one transfer-time formula (simulator, runtime on CPU, objective, recommend, report)."""
        gbps = self.h2d_gbps_pinned if pinned else self.h2d_gbps_pageable
        return nbytes / (gbps * 1e9) * 1e3 + copies * self.copy_latency_us / 1e3

    @property
    def transfer_source(self) -> str:
        """The label of a time from `transfer_ms`, e.g. `modelled:pcie(bw=25.0GB/s,lat=10us)`."""
        return f"modelled:{self.tag}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> HardwareProfile:
        """A stored profile, checked field by field: a damaged or hand-edited one (a bandwidth of 0 or "fast", a
        negative latency, a CPU time table without points) is refused in one line, not divided by later."""
        if not isinstance(d, dict):
            raise UserError("hardware profile is not a JSON object; re-create it with `advisor profile`")
        fields = {f.name for f in dataclasses.fields(HardwareProfile)}
        missing = {"name", "memory_bytes", "h2d_gbps_pinned", "h2d_gbps_pageable", "copy_latency_us", "source"} - set(d)
        if missing:
            raise UserError(f"hardware profile lacks {sorted(missing)}; re-create it with `advisor profile`")
        problems = [f"'{k}' is not a string" for k in ("name", "source", "link") if not isinstance(d.get(k, ""), str)]
        if d.get("device") is not None and not isinstance(d["device"], str):
            problems.append("'device' is not a string")
        problems += [f"'{k}' is not a positive number" for k in ("h2d_gbps_pinned", "h2d_gbps_pageable")
                     if not _number(d[k]) or d[k] <= 0]
        problems += [f"'{k}' is not a number >= 0" for k in ("memory_bytes", "copy_latency_us")
                     if not _number(d[k]) or d[k] < 0]
        if d.get("free_bytes") is not None and (not _number(d["free_bytes"]) or d["free_bytes"] < 0):
            problems.append("'free_bytes' is not a number >= 0")
        if d.get("cpu_experts") is not None and not _cpu_experts_ok(d["cpu_experts"]):
            problems.append("'cpu_experts' is not a table of CPU expert times as `advisor profile --model` writes")
        if problems:
            raise UserError(f"hardware profile {d.get('name')!r}: {'; '.join(problems)}; re-create it with "
                            "`advisor profile`")
        return HardwareProfile(**{k: v for k, v in d.items() if k in fields})


def _number(x: Any) -> bool:
    return type(x) in (int, float) and x == x and x not in (float("inf"), float("-inf"))


def _cpu_experts_ok(c: Any) -> bool:
    """`{"table": {"HxI": {format: [[tokens, ms], ...]}}, "threads": N, "source": "..."}` with bf16 in every
    shape and at least two points per format, tokens increasing (what the time model interpolates)."""
    if not isinstance(c, dict) or not isinstance(c.get("source"), str) or type(c.get("threads")) is not int:
        return False
    table = c.get("table")
    if c["threads"] < 1 or not isinstance(table, dict) or not table:
        return False
    for key, row in table.items():
        if not re.fullmatch(r"[1-9]\d*x[1-9]\d*", str(key)) or not isinstance(row, dict) or "bf16" not in row:
            return False
        for pts in row.values():
            if not isinstance(pts, list) or len(pts) < 2 or not all(
                    isinstance(p, list) and len(p) == 2 and _number(p[0]) and _number(p[1]) and p[0] > 0 and p[1] >= 0
                    for p in pts):
                return False
            if any(a[0] >= b[0] for a, b in zip(pts, pts[1:], strict=False)):
                return False
    return True


# host link -> nominal pinned GB/s (pageable is taken as half)
LINKS: dict[str, float] = {
    "PCIe 3.0 x16": 12.0,
    "PCIe 4.0 x8": 12.5,
    "PCIe 4.0 x16": 25.0,
    "PCIe 5.0 x8": 25.0,
    "PCIe 5.0 x16": 50.0,
}
NOMINAL_COPY_LATENCY_US = 10.0

DEFAULT_PROFILE = HardwareProfile(
    name="default PCIe 4.0 x16 link",
    memory_bytes=0,
    h2d_gbps_pinned=25.0,
    h2d_gbps_pageable=12.5,
    copy_latency_us=NOMINAL_COPY_LATENCY_US,
    source="assumption:PCIe 4.0 x16 nominal",
    link="PCIe 4.0 x16",
)
"""The modelling assumption for transfer times measured without a GPU (quote `DEFAULT_PROFILE.tag`)."""

# (name as sold, memory GiB, host link, device memory GB/s, dense bf16 tensor TFLOP/s).
# Memory is the marketed size, read as GiB. TFLOP/s: vendor spec sheets and architecture whitepapers, without
# sparsity, with FP32 accumulate (what a PyTorch bf16 matmul runs): GeForce parts run it at half their
# FP16-accumulate rate (RTX 4090: 165.2, not the 330.3 of FP16 accumulate); workstation and data-centre parts
# at full rate. GeForce rows are SMs x boost clock x 512 FLOP per clock, which gives NVIDIA's printed 71 (3090),
# 165.2 (4090) and 209.5 (5090) and matches each card's advertised AI TOPS (FP8 sparse / 8 on Ada, FP4 / 16 on
# Blackwell).
_CATALOGUE: list[tuple[str, float, str, float, float]] = [
    # the 8GB card (128-bit, 240 GB/s) and the 12GB one (192-bit) are both "NVIDIA GeForce RTX 3060" to nvidia-smi:
    # 'RTX 3060' alone is ambiguous, as 'RTX 4060 Ti' is, not silently the 12GB card
    ("RTX 3060", 8, "PCIe 4.0 x16", 240, 25.5),
    ("RTX 3060", 12, "PCIe 4.0 x16", 360, 25.5),
    ("RTX 3060 Ti", 8, "PCIe 4.0 x16", 448, 32.4),
    ("RTX 3070", 8, "PCIe 4.0 x16", 448, 40.6),
    ("RTX 3080", 10, "PCIe 4.0 x16", 760, 59.5),
    ("RTX 3080", 12, "PCIe 4.0 x16", 912, 61.3),
    ("RTX 3080 Ti", 12, "PCIe 4.0 x16", 912, 68.2),
    ("RTX 3090", 24, "PCIe 4.0 x16", 936, 71.2),
    ("RTX 3090 Ti", 24, "PCIe 4.0 x16", 1008, 80.0),
    ("RTX 4060", 8, "PCIe 4.0 x8", 272, 30.2),
    ("RTX 4060 Ti", 8, "PCIe 4.0 x8", 288, 44.1),
    ("RTX 4060 Ti", 16, "PCIe 4.0 x8", 288, 44.1),
    ("RTX 4070", 12, "PCIe 4.0 x16", 504, 58.3),
    ("RTX 4070 Super", 12, "PCIe 4.0 x16", 504, 71.0),
    ("RTX 4070 Ti", 12, "PCIe 4.0 x16", 504, 80.2),
    ("RTX 4070 Ti Super", 16, "PCIe 4.0 x16", 672, 88.2),
    ("RTX 4080", 16, "PCIe 4.0 x16", 716.8, 97.5),
    ("RTX 4080 Super", 16, "PCIe 4.0 x16", 736, 104.4),
    ("RTX 4090", 24, "PCIe 4.0 x16", 1008, 165.2),
    ("RTX 5060 Ti", 8, "PCIe 5.0 x8", 448, 47.4),
    ("RTX 5060 Ti", 16, "PCIe 5.0 x8", 448, 47.4),
    ("RTX 5070", 12, "PCIe 5.0 x16", 672, 61.7),
    ("RTX 5070 Ti", 16, "PCIe 5.0 x16", 896, 87.9),
    ("RTX 5080", 16, "PCIe 5.0 x16", 960, 112.6),
    ("RTX 5090", 32, "PCIe 5.0 x16", 1792, 209.5),
    ("RTX A6000", 48, "PCIe 4.0 x16", 768, 154.8),
    ("RTX 6000 Ada", 48, "PCIe 4.0 x16", 960, 364.2),
    # NVIDIA prints only 4000 AI TOPS (FP4, sparse); 503.8 assumes the full-rate FP32 accumulate of earlier
    # workstation parts (188 SMs x 2.617 GHz x 1024): unsure
    ("RTX PRO 6000 Blackwell", 96, "PCIe 5.0 x16", 1792, 503.8),
    ("T4", 16, "PCIe 3.0 x16", 320, 65),  # fp16: Turing has no bf16 tensor cores (`_FP16_ONLY`)
    ("V100", 16, "PCIe 3.0 x16", 900, 112),  # fp16, V100 PCIe; Volta has no bf16
    ("V100", 32, "PCIe 3.0 x16", 900, 112),
    ("V100 SXM", 16, "PCIe 3.0 x16", 900, 125),  # nvidia-smi: "Tesla V100-SXM2-16GB"
    ("V100 SXM", 32, "PCIe 3.0 x16", 900, 125),
    ("V100S", 32, "PCIe 3.0 x16", 1134, 130),  # nvidia-smi: "Tesla V100S-PCIE-32GB"
    ("A10", 24, "PCIe 4.0 x16", 600, 125),
    # AWS's variant of the A10, no NVIDIA spec sheet: 80 SMs x 1.71 GHz at the GeForce rate (commonly quoted 70)
    ("A10G", 24, "PCIe 4.0 x16", 600, 70),
    ("A40", 48, "PCIe 4.0 x16", 696, 149.7),
    ("L4", 24, "PCIe 4.0 x16", 300, 121),
    ("L40S", 48, "PCIe 4.0 x16", 864, 362),
    # A100/H100 without a form factor are the PCIe cards; SXM boards and NVL cards have rows of their own,
    # with the host link of the board (PCIe 4.0 x16 on A100 SXM4, 5.0 x16 on H100 SXM5, H100 NVL and H200): `_form`
    ("A100", 40, "PCIe 4.0 x16", 1555, 312),
    ("A100", 80, "PCIe 4.0 x16", 1935, 312),
    ("A100 SXM", 40, "PCIe 4.0 x16", 1555, 312),
    ("A100 SXM", 80, "PCIe 4.0 x16", 2039, 312),
    ("H100", 80, "PCIe 5.0 x16", 2000, 756),
    ("H100 SXM", 80, "PCIe 5.0 x16", 3350, 989),
    # NVIDIA's H100 datasheet, NVL column: 94 GB HBM3, 3.9 TB/s, PCIe Gen5, BF16 1,671 TFLOPS with sparsity;
    # nvidia-smi says "NVIDIA H100 NVL"
    ("H100 NVL", 94, "PCIe 5.0 x16", 3900, 835),
    ("H200", 141, "PCIe 5.0 x16", 4800, 989),  # SXM: nvidia-smi says "NVIDIA H200"
    ("H200 NVL", 141, "PCIe 5.0 x16", 4800, 835),
]
_FP16_ONLY = ("T4", "V100", "V100 SXM", "V100S")
"""GPUs whose tensor cores have no bf16: their figure is fp16 (bf16 there runs far slower, not modelled)."""


def _catalogue_profile(name: str, mem_gib: float, link: str) -> HardwareProfile:
    bw = LINKS[link]
    return HardwareProfile(
        name=f"{name} {mem_gib:g}GB",
        memory_bytes=int(mem_gib * GiB),
        h2d_gbps_pinned=bw,
        h2d_gbps_pageable=bw / 2,
        copy_latency_us=NOMINAL_COPY_LATENCY_US,
        source=CATALOGUE_SOURCE,
        link=link,
    )


CATALOGUE: list[HardwareProfile] = [_catalogue_profile(name, mem, link) for name, mem, link, *_ in _CATALOGUE]


@dataclass(frozen=True)
class NominalDevice:
    """A catalogue GPU's nominal device figures: what a roofline of its expert compute needs."""

    gpu: str  # the catalogue entry, e.g. "RTX 4090 24GB"
    mem_gbps: float  # device memory bandwidth, GB/s
    tflops: float  # dense tensor TFLOP/s at `dtype`, FP32 accumulate, no sparsity
    dtype: str  # "bf16", or "fp16" on GPUs without bf16 tensor cores


NOMINAL: dict[str, NominalDevice] = {
    p.name: NominalDevice(p.name, float(bw), float(tf), "fp16" if name in _FP16_ONLY else "bf16")
    for p, (name, _mem, _link, bw, tf) in zip(CATALOGUE, _CATALOGUE, strict=True)
}

# words that vendors and nvidia-smi add but that do not tell GPUs apart ("NVIDIA RTX 6000 Ada Generation",
# "NVIDIA RTX PRO 6000 Blackwell Workstation Edition" / "Server Edition" as CUDA names them; a Max-Q card keeps
# its "maxq" and matches no row)
_NOISE = re.compile(r"\b(nvidia|geforce|tesla|quadro|rtx|pcie|sxm\d?|hbm\d?e?|nvl|graphics|generation|workstation|"
                    r"server|edition)\b")
_PREFIXES = ("nvidia", "geforce", "tesla", "quadro", "rtx")
_MEM = re.compile(r"(?<![a-z0-9.])([0-9]+(?:\.[0-9]+)?)\s*(?:gb|gib|g)\b")
# form factors with figures of their own; HBM3 is how nvidia-smi names the H100 SXM5 ("NVIDIA H100 80GB HBM3")
_FORMS = (("sxm", re.compile(r"\b(sxm\d?|hbm3)\b")), ("nvl", re.compile(r"\bnvl\b")))


# what separates the words of a GPU name and is dropped from its key: white space (any), - _ . , / ( ), and
# the dashes a copied name may carry (en dash, ...); anything else besides ASCII letters and digits stays in it
_SEPARATORS = re.compile(r"[\s\-_.,/()]+")
# the marks of a vendor's product name as its web pages print it ("NVIDIA® GeForce RTX™ 4090"): read as a space,
# before NFKC, which would spell "™" as "tm" ("rtxtm", no GPU's key)
_MARKS = re.compile("[\u00a9\u00ae\u2120\u2122]")


def _plain(name: str) -> str:
    """`name` lower-cased in its compatibility form (NFKC: full-width "Ｈ１００" is "h100", a no-break space a
    space; the marks ™ ® © ℠ a space, `_MARKS`) with every dash a "-", then "-" and "_" as spaces."""
    s = unicodedata.normalize("NFKC", _MARKS.sub(" ", name)).lower()
    s = "".join("-" if unicodedata.category(c) == "Pd" else c for c in s)
    return s.replace("-", " ").replace("_", " ")


def _unknown_characters(name: str) -> str:
    """The characters of `name` that no GPU name is spelled with (not ASCII letters, digits or `_SEPARATORS`)."""
    return "".join(dict.fromkeys(c for c in _SEPARATORS.sub("", _plain(name)) if not (c.isascii() and c.isalnum())))


def _form(name: str) -> str:
    """"sxm", "nvl", or "" (PCIe, or not said): 'NVIDIA A100-SXM4-80GB' -> 'sxm'."""
    s = _plain(name)
    return next((form for form, pattern in _FORMS if pattern.search(s)), "")


def _split(name: str) -> tuple[str, float | None]:
    """(model key, memory GiB or None): 'NVIDIA A100-SXM4-80GB' -> ('a100', 80.0). Only separators are dropped
    (`_SEPARATORS`): a character no GPU name has stays in the key, so 'H100é' is not the H100 (it was: every
    character but a-z and 0-9 was dropped), while a measured profile named with it still matches its name."""
    s = _plain(name)
    mem = None
    m = _MEM.search(s)
    if m:
        mem = float(m.group(1))
        s = s[: m.start()] + " " + s[m.end() :]
    s = _SEPARATORS.sub("", _NOISE.sub(" ", s))
    stripped = True
    while stripped:  # glued prefixes, as in "rtx4090"
        stripped = False
        for prefix in _PREFIXES:
            if s.startswith(prefix) and len(s) > len(prefix):
                s, stripped = s[len(prefix) :], True
    return s, mem


CPUINFO = "/proc/cpuinfo"


def cpuinfo_field(name: str) -> str | None:
    """The first `name` line's value in this host's CPUINFO ("model name", "flags"); None where it cannot be read
    (not Linux) or has no such line."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            return next((ln.partition(":")[2].strip() for ln in f if ln.split(":", 1)[0].strip() == name), None)
    except OSError:
        return None


def host_cpu() -> str:
    """This host's CPU as its CPU expert times depend on it: the model name and the logical cores. Stored with
    times `advisor profile` measures, so a study priced with another host's times says so."""
    model = cpuinfo_field("model name")
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def other_cpu(host: str | None) -> str:
    """" (measured on another CPU: X; this host: Y)" for CPU expert times measured on `host` when that is not
    this host's CPU; "" when it is, or when `host` was not recorded. Said wherever stored times are used.
    Times completed on another CPU record "A + B" (`CpuProfile.filled`): only the parts that are not this host
    are named, "partly" when one is this host (naming this host as "another CPU" was wrong)."""
    here = host_cpu()
    parts = list(dict.fromkeys(h for h in (host or "").split(" + ") if h))
    others = [h for h in parts if h != here]
    if not others:
        return ""
    return f" ({'partly ' if here in parts else ''}measured on another CPU: {' + '.join(others)}; this host: {here})"


def profiles_dir(path: str | os.PathLike | None = None) -> Path:
    """Where measured profiles live: the argument, else $ADVISOR_PROFILES_DIR (`env_profiles_dir`), else
    studies/profiles. A leading '~' in the variable is expanded as in every path option (`advisor.files.home_path`):
    quoted (`ADVISOR_PROFILES_DIR='~/p'`) the shell leaves it, and it named a directory '~' here."""
    if path is not None:
        return Path(path)
    return Path(home_path(env_profiles_dir() or DEFAULT_PROFILES_DIR))


def env_profiles_dir() -> str | None:
    """$ADVISOR_PROFILES_DIR, None where it is unset or empty: an empty directory variable means unset, as
    $ADVISOR_CACHE_DIR and the XDG directories are read (`ADVISOR_PROFILES_DIR=` read and wrote profiles in '.')."""
    return os.environ.get(PROFILES_DIR_ENV) or None


def profiles_dir_source(path: str | os.PathLike | None = None) -> tuple[str, bool]:
    """How the profiles directory was given, for a line that names it: `--profiles-dir`, `$ADVISOR_PROFILES_DIR`,
    or neither (True: the default, which the user did not type)."""
    if path is None and env_profiles_dir() is not None:
        return f"${PROFILES_DIR_ENV}", False
    return "--profiles-dir", path is None


def profile_path(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Where the measured profile named `name` is stored."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"
    return profiles_dir(directory) / f"{slug}.json"


def check_name_free(name: str, directory: str | os.PathLike | None = None) -> None:
    """`UserError` when the file the profile `name` is stored in (`profile_path`) holds a profile of another name:
    names that differ in more than case but share a file name ('my host', 'my/host') replaced each other without a
    word - the earlier profile gone, its CPU expert times carried into the new one. A file that cannot be read as a
    profile with a name is replaced, as before."""
    path = profile_path(name, directory)
    try:
        raw = loads_json(path.read_text()) if path.is_file() else None
    except (OSError, ValueError, UserError):
        return
    other = raw.get("name") if isinstance(raw, dict) else None
    if isinstance(other, str) and other.casefold() != name.casefold():
        raise UserError(f"profile {name!r} would be stored in {path}, which holds the profile {other!r} (names that "
                        f"differ only in punctuation or spaces share a file); store it under another --name, or "
                        f"delete {path} to replace it")


def catalogue_gpu(name: str) -> str | None:
    """The catalogue GPU `name` names by its model key, any memory ('rtx4090 48GB': 'RTX 4090 24GB'), else None."""
    return next((p.name for p in CATALOGUE if _split(p.name)[0] == _split(name)[0]), None)


def check_cpu_profile_name(name: str) -> None:
    """`UserError` for a host-memcpy profile (`advisor profile --cpu --name`) named as a catalogue GPU: stored, it
    won over that GPU's row (a measured profile does), so `--gpu 'RTX 4090'` got this host's memory copy as its
    "link" and the H200's device figures. One stored so before this refusal: `misnamed_cpu_profile`."""
    row = catalogue_gpu(name)
    if row:
        raise UserError(f"--name {name!r} is the catalogue GPU {row!r}; a --cpu profile (a host memory copy, no "
                        f"GPU) stored under it would replace that GPU's figures for `--gpu`; store it under another "
                        f"--name, e.g. 'cpu host'")


def cpu_profile_as_gpu(profile: HardwareProfile) -> str | None:
    """The catalogue GPU a `--cpu` profile is named as, as versions before `check_cpu_profile_name` stored one, else
    None. `--gpu` takes that GPU's catalogue row, not the profile: the user who measured the host under the card's
    name and then upgraded asks `--gpu` about the card, and got this host's memory copy as its link."""
    return catalogue_gpu(profile.name) if profile.host_only else None


def misnamed_cpu_profile(profile: HardwareProfile, directory: str | os.PathLike | None = None) -> str:
    """'' unless `profile` is a `--cpu` profile named as a catalogue GPU (`cpu_profile_as_gpu`): then the note
    `get_gpu` and `profile --list` say of it, naming its file and what to do with it."""
    row = cpu_profile_as_gpu(profile)
    if row is None:
        return ""
    return (f"{profile_path(profile.name, directory)} holds a --cpu profile (a host memory copy, no GPU) named "
            f"{profile.name!r} as the catalogue GPU {row!r} (an earlier version stored it so): --gpu takes the "
            f"catalogue row, not it; to keep it, rename it (set its \"name\" to e.g. 'cpu host' and the file to "
            f"cpu-host.json), else delete it")


def save_profile(profile: HardwareProfile, directory: str | os.PathLike | None = None) -> Path:
    """Store a measured profile as JSON (atomically: temp file then rename); never over a profile of another name
    (`check_name_free`)."""
    check_name_free(profile.name, directory)
    return write_atomic(profile_path(profile.name, directory), json.dumps(profile.to_dict(), indent=2) + "\n")


def load_profiles(directory: str | os.PathLike | None = None) -> list[HardwareProfile]:
    """Measured profiles found in the profiles directory (none if it does not exist); a broken file is refused."""
    good, broken = read_profiles(directory)
    if broken:
        raise broken[0][2]
    return good


def read_profiles(directory: str | os.PathLike | None = None
                  ) -> tuple[list[HardwareProfile], list[tuple[Path, str, UserError]]]:
    """The good measured profiles, and each broken file as (path, the name it would hold, its one-line error):
    the name stored in it where it has one, else the file's stem - so a broken file blocks only its own GPU."""
    d = profiles_dir(directory)
    option, default = profiles_dir_source(directory)
    check_folder(d, option, default=default)  # a file there (a profile's own path given) is no empty folder
    if not d.is_dir():
        return [], []
    good, broken = [], []
    for p in sorted(q for q in d.glob("*.json") if not q.is_dir()):  # a directory named x.json holds no profile
        raw: Any = None
        try:
            raw = loads_json(p.read_text())
            good.append(HardwareProfile.from_dict(raw))
            continue
        except OSError as e:  # unreadable (permissions, a dangling link): one line, not a traceback
            err = UserError(f"cannot read hardware profile {p} ({e.strerror}); make it readable or delete it")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            err = UserError(f"hardware profile {p} is not valid JSON ({e}); delete it or run `advisor profile` again")
        except UserError as e:
            err = UserError(f"{p}: {e}; or delete it")
        name = raw.get("name") if isinstance(raw, dict) and isinstance(raw.get("name"), str) else p.stem
        broken.append((p, name, err))
    return good, broken


def _matches(query: str, profiles: list[HardwareProfile]) -> list[HardwareProfile]:
    key, mem = _split(query)
    hits = [p for p in profiles if _split(p.name)[0] == key]
    if mem is not None:
        hits = [p for p in hits if abs(p.memory_bytes / GiB - mem) <= max(1.0, 0.05 * mem)]
    # the query's form factor; else the GPU's row without one (the H200 row is the SXM part), else any
    form = _form(query)
    return [p for p in hits if _form(p.name) == form] or [p for p in hits if not _form(p.name)] or hits


def nominal_device(profile: HardwareProfile) -> NominalDevice | None:
    """The nominal figures of the GPU `profile` names: a catalogue entry's own; a measured profile's by its
    device name (the one it was measured on, also when stored under a custom `--name`), matched as `get_gpu`
    matches names (its measured memory picks between variants such as RTX 3080 10/12GB, its name's form factor
    between PCIe and SXM boards); None when no catalogue GPU matches (an uncatalogued GPU, a host-memcpy
    profile)."""
    hits = _matches(profile.device or profile.name, CATALOGUE)
    if not hits:
        return None
    return NOMINAL[min(hits, key=lambda p: abs(p.memory_bytes - profile.memory_bytes)).name]


DEFAULT_GPU = "H200 141GB"
"""The device priced when no GPU is named: the H200, the GPU whose link profile is recorded."""


def priced_device(profile: HardwareProfile | None) -> tuple[NominalDevice, str]:
    """The GPU whose nominal figures price device compute for `profile` (`advisor.offload.timing`), and its
    label: the profile's catalogue GPU; the H200 when none is named (None, or the default modelling profile)
    or the named one has no catalogue figures, and the label says which."""
    named = profile is not None and profile != DEFAULT_PROFILE
    dev = nominal_device(profile) if named else None
    if dev is None:
        return NOMINAL[DEFAULT_GPU], f"{DEFAULT_GPU} nominal, " + (
            f"no figures for {profile.name!r}" if named else "no GPU named")
    return dev, f"{dev.gpu} nominal" if profile.name == dev.gpu else f"{profile.name} as {dev.gpu} nominal"


def get_gpu(name: str, profiles_directory: str | os.PathLike | None = None, *,
            has_budget: bool = False) -> HardwareProfile:
    """The profile of a GPU named loosely ("4090", "rtx4090", "NVIDIA GeForce RTX 4090", "A100 80GB").

    A measured profile of the same GPU wins over the catalogue (not a `--cpu` one stored under a catalogue GPU's
    name: `cpu_profile_as_gpu`). An unknown or ambiguous name raises a
    UserError listing the close matches; it offers --budget only where the command has it (`has_budget`). The
    `advisor profile` commands it points to name `profiles_directory` where one was given (--profiles-dir): without
    it they list, and measure into, another folder than the one this GPU was looked for in.
    """
    folder = "" if profiles_directory is None else f" --profiles-dir {shlex.quote(str(profiles_directory))}"
    if not name or not name.strip():
        raise UserError(f"empty GPU name; use e.g. --gpu 'RTX 4090' (see `advisor profile --list{folder}`)")
    good, broken = read_profiles(profiles_directory)
    key = _split(name)[0]
    for _path, stored, err in broken:  # a broken profile of this GPU: its figures cannot be used nor skipped
        if _split(stored)[0] == key:
            raise err
    if broken:  # others' broken files do not block this GPU, but are said, wrapped at the terminal's width
        from rich.console import Console

        from advisor.terminal import print_wrapped

        print_wrapped(Console(stderr=True), f"note: skipped broken hardware profile(s) "
                                            f"{', '.join(str(p) for p, _, _ in broken)} (not {name!r}; `advisor "
                                            f"profile --list{folder}` says what is wrong)", 2)
    misnamed = [p for p in good if cpu_profile_as_gpu(p)]
    good = [p for p in good if p not in misnamed]
    measured = _matches(name, good)
    if measured:
        return measured[-1]
    hits = _matches(name, CATALOGUE)
    if len(hits) == 1:
        for p in _matches(name, misnamed):  # what it got before: said, with what to do with the stored file
            from rich.console import Console

            from advisor.terminal import print_wrapped

            print_wrapped(Console(stderr=True), f"note: {misnamed_cpu_profile(p, profiles_directory)}", 2)
        return hits[0]
    if len(hits) > 1:
        variants = ", ".join(p.name for p in hits)
        raise UserError(f"GPU {name!r} is ambiguous: {variants}; add the memory, e.g. {hits[-1].name!r}")
    keys: dict[str, list[str]] = {}  # every row of a key: H100, H100 SXM and H100 NVL are all "h100"
    for p in [*good, *CATALOGUE]:  # the measured profiles first: a typo in one's name offers it (once, where a
        names = keys.setdefault(_split(p.name)[0], [])  # profile is stored under a catalogue GPU's own name)
        if p.name not in names:
            names.append(p.name)
    close = [n for k in _close_keys(_split(name)[0], list(keys)) for n in keys[k]][:6]
    # not the whole catalogue (44 names) in one line; a profile measured into another folder is found there only
    where = profiles_dir(profiles_directory)
    hint = (f"close matches: {', '.join(close)}" if close else
            f"no catalogue GPU, and no profile measured in {where}, has that name")
    instead = "; or give the memory with --budget" if has_budget else ""
    odd = _unknown_characters(name)
    odd = f" (no GPU name has {', '.join(map(repr, odd))})" if odd else ""
    raise UserError(f"unknown GPU {name!r}{odd}; {hint} (all: `advisor profile --list{folder}`); or measure it "
                    f"with `advisor profile{folder}`{instead}")


def _close_keys(key: str, keys: list[str]) -> list[str]:
    """The keys close to `key` (a typo: '4909', 'h10o', '4o90'), among those whose letters are close to its letters
    too: on the digits alone 'mi300x' (a GPU the catalogue lacks) was close to the RTX 3090, 3080, 3070 and 3060.
    One letter more than a key's own after its leading letters ('4o90', '4090d' of the digits-only '4090') is a
    slip; a leading letter names another GPU ('p40', 'k80' are no RTX 4090 or 3080)."""
    def letters(k: str) -> str:
        return re.sub(r"[0-9]", "", k)

    def lead(k: str) -> str:
        return re.match(r"[^0-9]*", k).group()

    def alike(k: str) -> bool:
        typed, own = letters(key), letters(k)
        matcher = difflib.SequenceMatcher(None, typed, own)
        return matcher.ratio() >= 0.5 or (lead(key) == lead(k) and len(typed) == len(own) + 1
                                          and sum(b.size for b in matcher.get_matching_blocks()) == len(own))

    return difflib.get_close_matches(key, [k for k in keys if alike(k)], n=5, cutoff=0.5)


def check_budget_fits(profile: HardwareProfile | None, budget_bytes: int | None, given: str | None) -> None:
    """`UserError` for a `--budget` above the memory of the GPU `--gpu` names: `--gpu 'RTX 4090' --budget 30GiB`
    recommended configurations "fitting 30.0 GiB" for a 24 GiB card, without a word. `given`: the --budget as
    typed (None with `budget_bytes`: no --budget), named beside its bytes ("27.94 GiB (--budget 30GB)": the bytes
    alone did not read as what was typed)."""
    if profile is None or budget_bytes is None or given is None or not profile.gpu_memory_bytes:
        return
    if budget_bytes > profile.gpu_memory_bytes:
        raise UserError(f"{budget_text(budget_bytes, f'--budget {given.strip()}')} is more than the "
                        f"{profile.name}'s memory "
                        f"({format_bytes(profile.gpu_memory_bytes, 2)}, {profile.source}); give at most that, or "
                        "leave --budget out to budget the whole card (a card with more memory: measure it with "
                        "`advisor profile`)")


_UNITS = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,  # Kubernetes' spelling of the binary units
}  # fmt: skip
_SIZE = re.compile(rf"^\s*({DECIMAL})\s*([a-z]*|%)\s*$", re.IGNORECASE)
_BIT_PREFIXES = {"": "", "k": "kilo", "m": "mega", "g": "giga", "t": "tera",
             "ki": "kibi", "mi": "mebi", "gi": "gibi", "ti": "tebi"}  # fmt: skip


def is_zero_size(value: str) -> bool:
    """`value` is a budget of nothing in any unit a size or share takes, or none: "0", "0.0", "0%", "0B", "0 GiB".
    Refused as "must be positive" wherever it is given (`parse_budget`, and before a command's share refusal):
    '0' was "not a size" and '0%' sent `recommend` users to `report --memory 0%`, while '0B' said why."""
    m = _SIZE.match(value.lower())
    return m is not None and m.group(2) in {*_UNITS, "", "%"} and float(m.group(1)) == 0


def is_share(value: str | None) -> bool:
    """`value`, a --budget as typed, is a share ("80%"), which --budget does not take: each command refuses it in its
    own words, saying what to give. A zero share is not one: "0%" is "must be positive", as "0B" is (`is_zero_size`)."""
    return value is not None and value.strip().endswith("%") and not is_zero_size(value)


def parse_budget(value: str | int | float, label: str = "budget ") -> int:
    """A memory size in bytes: "12GiB", "12 GB" (SI, 10^9), "12000MiB", "0.5TiB", "12G" or "12Gi" (binary), or an int; a
    unit in any case but a lowercase-b one ("12Gb": bits, `_refuse_bits`).
    `label` starts the error: the option, as every command names it ("--budget ", "--host-memory ")."""
    if isinstance(value, bool):
        raise UserError(f"{label}{value!r} is not a size; use e.g. 12GiB, 24GB, 8000MiB")
    if isinstance(value, int | float):
        return _positive_bytes(value, value, label)
    if is_zero_size(str(value)):
        return _positive_bytes(0, value, label)
    m = _SIZE.match(str(value))
    unit = m.group(2).lower() if m else None
    if m and unit in _UNITS and m.group(2).endswith("b"):
        _refuse_bits(m.group(1), m.group(2), value, label)
    if not m or unit not in _UNITS:
        if m and not unit and float(m.group(1)) >= 2**20:
            return int(float(m.group(1)))  # a plain byte count
        raise UserError(f"{label}{value!r} is not a size; use e.g. 12GiB, 24GB, 8000MiB")
    return _positive_bytes(float(m.group(1)) * _UNITS[unit], value, label)


def _refuse_bits(number: str, unit: str, given: object, label: str) -> None:
    """`UserError` for a size in a lowercase-b unit: `12Gb` was read as 12 GB, though a lowercase b is usually a
    bit (Gb, gigabits; Mb/s), so the budget the user meant may be 8 times smaller; the case of the prefix is free
    (`12gB` is 12 GB, `12G` 12 GiB)."""
    prefix = unit[:-1].lower()
    p = prefix[:1].upper()
    units = [f"{p}iB"] if prefix.endswith("i") else [f"{p}B", f"{p}iB"] if p else ["B"]
    raise UserError(f"{label}{given!r}: {unit} is {_BIT_PREFIXES[prefix]}bits; write "
                    f"{' or '.join(number + u for u in units)}")


def _positive_bytes(n: float, given: object, label: str) -> int:
    """`n` as whole bytes; a size of none is refused, in words that say why ('0.5B' rounds to 0 bytes: it is
    less than one byte, not "not positive")."""
    if n <= 0:
        raise UserError(f"{label}{given!r} must be positive")
    if n < 1:
        raise UserError(f"{label}{given!r} is less than one byte; give at least 1B")
    return int(n)
