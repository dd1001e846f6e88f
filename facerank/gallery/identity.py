"""Identities come from folder names (``faces/<identity>/<file>``): validate and normalise them.

People type these names into file managers and upload tools, so the rules are permissive about
scripts (``Zoë``, ``李雷``, ``O'Brien``) but strict about what could confuse storage, logs or
the web page: control and formatting characters, path syntax, surrounding whitespace, and
lengths no human name needs. Normalisation is NFC plus collapsing runs of spaces, so the same
name typed on macOS (NFD) and Linux is one identity.
"""

from __future__ import annotations

import re
import unicodedata

from facerank.errors import InvalidIdentityError

MAX_IDENTITY_LENGTH = 64
_ALLOWED_PUNCTUATION = frozenset(" -_.'")
_SPACES = re.compile(r" {2,}")
_LOOKALIKE_SCRIPTS = {"LATIN": "Latin", "GREEK": "Greek", "CYRILLIC": "Cyrillic"}
"""Scripts sharing letter shapes (Latin ``a`` and Cyrillic U+0430, Latin ``o`` and Greek U+03BF):
one word mixing them is how a look-alike of another identity is made, rarely how a name is
written, so it is refused. Each word keeps to one script; words may differ (``Dmitri Иванов``)."""


def normalise_identity(name: str) -> str:
    """The canonical form of an identity name, or :class:`InvalidIdentityError` saying why."""
    if not isinstance(name, str):
        raise InvalidIdentityError("identity must be text")
    canonical = _SPACES.sub(" ", unicodedata.normalize("NFC", name).strip())
    shown = repr(name[:80]) + ("..." if len(name) > 80 else "")
    if not canonical:
        raise InvalidIdentityError(f"identity {shown} is empty")
    if len(canonical) > MAX_IDENTITY_LENGTH:
        raise InvalidIdentityError(
            f"identity {shown} is {len(canonical)} characters long, more than {MAX_IDENTITY_LENGTH}"
        )
    if canonical.startswith("."):
        raise InvalidIdentityError(f"identity {shown} starts with '.'")
    for char in canonical:
        category = unicodedata.category(char)
        if not (category[0] in "LNM" or char in _ALLOWED_PUNCTUATION):
            raise InvalidIdentityError(
                f"identity {shown} contains {char!r} (U+{ord(char):04X}); use letters, digits, "
                "spaces and - _ . '"
            )
    for word in re.split(r"[ \-_.']+", canonical):
        scripts = {_LOOKALIKE_SCRIPTS.get(unicodedata.name(c, "").partition(" ")[0]) for c in word}
        scripts.discard(None)
        if len(scripts) > 1:
            raise InvalidIdentityError(
                f"identity {shown} mixes {' and '.join(sorted(s for s in scripts if s))} "
                "letters in one word, which can look the same as another name"
            )
    return canonical


def identity_from_key(key: str) -> str:
    """The identity of a photo at ``key`` in the faces bucket: its first folder, normalised."""
    identity, slash, rest = key.partition("/")
    if not slash or not rest:
        raise InvalidIdentityError(
            f"photo {key[:80]!r} is not inside an identity folder: put it at <identity>/<file>"
        )
    return normalise_identity(identity)
