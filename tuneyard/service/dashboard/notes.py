"""The user's notes and tags on studies and trials: checked, stored, read back.

A study's tags are rows of ``study_tags`` (the study list filters by tag through its index,
:func:`tagged`); a trial's are a JSON list on the trial. Writing a note or tags is a plain
UPDATE of those columns, not of the state, so it never races a state change; it moves the
study's version stamp (``updated_at``), so open pages refresh.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tuneyard.errors import InvalidRequest, NotFound
from tuneyard.service.context import Toolkit
from tuneyard.store.models import Study, StudyTag, Trial

MAX_NOTE_CHARS = 10_000
MAX_TAGS = 20
MAX_TAG_CHARS = 40
# Letters, digits and a few separators; no spaces, so a tag reads as one word in a list.
TAG_PATTERN = re.compile(r"[^\W_][\w.:/+-]*")
TAG_RULE = (
    f"1 to {MAX_TAG_CHARS} characters: a letter or digit first, then letters, digits and "
    "_ . : / + -"
)
# Line breaks and tabs are text; any other control character is refused.
_ALLOWED_CONTROLS = {"\n", "\r", "\t"}


def clean_note(note: str | None) -> str | None:
    """The note to store: None or blank clears it. 422 naming ``note`` for one that is too
    long or holds control characters."""
    if note is None or not note.strip():
        return None
    if len(note) > MAX_NOTE_CHARS:
        raise InvalidRequest(
            f"note: at most {MAX_NOTE_CHARS} characters, got {len(note)}", field="note"
        )
    for ch in note:
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) in ("Cc", "Cs"):
            raise InvalidRequest(
                f"note: control character U+{ord(ch):04X} is not allowed", field="note"
            )
    return note


def clean_tags(tags: Sequence[Any], field: str = "tags") -> list[str]:
    """The tags to store, in the order given, each once. 422 naming ``field`` (and the
    position of the first bad tag) for too many tags or a tag that breaks :data:`TAG_RULE`."""
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"{field}: at most {MAX_TAGS} tags, got {len(tags)}", field=field)
    out: list[str] = []
    for i, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise InvalidRequest(f"{field}[{i}]: must be a string", field=field)
        if len(tag) > MAX_TAG_CHARS or not TAG_PATTERN.fullmatch(tag):
            raise InvalidRequest(
                f"{field}[{i}]: {tag[:60]!r} is not a tag: {TAG_RULE}", field=field
            )
        if tag not in out:
            out.append(tag)
    return out


def study_tags(s: Session, study_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each study's tags in the order they were given (one query for a page of studies)."""
    out: dict[int, list[str]] = {i: [] for i in study_ids}
    if not study_ids:
        return out
    rows = s.execute(
        select(StudyTag.study_id, StudyTag.tag)
        .where(StudyTag.study_id.in_(list(study_ids)))
        .order_by(StudyTag.study_id, StudyTag.position)
    )
    for sid, tag in rows:
        out[int(sid)].append(tag)
    return out


def tagged(tags: Sequence[str]) -> list[Any]:
    """Conditions on ``Study.id``: the study carries every one of ``tags`` (each an index
    probe of ``ix_study_tags_tag_study``)."""
    return [Study.id.in_(select(StudyTag.study_id).where(StudyTag.tag == tag)) for tag in tags]


class Notes:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def set_study(
        self, study_id: int, note: str | None, tags: Sequence[Any] | None, *, set_note: bool
    ) -> tuple[str | None, list[str]]:
        """Set a study's note (when ``set_note``) and tags (when not None); returns both."""
        new_note = clean_note(note) if set_note else None
        new_tags = clean_tags(tags) if tags is not None else None
        with self.kit.transaction() as s:
            exists = s.scalar(select(Study.id).where(Study.id == study_id))
            if exists is None:
                raise NotFound(f"study {study_id} does not exist")
            values: dict[str, Any] = {"updated_at": self.kit.clock()}
            if set_note:
                values["note"] = new_note
            s.execute(update(Study).where(Study.id == study_id).values(**values))
            if new_tags is not None:
                s.execute(delete(StudyTag).where(StudyTag.study_id == study_id))
                s.add_all(
                    StudyTag(study_id=study_id, tag=t, position=i) for i, t in enumerate(new_tags)
                )
            s.flush()
            stored = s.scalar(select(Study.note).where(Study.id == study_id))
            return stored, study_tags(s, [study_id])[study_id]

    def set_trial(
        self, trial_id: int, note: str | None, tags: Sequence[Any] | None, *, set_note: bool
    ) -> tuple[str | None, list[str]]:
        """Set a trial's note (when ``set_note``) and tags (when not None); returns both."""
        new_note = clean_note(note) if set_note else None
        new_tags = clean_tags(tags) if tags is not None else None
        with self.kit.transaction() as s:
            exists = s.scalar(select(Trial.id).where(Trial.id == trial_id))
            if exists is None:
                raise NotFound(f"trial {trial_id} does not exist")
            values: dict[str, Any] = {"updated_at": self.kit.clock()}
            if set_note:
                values["note"] = new_note
            if new_tags is not None:
                values["tags"] = new_tags
            s.execute(update(Trial).where(Trial.id == trial_id).values(**values))
            row = s.execute(select(Trial.note, Trial.tags).where(Trial.id == trial_id)).one()
            return row[0], list(row[1] or [])
