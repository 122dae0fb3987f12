"""The model registry on MLflow: the same verbs as the local registry, on an MLflow tracking store.

``MlflowRegistry(tracking_uri, model_name)``:

- ``register`` verifies the detector (every checksum and a full :func:`novelty.load`), saves it as an MLflow
  **pyfunc** model (the detector directory is the model's artifact ``detector``; :class:`NoveltyModel` loads it with
  :func:`novelty.load` and scores a DataFrame of image paths or bytes), logs it in a run of the experiment
  ``novelty-registry`` with the training record, and registers it as a new version of ``model_name`` with the
  tags ``artifact_id`` and ``config_hash``. The model is saved as *code* (a two-line script that builds
  :class:`NoveltyModel`), so nothing is pickled.
- ``promote`` / ``rollback`` move the model-version alias ``champion`` (``challenger`` is set by ``register``);
  what they allow and refuse is the local registry's policy, the same code
  (:mod:`novelty.flywheel.registry.policy`); this module is only the storage
  (:class:`~novelty.flywheel.registry.backend.RegistryBackend`).
- The history is an event log kept as tags of the registered model, one tag per event
  (``novelty.event.<time ns>.<random>`` → the event as JSON); rollback walks back through it. An alias moved
  without its event (the tag write failed after the alias was set) is recorded as ``recovered`` by the next
  change, as in the local registry.
- ``download(alias)`` fetches a version's detector directory and verifies it.

Loading back: ``mlflow.pyfunc.load_model("models:/NAME@champion").predict(pd.DataFrame({"image": paths}))``.

MLflow has no lock across clients: an alias is set in one store update, and two concurrent promotes both succeed
(the later wins; both are in the history). Use the local registry where promotes can race.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.pyfunc import PythonModel

import novelty
from novelty.artifact import read_artifact
from novelty.clock import iso_seconds, utc_now_iso
from novelty.errors import ArtifactError
from novelty.flywheel.registry import policy
from novelty.flywheel.registry.backend import CHAMPION, Change, Event, VersionInfo, check_alias_name
from novelty.flywheel.registry.errors import RegistryError, RegistryNotFoundError, UnknownVersionError
from novelty.flywheel.registry.intake import check_loads, prepare
from novelty.version import __version__

__all__ = ["EXPERIMENT", "MlflowRegistry", "NoveltyModel"]

log = logging.getLogger("novelty.flywheel.mlflow")

EXPERIMENT = "novelty-registry"
EVENT_PREFIX = "novelty.event."
DETECTOR_ARTIFACT = "detector"
MODEL_PATH = "model"

#: the model-as-code script saved with every version: builds the wrapper, pickles nothing
_MODEL_CODE = """\
import mlflow.models

from novelty.flywheel.registry.mlflow_backend import NoveltyModel

mlflow.models.set_model(NoveltyModel())
"""


class NoveltyModel(PythonModel):
    """A saved novelty detector as an MLflow pyfunc model.

    ``predict`` takes a DataFrame with a column ``image`` (else the first column) of image paths or encoded
    image bytes and returns one row per input: ``p_value``, ``novelty`` (= 1 - p_value; higher = more novel),
    ``is_novel`` (p_value < alpha), ``score``, ``prediction`` and ``probability`` (when the detector has a
    head, else None) and ``error`` (the reason an input could not be read, else None).
    """

    def load_context(self, context: Any) -> None:
        self.detector = novelty.load(context.artifacts[DETECTOR_ARTIFACT])

    # a DataFrame hint: MLflow derives no schema from it (one would reject bytes beside paths)
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if df.shape[1] == 0:
            raise RegistryError("the input DataFrame has no column; give image paths or bytes in 'image'")
        column = "image" if "image" in df.columns else df.columns[0]
        images = df[column].tolist()
        res = self.detector.score_batch(images, progress=False)
        prob = res.probability
        return pd.DataFrame(
            {
                "p_value": res.p_value.astype(float),
                "novelty": res.novelty.astype(float),
                "is_novel": res.is_novel.astype(bool),
                "score": res.score.astype(float),
                "prediction": res.predictions if res.predictions is not None else [None] * len(res),
                "probability": prob.astype(float) if prob is not None else [None] * len(res),
                "error": res.errors,
            }
        )


def _detector_in(model_dir: Path) -> Path:
    """The detector directory inside a saved pyfunc model (named in its ``MLmodel``)."""
    from mlflow.models import Model

    try:
        rel = Model.load(str(model_dir)).flavors["python_function"]["artifacts"][DETECTOR_ARTIFACT]["path"]
    except (KeyError, TypeError, OSError) as e:
        raise RegistryError(
            f"{model_dir} is not a novelty pyfunc model (no {DETECTOR_ARTIFACT!r} artifact: {e})"
        ) from e
    return model_dir / rel


def _mlflow_error() -> type[Exception]:
    from mlflow.exceptions import MlflowException

    return MlflowException


_F = TypeVar("_F", bound=Callable[..., Any])


def _store_errors(method: _F) -> _F:
    """An MLflow failure (a store it cannot reach, an unsupported URI) raised as a :class:`RegistryError`."""

    @functools.wraps(method)
    def wrapper(self: MlflowRegistry, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except _mlflow_error() as e:
            raise RegistryError(f"MLflow registry at {self.tracking_uri}: {e}") from e

    return cast(_F, wrapper)


class MlflowRegistry:
    """A model registry on an MLflow tracking store (``sqlite:///…/mlflow.db``, a tracking server URL, …).

    The verbs and return values are those of :class:`novelty.flywheel.registry.store.Registry`, decided by the
    same policy (:mod:`novelty.flywheel.registry.policy`); versions are MLflow's model-version numbers (``"1"``,
    ``"2"`` …).
    """

    def __init__(self, tracking_uri: str, model_name: str, *, artifact_location: str | None = None):
        from mlflow.tracking import MlflowClient

        if not isinstance(model_name, str) or not model_name.strip():
            raise RegistryError("the MLflow model name must be a non-empty string (--model NAME)")
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.artifact_location = artifact_location
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        except _mlflow_error() as e:
            raise RegistryError(f"cannot use the MLflow registry at {tracking_uri}: {e}") from e

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.tracking_uri!r}, {self.model_name!r})"

    @property
    def label(self) -> str:
        """How messages name this registry: ``model 'NAME'``."""
        return f"model {self.model_name!r}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """MLflow has no lock across clients: a change is not serialised with another client's."""
        yield

    # --- helpers ----------------------------------------------------------------------------------------
    def _model(self) -> Any:
        """The registered model (raises :class:`RegistryNotFoundError` when it does not exist yet)."""
        try:
            return self.client.get_registered_model(self.model_name)
        except _mlflow_error() as e:
            if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                raise RegistryNotFoundError(
                    f"no model {self.model_name!r} in the MLflow registry at {self.tracking_uri}; register a "
                    "detector first (novelty register --mlflow URI --model NAME DETECTOR_DIR)"
                ) from None
            raise RegistryError(f"MLflow registry at {self.tracking_uri}: {e}") from e

    def _ensure_model(self) -> None:
        try:
            self._model()
        except RegistryNotFoundError:
            try:
                self.client.create_registered_model(
                    self.model_name,
                    description="novelty detectors (novelty.flywheel.registry.mlflow_backend)",
                )
            except _mlflow_error() as e:
                if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise RegistryError(f"cannot create model {self.model_name!r}: {e}") from e

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(self.client.create_experiment(EXPERIMENT, artifact_location=self.artifact_location))
        except _mlflow_error():
            exp = self.client.get_experiment_by_name(EXPERIMENT)  # created concurrently
            if exp is None:
                raise
            return str(exp.experiment_id)

    @_store_errors
    def append_event(self, event: str, **data: Any) -> Event:
        """Append one event to the history: a tag of the registered model."""
        ev = Event(event=event, time=utc_now_iso(), data=data)
        key = f"{EVENT_PREFIX}{time.time_ns():020d}.{secrets.token_hex(3)}"
        value = json.dumps({"event": event, "time": ev.time, **data}, allow_nan=False)
        self.client.set_registered_model_tag(self.model_name, key, value)
        return ev

    @_store_errors
    def resolve(self, spec: str | int) -> str:
        """A version named by number or by alias → MLflow's version number."""
        text = str(spec).strip()
        if text.isdigit():
            version = str(int(text))
            try:
                self.client.get_model_version(self.model_name, version)
            except _mlflow_error():
                raise UnknownVersionError(
                    f"model {self.model_name!r} has no version {text}; registered: "
                    f"{', '.join(v.version for v in self.list_versions()) or 'none yet'}"
                ) from None
            return version
        check_alias_name(text)
        v = self.alias(text)
        if v is None:
            raise UnknownVersionError(
                f"model {self.model_name!r} has no alias {text!r} (aliases: "
                f"{', '.join(self.aliases()) or 'none'})"
            )
        return v

    # --- reads ------------------------------------------------------------------------------------------
    @_store_errors
    def alias(self, name: str) -> str | None:
        """The version an alias points to, ``None`` when it does not exist."""
        check_alias_name(name)
        self._model()
        try:
            return str(self.client.get_model_version_by_alias(self.model_name, name).version)
        except _mlflow_error():
            return None

    @_store_errors
    def aliases(self) -> dict[str, str]:
        return dict(sorted((str(k), str(v)) for k, v in (self._model().aliases or {}).items()))

    def alias_names(self) -> list[str]:
        """Every alias of the model (MLflow keeps no alias that points nowhere)."""
        return list(self.aliases())

    def check_alias_slot(self, name: str) -> None:
        """Nothing but an alias can take an alias's name in MLflow."""

    @_store_errors
    def write_alias(self, name: str, version: str | None) -> None:
        """Point ``name`` at ``version`` in one store update (``None``: remove it)."""
        if version is None:
            self.client.delete_registered_model_alias(self.model_name, name)
        else:
            self.client.set_registered_model_alias(self.model_name, name, version)

    @_store_errors
    def list_versions(self) -> list[VersionInfo]:
        """Every version, oldest first, with its aliases."""
        by_version: dict[str, list[str]] = {}
        for name, v in self.aliases().items():  # the versions a search returns do not carry their aliases
            by_version.setdefault(v, []).append(name)
        mvs = self.client.search_model_versions(f"name='{self.model_name}'")
        out = []
        for mv in sorted(mvs, key=lambda m: int(m.version)):
            tags = dict(mv.tags or {})
            created = iso_seconds((mv.creation_timestamp or 0) / 1000) or ""
            out.append(
                VersionInfo(
                    version=str(mv.version),
                    artifact_id=tags.get("artifact_id", ""),
                    registered=created,
                    note=mv.description or "",
                    path=Path(str(mv.source)),
                    record=None,
                    aliases=tuple(sorted(by_version.get(str(mv.version), ()))),
                    info={"run_id": mv.run_id, "source": mv.source, **tags},
                )
            )
        return out

    @_store_errors
    def get(self, spec: str | int) -> VersionInfo:
        version = self.resolve(spec)
        for info in self.list_versions():
            if info.version == version:
                return info
        raise UnknownVersionError(f"model {self.model_name!r} has no version {version}")

    @_store_errors
    def has_version(self, version: str) -> bool:
        try:
            self.client.get_model_version(self.model_name, version)
        except _mlflow_error():
            return False
        return True

    def verify(self, version: str) -> str:
        """The artifact id the version was registered with (its tag; :meth:`download` verifies the files)."""
        return self.get(version).artifact_id

    @_store_errors
    def find(self, artifact_id: str) -> str | None:
        for info in self.list_versions():
            if info.artifact_id == artifact_id:
                return info.version
        return None

    @_store_errors
    def history(self) -> list[Event]:
        """Every event, oldest first."""
        tags = self._model().tags or {}
        events = []
        for key in sorted(k for k in tags if k.startswith(EVENT_PREFIX)):
            try:
                doc = json.loads(tags[key])
            except ValueError as e:
                raise RegistryError(
                    f"model {self.model_name!r}: tag {key} is not a history event ({e})"
                ) from e
            ev, t = doc.pop("event"), doc.pop("time", "")
            events.append(Event(event=str(ev), time=str(t), data=doc))
        return events

    @_store_errors
    def champions(self) -> list[str]:
        """The champions a rollback can return to, oldest first (the last is the current one)."""
        return policy.champions(self)

    # --- changes ----------------------------------------------------------------------------------------
    @_store_errors
    def set_alias(self, name: str, version: str | int | None, *, note: str = "") -> Change:
        """Point the alias ``name`` at ``version`` (``None`` removes it); the champion only by promote."""
        return policy.set_alias(self, name, version, note=note)

    @_store_errors
    def register(
        self,
        detector_dir: str | os.PathLike[str],
        record: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        note: str = "",
        *,
        alias: str | None = None,
        load: bool = True,
        embedder: Any = None,
    ) -> str:
        """Log the detector as a pyfunc model and register it as a new version (an already registered detector,
        same artifact id, returns its version). ``alias`` (e.g. ``challenger``) is pointed at it."""
        policy.check_register(alias, note)
        src, art, rec = prepare(detector_dir, record)
        if load:
            check_loads(src, src, embedder)
        self._ensure_model()
        existing = self.find(art.artifact_id)
        if existing is not None:
            log.info("%s is already version %s of %s", src, existing, self.model_name)
            if alias is not None:
                self.set_alias(alias, existing)
            return existing
        version = self._log_and_register(src, art.artifact_id, rec, note)
        with policy.changing(self):
            self.append_event(
                "register", **policy.register_event(version, art.artifact_id, str(src.resolve()), note)
            )
        if alias is not None:
            self.set_alias(alias, version)
        return version

    def _log_and_register(self, src: Path, artifact_id: str, record: Any, note: str) -> str:
        tags = {"artifact_id": artifact_id, "novelty_version": __version__}
        if isinstance(record, dict) and isinstance(record.get("config_hash"), str):
            tags["config_hash"] = record["config_hash"]
        with tempfile.TemporaryDirectory(prefix="novelty-mlflow-") as tmp:
            code = Path(tmp) / "novelty_model.py"
            code.write_text(_MODEL_CODE)
            model_dir = Path(tmp) / MODEL_PATH
            mlflow.pyfunc.save_model(
                path=str(model_dir),
                python_model=str(code),
                artifacts={DETECTOR_ARTIFACT: str(src)},
                pip_requirements=[f"novelty=={__version__}"],
                metadata={"artifact_id": artifact_id},
            )
            copied = _detector_in(model_dir)
            try:
                if read_artifact(copied).artifact_id != artifact_id:
                    raise RegistryError(f"{src} changed while it was registered; register it again")
            except ArtifactError as e:
                raise RegistryError(f"the copy of {src} in the MLflow model does not verify ({e})") from e
            run = self.client.create_run(
                self._experiment_id(),
                tags={
                    "artifact_id": artifact_id,
                    **({"config_hash": tags["config_hash"]} if "config_hash" in tags else {}),
                },
                run_name=f"register {artifact_id[:12]}",
            )
            run_id = run.info.run_id
            try:
                self.client.log_artifacts(run_id, str(model_dir), MODEL_PATH)
                if record is not None:
                    rec_path = Path(tmp) / "record.json"
                    rec_path.write_text(json.dumps(record, indent=2))
                    self.client.log_artifact(run_id, str(rec_path))
                if note:
                    self.client.set_tag(run_id, "mlflow.note.content", note)
                self.client.set_terminated(run_id)
            except BaseException:
                self.client.set_terminated(run_id, status="FAILED")
                raise
        mv = self.client.create_model_version(
            self.model_name,
            source=f"{run.info.artifact_uri}/{MODEL_PATH}",
            run_id=run_id,
            tags=tags,
            description=note or None,
        )
        log.info("registered %s as version %s of %s", src, mv.version, self.model_name)
        return str(mv.version)

    @_store_errors
    def record_comparison(self, path: str | os.PathLike[str]) -> Event:
        """Record a comparison file (its sha256, the two artifact ids, the verdict) as the event ``compared``;
        :meth:`promote` accepts only comparisons recorded so."""
        self._ensure_model()
        return policy.record_comparison(self, path)

    def recorded_comparisons(self) -> set[str]:
        """The sha256 of every comparison file recorded by :meth:`record_comparison`."""
        return policy.recorded_comparisons(self.history())

    @_store_errors
    def promote(
        self,
        version: str | int,
        *,
        comparison: str | os.PathLike[str] | None = None,
        force: bool = False,
        reason: str = "",
        note: str = "",
    ) -> Change:
        """Move the ``champion`` alias to ``version``; refused as in the local registry (a recorded comparison
        that holds up and passed for this version against the current champion) unless ``force`` with a
        ``reason``."""
        return policy.promote(self, version, comparison=comparison, force=force, reason=reason, note=note)

    @_store_errors
    def rollback(self, *, note: str = "") -> Change:
        """Move ``champion`` back to the previous champion in the history (repeatable)."""
        return policy.rollback(self, note=note)

    @_store_errors
    def download(self, alias: str | int = CHAMPION, dst: str | os.PathLike[str] | None = None) -> Path:
        """Fetch the detector directory of a version (or alias) into ``dst`` (a new temporary directory when
        ``None``), verify it, and return its path."""
        import mlflow.artifacts

        version = self.resolve(alias)
        out = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="novelty-mlflow-"))
        out.mkdir(parents=True, exist_ok=True)
        try:
            mv = self.client.get_model_version(self.model_name, version)
            local = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path=MODEL_PATH, dst_path=str(out), tracking_uri=self.tracking_uri
            )
        except _mlflow_error() as e:
            raise RegistryError(f"cannot download version {version} of {self.model_name!r}: {e}") from e
        det = _detector_in(Path(local))
        try:
            art = read_artifact(det)
        except ArtifactError as e:
            raise RegistryError(
                f"version {version} of {self.model_name!r} holds no valid detector ({e})"
            ) from e
        expected = self.get(version).artifact_id
        if expected and art.artifact_id != expected:
            raise RegistryError(
                f"version {version} of {self.model_name!r} holds detector {art.artifact_id[:12]}…, but its tag says "
                f"{expected[:12]}…; the stored model was changed"
            )
        return det
