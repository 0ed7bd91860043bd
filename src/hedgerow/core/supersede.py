"""When a newer deployment supersedes the one the core is applying, and what undoing the
older one takes (pure: no asyncio, files or network).

The deployment agent (``core/deployment.py``) applies one deployment at a time. A
notification naming another deployment while one is in progress is checked (fetched and
verified) and, when its document was made after the one in progress, that one is cancelled
where it stands: what it had done is undone as ``UNDO`` says for its ``Phase``, it is
reported ``Superseded``, and the newer one runs next. A phase with no entry in ``UNDO`` is
never interrupted (a core release being handed over to the new version, or its trial).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Phase(enum.Enum):
    """Where a deployment in progress stands."""

    #: fetching and verifying the signed document: nothing touched
    CHECKING = "checking"
    #: downloading and checking artifacts (function code, a release's wheels)
    FETCHING = "fetching"
    #: staged on disk; a release of the core being installed beside the running one
    INSTALLING = "installing"
    #: staged; routes, functions and devices being applied, or their health checked
    APPLYING = "applying"
    #: switched to a new release of the core (restarting into it), or that release's trial
    #: applying it: the launcher and the trial decide, never a newer deployment
    HANDING_OVER = "handing-over"


@dataclass(frozen=True, slots=True)
class Undo:
    """What cancelling a deployment in a phase leaves to clean up."""

    #: apply the last good deployment again (something of the cancelled one may run)
    roll_back: bool
    #: remove its staged document and signature
    unstage: bool
    #: remove the artifacts it fetched that no kept deployment names
    drop_artifacts: bool


UNDO: Mapping[Phase, Undo] = {
    Phase.CHECKING: Undo(roll_back=False, unstage=False, drop_artifacts=False),
    Phase.FETCHING: Undo(roll_back=False, unstage=False, drop_artifacts=True),
    Phase.INSTALLING: Undo(roll_back=False, unstage=True, drop_artifacts=True),
    Phase.APPLYING: Undo(roll_back=True, unstage=True, drop_artifacts=True),
}


def made_at(document: Mapping[str, Any]) -> dt.datetime | None:
    """A document's ``created_at`` (None when missing or not ISO 8601)."""
    value = document.get("created_at")
    if not isinstance(value, str):
        return None
    try:
        made = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return made if made.tzinfo is not None else made.replace(tzinfo=dt.UTC)


def made_before(document: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether ``document`` was made strictly before ``other`` (False when either time is
    unknown: nothing is assumed about documents without one)."""
    first, second = made_at(document), made_at(other)
    return first is not None and second is not None and first < second


def supersedes(candidate: Mapping[str, Any], in_progress: Mapping[str, Any], phase: Phase) -> bool:
    """Whether ``candidate`` (a verified document) cancels ``in_progress`` in ``phase``."""
    return (
        phase in UNDO
        and candidate.get("deployment_id") != in_progress.get("deployment_id")
        and made_before(in_progress, candidate)
    )
