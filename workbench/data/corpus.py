"""Corpora: ``wb.corpus(spec)`` -> :class:`Corpus` (id, text, domain), backed by Arrow.

Specs
-----
``pydocs`` / ``pydocs:numpy,pandas``
    docstrings of installed packages (see :mod:`workbench.data.pydocs`), cached under
    ``runs/cache/`` keyed by the package versions and the length filter.
``path/to/file.txt``
    one document per blank-line-separated paragraph (one per line when the file has no blank line).
``path/to/file.jsonl``
    one JSON object per line with a ``text`` field and optional ``domain`` and ``id``.
``path/to/file.parquet``
    columns ``text`` and optional ``domain`` / ``id``.
``path/to/dir``
    a Hugging Face ``datasets`` directory written by ``save_to_disk`` (split ``train`` of a
    DatasetDict), with a ``text`` column.

A Corpus wraps a memory-mapped :class:`datasets.Dataset`, so a corpus larger than memory works the
same way; ``to_pandas()`` materialises it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import datasets
import numpy as np

from ..errors import ConfigError, CorpusError
from . import pydocs as _pydocs

datasets.disable_progress_bars()
_FORMAT = 2  # bump when the pydocs extraction changes: invalidates cached corpora


def cache_dir() -> Path:
    """Cache root: ``$WORKBENCH_CACHE`` or ``./runs/cache``."""
    d = Path(os.environ.get("WORKBENCH_CACHE", Path.cwd() / "runs" / "cache"))
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
        return Corpus(datasets.load_from_disk(str(path)), spec)
    rows = {"id": [], "text": [], "domain": []}
    for p in packages:
        for r in _pydocs.iter_docstrings(p, min_chars=min_chars):
            rows["id"].append(r["id"])
            rows["text"].append(r["text"])
            rows["domain"].append(r["domain"])
    if not rows["id"]:
        raise CorpusError(f"pydocs:{','.join(packages)} holds no docstring of {min_chars}+ characters")
    ds = datasets.Dataset.from_dict(rows)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    ds.save_to_disk(str(tmp))
    try:
        os.replace(tmp, path)
    except OSError:  # another process won the race
        pass
    return Corpus(datasets.load_from_disk(str(path if path.exists() else tmp)), spec)


def _check_text(path: Path, raw: bytes) -> str:
    if b"\x00" in raw[:65536]:
        raise CorpusError(f"{path} looks binary (NUL bytes), not a text corpus")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not valid UTF-8 (byte {e.start})") from None


def _txt_rows(path: str):
    p = Path(path)
    text = _check_text(p, p.read_bytes())
    paras = [t.strip() for t in text.replace("\r\n", "\n").split("\n\n")]
    if len([t for t in paras if t]) <= 1 and "\n" in text.strip():
        paras = [t.strip() for t in text.splitlines()]
    n = 0
    for t in paras:
        if t:
            yield {"id": f"{p.name}:{n}", "text": t, "domain": p.stem}
            n += 1


def _jsonl_rows(path: str):
    p = Path(path)
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _check_text(p, raw).strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise CorpusError(f"{p}:{lineno}: each line needs a string field 'text'")
            yield {"id": str(obj.get("id", f"{p.name}:{lineno}")), "text": obj["text"],
                   "domain": str(obj.get("domain", p.stem))}


def _normalise(ds: datasets.Dataset, name: str, spec: str) -> datasets.Dataset:
    if "text" not in ds.column_names:
        raise CorpusError(f"{spec}: no 'text' column (columns: {ds.column_names})")
    if "domain" not in ds.column_names:
        ds = ds.add_column("domain", [name] * len(ds))
    if "id" not in ds.column_names:
        ds = ds.add_column("id", [f"{name}:{i}" for i in range(len(ds))])
    ds = ds.select_columns(["id", "text", "domain"])
    return ds.cast_column("id", datasets.Value("string")).cast_column("domain", datasets.Value("string"))


def _file_corpus(spec: str) -> Corpus:
    p = Path(spec)
    if not p.exists():
        raise CorpusError(f"corpus {spec!r} not found (expected pydocs[:pkgs], a .txt/.jsonl/.parquet "
                          f"file, or a datasets directory)")
    if not os.access(p, os.R_OK):
        raise CorpusError(f"corpus {spec!r} is not readable")
    hf_cache = str(cache_dir() / "hf")
    if p.is_dir():
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as e:  # datasets raises FileNotFoundError / various
            raise CorpusError(f"{spec} is not a datasets directory saved with save_to_disk "
                              f"({type(e).__name__})") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise CorpusError(f"{spec}: DatasetDict without a 'train' split")
            ds = ds["train"]
        ds = _normalise(ds, p.name, spec)
    elif p.suffix == ".parquet":
        try:  # check the footer first: datasets logs its own error line before raising
            import pyarrow.parquet as pq
            pq.read_schema(str(p))
        except Exception as e:
            raise CorpusError(f"{spec} is not a readable parquet file ({type(e).__name__})") from None
        try:
            ds = datasets.Dataset.from_parquet(str(p), cache_dir=hf_cache)
        except Exception as e:
            raise CorpusError(f"{spec} is not a readable parquet file ({type(e).__name__})") from None
        ds = _normalise(ds, p.stem, spec)
    elif p.suffix in (".txt", ".jsonl", ".json"):
        if p.stat().st_size == 0:
            raise CorpusError(f"corpus file {spec} is empty")
        gen = _txt_rows if p.suffix == ".txt" else _jsonl_rows
        st = p.stat()
        features = datasets.Features({"id": datasets.Value("string"), "text": datasets.Value("string"),
                                      "domain": datasets.Value("string")})
        try:
            ds = datasets.Dataset.from_generator(
                _gen_wrapper, gen_kwargs={"fn": gen.__name__, "path": str(p.resolve()),
                                          "stamp": f"{st.st_size}-{st.st_mtime_ns}"},
                features=features, cache_dir=hf_cache)
        except CorpusError:
            raise
        except Exception as e:  # datasets wraps generator errors
            cause = e
            while cause.__cause__ is not None or cause.__context__ is not None:
                cause = cause.__cause__ or cause.__context__
                if isinstance(cause, CorpusError):
                    raise cause from None
            raise CorpusError(f"cannot read {spec}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    else:
        raise CorpusError(f"unsupported corpus file type {p.suffix!r} for {spec!r} "
                          f"(use .txt, .jsonl, .parquet or a datasets directory)")
    if len(ds) == 0:
        raise CorpusError(f"corpus {spec!r} holds no document")
    return Corpus(ds, spec)


def _gen_wrapper(fn: str, path: str, stamp: str):
    n = 0
    for row in {"_txt_rows": _txt_rows, "_jsonl_rows": _jsonl_rows}[fn](path):
        n += 1
        yield row
    if n == 0:  # else datasets fails with "Instruction 'train' corresponds to no data"
        raise CorpusError(f"corpus file {path} holds no document (only blank lines)")


def corpus(spec: str = "pydocs", packages: Sequence[str] | str | None = None, min_chars: int = 200) -> Corpus:
    """Build or load a corpus from ``spec`` (see the module doc).

    ``packages`` is a shorthand: ``corpus(packages=["numpy"])`` == ``corpus("pydocs:numpy")``.
    """
    if isinstance(packages, str):
        packages = [p for p in packages.split(",") if p.strip()]
    if not isinstance(spec, str) or not spec.strip():
        raise CorpusError("corpus spec must be a non-empty string")
    spec = spec.strip()
    if spec == "pydocs" or spec.startswith("pydocs:"):
        pk = list(packages) if packages else [p for p in spec[len("pydocs:"):].split(",") if p] \
            if ":" in spec else list(_pydocs.DEFAULT_PACKAGES)
        return _pydocs_corpus(pk, min_chars)
    if packages:
        raise CorpusError("packages= only applies to the pydocs corpus")
    return _file_corpus(spec)
