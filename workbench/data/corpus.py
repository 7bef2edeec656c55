"""Corpora: ``wb.corpus(spec)`` -> :class:`Corpus` (id, text, domain), backed by Arrow.

Specs
-----
``pydocs`` / ``pydocs:numpy,pandas``
    docstrings of installed packages (see :mod:`workbench.data.pydocs`), cached under
    ``runs/cache/`` keyed by the package versions and the length filter.
``path/to/file.txt``
    one document per blank-line-separated paragraph (one per line when the file has no blank line).
``path/to/file.jsonl`` (or ``.json``)
    one JSON object per line with a ``text`` field and optional ``domain`` and ``id``.
``path/to/file.json``
    a JSON array of such objects (a ``.json`` file that is not an array is read as JSON lines).
``path/to/file.csv``
    a header row naming the columns, ``text`` and optional ``domain`` / ``id`` (stdlib ``csv``).
``path/to/file.parquet``
    columns ``text`` and optional ``domain`` / ``id``.
``path/to/dir``
    a Hugging Face ``datasets`` directory written by ``save_to_disk`` (split ``train`` of a
    DatasetDict), with a ``text`` column.

Other field names: ``text_field=`` names the field (key, column) holding the text, ``domain_field=``
the one holding the domain (then every record must have it; by default a ``domain`` field is used
where present, else the file's stem). Text files (``.txt``, ``.jsonl``, ``.json``, ``.csv``) are
decoded with ``encoding=`` (default UTF-8; any codec name Python knows, e.g. ``latin-1``,
``utf-16``). A record without its text field is one :class:`CorpusError` naming the fields found.

A Corpus wraps a memory-mapped :class:`datasets.Dataset`, so a corpus larger than memory works the
same way; ``to_pandas()`` materialises it.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import ConfigError, CorpusError
from . import pydocs as _pydocs



def _datasets():
    """The ``datasets`` module, imported on first use (it costs about a second: a one-line error of the
    CLI must not pay for it), with its progress bars off (the workbench draws its own)."""
    import datasets
    datasets.disable_progress_bars()
    return datasets

_FORMAT = 2  # bump when the pydocs extraction changes: invalidates cached corpora


def cache_dir() -> Path:
    """Cache root: ``$WORKBENCH_CACHE``, else ``./runs/cache``; inside the repository's ``notebooks/``
    (a notebook or tutorial run from its folder), the repository's ``runs/cache``, never beside them."""
    d = os.environ.get("WORKBENCH_CACHE")
    if d is None:
        root, cwd = Path(__file__).resolve().parents[2], Path.cwd().resolve()
        inside = root / "notebooks" in (cwd, *cwd.parents)
        d = (root if inside else cwd) / "runs" / "cache"
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    return d


class Corpus:
    """A text corpus: columns ``id`` (stable, unique), ``text``, ``domain``.

    ``len(c)``, ``c[i]`` (a dict), ``c.ids`` / ``c.texts`` / ``c.domains`` (lists), ``c.select(idx)``,
    ``c.to_pandas()``, ``c.stats()``; ``c.hash`` fingerprints the content for run records.
    """

    def __init__(self, ds: datasets.Dataset, spec: str, hash: str | None = None):
        missing = {"id", "text", "domain"} - set(ds.column_names)
        if missing:
            raise CorpusError(f"corpus {spec!r} lacks column(s) {sorted(missing)}")
        if len(ds) == 0:
            raise CorpusError(f"corpus {spec!r} is empty")
        self.ds = ds
        self.spec = spec
        self._hash = hash

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return self.ds[int(i)]

    def __repr__(self) -> str:
        return f"Corpus({self.spec!r}, docs={len(self)})"

    @property
    def ids(self) -> list[str]:
        return self.ds["id"]

    @property
    def texts(self) -> list[str]:
        return self.ds["text"]

    @property
    def domains(self) -> list[str]:
        return self.ds["domain"]

    @property
    def hash(self) -> str:
        """sha256 over (id, text, domain) of every document, in order (16 hex digits)."""
        if self._hash is None:
            h = hashlib.sha256()
            for batch in self.ds.iter(batch_size=4096):
                for i, t, d in zip(batch["id"], batch["text"], batch["domain"]):
                    h.update(f"{i}\x1f{d}\x1f{t}\x1e".encode("utf-8", "surrogatepass"))
            self._hash = h.hexdigest()[:16]
        return self._hash

    def select(self, indices: Iterable[int], spec: str | None = None) -> "Corpus":
        return Corpus(self.ds.select(list(indices)), spec or f"{self.spec}[subset]")

    def to_pandas(self):
        return self.ds.to_pandas()

    def duplicate_mask(self) -> np.ndarray:
        """True for documents whose exact text occurs at an earlier position."""
        seen: set[str] = set()
        out = np.zeros(len(self), dtype=bool)
        for k, t in enumerate(self.texts):
            h = hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            out[k] = h in seen
            seen.add(h)
        return out

    def stats(self) -> dict:
        """``docs``, ``chars``, ``domains`` (domain -> docs), ``duplicate_fraction``."""
        texts = self.texts
        return {
            "spec": self.spec,
            "docs": len(texts),
            "chars": int(sum(len(t) for t in texts)),
            "domains": dict(sorted(Counter(self.domains).items())),
            "duplicate_fraction": float(self.duplicate_mask().mean()),
            "hash": self.hash,
        }

    def split(self, eval_fraction: float = 0.05, holdout_domains: Sequence[str] = (), seed: int = 0):
        """Deterministic split by a hash of each id: ``(train, eval[, holdout])``.

        ``holdout_domains`` are removed from both train and eval and returned third (MATES' reference
        task, domain-transfer checks).
        """
        if not 0 <= eval_fraction < 1:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
        hold = set(holdout_domains)
        unknown = hold - set(self.domains)
        if unknown:
            raise CorpusError(f"holdout domain(s) {sorted(unknown)} not in corpus {self.spec!r}")
        tr, ev, ho = [], [], []
        for k, (i, d) in enumerate(zip(self.ids, self.domains)):
            if d in hold:
                ho.append(k)
                continue
            u = int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "little") / 2**64
            (ev if u < eval_fraction else tr).append(k)
        if not tr or (eval_fraction > 0 and not ev):
            raise CorpusError(f"corpus {self.spec!r} has too few documents ({len(self)}) to split")
        parts = [self.select(tr, f"{self.spec}[train]"), self.select(ev, f"{self.spec}[eval]")]
        if holdout_domains:
            parts.append(self.select(ho, f"{self.spec}[holdout]"))
        return tuple(parts)


# ----------------------------------------------------------------------------------------- builders

def _pydocs_corpus(packages: Sequence[str], min_chars: int) -> Corpus:
    packages = [p.strip() for p in packages if p.strip()]
    if not packages:
        raise CorpusError("pydocs needs at least one package")
    if len(set(packages)) != len(packages):
        raise CorpusError(f"pydocs packages repeat: {packages}")
    versions = {p: _pydocs.package_version(p) for p in packages}  # raises for missing packages
    key = hashlib.sha256(json.dumps([_FORMAT, versions, min_chars]).encode()).hexdigest()[:16]
    path = cache_dir() / "corpus" / f"pydocs-{key}"
    spec = "pydocs:" + ",".join(packages)
    if (path / "dataset_info.json").exists():
        return Corpus(_datasets().load_from_disk(str(path)), spec)
    rows = {"id": [], "text": [], "domain": []}
    for p in packages:
        for r in _pydocs.iter_docstrings(p, min_chars=min_chars):
            rows["id"].append(r["id"])
            rows["text"].append(r["text"])
            rows["domain"].append(r["domain"])
    if not rows["id"]:
        raise CorpusError(f"pydocs:{','.join(packages)} holds no docstring of {min_chars}+ characters")
    ds = _datasets().Dataset.from_dict(rows)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    ds.save_to_disk(str(tmp))
    try:
        os.replace(tmp, path)
    except OSError:  # another process won the race
        pass
    return Corpus(_datasets().load_from_disk(str(path if path.exists() else tmp)), spec)


TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".csv")
SUFFIXES = TEXT_SUFFIXES + (".parquet",)


def _ascii_compatible(encoding: str) -> bool:
    """True when ``encoding`` writes ASCII (newlines, braces, NUL) as single bytes (UTF-8, latin-1, ...)."""
    return "\n{}\x00".encode(encoding) == b"\n{}\x00"


def _check_text(path: Path, raw: bytes, encoding: str = "utf-8") -> str:
    ascii_ok = _ascii_compatible(encoding)
    if ascii_ok and b"\x00" in raw[:65536]:
        raise CorpusError(f"{path} looks binary (NUL bytes), not a text corpus")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        name = "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding
        raise CorpusError(f"{path} is not valid {name} (byte {e.start}); pass encoding= "
                          f"(e.g. latin-1) if the file uses another") from None
    if not ascii_ok and "\x00" in text[:65536]:
        raise CorpusError(f"{path} looks binary (NUL characters), not a text corpus")
    return text


def _fields(obj: dict) -> str:
    return ", ".join(map(str, obj)) or "none"


def _record(obj, where: str, name: str, default_id: str, text_field: str, domain_field: str | None) -> dict:
    """``{"id", "text", "domain"}`` of one JSON object / CSV row (``where`` prefixes errors)."""
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: expected a JSON object with a string field {text_field!r}, "
                          f"got {type(obj).__name__}")
    text = obj.get(text_field)
    if text is None:
        hint = "pass text_field= to read another" if text_field == "text" else "pass text_field= to name it"
        raise CorpusError(f"{where}: no field {text_field!r}; fields found: {_fields(obj)}; {hint}")
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {text_field!r} must be a string, got {type(text).__name__}")
    if domain_field is None:
        domain = obj.get("domain", Path(name).stem)
    elif domain_field in obj:
        domain = obj[domain_field]
    else:
        raise CorpusError(f"{where}: no field {domain_field!r} (domain_field); fields found: {_fields(obj)}")
    return {"id": str(obj.get("id", default_id)), "text": text, "domain": str(domain)}


def _txt_rows(path: str, encoding: str = "utf-8", text_field: str = "text", domain_field: str | None = None):
    p = Path(path)
    text = _check_text(p, p.read_bytes(), encoding)
    paras = [t.strip() for t in text.replace("\r\n", "\n").split("\n\n")]
    if len([t for t in paras if t]) <= 1 and "\n" in text.strip():
        paras = [t.strip() for t in text.splitlines()]
    n = 0
    for t in paras:
        if t:
            yield {"id": f"{p.name}:{n}", "text": t, "domain": p.stem}
            n += 1


def _json_lines(p: Path, encoding: str):
    """``(line number, stripped line)`` of a text file, decoded with ``encoding``."""
    if _ascii_compatible(encoding):  # line by line: a corpus larger than memory streams
        with open(p, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                line = _check_text(p, raw, encoding)
                yield lineno, (line.lstrip("\ufeff") if lineno == 1 else line).strip()
    else:
        for lineno, line in enumerate(_check_text(p, p.read_bytes(), encoding).splitlines(), 1):
            yield lineno, (line.lstrip("\ufeff") if lineno == 1 else line).strip()


def _first_char(p: Path, encoding: str) -> str:
    with open(p, "rb") as f:
        head = f.read(4096)
    try:
        return codecs.getincrementaldecoder(encoding)(errors="ignore").decode(head).lstrip("\ufeff \t\r\n")[:1]
    except LookupError:
        return ""


def _jsonl_rows(path: str, encoding: str = "utf-8", text_field: str = "text", domain_field: str | None = None):
    p = Path(path)
    if p.suffix == ".json" and _first_char(p, encoding) == "[":
        yield from _json_array_rows(p, encoding, text_field, domain_field)
        return
    for lineno, line in _json_lines(p, encoding):
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == 1 and p.suffix == ".json":
                _json_whole(p, encoding)  # a pretty-printed single object: say so
            raise CorpusError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
        yield _record(obj, f"{p}:{lineno}", p.name, f"{p.name}:{lineno}", text_field, domain_field)


def _json_whole(p: Path, encoding: str):
    try:
        obj = json.loads(_check_text(p, p.read_bytes(), encoding).lstrip("\ufeff"))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{p} is not valid JSON (line {e.lineno}: {e.msg}); expected a JSON array of "
                          f"objects or one JSON object per line") from None
    if isinstance(obj, dict):
        raise CorpusError(f"{p} holds a single JSON object (keys: {_fields(obj)}); expected a JSON array of "
                          f"objects or one JSON object per line")
    return obj


def _json_array_rows(p: Path, encoding: str, text_field: str, domain_field: str | None):
    items = _json_whole(p, encoding)
    if not isinstance(items, list):
        raise CorpusError(f"{p} holds a JSON {type(items).__name__}; expected an array of objects")
    for k, obj in enumerate(items):
        yield _record(obj, f"{p}: item {k}", p.name, f"{p.name}:{k}", text_field, domain_field)


def _csv_rows(path: str, encoding: str = "utf-8", text_field: str = "text", domain_field: str | None = None):
    p = Path(path)
    text = _check_text(p, p.read_bytes(), encoding).lstrip("\ufeff")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))   # long documents in one cell
    reader = csv.DictReader(io.StringIO(text, newline=""))   # quoted cells may hold newlines
    try:
        header = reader.fieldnames
        if not header:
            raise CorpusError(f"{p} has no header row naming its columns")
        if text_field not in header:
            hint = "pass text_field= to read another" if text_field == "text" else "pass text_field= to name it"
            raise CorpusError(f"{p}: no field {text_field!r}; fields found: {_fields(header)}; {hint}")
        if domain_field is not None and domain_field not in header:
            raise CorpusError(f"{p}: no field {domain_field!r} (domain_field); fields found: {_fields(header)}")
        for k, row in enumerate(reader):
            if row.get(text_field) is None:
                raise CorpusError(f"{p}:{reader.line_num}: row has no value in column {text_field!r} "
                                  f"(fewer cells than the header)")
            if domain_field is None:
                dom = row.get("domain") or p.stem
            else:
                dom = row.get(domain_field) or p.stem
            yield {"id": row.get("id") or f"{p.name}:{k}", "text": row[text_field], "domain": dom}
    except csv.Error as e:
        raise CorpusError(f"{p}:{reader.line_num}: not valid CSV ({e})") from None


def _normalise(ds: datasets.Dataset, name: str, spec: str, text_field: str = "text",
               domain_field: str | None = None) -> datasets.Dataset:
    cols = ds.column_names
    if text_field not in cols:
        hint = "pass text_field= to read another" if text_field == "text" else "pass text_field= to name it"
        raise CorpusError(f"{spec}: no field {text_field!r}; fields found: {', '.join(cols) or 'none'}; {hint}")
    if domain_field is not None and domain_field not in cols:
        raise CorpusError(f"{spec}: no field {domain_field!r} (domain_field); fields found: {', '.join(cols)}")
    if ds.features[text_field] != _datasets().Value("string") and ds.features[text_field] != _datasets().Value("large_string"):
        raise CorpusError(f"{spec}: field {text_field!r} must hold strings, got {ds.features[text_field]}")
    dom = domain_field if domain_field is not None else ("domain" if "domain" in cols else None)
    if dom == text_field:
        raise CorpusError(f"{spec}: text_field and domain_field are both {text_field!r}")
    if "id" in (text_field, dom):
        raise CorpusError(f"{spec}: text_field / domain_field must not be the 'id' column")
    keep = {text_field: "text", **({dom: "domain"} if dom else {}), **({"id": "id"} if "id" in cols else {})}
    ds = ds.select_columns(list(keep))
    if any(k != v for k, v in keep.items()):
        ds = ds.rename_columns({k: v for k, v in keep.items() if k != v})
    if "domain" not in ds.column_names:
        ds = ds.add_column("domain", [name] * len(ds))
    if "id" not in ds.column_names:
        ds = ds.add_column("id", [f"{name}:{i}" for i in range(len(ds))])
    ds = ds.select_columns(["id", "text", "domain"])
    return ds.cast_column("id", _datasets().Value("string")).cast_column("domain", _datasets().Value("string"))


_KINDS = "pydocs[:pkgs], a .txt/.jsonl/.json/.csv/.parquet file, or a datasets directory"


def check_spec(spec) -> str:
    """The cheap checks of a corpus spec, without reading it: a non-empty string; a file or directory
    that exists, is readable and has a supported suffix (pydocs specs pass). Returns the stripped spec;
    raises :class:`CorpusError`."""
    if not isinstance(spec, str) or not spec.strip():
        raise CorpusError("corpus spec must be a non-empty string")
    spec = spec.strip()
    if spec == "pydocs" or spec.startswith("pydocs:"):
        return spec
    p = Path(spec)
    if not p.exists():
        raise CorpusError(f"corpus {spec!r} not found (expected {_KINDS})")
    if not os.access(p, os.R_OK):
        raise CorpusError(f"corpus {spec!r} is not readable")
    if not p.is_dir() and p.suffix not in SUFFIXES:
        raise CorpusError(f"unsupported corpus file type {p.suffix!r} for {spec!r} "
                          f"(use .txt, .jsonl, .json, .csv, .parquet or a datasets directory)")
    return spec


def _file_corpus(spec: str, text_field: str = "text", domain_field: str | None = None,
                 encoding: str = "utf-8") -> Corpus:
    check_spec(spec)
    p = Path(spec)
    hf_cache = str(cache_dir() / "hf")
    if p.suffix not in TEXT_SUFFIXES and codecs.lookup(encoding).name != "utf-8":
        raise CorpusError(f"encoding= applies to text files (.txt/.jsonl/.json/.csv), not to {spec!r}")
    if p.is_dir():
        try:
            ds = _datasets().load_from_disk(str(p))
        except Exception as e:  # datasets raises FileNotFoundError / various
            raise CorpusError(f"{spec} is not a datasets directory saved with save_to_disk "
                              f"({type(e).__name__})") from None
        if isinstance(ds, _datasets().DatasetDict):
            if "train" not in ds:
                raise CorpusError(f"{spec}: DatasetDict without a 'train' split")
            ds = ds["train"]
        ds = _normalise(ds, p.name, spec, text_field, domain_field)
    elif p.suffix == ".parquet":
        try:  # check the footer first: datasets logs its own error line before raising
            import pyarrow.parquet as pq
            pq.read_schema(str(p))
        except Exception as e:
            raise CorpusError(f"{spec} is not a readable parquet file ({type(e).__name__})") from None
        try:
            ds = _datasets().Dataset.from_parquet(str(p), cache_dir=hf_cache)
        except Exception as e:
            raise CorpusError(f"{spec} is not a readable parquet file ({type(e).__name__})") from None
        ds = _normalise(ds, p.stem, spec, text_field, domain_field)
    else:
        if p.suffix == ".txt" and (text_field != "text" or domain_field is not None):
            raise CorpusError(f"text_field= / domain_field= name fields of .jsonl/.json/.csv/.parquet records; "
                              f"{spec!r} is plain text")
        if p.stat().st_size == 0:
            raise CorpusError(f"corpus file {spec} is empty")
        gen = {".txt": _txt_rows, ".csv": _csv_rows}.get(p.suffix, _jsonl_rows)
        st = p.stat()
        features = _datasets().Features({"id": _datasets().Value("string"), "text": _datasets().Value("string"),
                                      "domain": _datasets().Value("string")})
        kw = {"fn": gen.__name__, "path": str(p.resolve()), "stamp": f"{st.st_size}-{st.st_mtime_ns}"}
        if (encoding, text_field, domain_field) != ("utf-8", "text", None):  # the default keeps older cache keys
            kw.update(encoding=encoding, text_field=text_field, domain_field=domain_field)
        try:
            ds = _datasets().Dataset.from_generator(_gen_wrapper, gen_kwargs=kw, features=features, cache_dir=hf_cache)
        except CorpusError:
            raise
        except Exception as e:  # datasets wraps generator errors
            cause = e
            while cause.__cause__ is not None or cause.__context__ is not None:
                cause = cause.__cause__ or cause.__context__
                if isinstance(cause, CorpusError):
                    raise cause from None
            raise CorpusError(f"cannot read {spec}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if len(ds) == 0:
        raise CorpusError(f"corpus {spec!r} holds no document")
    return Corpus(ds, spec)


def _gen_wrapper(fn: str, path: str, stamp: str, encoding: str = "utf-8", text_field: str = "text",
                 domain_field: str | None = None):
    n = 0
    rows = {"_txt_rows": _txt_rows, "_jsonl_rows": _jsonl_rows, "_csv_rows": _csv_rows}[fn]
    for row in rows(path, encoding=encoding, text_field=text_field, domain_field=domain_field):
        n += 1
        yield row
    if n == 0:  # else datasets fails with "Instruction 'train' corresponds to no data"
        raise CorpusError(f"corpus file {path} holds no document (only blank lines)")


def _field_name(value, what: str) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise CorpusError(f"{what} must be a non-empty field name, got {value!r}")


def corpus(spec: str = "pydocs", packages: Sequence[str] | str | None = None, min_chars: int = 200, *,
           text_field: str | None = None, domain_field: str | None = None, encoding: str | None = None) -> Corpus:
    """Build or load a corpus from ``spec`` (see the module doc).

    ``packages`` is a shorthand: ``corpus(packages=["numpy"])`` == ``corpus("pydocs:numpy")``.
    ``text_field`` (default ``"text"``) and ``domain_field`` (default: ``domain`` where present, else the
    file's stem) name the fields of ``.jsonl``/``.json``/``.csv``/``.parquet`` records and datasets
    columns; ``encoding`` (default UTF-8) decodes ``.txt``/``.jsonl``/``.json``/``.csv`` files.
    """
    if isinstance(packages, str):
        packages = [p for p in packages.split(",") if p.strip()]
    if not isinstance(spec, str) or not spec.strip():
        raise CorpusError("corpus spec must be a non-empty string")
    _field_name(text_field, "text_field")
    _field_name(domain_field, "domain_field")
    if encoding is not None:
        if not isinstance(encoding, str) or not encoding.strip():
            raise CorpusError(f"encoding must be a codec name such as 'utf-8' or 'latin-1', got {encoding!r}")
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise CorpusError(f"unknown encoding {encoding!r} (a Python codec name such as 'utf-8', "
                              f"'latin-1', 'utf-16')") from None
    spec = spec.strip()
    if spec == "pydocs" or spec.startswith("pydocs:"):
        given = [n for n, v in (("text_field", text_field), ("domain_field", domain_field), ("encoding", encoding))
                 if v is not None]
        if given:
            raise CorpusError(f"{', '.join(given)} apply to corpus files, not to the pydocs corpus")
        pk = list(packages) if packages else [p for p in spec[len("pydocs:"):].split(",") if p] \
            if ":" in spec else list(_pydocs.DEFAULT_PACKAGES)
        return _pydocs_corpus(pk, min_chars)
    if packages:
        raise CorpusError("packages= only applies to the pydocs corpus")
    return _file_corpus(spec, text_field.strip() if text_field else "text",
                        domain_field.strip() if domain_field else None, encoding or "utf-8")
