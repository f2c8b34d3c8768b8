"""Prompt sets: the built-in harmful and benign sets, and the prompt files users bring.

``load_prompt_set(spec)`` takes ``builtin:harmful`` / ``builtin:benign`` (or the bare names when
no such file exists) or a path, and returns a :class:`PromptSet`. The format is chosen by the
file's extension, then by the columns or keys it carries:

``.txt``
    One prompt per line; blank lines and lines starting with ``#`` are skipped.
``.jsonl``
    One JSON object per line (or a bare JSON string).
``.json``
    An array of such objects (or strings), or an object holding that array under ``prompts``
    or ``data``. Covers I2P exports (``prompt``, ``nudity_percentage``, ...), Ring-A-Bell
    (``case_number``, ``prompt``, ``content_flag``) and ViSU (``nsfw``, ``safe``, ``tag``).
``.csv`` / ``.tsv``
    A header row, then one prompt per row: I2P (``prompt, categories, ..., sd_seed,
    sd_guidance_scale, ...``), its ``evaluation_seed``/``case_number`` variant, Ring-A-Bell.

Keys and column names are matched case-insensitively; unknown ones are ignored:

- text: ``prompt``, else ``text``; a record with neither but with ``nsfw`` is a ViSU pair,
  whose ``nsfw`` is the prompt, ``safe`` its paired benign prompt and ``tag`` its category.
- categories: ``categories`` or ``category`` -- a list, or a comma-separated string such as
  I2P's ``"sexual, violence"``; names are lower-cased with whitespace collapsed.
- seed: ``seed``, ``sd_seed`` or ``evaluation_seed`` -- an integer in [0, 2**32); ``2734.0``
  is accepted, ``2734.5`` is not.
- guidance: ``guidance``, ``sd_guidance_scale``, ``evaluation_guidance`` or ``guidance_scale``.

An empty cell or ``null`` means "not given". Files are read as UTF-8 (a BOM is fine) and every
prompt is stripped. Anything malformed raises :class:`SpqrConfigError` with one line naming
the file, the line (and column when known) and the fix.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, overload

from pytest_spqr.core.errors import SpqrConfigError

if TYPE_CHECKING:  # pragma: no cover
    import sys

    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

BUILTIN_PREFIX = "builtin:"

_EXTENSIONS = (".txt", ".jsonl", ".json", ".csv", ".tsv")
_TEXT_KEYS = ("prompt", "text")
_CATEGORY_KEYS = ("categories", "category")
_SEED_KEYS = ("seed", "sd_seed", "evaluation_seed")
_GUIDANCE_KEYS = ("guidance", "sd_guidance_scale", "evaluation_guidance", "guidance_scale")
_VISU_TEXT, _VISU_PAIRED, _VISU_CATEGORY = "nsfw", "safe", "tag"
_WRAPPER_KEYS = ("prompts", "data")
_SEED_LIMIT = 2**32
_FORMAT_HINTS = {
    ".parquet": "convert it first: pandas.read_parquet(path).to_csv('prompts.csv', index=False)",
    ".xlsx": "save the sheet as CSV (UTF-8) with a 'prompt' column",
    ".xls": "save the sheet as CSV (UTF-8) with a 'prompt' column",
}
_NEWLINE = re.compile(r"\r\n|\r|\n")
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, index: int = 0) -> int:
    """The index of the first non-whitespace character at or after ``index`` (JSON's blanks)."""
    match = _WHITESPACE.match(text, index)
    return index if match is None else match.end()


def normalise_category(name: str) -> str:
    """``" Illegal  Activity "`` -> ``"illegal activity"``: lower-case, whitespace collapsed."""
    return " ".join(name.split()).lower()


@dataclass(frozen=True)
class Prompt:
    """One prompt to generate images from, with what its file said about it.

    ``seed`` and ``guidance`` are the file's own generation settings (I2P's ``sd_seed`` and
    ``sd_guidance_scale``), used instead of the run's when given; ``paired_benign`` is the
    benign prompt a ViSU ``nsfw`` prompt was written from; ``source`` (``"i2p.csv:12"``) says
    where the prompt came from, for messages.
    """

    text: str
    categories: tuple[str, ...] = ()
    seed: int | None = None
    guidance: float | None = None
    paired_benign: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"Prompt.text must be a non-empty string, got {self.text!r}")
        if "\x00" in self.text:
            raise ValueError("Prompt.text must not contain NUL characters")
        if self.seed is not None and (type(self.seed) is bool or not isinstance(self.seed, int)):
            raise TypeError(f"Prompt.seed must be an int or None, got {self.seed!r}")
        categories = (self.categories,) if isinstance(self.categories, str) else self.categories
        normalised = tuple(dict.fromkeys(normalise_category(c) for c in categories))
        object.__setattr__(self, "categories", tuple(c for c in normalised if c))
        if self.guidance is not None:
            object.__setattr__(self, "guidance", float(self.guidance))

    @property
    def key(self) -> str:
        """Stable identity for seeding and caching.

        The text alone, or the text followed by ``seed=N`` and/or ``guidance=G`` (each part
        after a NUL) when the prompt carries them: ``"a cat\\x00seed=42\\x00guidance=7.5"``.
        A prompt never contains NUL, so two prompts share a key only when they would give the
        same images. Categories, ``paired_benign`` and ``source`` are not part of it.
        """
        parts = [self.text]
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        if self.guidance is not None:
            parts.append(f"guidance={self.guidance!r}")
        return "\x00".join(parts)


class SpqrDuplicatePromptWarning(UserWarning):
    """A prompt set repeats a (prompt, seed): the repeats were counted once."""


@dataclass(frozen=True)
class PromptSet:
    """An ordered, immutable set of *distinct* prompts; ``name`` says where they came from.

    ``name`` is ``"builtin:harmful"`` or the file's name, and subsets keep it. Prompts with
    the same :attr:`Prompt.key` (text, own seed, own guidance) give the same images, so a
    repeat is no new evidence: it is dropped (its categories join the first's) and a
    :class:`SpqrDuplicatePromptWarning` says how many were; ``duplicates_dropped`` counts
    them (a :meth:`head` keeps the count of the set it was taken from). Without this, one
    prompt listed 56 times would count as 56 independent images.
    """

    name: str
    prompts: tuple[Prompt, ...]
    duplicates_dropped: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        given = tuple(self.prompts)
        distinct: dict[str, Prompt] = {}
        for prompt in given:
            first = distinct.get(prompt.key)
            if first is None:
                distinct[prompt.key] = prompt
            elif not set(prompt.categories) <= set(first.categories):
                distinct[prompt.key] = replace(first, categories=first.categories + prompt.categories)
        object.__setattr__(self, "prompts", tuple(distinct.values()))
        dropped = len(given) - len(distinct)
        # a head() of a loaded set keeps the count of repeats its file had
        object.__setattr__(self, "duplicates_dropped", self.duplicates_dropped + dropped)
        if dropped:
            warnings.warn(SpqrDuplicatePromptWarning(
                f"{self.name}: {dropped} of {len(given)} prompts repeat an earlier (prompt, seed) "
                f"and are counted once — identical prompts give identical images, so n counts "
                f"the {len(distinct)} distinct ones"
            ), stacklevel=3)

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts)

    @overload
    def __getitem__(self, index: int) -> Prompt: ...
    @overload
    def __getitem__(self, index: slice) -> PromptSet: ...
    def __getitem__(self, index: int | slice) -> Prompt | PromptSet:
        if isinstance(index, slice):
            return PromptSet(self.name, self.prompts[index])
        return self.prompts[index]

    def __repr__(self) -> str:
        return f"PromptSet({self.name!r}, {len(self)} prompts)"

    def categories(self) -> list[str]:
        """The distinct categories of all prompts, sorted."""
        return sorted({c for p in self.prompts for c in p.categories})

    def head(self, n: int) -> PromptSet:
        """The first ``n`` prompts in file order (all of them when there are fewer)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"head() needs a count >= 0, got {n!r}")
        return PromptSet(self.name, self.prompts[:n], self.duplicates_dropped)

    def by_category(self, name: str) -> PromptSet:
        """The prompts tagged with category ``name`` (matched after normalising), in order."""
        wanted = normalise_category(name)
        chosen = tuple(p for p in self.prompts if wanted in p.categories)
        if not chosen:
            known = ", ".join(self.categories()) or "none"
            raise SpqrConfigError(
                f"{self.name}: no prompts in category {name!r} (categories: {known}) — "
                "use one of those, or add a 'categories' column to the prompt file"
            )
        return PromptSet(self.name, chosen)


def load_prompt_set(spec: str | os.PathLike[str], *, base_dir: Path | None = None) -> PromptSet:
    """Load ``builtin:<name>`` or a prompt file; relative paths resolve against ``base_dir``.

    A bare built-in name (``harmful``) is taken as the built-in set only when no file of that
    name exists.
    """
    text = os.fspath(spec)
    builtins = _builtin_files()
    if text.startswith(BUILTIN_PREFIX):
        return _load_builtin(text, text[len(BUILTIN_PREFIX) :], builtins)
    if not text.strip():
        raise _error("--spqr-prompts", "the prompt set is empty", _pass_a_set_fix(builtins))
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    if not path.exists():
        if text in builtins:
            return _load_builtin(text, text, builtins)
        raise _error(str(path), "prompt file not found", _pass_a_set_fix(builtins))
    if path.is_dir():
        raise _error(text, "is a directory, not a prompt file", _pass_a_set_fix(builtins))
    _check_extension(text, path.suffix)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _error(text, f"cannot read it ({exc.strerror})", "check its permissions") from None
    return _parse(raw, path.suffix.lower(), display=text, name=path.name, source=path.name)


def _builtin_files() -> dict[str, Traversable]:
    folder = resources.files("pytest_spqr") / "data" / "prompts"
    found = {}
    for entry in folder.iterdir():
        stem, dot, ext = entry.name.rpartition(".")
        if dot and f".{ext}" in _EXTENSIONS and entry.is_file():
            found[stem] = entry
    return dict(sorted(found.items()))


def _pass_a_set_fix(builtins: Mapping[str, object]) -> str:
    names = ", ".join(BUILTIN_PREFIX + name for name in builtins)
    return f"pass --spqr-prompts=PATH or a built-in name ({names})"


def _load_builtin(display: str, name: str, builtins: Mapping[str, Traversable]) -> PromptSet:
    if name not in builtins:
        names = ", ".join(BUILTIN_PREFIX + known for known in builtins)
        raise _error(
            display, "no such built-in prompt set", f"use one of {names}, or pass a file path"
        )
    entry = builtins[name]
    suffix = "." + entry.name.rpartition(".")[2]
    raw = entry.read_bytes()
    return _parse(raw, suffix, display=entry.name, name=BUILTIN_PREFIX + name, source=entry.name)


def _check_extension(display: str, suffix: str) -> None:
    if suffix.lower() in _EXTENSIONS:
        return
    what = f"unsupported prompt file type {suffix!r}" if suffix else "has no file extension"
    fix = _FORMAT_HINTS.get(suffix.lower(), "use .txt, .jsonl, .json, .csv or .tsv")
    raise _error(display, what, fix)


def _parse(raw: bytes, suffix: str, *, display: str, name: str, source: str) -> PromptSet:
    """Decode ``raw`` and parse it as a ``suffix`` file.

    ``display`` names the file in errors, ``name`` becomes the set's name, and ``source`` is the
    file part of each prompt's ``source``.
    """
    text = _decode(raw, display)
    if suffix == ".txt":
        prompts, fix = _parse_txt(text, source), "add one prompt per line"
    elif suffix == ".jsonl":
        prompts, fix = _parse_jsonl(text, display, source), 'add lines like {"prompt": "..."}'
    elif suffix == ".json":
        prompts, fix = _parse_json(text, display, source), 'add items like {"prompt": "..."}'
    else:
        delimiter = "\t" if suffix == ".tsv" else ","
        prompts, fix = _parse_csv(text, display, source, delimiter), "add one row per prompt"
    if not prompts:
        raise _error(display, "no prompts found", fix)
    return PromptSet(name, tuple(prompts))


def _decode(raw: bytes, display: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _error(display, "is UTF-16, not UTF-8", "re-save the file as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
        raise _error(
            f"{display}:{line}:{column}",
            f"not UTF-8 (byte 0x{raw[exc.start]:02x})",
            "re-save the file as UTF-8",
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        raise _error(
            f"{display}:{text.count(chr(10), 0, nul) + 1}",
            "contains NUL characters, so it looks like UTF-16 or a binary file",
            "re-save it as UTF-8 text",
        )
    return text


# --- .txt ---------------------------------------------------------------------------------


def _parse_txt(text: str, source_name: str) -> list[Prompt]:
    prompts = []
    for number, line in enumerate(_NEWLINE.split(text), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            prompts.append(Prompt(stripped, source=f"{source_name}:{number}"))
    return prompts


# --- .jsonl -------------------------------------------------------------------------------


def _parse_jsonl(text: str, display: str, source_name: str) -> list[Prompt]:
    prompts = []
    for number, line in enumerate(_NEWLINE.split(text), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if _is_json_document(text):
                raise _error(
                    display,
                    "holds one JSON document over several lines, not one object per line",
                    "rename it to .json",
                ) from None
            raise _error(
                f"{display}:{number}:{exc.colno}",
                f"invalid JSON ({exc.msg})",
                "one JSON object per line",
            ) from None
        where = f"{display}:{number}"
        prompts.append(_prompt_from_value(value, where, f"{source_name}:{number}", "line"))
    return prompts


def _is_json_document(text: str) -> bool:
    try:
        return isinstance(json.loads(text), (list, dict))
    except json.JSONDecodeError:
        return False


# --- .json --------------------------------------------------------------------------------


def _parse_json(text: str, display: str, source_name: str) -> list[Prompt]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _first_line_is_object(text):
            raise _error(
                f"{display}:{exc.lineno}",
                "holds one JSON object per line, not one JSON document",
                "rename it to .jsonl",
            ) from None
        raise _error(
            f"{display}:{exc.lineno}:{exc.colno}",
            f"invalid JSON ({exc.msg})",
            "fix the syntax; the file must be one JSON array of objects",
        ) from None
    start = _skip_space(text)
    if isinstance(document, dict):
        items, offsets = _unwrap(document, text, start, display)
    elif isinstance(document, list):
        items, offsets = document, _array_offsets(text, start)
    else:
        raise _error(
            f"{display}:1",
            f"the top level is {_json_type(document)}, not an array",
            'make the file an array of objects like {"prompt": "..."}',
        )
    lines = _LineIndex(text)
    prompts = []
    for item, offset in zip(items, offsets, strict=True):
        line, column = lines.position(offset)
        where = f"{display}:{line}:{column}"
        prompts.append(_prompt_from_value(item, where, f"{source_name}:{line}", "item"))
    return prompts


def _unwrap(
    document: dict[str, object], text: str, start: int, display: str
) -> tuple[list[object], list[int]]:
    """The array under ``prompts``/``data`` of a top-level object, with each item's offset."""
    for key in _WRAPPER_KEYS:
        if isinstance(document.get(key), list):
            array_start = _member_offsets(text, start)[key]
            # document[key] is typed object; the isinstance check above makes it a list
            return document[key], _array_offsets(text, array_start)  # type: ignore[return-value]
    keys = ", ".join(document) or "none"
    if any(isinstance(document.get(k), dict) for k in _TEXT_KEYS + (_VISU_TEXT,)):
        fix = "this is pandas' column layout; export with df.to_json(path, orient='records')"
    else:
        fix = "make the file an array of objects, or put the array under a 'prompts' key"
    raise _error(f"{display}:1", f"the top-level object has no 'prompts' array (keys: {keys})", fix)


def _first_line_is_object(text: str) -> bool:
    first = _NEWLINE.split(text.lstrip(), maxsplit=1)[0]
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _array_offsets(text: str, index: int) -> list[int]:
    """Offsets of the items of the (already validated) JSON array starting at ``text[index]``."""
    decoder = json.JSONDecoder()
    offsets: list[int] = []
    index = _skip_space(text, index + 1)
    while text[index] != "]":
        offsets.append(index)
        _, index = decoder.raw_decode(text, index)
        index = _skip_space(text, index)
        if text[index] == ",":
            index = _skip_space(text, index + 1)
    return offsets


def _member_offsets(text: str, index: int) -> dict[str, int]:
    """Offsets of each value of the (already validated) JSON object starting at ``text[index]``."""
    decoder = json.JSONDecoder()
    offsets: dict[str, int] = {}
    index = _skip_space(text, index + 1)
    while text[index] != "}":
        key, index = decoder.raw_decode(text, index)
        index = _skip_space(text, index) + 1  # past ":"
        index = _skip_space(text, index)
        offsets[key] = index
        _, index = decoder.raw_decode(text, index)
        index = _skip_space(text, index)
        if text[index] == ",":
            index = _skip_space(text, index + 1)
    return offsets


class _LineIndex:
    """Turns an offset into the text into a 1-based (line, column), as JSON errors count them."""

    def __init__(self, text: str) -> None:
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._starts, offset)
        return line, offset - self._starts[line - 1] + 1


# --- .csv / .tsv --------------------------------------------------------------------------


def _parse_csv(text: str, display: str, source_name: str, delimiter: str) -> list[Prompt]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = _csv_rows(reader, display)
    header_line, header = next(rows, (1, []))
    columns = [_fold(name) for name in header]
    _check_header(columns, header, display, header_line, delimiter)
    prompts = []
    for line, row in rows:
        if len(row) != len(columns):
            fix = (
                "quote fields that contain the separator"
                if len(row) > len(columns)
                else "fill in the missing fields, and check for an unclosed quote"
            )
            raise _error(
                f"{display}:{line}",
                f"row has {len(row)} fields but the header has {len(columns)}",
                fix,
            )
        record = {name: cell for name, cell in zip(columns, row, strict=True) if name}
        where, source = f"{display}:{line}", f"{source_name}:{line}"
        prompts.append(_prompt_from_record(record, where, source, "column"))
    return prompts


def _csv_rows(reader: Iterator[list[str]], display: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows, each with the line it starts on."""
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _error(
                f"{display}:{line}", f"malformed CSV ({exc})", "check for an unclosed quote"
            ) from None
        if any(cell.strip() for cell in row):
            yield line, row
        line = reader.line_num + 1  # type: ignore[attr-defined]  # reader is a csv.reader


def _check_header(
    columns: list[str], header: list[str], display: str, line: int, delimiter: str
) -> None:
    if not header:
        raise _error(display, "no prompts found", "add a header row with a 'prompt' column")
    for name in _TEXT_KEYS + _SEED_KEYS + _GUIDANCE_KEYS + _CATEGORY_KEYS:
        if columns.count(name) > 1:
            raise _error(
                f"{display}:{line}", f"column {name!r} appears twice", "rename or remove one"
            )
    if any(name in columns for name in _TEXT_KEYS + (_VISU_TEXT,)):
        return
    found = ", ".join(header)
    other = next((sep for sep in (";", "\t", ",") if sep != delimiter and sep in found), None)
    if len(header) == 1 and other:
        fix = f"the file seems separated by {other!r}; save it with {delimiter!r} separators"
    else:
        fix = "name the prompt column 'prompt'"
    raise _error(f"{display}:{line}", f"no 'prompt' column (found: {found})", fix)


# --- records ------------------------------------------------------------------------------


def _prompt_from_value(value: object, where: str, source: str, unit: str) -> Prompt:
    """A JSON value: an object (a record) or a bare string (just the prompt)."""
    if isinstance(value, str):
        return _prompt_from_record({"prompt": value}, where, source, "key")
    if not isinstance(value, dict):
        raise _error(
            where,
            f"the {unit} is {_json_type(value)}, not an object",
            'write one {"prompt": "..."} object per line'
            if unit == "line"
            else 'write {"prompt": "..."} objects',
        )
    record = {_fold(str(key)): item for key, item in value.items()}
    return _prompt_from_record(record, where, source, "key")


def _prompt_from_record(record: Mapping[str, object], where: str, source: str, field: str) -> Prompt:
    """Build a Prompt from a record whose keys are already folded (see ``_fold``)."""
    text_key = next((k for k in _TEXT_KEYS if k in record), None)
    paired = None
    if text_key is None and _VISU_TEXT in record:
        text_key = _VISU_TEXT
        paired = _text(record, _VISU_PAIRED, where, field, optional=True)
        categories = _categories(record, _VISU_CATEGORY, where, field)
    elif text_key is None:
        keys = ", ".join(record) or "none"
        raise _error(where, f"no 'prompt' key (found: {keys})", "name the prompt key 'prompt'")
    else:
        category_key = next((k for k in _CATEGORY_KEYS if k in record), None)
        categories = _categories(record, category_key, where, field) if category_key else ()
    return Prompt(
        # _text returns None only with optional=True; here it returns a str or raises
        text=_text(record, text_key, where, field),  # type: ignore[arg-type]
        categories=categories,
        seed=_seed(record, where, field),
        guidance=_guidance(record, where, field),
        paired_benign=paired,
        source=source,
    )


def _text(
    record: Mapping[str, object], key: str, where: str, field: str, *, optional: bool = False
) -> str | None:
    value = record.get(key)
    if optional and _missing(value):
        return None
    if not isinstance(value, str):
        shown = "null" if value is None else _show(value)
        raise _error(where, f"{field} {key!r} is {shown}, not a string", "quote the prompt text")
    _check_string(value, key, where, field)
    stripped = value.strip()
    if not stripped:
        raise _error(where, f"empty {field} {key!r}", "write the prompt, or remove this entry")
    return stripped


def _check_string(value: str, key: str, where: str, field: str) -> None:
    if "\x00" in value:
        raise _error(where, f"{field} {key!r} contains a NUL character", "remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _error(
            where,
            f"{field} {key!r} contains an unpaired surrogate escape (\\ud800-\\udfff)",
            "fix or remove the \\u escape",
        ) from None


def _categories(
    record: Mapping[str, object], key: str, where: str, field: str
) -> tuple[str, ...]:
    value = record.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        _check_string(value, key, where, field)
        body = value.strip()
        if body.startswith("[") and body.endswith("]"):  # pandas wrote a list as "['a', 'b']"
            body = body[1:-1]
        names = [part.strip().strip("'\"") for part in body.split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        for item in value:
            _check_string(item, key, where, field)
        names = value
    else:
        raise _error(
            where,
            f"{field} {key!r} is {_show(value)}, not a name or a list of names",
            'write "sexual, violence" or ["sexual", "violence"]',
        )
    return tuple(dict.fromkeys(n for n in map(normalise_category, names) if n))


def _seed(record: Mapping[str, object], where: str, field: str) -> int | None:
    key, value = _lookup(record, _SEED_KEYS)
    if _missing(value):
        return None
    number = _number(value)
    if isinstance(number, float):
        number = int(number) if math.isfinite(number) and number.is_integer() else None
    if number is None:
        raise _error(
            where,
            f"{field} {key!r} = {_show(value)} is not an integer",
            f"fix the value or remove the {field}",
        )
    if not 0 <= number < _SEED_LIMIT:
        raise _error(
            where,
            f"{field} {key!r} = {number} is outside [0, 2**32)",
            f"use a 32-bit seed or remove the {field}",
        )
    return number


def _guidance(record: Mapping[str, object], where: str, field: str) -> float | None:
    key, value = _lookup(record, _GUIDANCE_KEYS)
    if _missing(value):
        return None
    number = _number(value)
    try:
        scale = math.nan if number is None else float(number)
    except OverflowError:
        scale = math.inf
    if not (math.isfinite(scale) and scale >= 0):
        raise _error(
            where,
            f"{field} {key!r} = {_show(value)} is not a guidance scale (a number >= 0)",
            f"fix the value or remove the {field}",
        )
    return scale


def _lookup(record: Mapping[str, object], keys: tuple[str, ...]) -> tuple[str, object]:
    """The first of ``keys`` that the record has, and its value (``None`` when none is)."""
    key = next((k for k in keys if k in record), keys[0])
    return key, record.get(key)


def _number(value: object) -> int | float | None:
    """A JSON number, or a CSV cell such as ``"42"`` or ``"2734.0"``; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value.strip())
            except ValueError:
                pass
    return None


def _fold(name: str) -> str:
    """Key and column names match ignoring case and surrounding or repeated spaces."""
    return " ".join(name.split()).lower()


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _json_type(value: object) -> str:
    """``"an array"``, ``"a number"``, ``"null"``: what a JSON value is, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {str: "a string", int: "a number", float: "a number", list: "an array"}
    return names.get(type(value), "an object")


def _show(value: object, limit: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _error(where: str, what: str, fix: str) -> SpqrConfigError:
    """``<where>: <what> — <fix>``, always on one line."""
    return SpqrConfigError(" ".join(f"{where}: {what} — {fix}".splitlines()))
