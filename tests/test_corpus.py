import json
from pathlib import Path

import datasets
import pytest

import workbench as wb
from workbench.cli import main
from workbench.errors import CorpusError


def test_pydocs_ids_stable_and_unique(small_corpus):
    again = wb.corpus("pydocs:datasets")
    assert small_corpus.ids == again.ids
    assert len(set(small_corpus.ids)) == len(small_corpus)
    assert small_corpus.hash == again.hash
    assert set(small_corpus.domains) == {"datasets"}
    assert all(len(t) >= 200 for t in small_corpus.texts)
    # ids name the file and the qualified name of the docstring
    assert all(i.startswith("datasets/") and ".py:" in i for i in small_corpus.ids)


def test_pydocs_two_packages_domains():
    c = wb.corpus("pydocs:datasets,papermill")
    s = c.stats()
    assert set(s["domains"]) == {"datasets", "papermill"}
    assert sum(s["domains"].values()) == s["docs"] == len(c)
    assert wb.corpus(packages=["datasets", "papermill"]).hash == c.hash


def test_min_chars_filter():
    a, b = wb.corpus("pydocs:papermill", min_chars=100), wb.corpus("pydocs:papermill", min_chars=400)
    assert len(b) < len(a) and all(len(t) >= 400 for t in b.texts)


def test_duplicates_counted(tmp_path):
    p = tmp_path / "c.jsonl"
    rows = [{"text": "alpha beta"}, {"text": "gamma"}, {"text": "alpha beta"}, {"text": "alpha beta", "domain": "x"}]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    c = wb.corpus(str(p))
    s = c.stats()
    assert s["docs"] == 4 and s["duplicate_fraction"] == pytest.approx(0.5)
    assert s["domains"] == {"c": 3, "x": 1}


def test_txt_parquet_and_datasets_dir(tmp_path):
    t = tmp_path / "notes.txt"
    t.write_text("first paragraph\nstill first\n\nsecond one\n\n\nthird")
    c = wb.corpus(str(t))
    assert c.texts == ["first paragraph\nstill first", "second one", "third"]
    assert c.domains == ["notes"] * 3
    ds = datasets.Dataset.from_dict({"text": ["a b c", "d e f"], "domain": ["u", "v"]})
    ds.to_parquet(str(tmp_path / "x.parquet"))
    assert wb.corpus(str(tmp_path / "x.parquet")).domains == ["u", "v"]
    ds.save_to_disk(str(tmp_path / "dsdir"))
    c2 = wb.corpus(str(tmp_path / "dsdir"))
    assert c2.texts == ["a b c", "d e f"] and c2.ids == ["dsdir:0", "dsdir:1"]


@pytest.mark.parametrize("content,msg", [
    (b"", "empty"),
    (b"\x00\x01\x02binary\x00", "binary"),
    (b"caf\xe9 au lait", "UTF-8"),
])
def test_bad_files_rejected(tmp_path, content, msg):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(CorpusError, match=msg):
        wb.corpus(str(p))


def test_bad_jsonl_and_specs(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{"txt": 1}\n')
    with pytest.raises(CorpusError, match="text"):
        wb.corpus(str(p))
    with pytest.raises(CorpusError, match="not found"):
        wb.corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(CorpusError, match="not installed"):
        wb.corpus("pydocs:no_such_package_xyz")
    with pytest.raises(CorpusError, match="unsupported"):
        (tmp_path / "f.xml").write_text("<a/>")     # .csv is a corpus format now (tests/test_own_data.py)
        wb.corpus(str(tmp_path / "f.xml"))


def test_split_is_deterministic_and_holds_out_domains():
    c = wb.corpus("pydocs:datasets,papermill")
    tr, ev, ho = c.split(0.1, holdout_domains=["papermill"])
    assert set(ho.domains) == {"papermill"} and "papermill" not in set(tr.domains) | set(ev.domains)
    assert len(tr) + len(ev) + len(ho) == len(c)
    tr2, ev2, _ = c.split(0.1, holdout_domains=["papermill"])
    assert ev.ids == ev2.ids and 0 < len(ev) < len(tr)


def test_cli_corpus_stats(capsys):
    assert main(["corpus", "pydocs", "--packages", "datasets,papermill", "--stats"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(s) >= {"docs", "chars", "domains", "duplicate_fraction"}
    assert set(s["domains"]) == {"datasets", "papermill"}


def test_cli_corpus_errors(tmp_path, capsys):
    assert main(["corpus", str(tmp_path / "nope.jsonl"), "--stats"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not found" in err and len(err.splitlines()) == 1
    assert main(["corpus", "pydocs", "--packages", "not_a_pkg_qq"]) == 2
    assert "not installed" in capsys.readouterr().err
