"""crammed-BERT (Cramming's architecture, workbench/models/crammed.py): save/load round trip through the
Auto classes offline, no dense-layer biases, scaled sinusoidal positions, the GELU-GLU FFN, the final
norm, the sparse MLM head, FLOPs against the counter, a few training steps, budget_bert's arch=crammed."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import workbench as wb
from workbench.config import parse
from workbench.errors import ConfigError
from workbench.models.heads import mlm_loss, sparse_parts
from workbench.training import Budget, Schedule

SMALL_CORPUS = "pydocs:datasets"     # as tests/conftest.py


@pytest.fixture(scope="module")
def crammed_prep():
    return wb.prepare(SMALL_CORPUS, "crammed-tiny", seq_len=64, vocab_size=1024, seed=0, dropout=0.0)


def _tiny(**kw):
    return wb.model("crammed-tiny", vocab_size=300, **kw)


def test_round_trip_through_auto_classes(tmp_path):
    import transformers
    from workbench.models.crammed import CrammedBertForMaskedLM
    m = _tiny(dropout=0.0).eval()
    x = torch.randint(5, 300, (2, 16))
    am = torch.ones_like(x)
    am[1, 11:] = 0
    ref = m(input_ids=x, attention_mask=am).logits
    m.save_pretrained(tmp_path / "m")
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "m").eval()
    assert type(back) is CrammedBertForMaskedLM and back.config.model_type == "crammed_bert"
    assert torch.equal(back(input_ids=x, attention_mask=am).logits, ref)
    assert back.decoder.weight is back.crammed.embeddings.word_embeddings.weight      # tied decoder
    via_wb = wb.model(str(tmp_path / "m"), dropout=0.0).eval()                        # load_pretrained on the dir
    assert torch.equal(via_wb(input_ids=x, attention_mask=am).logits, ref)
    assert wb.models.is_encoder(str(tmp_path / "m"))
    # the sinusoid table is a buffer, not saved, rebuilt on load
    assert torch.equal(back.crammed.embeddings.positions.table, m.crammed.embeddings.positions.table)


def test_architecture_of_the_authors():
    m = _tiny()
    cfg = m.config
    H, I = cfg.hidden_size, cfg.intermediate_size
    assert (cfg.num_hidden_layers, H, cfg.num_attention_heads, I) == wb.models.SIZES["tiny"]
    # no bias in any dense layer (qkv, attention output, FFN, decoder); only the LayerNorms keep one (theirs do)
    linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert linears and all(mod.bias is None for mod in linears)
    norms = {id(mod.bias) for mod in m.modules() if isinstance(mod, torch.nn.LayerNorm)}
    assert all(id(p) in norms for n, p in m.named_parameters() if n.endswith("bias"))
    # positions: a fixed sinusoid (a buffer) times one learned scalar, 1/sqrt(H) at init; no position table
    pos = m.crammed.embeddings.positions
    assert "crammed.embeddings.positions.table" not in dict(m.named_parameters())
    assert pos.scale.numel() == 1 and pos.scale.item() == pytest.approx(H ** -0.5)
    assert not any(isinstance(mod, torch.nn.Embedding) and mod.num_embeddings == cfg.max_position_embeddings
                   for mod in m.modules())
    assert torch.allclose(pos.table[3, 0::2], torch.sin(3 * torch.exp(torch.arange(0, H, 2) * (-9.2103404 / H))),
                          atol=1e-5)
    assert torch.allclose(pos(5), pos.scale * pos.table[:5])
    # GELU-GLU FFN: hidden -> I, halves gated, I/2 -> hidden
    ffn = m.crammed.layers[0].ffn
    assert ffn.dense_in.weight.shape == (I, H) and ffn.dense_out.weight.shape == (H, I // 2)
    x = torch.randn(3, H)
    a, g = ffn.dense_in(x).chunk(2, dim=-1)
    assert torch.allclose(ffn(x), ffn.dense_out(torch.nn.functional.gelu(g) * a), atol=1e-6)
    # embedding LayerNorm, pre-LN layers, a final LayerNorm on the last hidden state; no head transform
    assert isinstance(m.crammed.embeddings.norm, torch.nn.LayerNorm)
    assert isinstance(m.crammed.final_norm, torch.nn.LayerNorm)
    m.eval()
    ids = torch.randint(5, 300, (2, 12))
    out = m.base_model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    assert len(out.hidden_states) == cfg.num_hidden_layers + 1
    assert torch.allclose(out.last_hidden_state, m.crammed.final_norm(out.hidden_states[-1]))
    assert torch.allclose(m(input_ids=ids).logits, m.decoder(out.last_hidden_state), atol=1e-6)
    assert wb.models.param_count(m) == sum(p.numel() for p in m.parameters())


def test_presets_dropout_and_seed():
    assert wb.models.is_encoder("crammed-tiny") and "crammed-cramming" in wb.models.presets()
    assert wb.models.config("crammed-cramming", 1000).num_hidden_layers == 16          # the paper's 16 x 768
    assert wb.models.config("crammed-base", 1000).num_hidden_layers == 12              # SIZES' base
    a, b = _tiny(seed=3), _tiny(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.decoder.weight, _tiny(seed=4).decoder.weight)
    m = _tiny(dropout=0.0)
    assert m.config.hidden_dropout_prob == 0.0 == m.crammed.layers[0].attn.p
    assert _tiny().crammed.layers[0].dropout.p == 0.1                                  # the presets' default


def test_sparse_loss_equals_dense_and_flops(crammed_prep):
    m = crammed_prep.model.eval()
    body, head = sparse_parts(m)
    assert body is m.crammed and head is m.decoder
    b = crammed_prep.train.collate(list(range(8)), step=0)
    with torch.no_grad():
        dense = mlm_loss(m, b, sparse=False)
        assert float(mlm_loss(m, b, sparse=True)) == pytest.approx(float(dense), rel=1e-5)
        out = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
        assert float(out.loss) == pytest.approx(float(dense), rel=1e-5)
        assert crammed_prep.train.embed(m, b, layer=1).shape == (8, m.config.hidden_size)   # INGENIOUS, via base_model
    T = 32
    x = torch.randint(5, 500, (2, T))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:   # math SDPA: visible matmuls
        m(input_ids=x, attention_mask=torch.ones_like(x))
    assert fc.get_total_flops() == pytest.approx(wb.models.forward_flops_per_token(m.config, T) * 2 * T, rel=1e-9)
    assert wb.flops_per_token(m, T, head_fraction=0.15) < wb.flops_per_token(m, T)       # the sparse head counts


def test_train_a_few_steps_and_export_a_checkpoint(crammed_prep, one_thread, tmp_path):
    from transformers import AutoModelForMaskedLM

    from workbench.models.crammed import CrammedBertForMaskedLM
    from workbench.training.export import export_run
    m = wb.model("crammed-tiny", vocab_size=len(crammed_prep.tokenizer), dropout=0.0, seed=0)
    res = wb.train(m, crammed_prep.train, budget=Budget(max_steps=12), schedule=Schedule("linear", warmup=0.2),
                   batch_size=8, lr=2e-3, progress=False, seed=1, run=wb.Run(tmp_path / "run", {"t": 1}),
                   checkpoint_every=6)
    losses = [r["loss"] for r in res.history if "loss" in r]
    assert isinstance(res.model, CrammedBertForMaskedLM) and len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    # `python -m workbench export` of a crammed run's checkpoint: a directory the Auto classes load
    out = export_run(tmp_path / "run", tmp_path / "step6", "step-6")
    back = AutoModelForMaskedLM.from_pretrained(out)
    assert isinstance(back, CrammedBertForMaskedLM)
    assert not all(torch.equal(a, b) for a, b in zip(back.parameters(), res.model.parameters()))   # step 6, not 12


def test_budget_bert_cramming_preset_builds_crammed(crammed_prep):
    from workbench.models.crammed import CrammedBertForMaskedLM
    from workbench.recipes import budget_bert as R
    base = {"scale": "smoke", "corpus": SMALL_CORPUS, "seq_len": 64, "vocab_size": 1024}
    P = parse(R.Params, {**base, "preset": "cramming"})
    assert P.arch == "crammed" and P.model == "crammed-tiny"
    assert parse(R.Params, {k: getattr(P, k) for k in R.Params.__dataclass_fields__}) == P    # idempotent
    assert parse(R.Params, {**base, "model": "prelnbert-mini", "arch": "crammed"}).model == "crammed-mini"
    assert parse(R.Params, base).model == "prelnbert-tiny" and parse(R.Params, base).arch == ""
    with pytest.raises(ConfigError, match="arch"):
        parse(R.Params, {**base, "arch": "bamboo"})
    prep = wb.prepare(P.corpus, P.model, P.seq_len, P.vocab_size, P.seed, dropout=P.dropout)   # R.setup's model
    assert isinstance(prep.model, CrammedBertForMaskedLM) and prep.model.config.hidden_dropout_prob == 0.0


def test_ligo_refuses_the_crammed_family_up_front():
    from workbench.recipes import ligo as L
    with pytest.raises(ConfigError, match="not a family LiGO grows"):
        parse(L.Params, {"model": "crammed"})
