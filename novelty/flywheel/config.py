"""The flywheel's config: :class:`FlywheelConfig` and :func:`load_config`, which reads and checks a TOML file.
The format, every key with its default, is in the docstring of :mod:`novelty.flywheel.turn`; the defaults
themselves are those of :class:`FlywheelConfig`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from novelty.errors import InvalidInputError, NoveltyError
from novelty.flywheel.comparison.gate import GateRule
from novelty.flywheel.dataset import ON_CONFLICT
from novelty.flywheel.labels.labelstudio_api import LabelStudioSettings
from novelty.flywheel.selection import STRATEGIES
from novelty.params import check_int, check_real

__all__ = ["FlywheelConfig", "FlywheelConfigError", "load_config"]


class FlywheelConfigError(InvalidInputError):
    """A flywheel config that cannot work (missing key, wrong type, unknown value)."""


@dataclass(frozen=True)
class FlywheelConfig:
    """A checked flywheel config (:func:`load_config`). Its field defaults are the defaults of the config's keys,
    written here only: a key the file leaves out gets the default of its field (relative paths are relative to
    the config file)."""

    path: Path
    registry: Path
    dataset: Path
    test: Path
    new_slice: Path = Path("new-slice")
    workdir: Path = Path("turns")
    sources: tuple[str, ...] = ()
    flags: str | None = None
    strategy: str = "diversity"
    budget: int = 50
    seed: int = 0
    label_format: str = "label-studio"
    labels: str = "turns/{turn}/labels.json"
    labeller: str | None = None
    on_conflict: str = "fail"  # two people's different labels for one image: dataset.ON_CONFLICT
    auto_accept: bool = True
    auto_min_p: float | None = None
    auto_min_prob: float = 0.9
    auto_risk: float | None = None
    audit: float | str = "auto"  # "auto" (labelling.audit_size) or a share in [0, 1]
    holdout: float = 0.2
    window: str | None = None
    new_only: bool = False
    min_gain: float = 0.01
    margin: float = 0.02
    nominal: tuple[str, ...] = ("clean",)
    n_boot: int = 1000
    currency: str = "USD"
    price_label: float = 0.0
    price_compute_hour: float = 0.0
    label_studio: LabelStudioSettings | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def labels_path(self, turn: int) -> Path:
        return _resolve(self.path.parent, self.labels.replace("{turn}", f"{turn:04d}"))


def _resolve(base: Path, value: str) -> Path:
    """A config path: ``~`` expanded, relative to the config file's folder ``base``."""
    q = Path(os.path.expanduser(value))
    return q if q.is_absolute() else base / q


#: the field defaults of :class:`FlywheelConfig` by field name: what :func:`load_config` gives a key left out
_DEFAULT: dict[str, Any] = {f.name: f.default for f in fields(FlywheelConfig) if f.default is not MISSING}

_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "": {
        "registry": str,
        "dataset": str,
        "test": str,
        "new_slice": str,
        "workdir": str,
        "select": dict,
        "label": dict,
        "retrain": dict,
        "gate": dict,
        "cost": dict,
        "label_studio": dict,
    },
    "select": {"sources": list, "flags": str, "strategy": str, "budget": int, "seed": int},
    "label": {
        "format": str,
        "labels": str,
        "labeller": str,
        "on_conflict": str,
        "auto_accept": bool,
        "auto_min_p": (int, float),
        "auto_min_prob": (int, float),
        "auto_risk": (int, float),
        "audit": (int, float, str),
        "holdout": (int, float),
    },
    "retrain": {"window": str, "new_only": bool},
    "gate": {"min_gain": (int, float), "margin": (int, float), "nominal": list, "n_boot": int},
    "cost": {"currency": str, "label": (int, float), "compute_hour": (int, float)},
    "label_studio": {k: str for k in ("url", "project", "document_root", "api_key_file", "api_key_env")},
}
_REQUIRED = ("registry", "dataset", "test")


def _check_table(table: Mapping[str, Any], section: str, where: str) -> None:
    allowed = _KEYS[section]
    name = f"[{section}]" if section else "the top level"
    for key, value in table.items():
        if key not in allowed:
            raise FlywheelConfigError(
                f"{where}: unknown key {key!r} in {name} (known: {', '.join(sorted(allowed))})"
            )
        kind = allowed[key]
        if isinstance(value, bool) and kind in (int, (int, float)):
            raise FlywheelConfigError(f"{where}: {name} {key} must be a number, got {value!r}")
        if not isinstance(value, kind):
            want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise FlywheelConfigError(f"{where}: {name} {key} must be a {want}, got {value!r}")


def load_config(path: str | os.PathLike[str]) -> FlywheelConfig:
    """Read and check a flywheel config (see the module docstring); every problem is a
    :class:`FlywheelConfigError` naming the key."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlywheelConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FlywheelConfigError(f"{p}: cannot be read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise FlywheelConfigError(f"{p}: not valid TOML ({e})") from None
    where = str(p)
    _check_table(raw, "", where)
    for section in ("select", "label", "retrain", "gate", "cost", "label_studio"):
        _check_table(raw.get(section, {}), section, where)
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise FlywheelConfigError(
            f"{where}: missing {', '.join(missing)} (see `novelty flywheel run --help`)"
        )
    sel, lab, ret, gate, cost = (raw.get(s, {}) for s in ("select", "label", "retrain", "gate", "cost"))
    base = p.resolve().parent
    d = _DEFAULT

    def resolve(value: str) -> Path:
        return _resolve(base, value)

    sources = sel.get("sources", list(d["sources"]))
    if not all(isinstance(s, str) and s for s in sources):
        raise FlywheelConfigError(f"{where}: [select] sources must be a list of paths")
    nominal = gate.get("nominal", list(d["nominal"]))
    if not nominal or not all(isinstance(s, str) and s for s in nominal):
        raise FlywheelConfigError(f"{where}: [gate] nominal must be a non-empty list of condition names")
    strategy = sel.get("strategy", d["strategy"])
    if strategy not in STRATEGIES:
        raise FlywheelConfigError(
            f"{where}: [select] strategy {strategy!r} is not one of {', '.join(STRATEGIES)}"
        )
    fmt = lab.get("format", d["label_format"])
    if fmt not in ("label-studio", "cvat", "csv"):
        raise FlywheelConfigError(f"{where}: [label] format must be label-studio, cvat or csv, got {fmt!r}")

    # every value checked here, with the library's own checks, before any stage runs
    def check(section: str, key: str, fn: Callable[..., Any], value: Any, **kw: Any) -> Any:
        try:
            return fn(value, f"[{section}] {key}", **kw)
        except InvalidInputError as e:
            raise FlywheelConfigError(f"{where}: {e}") from None

    budget = check("select", "budget", check_int, sel.get("budget", d["budget"]), minimum=1)
    seed = check("select", "seed", check_int, sel.get("seed", d["seed"]), minimum=0)
    if seed > 2**31:
        raise FlywheelConfigError(f"{where}: [select] seed must be ≤ 2^31, got {seed}")
    on_conflict = lab.get("on_conflict", d["on_conflict"])
    if on_conflict not in ON_CONFLICT:
        raise FlywheelConfigError(
            f"{where}: [label] on_conflict must be one of {', '.join(ON_CONFLICT)}, got {on_conflict!r}"
        )
    audit = lab.get("audit", d["audit"])
    if isinstance(audit, str):
        if audit != "auto":
            raise FlywheelConfigError(
                f'{where}: [label] audit must be "auto" or a share in [0, 1], got {audit!r}'
            )
    else:
        audit = check("label", "audit", check_real, audit, low=0.0, high=1.0)
    holdout = check(
        "label", "holdout", check_real, lab.get("holdout", d["holdout"]), low=0.0, high=1.0, high_open=True
    )
    auto_min_p = (
        None
        if "auto_min_p" not in lab
        else check("label", "auto_min_p", check_real, lab["auto_min_p"], low=0.0, high=1.0)
    )
    auto_min_prob = check(
        "label", "auto_min_prob", check_real, lab.get("auto_min_prob", d["auto_min_prob"]), low=0.0, high=1.0
    )
    auto_risk = lab.get("auto_risk", d["auto_risk"])  # an error rate: strictly between 0 and 1
    if auto_risk is not None:
        unit = {"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}
        auto_risk = check("label", "auto_risk", check_real, auto_risk, **unit)
    for key, name in (("label", "price_label"), ("compute_hour", "price_compute_hour")):
        check("cost", key, check_real, cost.get(key, d[name]), low=0.0)
    n_boot = check("gate", "n_boot", check_int, gate.get("n_boot", d["n_boot"]), minimum=100)
    try:
        rule = GateRule(min_gain=gate.get("min_gain", d["min_gain"]), margin=gate.get("margin", d["margin"]))
    except InvalidInputError as e:
        raise FlywheelConfigError(f"{where}: [gate] {e}") from None
    window = ret.get("window", d["window"]) or None
    if window is not None:
        from novelty.flywheel.retrain import parse_window  # lazy: pulls in torch

        try:
            parse_window(window)
        except NoveltyError as e:
            raise FlywheelConfigError(f"{where}: [retrain] window: {e}") from None
    label_studio = None
    if "label_studio" in raw:
        try:
            label_studio = LabelStudioSettings.from_table(raw["label_studio"], base)
        except InvalidInputError as e:
            raise FlywheelConfigError(f"{where}: {e}") from None
        labels_suffix = Path(lab.get("labels", d["labels"])).suffix.lower()
        if fmt != "label-studio" or labels_suffix != ".json":
            raise FlywheelConfigError(
                f"{where}: [label_studio] needs [label] format = label-studio and a .json labels path"
            )
    if not sources and "flags" not in sel:
        raise FlywheelConfigError(
            f"{where}: [select] needs sources or flags (where production images come from)"
        )
    return FlywheelConfig(
        path=p.resolve(),
        registry=resolve(raw["registry"]),
        dataset=resolve(raw["dataset"]),
        test=resolve(raw["test"]),
        new_slice=resolve(raw.get("new_slice", str(d["new_slice"]))),
        workdir=resolve(raw.get("workdir", str(d["workdir"]))),
        sources=tuple(str(resolve(s)) for s in sources),
        flags=(
            sel["flags"]
            if "flags" in sel and "://" in sel["flags"]
            else (str(resolve(sel["flags"])) if "flags" in sel else None)
        ),
        strategy=strategy,
        budget=budget,
        seed=seed,
        label_format=fmt,
        labels=lab.get("labels", d["labels"]),
        labeller=lab.get("labeller", d["labeller"]),
        on_conflict=on_conflict,
        auto_accept=bool(lab.get("auto_accept", d["auto_accept"])),
        auto_min_p=auto_min_p,
        auto_min_prob=auto_min_prob,
        auto_risk=auto_risk,
        audit=audit if bool(lab.get("auto_accept", d["auto_accept"])) else 0.0,
        holdout=holdout,
        window=window,
        new_only=bool(ret.get("new_only", d["new_only"])),
        min_gain=rule.min_gain,
        margin=rule.margin,
        nominal=tuple(nominal),
        n_boot=n_boot,
        currency=cost.get("currency", d["currency"]),
        price_label=float(cost.get("label", d["price_label"])),
        price_compute_hour=float(cost.get("compute_hour", d["price_compute_hour"])),
        label_studio=label_studio,
        raw=raw,
    )
