"""The Concepts tab's handlers: train a concept on uploaded pictures (a fresh copy of the served
model learns it, so the model the other tabs use is never changed mid-way) and offer it in
every tab; the live loss curve reads what the run has logged so far."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from retouch.errors import RetouchError
from retouch.io.convert import read_input_image
from retouch.models.loading import load_model
from retouch.train.concept import ConceptSettings
from retouch.train.personalize import METHODS, personalize
from retouch.ui.session import UISession

MIN_PICTURES, MAX_PICTURES = 3, 20
DEFAULT_CONCEPT_STEPS = 200
_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")


def concept_name(token: str, method: str, taken: set[str]) -> str:
    """A folder name for a new concept: the token's letters and the method, numbered when taken."""
    base = f"{_NAME_RE.sub('', token) or 'concept'}-{method}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def keep_pictures(session: UISession, files: list[str] | None, name: str) -> Path:
    """The uploads, checked and copied into ``outputs/concept-pictures/NAME/`` (a folder, as
    ``retouch train`` takes)."""
    files = list(files or [])
    if not MIN_PICTURES <= len(files) <= MAX_PICTURES:
        raise RetouchError(f"upload {MIN_PICTURES} to {MAX_PICTURES} pictures of the concept, got {len(files)}")
    folder = session.folder("concept-pictures") / name
    shutil.rmtree(folder, ignore_errors=True)  # a failed earlier try with the same name
    folder.mkdir(parents=True)
    for index, path in enumerate(files):
        read_input_image(path).image.convert("RGB").save(folder / f"{index:02d}.png")
    return folder


def train_from_uploads(
    session: UISession,
    client: str,
    files: list[str] | None,
    token: str,
    *,
    method: str = "textual-inversion",
    class_word: str = "",
    init_word: str = "",
    steps: int = DEFAULT_CONCEPT_STEPS,
    seed: int = 0,
) -> str:
    """``retouch train METHOD`` on the uploads, into ``outputs/concepts/NAME``; the concept is then
    offered in every tab. Logs each step's loss under ``client`` for the live curve. Its name."""
    if method not in METHODS:
        raise RetouchError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    token = (token or "").strip()
    name = concept_name(token, method, set(session.concepts) | names_in(session.outputs / "concepts"))
    pictures = keep_pictures(session, files, name)
    losses = session.losses[client] = []
    model = load_model(session.model.name, device=session.model.pipe.device)  # trained in place: a copy
    options = {"init_word": init_word.strip()} if method == "textual-inversion" and init_word.strip() else {}
    result = personalize(
        model,
        method,  # type: ignore[arg-type]
        [pictures],
        [token],
        session.folder("concepts") / name,
        class_words=[class_word.strip() or None],
        settings=ConceptSettings(steps=int(steps), seed=int(seed), checkpoint_every=0),
        progress=True,
        on_step=lambda _step, loss: losses.append(loss),
        **options,
    )
    return session.add_concept(result.folder)


def names_in(folder: Path) -> set[str]:
    """The entries of ``folder`` (none when it does not exist)."""
    return {path.name for path in folder.iterdir()} if folder.is_dir() else set()


def loss_rows(session: UISession, client: str) -> list[tuple[int, float]]:
    """(step, loss) of ``client``'s training so far."""
    return [(step + 1, loss) for step, loss in enumerate(list(session.losses.get(client, [])))]
