"""A user's own text as a stream of documents: plain text files, JSON-lines files, folders.

    for doc in iter_documents(["books/", "web.jsonl"], field="text"):
        for piece in doc.pieces: ...          # the document's text, a piece at a time

Nothing is read whole: a text file arrives in pieces of `CHUNK_BYTES`, a JSON-lines file a line
at a time, so a corpus of any size streams through a few megabytes. What one document is:
- a JSON-lines file (`.jsonl`): the string in each line's `field` (lines whose field is the
  empty string are skipped and counted);
- a plain text file: the whole file (`text_unit="file"`), each block of non-blank lines
  (`"paragraph"`), or each non-blank line (`"line"`), without the newline that ends it;
- a folder: every file under it, in sorted path order (hidden files and folders left out),
  each read as above by its suffix.

Bytes are kept as they are (no newline translation). Every problem is a `ValueError` of one
line naming the file and the fix: an empty file, bytes that are not UTF-8 (with the byte
offset), a JSON line that is not an object, or lacks `field`, or holds a non-string there.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHUNK_BYTES", "TEXT_UNITS", "Document", "iter_documents", "list_files"]

CHUNK_BYTES = 1 << 20  # bytes read from a text file at a time
TEXT_UNITS = ("file", "paragraph", "line")


@dataclass
class Document:
    """One document: where it came from ("path", "path:line") and its text in pieces (an
    iterator: consume it before asking for the next document)."""

    source: str
    pieces: Iterator[str]


def _not_utf8(path: Path, offset: int) -> ValueError:
    return ValueError(f"{path}: byte {offset} is not UTF-8; save the file as UTF-8 (e.g. "
                      f"`iconv -f latin1 -t utf-8`) or leave it out of --input")


def read_text_pieces(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """The text of the file at `path`, decoded as strict UTF-8 a chunk at a time.

    Raises:
        ValueError: a byte that is not UTF-8, naming the file and its byte offset.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    fed = 0  # bytes given to the decoder so far
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            pending = len(decoder.getstate()[0])  # an incomplete character held back
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:  # e.start counts from the held-back bytes
                raise _not_utf8(path, fed - pending + e.start) from None
            fed += len(block)
            if text:
                yield text
            if not block:
                return


def _text_units(path: Path, unit: str) -> Iterator[Document]:
    """The documents of a plain text file (see the module docstring)."""
    if unit == "file":
        yield Document(str(path), read_text_pieces(path))
        return
    rest, block, start, number = "", [], 0, 0
    for piece in read_text_pieces(path):
        lines = (rest + piece).split("\n")
        rest = lines.pop()  # the unfinished last line waits for the next piece
        for line in lines:
            number += 1
            if unit == "line" and line.strip():
                yield Document(f"{path}:{number}", iter([line]))
            elif unit == "paragraph" and line.strip():
                start = start or number
                block.append(line)
            elif block:  # a blank line ends the paragraph
                yield Document(f"{path}:{start}", iter(["\n".join(block)]))
                block, start = [], 0
    if rest.strip():  # the file's last line, without a newline
        number += 1
        if unit == "line":
            yield Document(f"{path}:{number}", iter([rest]))
        else:
            start = start or number
            block.append(rest)
    if unit == "paragraph" and block:
        yield Document(f"{path}:{start}", iter(["\n".join(block)]))


def _jsonl_documents(path: Path, field: str, skipped: list[str]) -> Iterator[Document]:
    """One document per line of a JSON-lines file: the string in `field`."""
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, offset + e.start) from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); fix "
                                 "the line or remove it") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: a {type(record).__name__}, not a JSON object; write "
                                 f"one object per line with the text in {field!r}")
            if field not in record:
                keys = ", ".join(map(repr, record)) or "none"
                raise ValueError(f"{where}: field {field!r} is missing (this line has {keys}); "
                                 "pass --field with the name of the text field")
            text = record[field]
            if not isinstance(text, str):
                raise ValueError(f"{where}: field {field!r} is a {type(text).__name__}, not a "
                                 "string; the text field must hold the document's text")
            if text:
                yield Document(where, iter([text]))
            else:
                skipped.append(where)


def list_files(path: str | Path) -> list[Path]:
    """The files an --input names: the file itself, or every file under a folder in sorted
    order, hidden ones (a name starting with ".") left out.

    Raises:
        ValueError: the path does not exist, or the folder holds no file.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"--input {path}: no such file or folder; check the path")
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise ValueError(f"--input {path}: the folder holds no files; put text or .jsonl "
                         "files in it")
    return files


def iter_documents(inputs: list[str | Path], field: str = "text", text_unit: str = "file",
                   skipped: list[str] | None = None) -> Iterator[Document]:
    """Every document of the files and folders in `inputs`, in order.

    Args:
        inputs: files and folders; a `.jsonl` file is JSON lines, any other file plain text.
        field: the JSON-lines field that holds the text.
        text_unit: what one document of a plain text file is: "file", "paragraph" or "line".
        skipped: if given, the "path:line" of every JSON line whose text is empty is appended.

    Raises:
        ValueError: see the module docstring; each names the file and the fix.
    """
    if text_unit not in TEXT_UNITS:
        raise ValueError(f"text_unit={text_unit!r}; choose one of {', '.join(TEXT_UNITS)}")
    skipped = [] if skipped is None else skipped
    files = [f for path in inputs for f in list_files(path)]
    for path in files:
        if path.stat().st_size == 0:
            raise ValueError(f"{path} is empty; give it text or leave it out of --input")
        found = 0
        if path.suffix == ".jsonl":
            documents = _jsonl_documents(path, field, skipped)
        else:
            documents = _text_units(path, text_unit)
        for doc in documents:
            found += 1
            yield doc
        if not found:
            raise ValueError(f"{path} holds no text (only blank lines or empty {field!r} "
                             "fields); give it text or leave it out of --input")
