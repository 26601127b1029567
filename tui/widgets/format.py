"""How values look on screen: sizes, times, statuses (translated and coloured), progress, and user
text made safe to show (`plain`, `visible`: no markup, no terminal control characters). Sizes and
status words are core's (core.rules.display), the same as the command line prints."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.text import Text

from core.catalog.models import JobState, Phase, Status
from core.catalog.vocabulary import LinkState
from core.rules.display import STATUS_WORDS, human_size, visible
from core.rules.lifecycle import TRANSIENT
from tui.i18n import N_, _

# Labels keyed by core's enums (a test keeps every member labelled and translated); `_()` at use.
# Statuses in the words the command line prints too (core.rules.display).
STATUS_LABELS: dict[str, str] = dict(STATUS_WORDS)
STATUS_STYLES: dict[str, str] = {
    Status.CREATING: "bold cyan",
    Status.IMPORTING: "bold #5fafff",
    Status.IMPORT_FAILED: "bold red",
    Status.AVAILABLE: "green",
    Status.DELETING: "yellow",
    Status.DELETED: "dim",
}
JOB_STATE_LABELS: dict[str, str] = {
    JobState.WAITING: N_("waiting"),
    JobState.QUEUED: N_("queued"),
    JobState.RUNNING: N_("running"),
    JobState.DONE: N_("done"),
    JobState.FAILED: N_("failed"),
    JobState.CANCELLED: N_("cancelled"),
}
# What a running job is doing, as its worker reports it (`JobContext.progress`).
PHASE_LABELS: dict[str, str] = {
    Phase.RUNNING: N_("running"),
    Phase.WAITING_FOR_UPLOAD: N_("waiting for upload"),
    Phase.UPLOADING: N_("uploading"),
    Phase.DOWNLOADING: N_("downloading"),
    Phase.VERIFYING: N_("verifying"),
    Phase.INSPECTING: N_("inspecting"),
    Phase.CONVERTING: N_("converting"),
    Phase.RESIZING: N_("resizing"),
    Phase.FINISHING: N_("finishing"),
    Phase.CHECKSUM: N_("checksum"),
    Phase.PUBLISHING: N_("publishing"),
}

# A download link's state, as the link screen says it (the gateway's own reason, core.links.links.link_state).
LINK_STATE_LABELS: dict[str, str] = {
    LinkState.ACTIVE: N_("ready: the links answer now"),
    LinkState.PREPARING: N_("preparing the file (checksum or conversion); the links answer once it is ready"),
    LinkState.REVOKED: N_("revoked: the links no longer answer"),
    LinkState.EXPIRED: N_("expired: the links no longer answer; generate a new link"),
    LinkState.IMAGE_UNAVAILABLE: N_("the image is no longer available: the links no longer answer"),
    LinkState.TENANT_CHANGED: N_("the image now belongs to another tenant: the links no longer answer"),
    LinkState.ACCESS_LOST: N_("its maker can no longer see the image: the links no longer answer"),
    LinkState.FILE_MISSING: N_("the file is missing: the links no longer answer"),
    LinkState.EXPORT_FAILED: N_("preparing the file failed; generate a new link later"),
    LinkState.UPLOADED: N_("uploaded: every byte has arrived; the import goes on"),
}
# An upload link's state, as the upload screen says it (the others as LINK_STATE_LABELS say them).
UPLOAD_STATE_LABELS: dict[str, str] = {
    LinkState.ACTIVE: N_("open: waiting for the file's bytes"),
    LinkState.UPLOADED: N_("uploaded"),
    LinkState.REVOKED: N_("revoked: the upload was cancelled"),
    LinkState.EXPIRED: N_("expired before every byte arrived; start a new upload"),
    LinkState.IMAGE_UNAVAILABLE: N_("the import ended: the link takes no more bytes"),
}
# Phases of an import that waits for an upload's bytes: the list shows these instead of the status.
UPLOAD_PHASES = (Phase.WAITING_FOR_UPLOAD, Phase.UPLOADING)


def plain(value: object, style: str = "") -> Text:
    """User text for a widget: never read as markup (`[/bogus]` shows as typed), controls escaped."""
    return Text(visible(value), style=style)


def status_label(status: str) -> str:
    return _(STATUS_LABELS.get(status, status))


def status_labels() -> dict[str, str]:
    return {str(status): _(label) for status, label in STATUS_LABELS.items()}


def phase_label(phase: str) -> str:
    """A job's phase in the current language (an unknown word as it is)."""
    return _(PHASE_LABELS.get(phase, phase))


def link_state_label(state: str) -> str:
    """A download link's state as a sentence in the current language (an unknown word as it is)."""
    return _(LINK_STATE_LABELS.get(state, state))


def upload_state_label(state: str) -> str:
    """An upload link's state in the current language."""
    label = UPLOAD_STATE_LABELS.get(state)
    return _(label) if label else link_state_label(state)


def job_state_label(state: str) -> str:
    return _(JOB_STATE_LABELS.get(state, state))


def human_rate(rate: float | None) -> str:
    if not rate:
        return "-"
    return human_size(int(rate)) + "/s"


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def short_time(value: str | None, *, with_time: bool = True) -> str:
    """ISO 8601 'YYYY-MM-DDTHH:MM:SSZ' -> 'YYYY-MM-DD HH:MM' (UTC)."""
    if not value:
        return "-"
    return value[:16].replace("T", " ") if with_time else value[:10]


def fit(text: str, width: int) -> str:
    """Cut or pad `text` to exactly `width` terminal cells (CJK characters count two)."""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)


def percent(progress: dict[str, Any] | None) -> float | None:
    if not progress:
        return None
    total = progress.get("bytes_total") or 0
    if total <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * (progress.get("bytes_done") or 0) / total))


def eta_seconds(progress: dict[str, Any] | None) -> float | None:
    if not progress:
        return None
    total, done, rate = progress.get("bytes_total"), progress.get("bytes_done") or 0, progress.get("rate")
    if not total or not rate or rate <= 0:
        return None
    return max(0.0, (total - done) / rate)


def bar(pct: float | None, width: int) -> str:
    if pct is None:
        return "░" * width
    full = round(pct / 100 * width)
    return "█" * full + "░" * (width - full)


def status_cell(status: str, progress: dict[str, Any] | None, width: int) -> Text:
    """The status, and for work under way a small bar with the percentage. An import waiting for
    an upload shows its phase instead: `waiting for upload`, `uploading 43%`."""
    label = status_label(status)
    style = STATUS_STYLES.get(status, "")
    pct = percent(progress)
    phase = (progress or {}).get("phase")
    if status in TRANSIENT and phase in UPLOAD_PHASES:
        label = phase_label(phase)
        if phase == Phase.WAITING_FOR_UPLOAD:
            return Text(fit(label, width).rstrip(), style=style)
    if status in TRANSIENT and progress is not None:
        suffix = f" {pct:.0f}%" if pct is not None else ""
        room = width - cell_len(label) - 1 - len(suffix)
        if room >= 3:
            return Text.assemble((label, style), " ", (bar(pct, min(room, 10)), style), suffix)
        return Text.assemble((label, style), suffix)
    return Text(label, style=style)


def progress_line(progress: dict[str, Any] | None) -> str:
    """phase · 42% · 12M/s · 3m05s left — for the detail line under the list."""
    if not progress:
        return ""
    pct = percent(progress)
    parts = [phase_label(progress.get("phase") or "") or job_state_label(progress.get("state") or "")]
    if pct is not None:
        parts.append(f"{pct:.0f}%")
        parts.append(f"{human_size(progress.get('bytes_done'))} / {human_size(progress.get('bytes_total'))}")
    if progress.get("rate"):
        parts.append(human_rate(progress.get("rate")))
    eta = eta_seconds(progress)
    if eta is not None:
        parts.append(_("{time} left").format(time=human_duration(eta)))
    return " · ".join(p for p in parts if p)
