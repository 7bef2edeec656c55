"""Your own data: corpus files with other field names, encodings, JSON arrays and CSV (issue 17)."""
import csv
import json

import datasets
import pytest

import workbench as wb
from workbench.cli import main
from workbench.errors import CorpusError

ROWS = [{"body": "first document about arrays", "label": "np", "id": "a"},
        {"body": "second one, on data frames", "label": "pd", "id": "b"},
        {"body": "third: caf\u00e9 cr\u00e8me", "label": "np", "id": "c"}]


def _jsonl(path, rows, encoding="utf-8"):
    path.write_bytes("\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode(encoding))
    return path


def _csv(path, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _expect(c, domains=("np", "pd", "np")):
    assert c.texts == [r["body"] for r in ROWS]
    assert c.domains == list(domains)
    assert c.ids == ["a", "b", "c"]


def test_text_and_domain_fields_in_every_format(tmp_path):
    _expect(wb.corpus(str(_jsonl(tmp_path / "d.jsonl", ROWS)), text_field="body", domain_field="label"))
    (tmp_path / "arr.json").write_text(json.dumps(ROWS, indent=2))
    _expect(wb.corpus(str(tmp_path / "arr.json"), text_field="body", domain_field="label"))
    _expect(wb.corpus(str(_csv(tmp_path / "d.csv", ROWS)), text_field="body", domain_field="label"))
    ds = datasets.Dataset.from_list(ROWS)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    _expect(wb.corpus(str(tmp_path / "d.parquet"), text_field="body", domain_field="label"))
    ds.save_to_disk(str(tmp_path / "dsdir"))
    _expect(wb.corpus(str(tmp_path / "dsdir"), text_field="body", domain_field="label"))
    # the same content hashes the same whatever the container
    hashes = {wb.corpus(str(tmp_path / f), text_field="body", domain_field="label").hash
              for f in ("d.jsonl", "arr.json", "d.csv", "d.parquet", "dsdir")}
    assert len(hashes) == 1


def test_default_fields_and_stem_domain(tmp_path):
    rows = [{"text": "alpha beta"}, {"text": "gamma", "domain": "g"}]
    (tmp_path / "plain.json").write_text(json.dumps(rows))
    c = wb.corpus(str(tmp_path / "plain.json"))
    assert c.texts == ["alpha beta", "gamma"] and c.domains == ["plain", "g"]
    assert c.ids == ["plain.json:0", "plain.json:1"]
    c2 = wb.corpus(str(_csv(tmp_path / "t.csv", [{"text": "x y", "domain": ""}, {"text": "z", "domain": "q"}])))
    assert c2.texts == ["x y", "z"] and c2.domains == ["t", "q"] and c2.ids == ["t.csv:0", "t.csv:1"]
    # a .json file of JSON lines still reads as before
    (tmp_path / "lines.json").write_text('{"text": "one"}\n{"text": "two"}\n')
    assert wb.corpus(str(tmp_path / "lines.json")).ids == ["lines.json:1", "lines.json:2"]


def test_existing_inputs_keep_their_hash(tmp_path):
    """Files that read before read the same: ids, domains, texts and so the hash (pinned)."""
    t = tmp_path / "notes.txt"
    t.write_text("first paragraph\nstill first\n\nsecond one\n\n\nthird")
    assert wb.corpus(str(t)).hash == wb.corpus(str(t), encoding="utf-8").hash == "1af067d3dde3ebdb"
    j = _jsonl(tmp_path / "c.jsonl", [{"text": "alpha beta"}, {"text": "gamma", "domain": "x"}])
    assert wb.corpus(str(j)).hash == "fea8dd9b0d832369"


def test_encodings(tmp_path):
    text = "caf\u00e9 cr\u00e8me\n\nna\u00efve br\u00fbl\u00e9e\n"
    (tmp_path / "l.txt").write_bytes(text.encode("latin-1"))
    with pytest.raises(CorpusError, match=r"not valid UTF-8.*encoding="):
        wb.corpus(str(tmp_path / "l.txt"))
    c = wb.corpus(str(tmp_path / "l.txt"), encoding="latin-1")
    assert c.texts == ["caf\u00e9 cr\u00e8me", "na\u00efve br\u00fbl\u00e9e"]
    (tmp_path / "u.txt").write_bytes(text.encode("utf-8"))
    assert wb.corpus(str(tmp_path / "u.txt")).texts == c.texts
    (tmp_path / "w.txt").write_bytes(text.encode("utf-16"))
    assert wb.corpus(str(tmp_path / "w.txt"), encoding="utf-16").texts == c.texts
    w = _jsonl(tmp_path / "w.jsonl", ROWS, encoding="utf-16")
    _expect(wb.corpus(str(w), text_field="body", domain_field="label", encoding="utf-16"))
    _expect(wb.corpus(str(_csv(tmp_path / "l.csv", ROWS, "latin-1")), text_field="body", domain_field="label",
                      encoding="latin-1"))


@pytest.mark.parametrize("name,content,kw,pattern", [
    ("data.jsonl", '{"body": "x", "label": 1}\n', {}, r"data.jsonl:1: no field 'text'; fields found: body, "
                                                      r"label; pass text_field="),
    ("data.json", '[{"body": "x"}]', {}, r"item 0: no field 'text'.*fields found: body"),
    ("data.json", '{"body": "x",\n "n": 2}', {}, r"single JSON object \(keys: body, n\)"),
    ("data.json", '["just", "strings"]', {}, r"item 0: expected a JSON object"),
    ("data.csv", "body,label\nx,1\n", {}, r"data.csv: no field 'text'; fields found: body, label"),
    ("data.csv", "body,label\nx,1\n", {"text_field": "content"}, r"no field 'content'.*fields found: body, label"),
    ("data.jsonl", '{"text": "x"}\n', {"domain_field": "label"}, r"no field 'label' \(domain_field\).*fields found: text"),
    ("data.jsonl", '{"text": 3}\n', {}, r"field 'text' must be a string, got int"),
    ("data.txt", "hello\n\nworld\n", {"text_field": "body"}, r"plain text"),
    ("data.txt", "hello\n\nworld\n", {"encoding": "no-such-codec"}, r"unknown encoding 'no-such-codec'"),
    ("data.jsonl", '{"text": "x"}\n', {"text_field": ""}, r"text_field must be a non-empty field name"),
    ("data.xml", "<a/>", {}, r"unsupported corpus file type '.xml'"),
])
def test_bad_own_data_is_one_line(tmp_path, name, content, kw, pattern):
    (tmp_path / name).write_text(content)
    with pytest.raises(CorpusError, match=pattern) as e:
        wb.corpus(str(tmp_path / name), **kw)
    assert len(str(e.value).splitlines()) == 1


def test_parquet_missing_field_and_pydocs_refuses_field_options(tmp_path):
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "p.parquet"))
    with pytest.raises(CorpusError, match=r"p.parquet: no field 'text'; fields found: body, label, id"):
        wb.corpus(str(tmp_path / "p.parquet"))
    with pytest.raises(CorpusError, match=r"encoding= applies to text files"):
        wb.corpus(str(tmp_path / "p.parquet"), text_field="body", encoding="latin-1")
    with pytest.raises(CorpusError, match=r"text_field apply to corpus files"):
        wb.corpus("pydocs:datasets", text_field="body")


def test_cli_corpus_fields_and_encoding(tmp_path, capsys):
    f = _csv(tmp_path / "mine.csv", ROWS, "latin-1")
    assert main(["corpus", str(f), "--text-field", "body", "--domain-field", "label", "--encoding", "latin-1",
                 "--stats"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["docs"] == 3 and s["domains"] == {"np": 2, "pd": 1}
    assert main(["corpus", str(f), "--encoding", "latin-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert "mine.csv: no field 'text'; fields found: body, label, id" in err


def test_csv_quoted_multiline_cells_and_bom(tmp_path):
    f = tmp_path / "q.csv"
    f.write_bytes('\ufefftitle,text\nA,"line one\nline two, with a comma"\nB,plain\n'.encode("utf-8"))
    c = wb.corpus(str(f))
    assert c.texts == ["line one\nline two, with a comma", "plain"] and c.domains == ["q", "q"]
