"""What one server holds: the loaded model, the outputs folder, and what keeps runs apart.

Every run that uses the model takes ``UISession.lock``, so two requests never share the
pipeline at once (gradio's queue already lets one run at a time per model; the lock also holds
back a new run while a cancelled one is still finishing its step). A run is cancelled by
setting its session's event, which the next progress step turns into ``RunCancelled``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retouch.errors import RetouchError
from retouch.io.atomic import atomic_write_bytes, check_writable
from retouch.io.png import model_display_name
from retouch.models.loading import DEFAULT_INSTRUCT_MODEL, LoadedModel, load_model

DEFAULT_OUTPUTS = Path("outputs/ui")
# An absolute POSIX path: a slash, folders, then the last part (kept, as the file's name).
_PATH_RE = re.compile(r"(?<![\w.:/])/(?:[^/\s'\"]+/)+([^/\s'\",;)]+)")


class RunCancelled(RetouchError):
    """The user pressed Cancel; the run stopped at its next step."""


@dataclass
class UISession:
    """The server's state, shared by every browser tab connected to it."""

    model: LoadedModel
    outputs: Path = DEFAULT_OUTPUTS  # every picture made is also saved here, with its recipe
    imagic_cache: Path | None = None  # Imagic's stage cache (None: ~/.cache/retouch/imagic)
    instruct_model: str = DEFAULT_INSTRUCT_MODEL  # the Instruct tab's model, loaded when first used
    concepts: dict[str, Path] = field(default_factory=dict)  # name -> concept folder, offered in the tabs
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancelled: dict[str, threading.Event] = field(default_factory=dict)  # browser session -> its flag
    losses: dict[str, list[float]] = field(default_factory=dict)  # browser session -> its training's losses
    _instruct: LoadedModel | None = field(default=None, repr=False)

    @property
    def model_label(self) -> str:
        """The model's name as the browser sees it: a bundled name or hub id, or a path's last part."""
        return model_display_name(self.model.name)

    def folder(self, kind: str) -> Path:
        """``outputs/kind``, created and proved writable."""
        folder = self.outputs / kind
        check_writable(folder)
        return folder

    @contextmanager
    def run(self, client: str) -> Iterator[threading.Event]:
        """Hold the model for one run of browser session ``client``; yields its cancel flag."""
        flag = self.cancelled.setdefault(client, threading.Event())
        with self.lock:
            flag.clear()
            yield flag

    def cancel(self, client: str) -> None:
        """Stop ``client``'s run at its next step (a no-op when none runs)."""
        if client in self.cancelled:
            self.cancelled[client].set()

    def instruct(self) -> LoadedModel:
        """The instruct model, loaded on first use on the main model's device (hold ``run``)."""
        if self._instruct is None:
            self._instruct = load_model(self.instruct_model, device=self.model.pipe.device)
        return self._instruct

    def add_concept(self, folder: str | Path) -> str:
        """Offer the concept in ``folder`` (a ``concept.json`` folder) in every tab; its name."""
        folder = Path(folder).expanduser().resolve()
        if not (folder / "concept.json").is_file():
            raise RetouchError(f"{folder.name} holds no concept.json: give a folder `retouch train` wrote")
        self.concepts[folder.name] = folder
        return folder.name

    def concept_folders(self, names: list[str] | None) -> list[Path]:
        """The folders of the concepts picked by name in a tab."""
        unknown = [name for name in names or [] if name not in self.concepts]
        if unknown:
            raise RetouchError(f"unknown concept {unknown[0]!r}; pick one of the list (or train it first)")
        return [self.concepts[name] for name in names or []]

    def keep_input(self, path: str | Path) -> Path:
        """Copy an upload into ``outputs/inputs/``, so the recipe of what is made from it names a
        file that stays (gradio's upload cache is cleaned)."""
        return self.keep_bytes(Path(path).read_bytes(), Path(path).suffix.lower() or ".png")

    def keep_bytes(self, data: bytes, suffix: str) -> Path:
        """``data`` as ``outputs/inputs/HASH{suffix}`` (named by its content, written once)."""
        kept = self.folder("inputs") / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
        if not kept.exists():
            atomic_write_bytes(kept, data)
        return kept.resolve()


def public_text(text: str) -> str:
    """``text`` with every absolute path cut to its file name: the browser never sees where the
    server keeps files."""
    return _PATH_RE.sub(r"\1", text)


def public(value: Any) -> Any:
    """``public_text`` applied to every string inside a JSON-like value (a recipe, a report)."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, dict):
        return {key: public(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [public(item) for item in value]
    return value
