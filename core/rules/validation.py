"""Field rules for image metadata, shared by the CLI, the TUI (as you type) and the import pipeline.

Each check returns the canonical value or raises `Invalid` with one line naming the field and what
is allowed. Fields are named in people's words (`OS version`, `size (GB)`), the same on the command
line and in the TUI; `FIELD_WORDS` maps each command-line option to its word.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from core.catalog.errors import Invalid, Msg
from core.catalog.osmatrix import OsMatrix

NAME_MAX = 64
DESCRIPTION_MAX = 256
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

# Each image field in people's words, by its command-line option (the CLI names both in usage errors).
FIELD_WORDS: dict[str, Msg] = {
    "--name": Msg("name"),
    "--os-type": Msg("system type"),
    "--platform": Msg("platform"),
    "--arch": Msg("architecture"),
    "--os-version": Msg("OS version"),
    "--size-gb": Msg("size (GB)"),
}


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def check_name(value: str | None) -> str:
    name = (value or "").strip()
    if not name:
        raise Invalid("name is required (1 to 64 characters)")
    if len(name) > NAME_MAX:
        raise Invalid(
            "name is {length} characters long; at most {NAME_MAX} are allowed", length=len(name), NAME_MAX=NAME_MAX
        )
    if _has_control(name):
        raise Invalid("name may not contain control characters")
    return name


def check_description(value: str | None) -> str:
    text = (value or "").strip()
    if len(text) > DESCRIPTION_MAX:
        raise Invalid(
            "remark is {length} characters long; at most {DESCRIPTION_MAX} are allowed",
            length=len(text),
            DESCRIPTION_MAX=DESCRIPTION_MAX,
        )
    if _has_control(text.replace("\n", "")):
        raise Invalid("remark may not contain control characters")
    return text


def _choose(option: str, value: str | None, allowed: list[str], context: str = "") -> str:
    field = FIELD_WORDS[option]
    if not allowed:
        if context:
            raise Invalid("{field}: nothing is offered for {context}", field=field, context=context)
        raise Invalid("{field}: nothing is offered", field=field)
    if value is None or not str(value).strip():
        raise Invalid("{field} is required; choose one of {choices}", field=field, choices=", ".join(allowed))
    wanted = str(value).strip()
    for candidate in allowed:
        if candidate.lower() == wanted.lower():
            return candidate
    choices = ", ".join(allowed)
    if context:
        raise Invalid(
            "{field} {wanted} is not offered for {context}; choose one of {choices}",
            field=field,
            wanted=wanted,
            context=context,
            choices=choices,
        )
    raise Invalid(
        "{field} {wanted} is not offered; choose one of {choices}", field=field, wanted=wanted, choices=choices
    )


@dataclass(frozen=True)
class OsChoice:
    os_type: str
    platform: str
    arch: str
    os_version: str

    @property
    def os_name(self) -> str:
        return f"{self.platform} {self.os_version} {self.arch}"


def check_os(
    matrix: OsMatrix, os_type: str | None, platform: str | None, arch: str | None, os_version: str | None
) -> OsChoice:
    """OS type -> platform -> architecture -> OS version, each against the OS matrix."""
    chosen_type = _choose("--os-type", os_type, matrix.os_types)
    chosen_platform = _choose("--platform", platform, matrix.platforms_for(chosen_type), chosen_type)
    chosen_arch = _choose("--arch", arch, matrix.arches_for(chosen_platform), chosen_platform)
    chosen_version = _choose(
        "--os-version",
        os_version,
        matrix.versions_for(chosen_platform, chosen_arch),
        f"{chosen_platform} {chosen_arch}",
    )
    return OsChoice(chosen_type, chosen_platform, chosen_arch, chosen_version)


def check_size_gb(value: object, minimum: int, maximum: int) -> int:
    text = str(value).strip() if value is not None else ""
    if not re.fullmatch(r"\d+", text):
        raise Invalid("size (GB) must be a whole number from {minimum} to {maximum}", minimum=minimum, maximum=maximum)
    size = int(text)
    if size < minimum or size > maximum:
        raise Invalid(
            "size (GB) {size} is out of range; choose {minimum} to {maximum} GB",
            size=size,
            minimum=minimum,
            maximum=maximum,
        )
    return size


def check_sha256(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not _SHA256.fullmatch(text):
        raise Invalid("sha256 must be 64 hexadecimal digits")
    return text.lower()
