"""Your own model and tokenizer: a Hugging Face directory saved with ``save_pretrained``, a model
object, a tokenizer object, a hub id (offline here: refused in one line), through ``wb.model``,
``wb.prepare`` and ``wb.train``; FLOPs per token from the config of any architecture."""
import pytest
import torch
import transformers as T
from torch.utils.flop_counter import FlopCounterMode

import workbench as wb
from workbench.data.tokenizer import load_tokenizer
from workbench.errors import ConfigError, ModelError
from workbench.models import check_spec, is_encoder, max_positions, mlm_loss, sparse_parts

from conftest import SMALL_CORPUS

SEQ = 32


def _tiny(kind: str, vocab: int, positions: int = 64):
    """A tiny config of each architecture the issue names (2 layers, hidden 32)."""
    if kind == "gpt2":
        return T.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=positions,
                            bos_token_id=0, eos_token_id=0)
    if kind == "neox":
        return T.GPTNeoXConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=positions, bos_token_id=0, eos_token_id=0)
    if kind == "llama":
        return T.LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=48, max_position_embeddings=positions,
                             bos_token_id=0, eos_token_id=0, pad_token_id=None)
    if kind == "bert":
        return T.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=positions)
    if kind == "distilbert":
        return T.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                  max_position_embeddings=positions, pad_token_id=0)
    raise ValueError(kind)


def _build(kind: str, vocab: int, positions: int = 64):
    cfg = _tiny(kind, vocab, positions)
    auto = T.AutoModelForMaskedLM if kind in ("bert", "distilbert") else T.AutoModelForCausalLM
    torch.manual_seed(0)
    return auto.from_config(cfg)


@pytest.fixture(scope="module")
def toks(small_corpus):
    """A byte-level BPE and a WordPiece tokenizer of 400 entries (prepare's own default is 8192)."""
    return {"bpe": wb.train_tokenizer(small_corpus, "bpe", 400),
            "wordpiece": wb.train_tokenizer(small_corpus, "wordpiece", 400)}


def _save(path, kind, tok, positions=64):
    m = _build(kind, len(tok), positions)
    m.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory, toks):
    """Directories saved with save_pretrained: GPT-2, GPT-NeoX and Llama with the BPE tokenizer, BERT
    and DistilBERT with the WordPiece one."""
    root = tmp_path_factory.mktemp("own")
    out = {k: _save(root / k, k, toks["bpe"]) for k in ("gpt2", "neox", "llama")}
    out.update({k: _save(root / k, k, toks["wordpiece"]) for k in ("bert", "distilbert")})
    return out


def _train3(prep):
    before = [p.detach().clone() for p in prep.model.parameters()]
    res = wb.train(prep.model, prep.train, budget=wb.Budget(max_steps=3), batch_size=4, lr=1e-3, progress=False)
    assert res.step == 3 and res.tokens > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, prep.model.parameters()))
    return res


# ------------------------------------------------------------------------------------ wb.model


@pytest.mark.parametrize("kind,cls,enc", [("gpt2", "GPT2LMHeadModel", False), ("neox", "GPTNeoXForCausalLM", False),
                                          ("llama", "LlamaForCausalLM", False), ("bert", "BertForMaskedLM", True),
                                          ("distilbert", "DistilBertForMaskedLM", True)])
def test_model_loads_a_directory_with_its_weights(saved, kind, cls, enc):
    d = str(saved[kind])
    assert check_spec(d) == "directory"
    m = wb.model(d)
    assert type(m).__name__ == cls and m.training
    assert is_encoder(m) is enc and is_encoder(d) is enc and is_encoder(m.config) is enc
    ref = type(m).from_pretrained(d)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref.state_dict().values()))
    assert wb.model(m) is m                         # an object is returned as is
    assert type(wb.model(saved[kind])).__name__ == cls     # a pathlib.Path works as well


def test_model_sets_dropout_and_overrides_of_a_directory(saved):
    m = wb.model(str(saved["gpt2"]), dropout=0.0, layer_norm_epsilon=1e-6)
    assert m.config.resid_pdrop == 0.0 and m.config.layer_norm_epsilon == 1e-6
    with pytest.raises(ModelError, match=r"saved weights of model .* do not fit its config \(overrides n_inner\)"):
        wb.model(str(saved["gpt2"]), n_inner=48)
    with pytest.raises(ModelError, match="has no attribute 'n_layerz'"):
        wb.model(str(saved["gpt2"]), n_layerz=3)
    with pytest.raises(ModelError, match="vocab_size=100 applies to presets only"):
        wb.model(str(saved["gpt2"]), vocab_size=100)


def test_preset_numbers_unchanged():
    """A preset still builds the same fresh model (the existing tests pin its losses)."""
    a, b = wb.model("gpt2-tiny", 300, seed=3), wb.model("gpt2-tiny", vocab_size=300, dropout=0.1, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert a.config.resid_pdrop == 0.1 and check_spec("gpt2-tiny") == "preset"


# ------------------------------------------------------------------------------------ wb.prepare


@pytest.mark.parametrize("kind", ["gpt2", "neox", "llama", "bert", "distilbert"])
def test_prepare_a_directory_uses_its_tokenizer_and_trains(saved, toks, kind):
    d = str(saved[kind])
    p = wb.prepare(SMALL_CORPUS, d, seq_len=SEQ)
    own = toks["wordpiece" if kind in ("bert", "distilbert") else "bpe"]
    assert len(p.tokenizer) == len(own) == 400
    assert p.tokenizer.get_vocab() == load_tokenizer(d).get_vocab()
    assert p.encoder is (kind in ("bert", "distilbert")) and p.train.kind == ("mlm" if p.encoder else "clm")
    _train3(p)


@pytest.mark.parametrize("kind,tk", [("gpt2", "bpe"), ("bert", "wordpiece")])
def test_prepare_a_model_object_with_a_tokenizer_object(toks, kind, tk):
    tok = toks[tk]
    m = _build(kind, len(tok))
    p = wb.prepare(SMALL_CORPUS, m, tokenizer=tok, seq_len=SEQ)
    assert p.model is m and p.tokenizer is tok
    _train3(p)


def test_prepare_a_model_object_without_tokenizer_trains_one_that_fits(toks):
    m = _build("gpt2", 300)
    p = wb.prepare(SMALL_CORPUS, m, seq_len=SEQ)
    assert p.model is m and len(p.tokenizer) <= 300


def test_prepare_a_preset_with_a_tokenizer_object(toks):
    p = wb.prepare(SMALL_CORPUS, "prelnbert-tiny", tokenizer=toks["wordpiece"], seq_len=SEQ)
    assert p.model.config.vocab_size == 400 and p.tokenizer is toks["wordpiece"]


# ------------------------------------------------------------------------------------ heads


def test_sparse_head_for_bert_dense_fallback_for_other_masked_lms(small_prep, toks):
    batch = small_prep.train.collate(list(range(4)))
    bert = wb.model("bert-tiny", vocab_size=len(small_prep.tokenizer), dropout=0.0).eval()
    assert sparse_parts(bert) is not None
    with torch.no_grad():
        assert mlm_loss(bert, batch, sparse=True) == pytest.approx(float(mlm_loss(bert, batch, sparse=False)), rel=1e-5)
    distil = _build("distilbert", len(small_prep.tokenizer), positions=128).eval()
    assert sparse_parts(distil) is None
    with torch.no_grad():      # no sparse head known: the dense loss, not an error
        assert mlm_loss(distil, batch, sparse=True) == mlm_loss(distil, batch, sparse=False)
    # and the FLOP count of a model without the sparse head decodes every position
    assert wb.flops_per_token(distil, 64, head_fraction=0.15) == wb.flops_per_token(distil, 64)
    assert wb.flops_per_token(bert, 64, head_fraction=0.15) < wb.flops_per_token(bert, 64)


# ------------------------------------------------------------------------------------ FLOPs


@pytest.mark.parametrize("kind", ["gpt2", "neox", "llama", "bert"])
def test_flops_per_token_matches_the_counter_on_forward_and_backward(kind):
    """Training FLOPs per token from the config = what ``FlopCounterMode`` counts over a forward and
    a backward pass, to 0.1% (the count is exact for these shapes: every matmul is in the formula)."""
    m = _build(kind, 300)
    m.set_attn_implementation("eager")               # the counter sees attention as plain matmuls
    x = torch.randint(5, 300, (2, SEQ))
    with FlopCounterMode(display=False) as fc:
        logits = m(input_ids=x, attention_mask=torch.ones_like(x)).logits
        logits.float().square().mean().backward()
    assert fc.get_total_flops() == pytest.approx(wb.flops_per_token(m, SEQ) * 2 * SEQ, rel=1e-3)


def test_flops_count_gated_mlp_and_grouped_kv_heads():
    L, H, I, V, S = 2, 32, 48, 300, SEQ
    cfg = _tiny("llama", V)                            # 4 heads of 8, 2 kv heads: k and v are 32 x 16
    per_layer = 2 * (2 * H * H + 2 * H * 16 + 3 * H * I) + 4 * S * H
    assert wb.models.forward_flops_per_token(cfg, S) == L * per_layer + 2 * H * V


# ------------------------------------------------------------------------------------ errors


def test_unknown_spec_offline_is_one_line():
    with pytest.raises(ModelError, match=r"unknown model preset 'someone/tiny-lm', not a local directory.*offline") as e:
        wb.model("someone/tiny-lm")
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="offline"):
        check_spec("someone/tiny-lm")
    with pytest.raises(ModelError, match="offline"):
        wb.prepare(SMALL_CORPUS, "someone/tiny-lm")
    with pytest.raises(ModelError, match=r"unknown model preset '/no/such/dir' and no such directory"):
        wb.model("/no/such/dir")
    with pytest.raises(ConfigError, match=r"tokenizer 'someone/tok'.*offline"):
        wb.prepare(SMALL_CORPUS, "gpt2-tiny", tokenizer="someone/tok")


def test_directory_errors(tmp_path, saved):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        wb.model(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="holds no tokenizer"):
        wb.prepare(SMALL_CORPUS, str(saved["gpt2"]), tokenizer=str(tmp_path / "empty"))
    T.T5Config(vocab_size=64, d_model=16, num_layers=1, num_heads=2, d_ff=32).save_pretrained(tmp_path / "t5")
    with pytest.raises(ModelError, match=r"model_type 't5'.*only causal and masked language models"):
        wb.model(str(tmp_path / "t5"))


def test_vocabulary_larger_than_the_embedding_table(saved, small_corpus):
    big = wb.train_tokenizer(small_corpus, "bpe", 600)
    with pytest.raises(ModelError, match=r"vocabulary mismatch: tokenizer .* has \d{3} tokens but model '.*gpt2' "
                                         r"has an embedding table of 400 rows"):
        wb.prepare(SMALL_CORPUS, str(saved["gpt2"]), tokenizer=big, seq_len=SEQ)
    with pytest.raises(ModelError, match=r"vocab_size 1000 for a tokenizer trained on the corpus but model "
                                         r"GPT2LMHeadModel has an embedding table of 300 rows"):
        wb.prepare(SMALL_CORPUS, _build("gpt2", 300), vocab_size=1000, seq_len=SEQ)
    p = wb.prepare(SMALL_CORPUS, str(saved["gpt2"]), vocab_size=8192, seq_len=SEQ)     # its own tokenizer: ignored
    assert len(p.tokenizer) == 400


def test_missing_special_tokens_name_both_sides(saved, toks):
    with pytest.raises(ModelError, match=r"tokenizer '.*gpt2' has no mask token, which masked-LM training of model "
                                         r"'.*bert' \(an encoder\) needs"):
        wb.prepare(SMALL_CORPUS, str(saved["bert"]), tokenizer=str(saved["gpt2"]), seq_len=SEQ)
    with pytest.raises(ModelError, match=r"has no end-of-text \(eos\) token, which causal-LM training of model "
                                         r"'.*gpt2'"):
        wb.prepare(SMALL_CORPUS, str(saved["gpt2"]), tokenizer=toks["wordpiece"], seq_len=SEQ)


def test_seq_len_above_the_position_table(saved):
    assert max_positions(wb.model(str(saved["gpt2"]))) == 64
    with pytest.raises(ModelError, match=r"seq_len 128 is above the position table of model '.*gpt2': it holds 64"):
        wb.prepare(SMALL_CORPUS, str(saved["gpt2"]), seq_len=128)
    with pytest.raises(ModelError, match=r"seq_len 100 .* it holds 64"):
        wb.prepare(SMALL_CORPUS, _build("bert", 400), tokenizer=str(saved["bert"]), seq_len=100)
    rob = wb.model("prelnbert-tiny", vocab_size=100, max_positions=64)      # 66 rows, positions from pad + 1
    assert max_positions(rob) == 65


# ------------------------------------------------------------------------------------ the train command
@pytest.mark.parametrize("kind", ["neox", "llama", "bert"])
def test_saved_model_trains_from_the_cli_with_ingenious_and_rho_loss(kind, saved, tmp_path, capsys):
    """GPT-NeoX, Llama and BERT directories through `python -m workbench train`, with a sampler and a
    batch filter, and the result loads back with from_pretrained (GPT-2: tests/test_train_command.py)."""
    import json

    from workbench.cli import main
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--no-progress", "-p", f"model={saved[kind]}", "-p", f"corpus={SMALL_CORPUS}",
            "-p", "max_steps=4", "-p", "batch_size=4", "-p", f"seq_len={SEQ}", "-p", "eval_every=0",
            "-p", "eval_batches=1", "-p", "sampler=ingenious", "-p", "warm_start_steps=2", "-p", "resample_every=2",
            "-p", "batch_filter=rho_loss", "-p", "il_steps=2"]
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 4
    auto = T.AutoModelForMaskedLM if kind == "bert" else T.AutoModelForCausalLM
    back = auto.from_pretrained(out / "hf")
    assert type(back).__name__ == type(_build(kind, 8)).__name__
    assert T.AutoTokenizer.from_pretrained(out / "hf").get_vocab() == load_tokenizer(saved[kind]).get_vocab()


def test_the_documented_route_checks_seq_len_and_counts_flops(saved, small_corpus, toks):
    """Corpus -> CLMTask with your tokenizer -> wb.train: seq_len above the position table is refused
    before the first step, and FLOPs are logged without passing flops_per_token."""
    from workbench.models import flops_per_token
    tok = load_tokenizer(saved["gpt2"])
    model = wb.model(saved["gpt2"])                                   # 64 positions
    with pytest.raises(ModelError, match="seq_len 128 is above the position table"):
        wb.train(model, wb.CLMTask(small_corpus, tok, seq_len=128), budget=wb.Budget(max_steps=1), progress=False)
    task = wb.CLMTask(small_corpus, tok, seq_len=SEQ)
    res = wb.train(model, task, budget=wb.Budget(max_steps=2), batch_size=4, progress=False)
    assert res.history[-1]["flops"] == pytest.approx(flops_per_token(model, SEQ) * res.tokens)
