"""Turn tensor names into TensorBoard tags that are valid, grouped and unique.

The rule (documented in the README):

1. A TensorFlow output suffix `:0` is dropped.
2. A name without `/` gets its last `.` replaced by `/`, so `layers.0.fc1.weight`
   becomes `layers.0.fc1/weight`: TensorBoard groups cards by the text before the
   first `/`, which is then the layer.
3. Characters other than letters, digits, `_`, `-`, `.` and `/` become `_`;
   repeated `/` collapse; leading and trailing `/` are removed.
4. Tags longer than 200 characters are cut in the middle: the part before the last
   `/` is shortened and gets `~` plus 8 hex digits of the name's SHA-1, so two long
   names stay apart and the leaf (`weight`, `bias`) stays readable.
5. A tensor's histogram takes the tag, its text summary the tag plus `/stats`,
   its optional training scalars and change histogram the tag plus their suffix
   (`/mean`, `/change`, ...). When any of these is already taken by another
   name, `_2`, `_3`, ... is appended.

A name keeps its tags for the life of the writer, so every step lands on the
same cards.
"""

from __future__ import annotations

import hashlib
import re

MAX_TAG_LENGTH = 200
# The part after the last `/` (`weight`, `bias`) survives truncation up to this length.
MAX_LEAF_LENGTH = 60
TEXT_SUFFIX = "/stats"
OVERVIEW_TAG = "tbweights/overview"
INIT_CHECK_TAG = "tbweights/init_check"

_UNSAFE = re.compile(r"[^\w.\-/]")
_SLASHES = re.compile(r"/{2,}")


def clean_tag(name: str) -> str:
    """Steps 1 to 4 of the rule above."""
    tag = name[:-2] if name.endswith(":0") else name
    if "/" not in tag and "." in tag:
        head, _, leaf = tag.rpartition(".")
        tag = f"{head}/{leaf}"
    tag = _UNSAFE.sub("_", tag)
    tag = _SLASHES.sub("/", tag).strip("/") or "_"
    if len(tag) > MAX_TAG_LENGTH:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
        head, slash, leaf = tag.rpartition("/")
        leaf = leaf[:MAX_LEAF_LENGTH]
        keep = MAX_TAG_LENGTH - len(leaf) - len(slash) - 9
        tag = f"{(head or tag)[:keep]}~{digest}{slash}{leaf}" if head else f"{tag[: MAX_TAG_LENGTH - 9]}~{digest}"
    return tag


class TagAllocator:
    """Hands out a (histogram tag, text tag) pair per name, stable and collision-free.

    Each name also owns its tag plus every suffix in `extra_suffixes`, so tags
    derived from it never collide with another name's.
    """

    def __init__(self, reserved: tuple[str, ...] = (OVERVIEW_TAG,), extra_suffixes: tuple[str, ...] = ()) -> None:
        self._by_name: dict[str, tuple[str, str]] = {}
        self._taken: set[str] = set(reserved)
        self._suffixes = ("", TEXT_SUFFIX, *extra_suffixes)

    def tags(self, name: str) -> tuple[str, str]:
        known = self._by_name.get(name)
        if known is not None:
            return known
        base = clean_tag(name)
        candidate, n = base, 1
        while any(candidate + suffix in self._taken for suffix in self._suffixes):
            n += 1
            candidate = f"{base}_{n}"
        pair = (candidate, candidate + TEXT_SUFFIX)
        self._taken.update(candidate + suffix for suffix in self._suffixes)
        self._by_name[name] = pair
        return pair
