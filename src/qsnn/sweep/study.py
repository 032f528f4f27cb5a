"""Optuna storage as the job board of a sweep or a search shared by many workers and machines.

Every job (a run, keyed by :func:`~qsnn.train.config.settings_key`) is an Optuna trial that
carries its key in ``user_attrs["qsnn_key"]``. A worker *claims* a job by creating a RUNNING
trial with that key already set (one atomic insert), then reading the study back: if a
finished trial of the key exists, or a running one with a smaller trial number, it withdraws
its own trial (FAIL, ``qsnn_withdrawn``) and leaves the job to the other. Trial numbers are
given in insertion order, so of two workers that claim at the same moment the later one always
sees the earlier one: each job is trained by one worker at a time.

A claimed trial sends a heartbeat every 30 s (``$QSNN_HEARTBEAT_S``) from a daemon thread. When its
worker dies (SIGKILL, a lost machine), the heartbeat stops; after four intervals any
worker's next look at the study marks the trial FAIL (``optuna.storages.fail_stale_trials``)
and claims the job again, resuming from the run's checkpoint when it can see the run directory.
A failed trial never counts as a result, and a COMPLETE one is never trained again: its
``user_attrs["qsnn_result"]`` holds the run's whole ``result.json``, so a machine that did not
train it still reports it.

Storage: a URL that SQLAlchemy reads (``postgresql://user@host/db``, ``mysql+pymysql://...``),
or by default an SQLite file next to the sweep (``sqlite:///DIR/study.db``; fine for the
processes of one machine, not for a network file system). Optuna is an optional extra
(``pip install 'qsnn[search]'``); the rest of qsnn does not import it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "GRACE_BEATS",
    "HEARTBEAT_S",
    "Claim",
    "JobBoard",
    "default_storage",
    "require_optuna",
]

#: Seconds between the heartbeats of a claimed job (``$QSNN_HEARTBEAT_S`` overrides it).
HEARTBEAT_S = 30
#: Heartbeat intervals without a heartbeat after which a claimed job is taken to be dead and
#: retried (120 s at the default interval).
GRACE_BEATS = 4


def heartbeat_seconds() -> int:
    """The heartbeat interval: ``$QSNN_HEARTBEAT_S`` when set (an integer >= 1), else 30."""
    text = os.environ.get("QSNN_HEARTBEAT_S")
    if text is None:
        return HEARTBEAT_S
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"QSNN_HEARTBEAT_S must be an integer >= 1; got {text!r}")
    return int(text)


KEY_ATTR = "qsnn_key"
RESULT_ATTR = "qsnn_result"


def require_optuna() -> Any:
    """``import optuna``, or an ``ImportError`` that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise ImportError(
            "this needs Optuna, an optional extra of qsnn: pip install 'qsnn[search]' "
            "(and a database driver for --storage postgresql://..., e.g. psycopg2-binary)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # qsnn logs what matters itself
    return optuna


def default_storage(out_dir: str | os.PathLike) -> str:
    """``sqlite:///<out_dir>/study.db`` (absolute: every worker opens the same file)."""
    return f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"


def open_storage(url: str, *, heartbeat_s: int | None = None, grace_s: int | None = None) -> Any:
    """An ``optuna.storages.RDBStorage`` on ``url`` with heartbeats enabled; a bad URL or an
    unreachable server is one ``ValueError`` naming the URL."""
    optuna = require_optuna()
    heartbeat_s = heartbeat_s or heartbeat_seconds()
    grace_s = grace_s or GRACE_BEATS * heartbeat_s
    if heartbeat_s < 1 or grace_s <= heartbeat_s:
        raise ValueError(
            f"need heartbeat_s >= 1 and grace_s > heartbeat_s; got {heartbeat_s}, {grace_s}"
        )
    engine: dict[str, Any] = {}
    creation = contextlib.nullcontext()
    if url.startswith("sqlite:"):
        # Several processes write one file: wait for its lock rather than fail at once.
        engine = {"connect_args": {"timeout": 120}}
        path = url.removeprefix("sqlite:///")
        if path and path != url:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            creation = _file_lock(Path(path + ".lock"))
    for attempt in range(5):
        try:
            with warnings.catch_warnings(), creation:  # heartbeats are experimental in Optuna
                warnings.simplefilter("ignore")
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=heartbeat_s, grace_period=grace_s
                )
        except ImportError as err:  # the database's driver is missing
            raise ImportError(f"--storage {_safe(url)}: {err}") from None
        except Exception as err:  # sqlalchemy's errors for a bad URL or an unreachable server
            # Workers that open a new database at the same moment race to create its tables
            # ("already exists", a duplicate schema version): the loser opens it again.
            text = str(err).lower()
            if attempt < 4 and any(w in text for w in ("already exists", "duplicate", "unique")):
                time.sleep(0.2 * (attempt + 1))
                continue
            first = str(err).splitlines()[0] if str(err) else repr(err)
            raise ValueError(
                f"--storage {_safe(url)}: cannot open it ({type(err).__name__}: {first})"
            ) from None
    raise AssertionError("unreachable")  # the loop returns or raises


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (blocking): one process creates an SQLite
    study database's tables at a time."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _safe(url: str) -> str:
    """``url`` without its password (messages and logs)."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':')[0]}:***@{tail}" if ":" in user else url


def _quiet(fn: Any, *args: Any) -> Any:
    """Call an Optuna function marked experimental without its warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


class Claim:
    """A job this worker holds: heartbeats until :meth:`finish` or :meth:`fail`. As a context
    manager, an exception inside the block fails the trial (the job is free again) and is
    re-raised."""

    def __init__(self, board: JobBoard, trial_id: int, number: int, key: str) -> None:
        self.board, self.trial_id, self.number, self.key = board, trial_id, number, key
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"qsnn-heartbeat-{number}", daemon=True
        )
        board.storage.record_heartbeat(trial_id)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.board.storage.heartbeat_interval):
            with contextlib.suppress(Exception):  # a lost connection: the next beat tries
                self.board.storage.record_heartbeat(self.trial_id)

    def _end(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def set_attr(self, name: str, value: Any) -> None:
        self.board.storage.set_trial_user_attr(self.trial_id, name, value)

    def finish(self, values: float | list[float], result: Mapping[str, Any] | None = None) -> None:
        """The job is done: record ``result`` (a run's ``result.json``) and the values."""
        self._end()
        if result is not None:
            self.set_attr(RESULT_ATTR, _jsonable(result))
        self.board.study.tell(self.number, values)

    def fail(self, reason: str) -> None:
        """Give the job up (another worker may take it)."""
        self._end()
        self.set_attr("qsnn_error", reason[:2000])
        self.board.study.tell(self.number, state=self.board.optuna.trial.TrialState.FAIL)

    def prune(self, reason: str) -> None:
        """Stop the job for good (its result is not wanted, e.g. a pruned search trial)."""
        self._end()
        self.set_attr("qsnn_pruned", reason[:2000])
        self.board.study.tell(self.number, state=self.board.optuna.trial.TrialState.PRUNED)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> None:
        if self._stop.is_set():
            return
        if err is None:
            self._end()
            return
        self.fail(f"{type(err).__name__}: {err}")


class JobBoard:
    """The jobs of one study: who holds which, which are done (see the module docstring).

    Args:
        storage: a storage URL (:func:`default_storage` for the embedded SQLite file).
        study: the study's name (created on first use; every worker passes the same).
        directions: Optuna directions of the trial values.
        sampler: an Optuna sampler for :meth:`ask` (a search); ``None`` for a sweep.
        heartbeat_s, grace_s: heartbeat interval and the silence after which a claim is dead
            (default :func:`heartbeat_seconds` and ``GRACE_BEATS`` intervals).
    """

    def __init__(
        self,
        storage: str,
        study: str,
        *,
        directions: tuple[str, ...] = ("maximize",),
        sampler: Any = None,
        heartbeat_s: int | None = None,
        grace_s: int | None = None,
    ) -> None:
        self.optuna = require_optuna()
        self.url = storage
        self.storage = open_storage(storage, heartbeat_s=heartbeat_s, grace_s=grace_s)
        self.study = self.optuna.create_study(
            storage=self.storage,
            study_name=study,
            directions=list(directions),
            sampler=sampler,
            load_if_exists=True,
        )
        if [d.name.lower() for d in self.study.directions] != [d.lower() for d in directions]:
            raise ValueError(
                f"study {study!r} in {_safe(storage)} optimizes "
                f"{[d.name.lower() for d in self.study.directions]}, not {list(directions)}; "
                "choose another study name"
            )
        self.study_id = self.storage.get_study_id_from_name(study)

    def ask(self) -> Any:
        """``study.ask()`` (a search's next trial; enqueued ones first)."""
        with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize()
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            return self.study.ask()

    def trials_of(self, key: str) -> list[Any]:
        """The RUNNING and COMPLETE trials of job ``key``, after failing stale ones."""
        state = self.optuna.trial.TrialState
        _quiet(self.optuna.storages.fail_stale_trials, self.study)
        trials = self.study.get_trials(deepcopy=False, states=(state.RUNNING, state.COMPLETE))
        return [t for t in trials if t.user_attrs.get(KEY_ATTR) == key]

    def result(self, key: str) -> dict[str, Any] | None:
        """The recorded ``result.json`` of job ``key`` when a trial of it is COMPLETE."""
        done = [t for t in self.trials_of(key) if t.state.name == "COMPLETE"]
        return dict(done[0].user_attrs.get(RESULT_ATTR) or {}) if done else None

    def claim(self, key: str, attrs: Mapping[str, Any] | None = None) -> Claim | None:
        """Hold job ``key`` (a new RUNNING trial), or ``None`` when another worker holds it or
        it is done (:meth:`result` then has it)."""
        optuna = self.optuna
        if self.trials_of(key):  # held or done: no trial of ours (a poll leaves no trace)
            return None
        template = optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING,
            user_attrs={
                KEY_ATTR: key,
                "qsnn_host": socket.gethostname(),
                "qsnn_pid": os.getpid(),
                **dict(attrs or {}),
            },
        )
        template.datetime_start = datetime.datetime.now()
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        number = self.storage.get_trial_number_from_id(trial_id)
        others = [t for t in self.trials_of(key) if t.number != number]
        if any(t.state.name == "COMPLETE" or t.number < number for t in others):
            self.storage.set_trial_user_attr(trial_id, "qsnn_withdrawn", True)
            self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
            return None
        return Claim(self, trial_id, number, key)

    def record(self, key: str, values: float | list[float], result: Mapping[str, Any]) -> None:
        """Record a job finished outside the board (a run found finished on disk)."""
        optuna = self.optuna
        values = values if isinstance(values, list) else [values]
        frozen = optuna.trial.create_trial(
            values=values,
            user_attrs={KEY_ATTR: key, RESULT_ATTR: _jsonable(result), "qsnn_found": True},
        )
        self.study.add_trial(frozen)

    @contextmanager
    def holding(self, key: str, attrs: Mapping[str, Any] | None = None) -> Iterator[Claim | None]:
        """``with board.holding(key) as claim:`` (``claim`` is ``None`` when not held)."""
        claim = self.claim(key, attrs)
        if claim is None:
            yield None
            return
        with claim:
            yield claim


def _jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` as plain JSON types (what Optuna's storage can hold)."""
    return json.loads(json.dumps(value, default=str))
