"""Label Studio through its REST API: an export pushed into a project, the finished annotations pulled back.

    client = LabelStudio("http://localhost:8080", read_api_key())   # novelty.flywheel.labels.labelstudio_client
    pushed = push_export(client, "export/", "windshield")    # project, storages, tasks; idempotent
    pulled = pull_labels(client, "windshield", selection.items)   # the tasks of this selection, as exported

:func:`push_export` takes what ``novelty export --format label-studio`` wrote (``tasks.json``,
``label_config.xml``, ``export.json``) and brings a project up to date: it creates the project named ``project``
with the labelling config (or adds the classes it lacks to an existing one, never removing any), a "Local files"
import storage over the folders of the images (:func:`~novelty.flywheel.labels.labelstudio.storage_paths`; created, never
synced), and imports the tasks with their pre-annotations. Tasks already in the project (the same ``sha256`` or
``novelty_id`` in their data) are left as they are, with their annotations: pushing twice adds nothing. Before
importing, it fetches one image through the server, so a server whose document root differs from the export's
is found before any task points at a missing file; a project it created a moment before is removed again then.

:func:`pull_labels` reads the project's JSON export (``GET /api/projects/<id>/export?exportType=JSON``) and keeps
the tasks of the selection (by ``novelty_id``, else ``sha256``); written to a file, they go through the one
reader of Label Studio's JSON (:func:`novelty.flywheel.labels.labelstudio.read_export`, via
:func:`novelty.flywheel.labels.labelimport.import_labels`). It counts labelled, skipped and unlabelled tasks.

:class:`LabelStudioSettings` is a flywheel's ``[label_studio]`` section, with the push and pull of a turn.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novelty.errors import InvalidInputError
from novelty.fileio import atomic_write_text, sha256_bytes
from novelty.flywheel.labels import labelstudio
from novelty.flywheel.labels.labelstudio_client import (
    API_KEY_ENV,
    LabelStudio,
    LabelStudioAuthError,
    LabelStudioError,
    check_url,
    read_api_key,
)

__all__ = [
    "LabelStudioSettings",
    "Pulled",
    "PushResult",
    "export_items",
    "find_project",
    "pull_labels",
    "push_export",
]

log = logging.getLogger(__name__)

#: tasks per import request
IMPORT_CHUNK = 250
_SERVER_ROOT = re.compile(r'LOCAL_FILES_DOCUMENT_ROOT="([^"]*)"')


# --- projects -------------------------------------------------------------------------------------------------
def find_project(client: LabelStudio, title: str) -> dict[str, Any] | None:
    """The project named exactly ``title`` (``None`` when there is none); :class:`LabelStudioError` when two or
    more have that name."""
    found: list[dict[str, Any]] = []
    page, size = 1, 100
    while True:
        res = client.request("GET", "/api/projects", query={"title": title, "page": page, "page_size": size})
        results = res.get("results") if isinstance(res, dict) else res
        if not isinstance(results, list):
            raise LabelStudioError(f"Label Studio at {client.url}: /api/projects did not answer with a list")
        found += [p for p in results if isinstance(p, dict) and p.get("title") == title]
        if not (isinstance(res, dict) and res.get("next")) or len(results) < size:
            break
        page += 1
    if len(found) > 1:
        ids = ", ".join(str(p.get("id")) for p in found)
        raise LabelStudioError(
            f"{len(found)} projects at {client.url} are named {title!r} (ids {ids}): rename all but one in "
            "Label Studio, or give a name only one project has"
        )
    return found[0] if found else None


def _project_tasks(client: LabelStudio, project_id: int) -> list[dict[str, Any]]:
    """Every task of the project with its annotations (Label Studio's JSON export)."""
    res = client.request(
        "GET",
        f"/api/projects/{project_id}/export",
        query={"exportType": "JSON", "download_all_tasks": "true"},
    )
    if not isinstance(res, list):
        raise LabelStudioError(
            f"Label Studio at {client.url}: the JSON export of project {project_id} is not a list of tasks"
        )
    return [t for t in res if isinstance(t, dict)]


def _task_keys(task: Mapping[str, Any]) -> tuple[str | None, str | None]:
    data = task.get("data")
    if not isinstance(data, dict):
        return None, None
    nid, sha = data.get("novelty_id"), data.get("sha256")
    return (nid if isinstance(nid, str) else None, sha if isinstance(sha, str) else None)


@dataclass(frozen=True)
class PushResult:
    """What :func:`push_export` did to the project."""

    project_id: int
    project_url: str
    created: bool  # the project was created now
    config_updated: bool  # classes were added to its labelling config
    storages_created: tuple[str, ...]  # the "Local files" storage paths added
    n_new: int  # tasks imported now
    n_present: int  # tasks of the export the project had already (left as they were)

    def summary(self, title: str) -> str:
        what = "created" if self.created else "updated" if self.n_new or self.config_updated else "unchanged"
        text = (
            f"Label Studio project {title!r} {what} ({self.project_url}): {self.n_new} task(s) imported, "
            f"{self.n_present} already there"
        )
        if self.storages_created:
            text += f"; local-files storage {', '.join(self.storages_created)}"
        if self.config_updated:
            text += "; classes added to its labelling config"
        return text


def _read_export_dir(export_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    try:
        manifest = json.loads((export_dir / "export.json").read_text(encoding="utf-8"))
        tasks = json.loads((export_dir / "tasks.json").read_text(encoding="utf-8"))
        config = (export_dir / "label_config.xml").read_text(encoding="utf-8")
    except (OSError, ValueError) as e:
        raise InvalidInputError(
            f"{export_dir}: not a Label Studio export of novelty (export.json, tasks.json, label_config.xml: {e})"
        ) from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("tool") != "label-studio"
        or not isinstance(tasks, list)
    ):
        raise InvalidInputError(
            f"{export_dir}: not a Label Studio export (export.json tool is not label-studio)"
        )
    return manifest, tasks, config


def _config_for(client: LabelStudio, project: Mapping[str, Any], ours: str, title: str) -> str | None:
    """The labelling config to give an existing project: ``None`` when it has every class of ours; else its
    classes followed by the missing ones (none removed, so no annotation loses its class)."""
    theirs = labelstudio.config_classes(str(project.get("label_config") or ""))
    wanted = labelstudio.config_classes(ours) or []
    if theirs is None:
        raise LabelStudioError(
            f"the project {title!r} at {client.url} has a labelling config without the choices "
            f"{labelstudio.FROM_NAME!r} over the image {labelstudio.TO_NAME!r} that the tasks need: give another "
            "project name, or replace its config with the exported label_config.xml"
        )
    missing = [c for c in wanted if c not in theirs]
    return labelstudio.label_config([*theirs, *missing]) if missing else None


def _ensure_storages(
    client: LabelStudio, project_id: int, paths: Sequence[Path], root: Path
) -> tuple[str, ...]:
    existing = client.request("GET", "/api/storages/localfiles", query={"project": project_id}) or []
    have = [Path(str(s.get("path"))) for s in existing if isinstance(s, dict) and s.get("path")]
    created: list[str] = []
    for p in paths:
        if any(p == h or h in p.parents for h in have):
            continue
        try:
            client.request(
                "POST",
                "/api/storages/localfiles",
                {
                    "project": project_id,
                    "path": str(p),
                    "title": f"novelty {p.name}"[:256],
                    "use_blob_urls": False,
                    "regex_filter": "",
                    "recursive_scan": True,
                },
            )
        except LabelStudioAuthError:
            raise
        except LabelStudioError as e:
            raise _storage_error(client, p, root, str(e)) from None
        have.append(p)
        created.append(str(p))
    return tuple(created)


def _storage_error(client: LabelStudio, path: Path, root: Path, message: str) -> LabelStudioError:
    served = _SERVER_ROOT.search(message)
    start = f"restart it with `{client.start_command()}`"
    if served and "must be a subdirectory" in message:
        return LabelStudioError(
            f"Label Studio at {client.url} serves local files from {served.group(1)} (its "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT), and the images lie outside it, under {path}: the export's "
            f"document root is {root}; {start}"
        )
    if served and "cannot be the same" in message:
        return LabelStudioError(
            f"Label Studio at {client.url} serves local files from {served.group(1)}, which is the images' folder "
            f"{path} itself (it needs a root above the storage folder): the export's document root is {root}; "
            f"{start}"
        )
    if "LOCAL_FILES_SERVING_ENABLED" in message:
        return LabelStudioError(f"Label Studio at {client.url} does not serve local files: {start}")
    if "does not exist" in message:
        return LabelStudioError(
            f"Label Studio at {client.url} cannot see the folder {path} (does it run on another machine or in a "
            f"container? it must see the images at the same paths): {message}"
        )
    return LabelStudioError(f"{message} (creating the local-files storage {path})")


def _check_served(client: LabelStudio, task: Mapping[str, Any], root: Path) -> None:
    """Fetch one task's image through the server: it must be the file the task names (same sha256)."""
    data = task.get("data") or {}
    url, sha = data.get(labelstudio.TO_NAME), data.get("sha256")
    if not isinstance(url, str):
        return
    status, body = client.get_bytes(url)
    if status == 200 and (not isinstance(sha, str) or sha256_bytes(body) == sha):
        return
    path = (task.get("meta") or {}).get("path") or urllib.parse.unquote(url)
    raise LabelStudioError(
        f"Label Studio at {client.url} does not serve {path} at {url} (HTTP {status}"
        + (", other bytes" if status == 200 else "")
        + f"): its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT is not the export's document root {root}; restart it "
        f"with `{client.start_command()}`, or export with the document root it has (--document-root; flywheel "
        "config: [label_studio] document_root). No task was imported."
    )


def push_export(client: LabelStudio, export_dir: str | os.PathLike[str], project: str) -> PushResult:
    """Create or update the project ``project`` from a Label Studio export folder (see the module docstring)."""
    d = Path(export_dir)
    manifest, tasks, config = _read_export_dir(d)
    root = Path(str(manifest.get("document_root") or ""))
    if client.document_root is None:
        client.document_root = root
    paths = [str((t.get("meta") or {}).get("path")) for t in tasks if (t.get("meta") or {}).get("path")]
    storages = labelstudio.storage_paths(paths, root)
    found = find_project(client, project)
    created = config_updated = False
    if found is None:
        found = client.request("POST", "/api/projects", {"title": project, "label_config": config})
        created = True
        log.info("created the Label Studio project %r (id %s)", project, found.get("id"))
    else:
        new_config = _config_for(client, found, config, project)
        if new_config is not None:
            client.request("PATCH", f"/api/projects/{found['id']}", {"label_config": new_config})
            config_updated = True
    pid = int(found["id"])
    present_ids: set[str] = set()
    present_shas: set[str] = set()
    for t in [] if created else _project_tasks(client, pid):
        nid, sha = _task_keys(t)
        present_ids.update([nid] if nid else [])
        present_shas.update([sha] if sha else [])
    new = [t for t in tasks if _task_keys(t)[0] not in present_ids and _task_keys(t)[1] not in present_shas]
    try:
        made = _ensure_storages(client, pid, storages, root)
        if new:
            _check_served(client, new[0], root)
    except LabelStudioError:
        if created:  # the project made a moment ago holds nothing yet: leave no half-made project behind
            try:
                client.request("DELETE", f"/api/projects/{pid}")
            except LabelStudioError as e:
                log.warning("could not remove the empty project %s again: %s", pid, e)
        raise
    for start in range(0, len(new), IMPORT_CHUNK):
        client.request("POST", f"/api/projects/{pid}/import", new[start : start + IMPORT_CHUNK])
    return PushResult(
        project_id=pid,
        project_url=f"{client.url}/projects/{pid}",
        created=created,
        config_updated=config_updated,
        storages_created=made,
        n_new=len(new),
        n_present=len(tasks) - len(new),
    )


# --- pulling the annotations ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pulled:
    """The tasks of a project that belong to the items asked for, and how far they are."""

    project_id: int
    tasks: list[dict[str, Any]] = field(repr=False)
    labelled: int
    skipped: int
    unlabelled: int
    missing: tuple[str, ...]  # item ids with no task in the project
    others: int  # tasks of the project that belong to none of the items (left out)

    @property
    def n(self) -> int:
        return len(self.tasks)

    @property
    def finished(self) -> bool:
        """Every item has a task, and every task is labelled or skipped."""
        return not self.missing and self.unlabelled == 0

    def summary(self, title: str) -> str:
        text = (
            f"Label Studio project {title!r}: {self.n} task(s) of the selection, {self.labelled} labelled, "
            f"{self.skipped} skipped, {self.unlabelled} unlabelled"
        )
        if self.missing:
            text += (
                f"; {len(self.missing)} item(s) without a task in the project, e.g. {list(self.missing[:3])}"
            )
        if self.others:
            text += f"; {self.others} task(s) of other selections left out"
        return text

    def to_json_text(self) -> str:
        """The kept tasks as a Label Studio JSON export (what :func:`~novelty.flywheel.labels.labelstudio.read_export`
        reads)."""
        return json.dumps(self.tasks, indent=1, ensure_ascii=False) + "\n"


def pull_labels(client: LabelStudio, project: str, items: Iterable[Any]) -> Pulled:
    """The tasks of ``project`` that belong to ``items`` (objects with ``id`` and ``sha256``: a selection's items,
    or the tasks of an export), matched by ``novelty_id``, else by ``sha256`` (the task then carries the item's
    id, so the import matches it), with their annotations; see :class:`Pulled`."""
    found = find_project(client, project)
    if found is None:
        raise LabelStudioError(
            f"no project named {project!r} at {client.url}: export to it first "
            f"(novelty export SELECTION --to-label-studio {client.url} --project {project!r})"
        )
    pid = int(found["id"])
    wanted = list(items)
    by_id = {it.id: it for it in wanted}
    by_sha = {it.sha256: it for it in wanted}
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    others = 0
    for t in _project_tasks(client, pid):
        nid, sha = _task_keys(t)
        item = by_id.get(nid) if nid else None
        if item is None and sha:
            item = by_sha.get(sha)
        if item is None:
            others += 1
            continue
        if item.id in seen:  # a second task of one image (made by hand): the first counts
            continue
        seen.add(item.id)
        if nid != item.id:
            t = {**t, "data": {**t["data"], "novelty_id": item.id}}
        kept.append(t)
    states = [labelstudio.task_state(t) for t in kept]
    return Pulled(
        project_id=pid,
        tasks=kept,
        labelled=states.count("labelled"),
        skipped=states.count("skipped"),
        unlabelled=states.count("unlabelled"),
        missing=tuple(it.id for it in wanted if it.id not in seen),
        others=others,
    )


@dataclass(frozen=True)
class _Key:
    id: str
    sha256: str


def export_items(export_dir: str | os.PathLike[str]) -> list[Any]:
    """The items an export sent to Label Studio (``id``, ``sha256`` of each task of its ``tasks.json``)."""
    _, tasks, _ = _read_export_dir(Path(export_dir))
    out = []
    for t in tasks:
        nid, sha = _task_keys(t)
        if nid and sha:
            out.append(_Key(nid, sha))
    return out


# --- the flywheel's settings ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelStudioSettings:
    """A flywheel's ``[label_studio]`` section: the server, the project (``{turn}`` in the name: the turn's
    number, one project per turn), where the API key is, and the one document root every exported image lies
    under (the server's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``)."""

    url: str
    project: str
    document_root: Path
    api_key_file: Path | None = None
    api_key_env: str = API_KEY_ENV

    KEYS = ("url", "project", "document_root", "api_key_file", "api_key_env")

    def project_name(self, turn: int) -> str:
        return self.project.replace("{turn}", f"{turn:04d}")

    def connect(self) -> LabelStudio:
        return LabelStudio(
            self.url, read_api_key(self.api_key_file, self.api_key_env), document_root=self.document_root
        )

    def push(self, export_dir: str | os.PathLike[str], turn: int) -> PushResult:
        """A turn's export into its project (:func:`push_export`)."""
        return push_export(self.connect(), export_dir, self.project_name(turn))

    def pull(self, export_dir: str | os.PathLike[str], turn: int, labels: str | os.PathLike[str]) -> Pulled:
        """The annotations of a turn's exported tasks; written to ``labels`` (a Label Studio JSON export) only
        when every task is labelled or skipped (:attr:`Pulled.finished`), so the turn waits until then."""
        pulled = pull_labels(self.connect(), self.project_name(turn), export_items(export_dir))
        if pulled.finished:
            Path(labels).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(labels, pulled.to_json_text())
        return pulled

    @classmethod
    def from_table(cls, table: Mapping[str, Any], base: Path) -> LabelStudioSettings:
        """From the parsed section; paths relative to ``base`` (the config's folder). :class:`InvalidInputError`
        names the key that is missing or wrong."""
        missing = [k for k in ("url", "project", "document_root") if not table.get(k)]
        if missing:
            raise InvalidInputError(
                f"[label_studio] needs {', '.join(missing)} (url of the server, the project's name, and the "
                "document root the server serves local files from)"
            )
        for key in cls.KEYS:
            if key in table and not isinstance(table[key], str):
                raise InvalidInputError(f"[label_studio] {key} must be a string, got {table[key]!r}")
        if "api_key_file" in table and "api_key_env" in table:
            raise InvalidInputError("[label_studio] give api_key_file or api_key_env, not both")

        def path(value: str) -> Path:
            q = Path(os.path.expanduser(value))
            return Path(os.path.abspath(q if q.is_absolute() else base / q))

        project = table["project"].strip()
        if len(project.replace("{turn}", "0000")) < 3:
            raise InvalidInputError(
                f"[label_studio] project must have at least 3 characters, got {project!r}"
            )
        return cls(
            url=check_url(table["url"], "[label_studio] url"),
            project=project,
            document_root=path(table["document_root"]),
            api_key_file=path(table["api_key_file"]) if table.get("api_key_file") else None,
            api_key_env=table.get("api_key_env") or API_KEY_ENV,
        )
