"""``search``: per-layer (mixed) allocations, searched for accuracy against cost.

The paper gives every layer one allocation and leaves mixed widths to future work (its
Appendix B). ``search`` lets each weight layer pick its own ``b_w`` from ``weights`` and, when
``spikes`` is given, each neuron its own ``b_s``, with one ``T`` for the model (the
``base.bits``'s; ``b_s`` stays the base's when not searched). Layers that ``base.overrides``
already sets (a float classifier, say) keep their widths. A trial is the per-layer overrides
``{layer: b_w, neuron: {"s": b_s}}``; its costs come from :func:`qsnn.metrics.profile` of the
model at that allocation before it is trained (S-ACE and params_16 do not depend on the
weights' values), and its accuracy from training it with ``base``'s recipe.

Objectives (``objectives``): ``acc`` (best validation accuracy, maximised), ``s_ace`` and
``params_16`` (minimised), ``fps`` on the bit-serial accelerator model (maximised). A trial whose
S-ACE is over ``max_s_ace`` is not trained (it is recorded FAIL with ``qsnn_infeasible``).
Optuna proposes the trials (``sampler``: ``"tpe"``, multi-objective TPE, or ``"nsga2"``); the
uniform allocations ``b_w/b_s/T`` inside the constraint are enqueued first, so the search starts
from (and is compared with) what the paper would train, and they are never pruned.

Pruning (``eta``): after each epoch ``e`` but the last, a trial stops when it is outside the
best ``1/eta`` (by validation accuracy at epoch ``e``) of the trials that reached epoch ``e``
at no higher S-ACE, once there are at least ``eta - 1`` such trials. Comparing only with
cheaper-or-equal trials is what makes successive halving (ASHA) fit two objectives: a cheap
trial is never stopped for being less accurate than an expensive one, only for being beaten
by trials that cost no more.

Workers share a search as they share a sweep (:mod:`qsnn.sweep.study`): the same command with
``storage`` on any number of machines; each stops when the study holds ``trials`` trained,
pruned or running trials.

Layout: ``DIR/search.json`` (settings), ``DIR/study.db`` (the default storage),
``DIR/runs/<key>/`` (one run per trial), ``DIR/trials.csv``, ``DIR/pareto.md``,
``DIR/pareto.json`` (each front member's per-layer allocation) and ``DIR/pareto.png``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..allocation import Bits
from ..bitwidth import BitsPolicy, DeclaresWeightBits
from ..io import read_json_object, write_atomic, write_json_atomic, write_text_atomic
from ..neurons import SpikeNeuron
from ..train import TrainConfig
from ..train.config import RESUMABLE_FIELDS, settings_key
from ..train.engine import CHECKPOINT
from .study import KEY_ATTR, RESULT_ATTR, Claim, JobBoard, default_storage, require_optuna

__all__ = [
    "OBJECTIVES",
    "SearchSpace",
    "TrialCost",
    "pareto_front",
    "search",
    "search_space",
    "trial_cost",
    "write_search_report",
]

log = logging.getLogger(__name__)

#: objective -> Optuna direction.
OBJECTIVES: dict[str, str] = {
    "acc": "maximize",
    "s_ace": "minimize",
    "params_16": "minimize",
    "fps": "maximize",
}
#: Infeasible proposals in a row after which a worker gives up (the constraint is too tight
#: for what the sampler proposes).
MAX_INFEASIBLE_IN_A_ROW = 200


class Pruned(Exception):
    """Raised from the epoch callback to stop a trial after ``epoch`` (module docstring)."""

    def __init__(self, epoch: int, message: str) -> None:
        super().__init__(message)
        self.epoch = epoch


@dataclass(frozen=True)
class SearchSpace:
    """What ``search`` chooses: ``b_w`` per layer in ``weight_layers`` from ``weights``, and
    ``b_s`` per neuron in ``neuron_layers`` from ``spikes`` (empty: not searched), at ``T``."""

    time_steps: int
    weights: tuple[int, ...]
    spikes: tuple[int, ...]
    weight_layers: tuple[str, ...]
    neuron_layers: tuple[str, ...]
    base_s: int

    @property
    def size(self) -> int:
        """Number of per-layer allocations (the full grid)."""
        n = len(self.weights) ** len(self.weight_layers)
        return n * (len(self.spikes) ** len(self.neuron_layers) if self.spikes else 1)

    def uniform(self) -> list[tuple[int, int]]:
        """Every uniform ``(b_w, b_s)`` of the space."""
        return [(w, s) for w in self.weights for s in (self.spikes or (self.base_s,))]

    def params(self, w: Mapping[str, int], s: Mapping[str, int]) -> dict[str, int]:
        """Optuna parameters of an allocation (``w:<layer>``, ``s:<neuron>``)."""
        out = {f"w:{name}": int(w[name]) for name in self.weight_layers}
        if self.spikes:
            out.update({f"s:{name}": int(s[name]) for name in self.neuron_layers})
        return out

    def suggest(self, trial: Any) -> tuple[dict[str, int], dict[str, int]]:
        """The allocation an Optuna trial proposes."""
        w = {n: trial.suggest_categorical(f"w:{n}", list(self.weights)) for n in self.weight_layers}
        s = {}
        if self.spikes:
            s = {
                n: trial.suggest_categorical(f"s:{n}", list(self.spikes))
                for n in self.neuron_layers
            }
        return w, s

    def config(self, base: TrainConfig, w: Mapping[str, int], s: Mapping[str, int]) -> TrainConfig:
        """``base`` at the per-layer allocation ``w``, ``s`` (exact-name overrides first; the
        base's own patterns only reach the layers the search leaves alone)."""
        first_w = w[self.weight_layers[0]] if self.weight_layers else self.weights[0]
        first_s = s[self.neuron_layers[0]] if s and self.neuron_layers else self.base_s
        overrides: dict[str, object] = {name: int(w[name]) for name in self.weight_layers}
        overrides.update({name: {"s": int(s[name])} for name in self.neuron_layers if s})
        overrides.update(dict(base.overrides or {}))
        return replace(base, bits=f"{first_w}/{first_s}/{self.time_steps}", overrides=overrides)


def search_space(
    base: TrainConfig,
    weights: Sequence[int],
    spikes: Sequence[int] | None = None,
    *,
    model: torch.nn.Module | None = None,
) -> SearchSpace:
    """The space of ``base.model``: its weight layers and neurons that ``base.overrides`` does
    not set (``model``: the built model, else it is built on ``base``'s data)."""
    if not weights:
        raise ValueError("--weights must list at least one b_w")
    for value in (*weights, *(spikes or ())):
        if value < 1:
            raise ValueError(f"bit-widths must be >= 1; got {value}")
    bits = Bits.parse(base.bits)
    if model is None:
        from ..train.engine import build_model, load_data

        model = build_model(base, load_data(base).train)
    policy = BitsPolicy(bits, base.overrides or {})
    fixed = {n for names in policy.matched(dict(model.named_modules())).values() for n in names}
    wl = tuple(
        n for n, m in model.named_modules() if isinstance(m, DeclaresWeightBits) and n not in fixed
    )
    nl = tuple(n for n, m in model.named_modules() if isinstance(m, SpikeNeuron) and n not in fixed)
    if not wl:
        raise ValueError(f"{base.model} has no weight layer left to search (all are overridden)")
    return SearchSpace(
        bits.t,
        tuple(dict.fromkeys(weights)),
        tuple(dict.fromkeys(spikes or ())),
        wl,
        nl if spikes else (),
        bits.s,
    )


@dataclass(frozen=True)
class TrialCost:
    """What an allocation costs, per sample (``qsnn.metrics.profile``; fps: ``qsnn.hardware``)."""

    s_ace: float
    params_16: float
    macs: float
    fps: float | None


def trial_cost(config: TrainConfig, data: Any) -> TrialCost:
    """Cost of ``config``'s model: the profile on two test samples, as ``result.json``'s."""
    from ..data import raw_input_bits
    from ..metrics import profile
    from ..train.engine import build_model
    from ..train.results import hardware_summary

    torch.manual_seed(config.seed)
    model = build_model(config, data.train).eval()
    example, _ = next(iter(data.test.batches(2)))
    bits = raw_input_bits(data.test.kind)
    totals = profile(model, example, input_bits=bits)
    hw = hardware_summary(
        model, example[:1] if data.test.kind == "static" else example[:, :1], bits
    )
    return TrialCost(
        float(totals.totals["s_ace"]),
        float(totals.params_16),
        float(totals.totals["macs"]),
        hw["fps"] if hw else None,
    )


def _resolve_limit(
    max_s_ace: float | str | None, base: TrainConfig, space: SearchSpace, data: Any
) -> float | None:
    """``max_s_ace`` as a number: a uniform allocation (``"1/4/1"``) stands for its S-ACE."""
    if max_s_ace is None or isinstance(max_s_ace, (int, float)):
        return None if max_s_ace is None else float(max_s_ace)
    try:
        return float(max_s_ace)
    except ValueError:
        pass
    ref = Bits.parse(max_s_ace)
    return trial_cost(replace(base, bits=str(ref)), data).s_ace


def _within(s_ace: float, limit: float) -> bool:
    """``s_ace <= limit``, up to float rounding (a uniform limit's own S-ACE is within it)."""
    return s_ace <= limit * (1 + 1e-9)


def _objective_values(names: Sequence[str], result: Mapping[str, Any], cost: TrialCost) -> list:
    values = []
    for name in names:
        if name == "acc":
            values.append(float(result["val_acc_best"]))
        elif name == "fps":
            if cost.fps is None:
                raise ValueError(f"{result.get('model')}: the accelerator model gives no fps")
            values.append(float(cost.fps))
        else:
            values.append(float(getattr(cost, name)))
    return values


def _study_name(base: TrainConfig, space: SearchSpace, objectives: Sequence[str]) -> str:
    key = settings_key(replace(base, bits="1/1/1", overrides=None))
    tag = f"{space.time_steps}-{'.'.join(map(str, space.weights))}-" + ".".join(
        map(str, space.spikes)
    )
    return f"search-{base.model}-{base.dataset}-{key}-T{tag}-{'.'.join(objectives)}"


def _settings(base: TrainConfig, space: SearchSpace, **extra: Any) -> dict[str, Any]:
    """What ``search.json`` holds and a joining worker must match: the base settings without
    the fields that do not shape a run (``RESUMABLE_FIELDS``: threads, device, data root...),
    so workers with their share of the cores, or on other machines, join the same search."""
    shaping = {k: v for k, v in base.to_dict().items() if k not in RESUMABLE_FIELDS}
    return {"base": shaping, "space": asdict(space), **extra}


def search(
    base: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    weights: Sequence[int],
    spikes: Sequence[int] | None = None,
    trials: int = 20,
    objectives: Sequence[str] = ("acc", "s_ace"),
    max_s_ace: float | str | None = None,
    sampler: str = "tpe",
    sampler_seed: int | None = None,
    eta: int | None = 3,
    storage: str | None = None,
    study: str | None = None,
    resume: bool = False,
    heartbeat_s: int | None = None,
) -> list[dict[str, Any]]:
    """Run (or join) a search into ``out_dir``; returns the Pareto front (see the module
    docstring). ``resume=True`` continues the search ``out_dir`` holds; ``eta=None`` trains
    every trial fully."""
    from ..train.engine import build_model, load_data

    optuna = require_optuna()  # before any work: a missing extra is the first thing to say
    objectives = tuple(objectives)
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or "acc" not in objectives or len(set(objectives)) != len(objectives):
        raise ValueError(
            f"--objectives: 'acc' and any of {sorted(set(OBJECTIVES) - {'acc'})}, each once; "
            f"got {','.join(objectives)}"
        )
    if trials < 1:
        raise ValueError(f"--trials must be >= 1; got {trials}")
    if sampler not in ("tpe", "nsga2"):
        raise ValueError(f"--sampler must be tpe or nsga2; got {sampler!r}")
    if eta is not None and eta < 2:
        raise ValueError(f"--eta must be >= 2; got {eta}")
    if base.val_size == 0:
        raise ValueError("a search chooses by validation accuracy: --val-size must not be 0")
    out = Path(out_dir)
    data = load_data(base)
    torch.manual_seed(base.seed)
    space = search_space(base, weights, spikes, model=build_model(base, data.train))
    limit = _resolve_limit(max_s_ace, base, space, data)
    settings = _settings(
        base,
        space,
        objectives=list(objectives),
        max_s_ace=limit,
        sampler=sampler,
        trials=trials,
        eta=eta,
    )
    _check_out(out, settings, resume)

    opt_sampler = (
        optuna.samplers.TPESampler(seed=sampler_seed, multivariate=True)
        if sampler == "tpe"
        else optuna.samplers.NSGAIISampler(seed=sampler_seed)
    )
    board = JobBoard(
        storage or default_storage(out),
        study or _study_name(base, space, objectives),
        directions=tuple(OBJECTIVES[o] for o in objectives),
        sampler=opt_sampler,
        heartbeat_s=heartbeat_s,
    )
    _enqueue_uniform(board, space, base, data, limit)
    infeasible = 0
    while _counted(board) < trials:
        trial = board.ask()
        w, s = space.suggest(trial)
        config = space.config(base, w, s)
        key = settings_key(config)
        cost = trial_cost(config, data)
        uniform = len(set(w.values())) == 1 and len(set(s.values()) or {0}) == 1
        attrs = {
            KEY_ATTR: key,
            "s_ace": cost.s_ace,
            "params_16": cost.params_16,
            "uniform": uniform,
            "bits": config.bits,
            "overrides": config.overrides,
        }
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        if limit is not None and not _within(cost.s_ace, limit):
            trial.set_user_attr("qsnn_infeasible", f"S-ACE {cost.s_ace:.6g} > {limit:.6g}")
            board.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            infeasible += 1
            if infeasible >= MAX_INFEASIBLE_IN_A_ROW:
                raise ValueError(
                    f"{infeasible} proposals in a row were over --max-s-ace {limit:.6g}; "
                    "loosen the limit or narrow --weights/--spikes"
                )
            continue
        infeasible = 0
        others = [t for t in board.trials_of(key) if t.number != trial.number]
        done = [t for t in others if t.state.name == "COMPLETE"]
        if done:  # the same settings were trained: the same result, recorded again
            trial.set_user_attr("qsnn_same_as", done[0].number)
            board.study.tell(trial, list(done[0].values))
            continue
        if others:  # another worker trains it now
            trial.set_user_attr("qsnn_withdrawn", True)
            board.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        _train_trial(board, trial, config, key, cost, objectives, out, uniform, eta)
    front = pareto_front(board, objectives)
    write_search_report(out, board, objectives, settings)
    return front


def refuse_unless_resumed(out: str | os.PathLike, resume: bool) -> None:
    """A ``ValueError`` when ``out`` already holds a search and ``resume`` is not set."""
    if not resume and (Path(out) / "search.json").exists():
        raise ValueError(
            f"{out} already holds a search; pass --resume to continue or join "
            "it, or choose another --out"
        )


def _check_out(out: Path, settings: dict[str, Any], resume: bool) -> None:
    path = out / "search.json"
    refuse_unless_resumed(out, resume)
    if path.exists():
        old = read_json_object(path, "a search's settings")
        fresh = json.loads(json.dumps(settings))  # as it would read back from the file
        if old != fresh:
            diff = sorted(k for k in fresh if old.get(k) != fresh[k])
            raise ValueError(
                f"{out} holds a search with other settings ({', '.join(diff)}); "
                "choose another --out"
            )
    else:
        write_json_atomic(path, settings)


def _enqueue_uniform(
    board: JobBoard, space: SearchSpace, base: TrainConfig, data: Any, limit: float | None
) -> None:
    """Enqueue the uniform allocations inside the limit that have no live or finished trial
    and are not waiting already (a dead worker's one is enqueued again)."""
    state = board.optuna.trial.TrialState
    live = board.study.get_trials(
        deepcopy=False, states=(state.RUNNING, state.COMPLETE, state.WAITING)
    )
    seen = {json.dumps(t.params, sort_keys=True) for t in live}
    for w, s in space.uniform():
        params = space.params(
            dict.fromkeys(space.weight_layers, w), dict.fromkeys(space.neuron_layers, s)
        )
        if json.dumps(params, sort_keys=True) in seen:
            continue
        config = space.config(
            base, dict.fromkeys(space.weight_layers, w), dict.fromkeys(space.neuron_layers, s)
        )
        if limit is not None and not _within(trial_cost(config, data).s_ace, limit):
            continue
        board.study.enqueue_trial(params, skip_if_exists=False)


def _trials(board: JobBoard, *states: str) -> list[Any]:
    """The study's trials in ``states`` (names), without the ones that only repeat another
    trial's result (``qsnn_same_as``: the sampler proposed settings already trained)."""
    wanted = tuple(getattr(board.optuna.trial.TrialState, name) for name in states)
    trials = board.study.get_trials(deepcopy=False, states=wanted)
    return [t for t in trials if "qsnn_same_as" not in t.user_attrs]


def _counted(board: JobBoard) -> int:
    """Trials that count towards ``trials``: trained, pruned or being trained."""
    return len(_trials(board, "COMPLETE", "PRUNED", "RUNNING"))


def _train_trial(
    board: JobBoard,
    trial: Any,
    config: TrainConfig,
    key: str,
    cost: TrialCost,
    objectives: tuple[str, ...],
    out: Path,
    uniform: bool,
    eta: int | None,
) -> None:
    from ..train import train

    run = out / "runs" / f"{config.bits.replace('/', '-')}{'' if uniform else '-mixed'}-{key}"
    claim = Claim(board, trial._trial_id, trial.number, key)
    prune = None if uniform or eta is None else _pruner(board, trial, cost.s_ace, eta, config)

    def on_epoch(row: dict[str, Any]) -> None:
        claim.set_attr(f"qsnn_val_{row['epoch']}", row.get("val_acc"))
        if prune is not None:
            prune(row)

    resume = (run / CHECKPOINT).exists()
    log.info(
        "trial %d: %s%s S-ACE %.4g%s",
        trial.number,
        "uniform " if uniform else "",
        config.bits,
        cost.s_ace,
        " (resuming)" if resume else "",
    )
    with claim:
        try:
            result = train(config, run, resume=resume, on_epoch=on_epoch)
        except Pruned as why:
            claim.set_attr("qsnn_epochs", why.epoch)
            claim.prune(str(why))
            log.info("trial %d: %s", trial.number, why)
            return
        claim.set_attr("qsnn_epochs", config.epochs)
        claim.finish(_objective_values(objectives, result, cost), result)


def _pruner(board: JobBoard, trial: Any, s_ace: float, eta: int, config: TrainConfig):
    """The epoch callback that stops ``trial`` (see the module docstring)."""

    def check(row: dict[str, Any]) -> None:
        epoch, mine = row["epoch"], row.get("val_acc")
        if epoch >= config.epochs or mine is None:
            return
        peers = [
            t.user_attrs[f"qsnn_val_{epoch}"]
            for t in _trials(board, "COMPLETE", "PRUNED", "RUNNING")
            if t.number != trial.number
            and t.user_attrs.get(f"qsnn_val_{epoch}") is not None
            and _within(t.user_attrs.get("s_ace", math.inf), s_ace)
        ]
        if len(peers) < eta - 1:
            return
        better = sum(1 for v in peers if v > mine)
        keep = max(1, math.ceil((len(peers) + 1) / eta))
        if better >= keep:
            raise Pruned(
                epoch,
                f"pruned after epoch {epoch}: validation {100 * mine:.2f}% is not in the best "
                f"1/{eta} of {len(peers) + 1} trials at no higher S-ACE ({better} better)",
            )

    return check


def pareto_front(board: JobBoard, objectives: Sequence[str]) -> list[dict[str, Any]]:
    """The finished trials no other finished trial dominates, as rows (cheapest first)."""
    return _front([_row(t, objectives) for t in _trials(board, "COMPLETE")], objectives)


def _front(rows: list[dict[str, Any]], objectives: Sequence[str]) -> list[dict[str, Any]]:
    """The rows no other row dominates, cheapest first."""
    sign = [1 if OBJECTIVES[o] == "maximize" else -1 for o in objectives]

    def dominates(a: dict, b: dict) -> bool:
        pa = [s * v for s, v in zip(sign, a["values"], strict=True)]
        pb = [s * v for s, v in zip(sign, b["values"], strict=True)]
        return all(x >= y for x, y in zip(pa, pb, strict=True)) and pa != pb

    front = [r for r in rows if not any(dominates(o, r) for o in rows if o is not r)]
    return sorted(front, key=lambda r: (r["s_ace"], -r["val_acc"]))


def _row(t: Any, objectives: Sequence[str]) -> dict[str, Any]:
    result = t.user_attrs.get(RESULT_ATTR) or {}
    overrides = t.user_attrs.get("overrides") or {}
    return {
        "trial": t.number,
        "uniform": bool(t.user_attrs.get("uniform")),
        "bits": t.user_attrs.get("bits"),
        "layers": overrides,
        "values": list(t.values),
        "objectives": list(objectives),
        "val_acc": result.get("val_acc_best"),
        "test_acc": result.get("test_acc_best"),
        "s_ace": t.user_attrs.get("s_ace"),
        "params_16": t.user_attrs.get("params_16"),
    }


def _summary(overrides: Mapping[str, Any]) -> str:
    """``w 1,2,1,4,16; s 4,4,2,2``: the overridden widths in override order (the searched
    layers first, then the base's own overrides such as a float head)."""
    ws = [str(v) for v in overrides.values() if isinstance(v, int)]
    ss = [str(v["s"]) for v in overrides.values() if isinstance(v, dict) and "s" in v]
    return "w " + ",".join(ws) + ("; s " + ",".join(ss) if ss else "")


def write_search_report(
    out: Path, board: JobBoard, objectives: Sequence[str], settings: Mapping[str, Any]
) -> list[Path]:
    """``trials.csv``, ``pareto.md``, ``pareto.json`` and (with matplotlib) ``pareto.png``."""
    every = board.study.get_trials(deepcopy=False)
    trained = _trials(board, "COMPLETE", "PRUNED")
    pruned = sum(t.state.name == "PRUNED" for t in trained)
    epochs = int(settings["base"]["epochs"])
    spent = sum(int(t.user_attrs.get("qsnn_epochs", epochs)) for t in trained)
    rows = [_row(t, objectives) for t in trained if t.state.name == "COMPLETE"]
    front = _front(rows, objectives)
    paths = [out / "trials.csv", out / "pareto.md", out / "pareto.json"]
    fields = [
        "trial",
        "state",
        "uniform",
        "bits",
        "layers",
        "val_acc",
        "test_acc",
        "s_ace",
        "params_16",
        "epochs",
        "note",
    ]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fields)
    writer.writeheader()
    for t in every:
        result = t.user_attrs.get(RESULT_ATTR) or {}
        note = next(
            (
                f"{k}: {t.user_attrs[k]}"
                for k in (
                    "qsnn_infeasible",
                    "qsnn_pruned",
                    "qsnn_same_as",
                    "qsnn_withdrawn",
                    "qsnn_error",
                )
                if k in t.user_attrs
            ),
            "",
        )
        writer.writerow(
            {
                "trial": t.number,
                "state": t.state.name,
                "uniform": t.user_attrs.get("uniform"),
                "bits": t.user_attrs.get("bits"),
                "layers": _summary(t.user_attrs.get("overrides") or {}),
                "val_acc": result.get("val_acc_best"),
                "test_acc": result.get("test_acc_best"),
                "s_ace": t.user_attrs.get("s_ace"),
                "params_16": t.user_attrs.get("params_16"),
                "epochs": t.user_attrs.get("qsnn_epochs"),
                "note": note,
            }
        )
    write_text_atomic(paths[0], table.getvalue())
    space = settings["space"]
    grid = SearchSpace(**{k: tuple(v) if isinstance(v, list) else v for k, v in space.items()}).size
    lines = [
        f"# Search: {settings['base']['model']} on {settings['base']['dataset']}, "
        f"T = {space['time_steps']}",
        "",
        f"Objectives: {', '.join(objectives)}; S-ACE limit: "
        + (f"{settings['max_s_ace']:.6g}" if settings.get("max_s_ace") else "none")
        + f"; sampler {settings['sampler']}; pruning eta = {settings['eta']}.",
        f"Trials trained: {len(trained)} ({pruned} pruned), "
        f"{spent} epochs in all, against {len(trained) * epochs} had each been trained fully and "
        f"{grid * epochs:,} for the full grid of {grid:,} allocations. Infeasible proposals "
        f"(not trained): {sum('qsnn_infeasible' in t.user_attrs for t in every)}.",
        "",
        "| trial | allocation | per-layer widths | val % | test % | S-ACE (M) | params_16 (K) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in front:
        alloc = f"uniform {r['bits']}" if r["uniform"] else f"mixed (T = {space['time_steps']})"
        lines.append(
            f"| {r['trial']} | {alloc} | {_summary(r['layers'])} | {100 * r['val_acc']:.2f} | "
            f"{100 * r['test_acc']:.2f} | {r['s_ace'] / 1e6:.3f} | {r['params_16'] / 1e3:.1f} |"
        )
    uniform = sorted((r for r in rows if r["uniform"]), key=lambda r: r["s_ace"])
    if uniform:
        lines += ["", "Uniform allocations trained:", ""]
        lines += [
            f"- {r['bits']}: val {100 * r['val_acc']:.2f} %, test {100 * r['test_acc']:.2f}"
            f" %, S-ACE {r['s_ace'] / 1e6:.3f} M"
            for r in uniform
        ]
    write_text_atomic(paths[1], "\n".join(lines) + "\n")
    write_json_atomic(paths[2], {"objectives": list(objectives), "front": front})
    figure = _figure(out / "pareto.png", rows, front)
    return paths + ([figure] if figure else [])


def _figure(path: Path, rows: list[dict[str, Any]], front: list[dict[str, Any]]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("no pareto.png: matplotlib is not installed (pip install 'qsnn[plots]')")
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    mixed = [r for r in rows if not r["uniform"]]
    ax.scatter(
        [r["s_ace"] / 1e6 for r in mixed],
        [100 * r["val_acc"] for r in mixed],
        c="0.6",
        s=14,
        label="mixed trials",
    )
    uni = [r for r in rows if r["uniform"]]
    ax.scatter(
        [r["s_ace"] / 1e6 for r in uni],
        [100 * r["val_acc"] for r in uni],
        marker="s",
        c="tab:orange",
        s=28,
        label="uniform",
    )
    for r in uni:
        ax.annotate(
            r["bits"],
            (r["s_ace"] / 1e6, 100 * r["val_acc"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.plot(
        [r["s_ace"] / 1e6 for r in front],
        [100 * r["val_acc"] for r in front],
        "-o",
        c="tab:blue",
        ms=4,
        drawstyle="steps-post",
        label="Pareto front",
    )
    ax.set_xlabel("S-ACE per sample (M)")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)
    return path
