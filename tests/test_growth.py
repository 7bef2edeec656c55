"""Tests for workbench.growth (LiGO and the stacking / interpolation / Net2Net baselines).

Tiny configs (vocab 100, seq 16, 2->4 layers, hidden 32->64, head_dim 8) so the
whole file runs in well under a minute on CPU.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers as T

from workbench.growth.arch import to_canon
from workbench.growth.baselines import grow, interpolate_depth, net2net_width, stack_depth
from workbench.growth.ligo import GrowthError, LiGO, train_ligo

VOCAB, SEQ = 100, 16
ARCHS = ("bert", "roberta_preln", "gpt2", "neox")
NO_DROP = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors gain nothing from intra-op threads; on a busy machine they cost a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def config(arch, layers=2, hidden=32, ffn=64, vocab=VOCAB, head_dim=8):
    heads = hidden // head_dim
    if arch == "bert":
        return T.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=ffn, max_position_embeddings=32, **NO_DROP)
    if arch == "roberta_preln":
        return T.RobertaPreLayerNormConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                           num_attention_heads=heads, intermediate_size=ffn,
                                           max_position_embeddings=40, **NO_DROP)
    if arch == "gpt2":
        return T.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_inner=ffn, n_positions=32,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    if arch == "neox":
        return T.GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                               num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=32,
                               bos_token_id=0, eos_token_id=0)
    raise ValueError(arch)


MODEL_CLS = {"bert": T.BertForMaskedLM, "roberta_preln": T.RobertaPreLayerNormForMaskedLM,
             "gpt2": T.GPT2LMHeadModel, "neox": T.GPTNeoXForCausalLM}


def small_model(arch, seed=0, **kw):
    """A small model with perturbed weights (non-trivial LayerNorms, larger logits)."""
    torch.manual_seed(seed)
    model = MODEL_CLS[arch](config(arch, **kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
            else:
                p.mul_(3.0)
    return model


def batch(seed=0, labels=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, SEQ), generator=g)
    return {"input_ids": ids, "labels": ids.clone()} if labels else {"input_ids": ids}


def logits(model, b=None):
    with torch.no_grad():
        return model(**(b or batch(labels=False))).logits


def maxdiff(a, b):
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------------------ LiGO


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("grow_what", ["width", "depth", "both"])
def test_materialize_shapes(arch, grow_what):
    small = small_model(arch)
    large = config(arch, layers=2 if grow_what == "width" else 4,
                   hidden=32 if grow_what == "depth" else 64, ffn=64 if grow_what == "depth" else 128)
    for width_init in ("net2net", "rand"):
        ligo = LiGO(small, large, width_init=width_init)
        params = ligo.materialize()
        reference = dict(MODEL_CLS[arch](large).named_parameters())
        assert params.keys() == reference.keys()
        for name, p in reference.items():
            assert params[name].shape == p.shape, name


@pytest.mark.parametrize("arch", ARCHS)
def test_identity_at_equal_size(arch):
    small = small_model(arch)
    for width_init in ("rand", "net2net"):
        for depth_init, noise in (("interlace", None), ("stackbert_noisy", 0.0)):
            ligo = LiGO(small, small.config, depth_init=depth_init, width_init=width_init, depth_noise=noise).eval()
            assert maxdiff(logits(ligo), logits(small)) < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_ligo_net2net_init_preserves_function_at_equal_depth(arch):
    small = small_model(arch)
    ligo = LiGO(small, config(arch, hidden=64, ffn=96), depth_init="interlace", width_init="net2net", seed=3).eval()
    assert maxdiff(logits(ligo), logits(small)) < 1e-5
    # ... and coincides with the independent baseline implementation for the same seed
    base = net2net_width(small, config(arch, hidden=64, ffn=96), seed=3).state_dict()
    exported = ligo.export().state_dict()
    for name, t in base.items():
        if t.is_floating_point():
            assert torch.allclose(exported[name], t, atol=1e-6), name


def test_rand_width_keeps_small_weights_top_left():
    small = small_model("gpt2")
    ligo = LiGO(small, config("gpt2", hidden=64, ffn=128), depth_init="interlace", width_init="rand")
    big, ref = ligo.materialize_canon(), to_canon(small)
    for key in ("q.w", "o.w", "fi.w", "fo.w", "ln1.w", "q.b"):
        t, s = big.layers[1][key], ref.layers[1][key]
        assert torch.equal(t[tuple(slice(0, n) for n in s.shape)], s), key
    assert torch.equal(big.glob["emb.word"][:, :32], ref.glob["emb.word"])


def test_rand_width_init_is_not_function_preserving():
    small = small_model("bert")
    ligo = LiGO(small, config("bert", hidden=64), depth_init="interlace", width_init="rand").eval()
    assert maxdiff(logits(ligo), logits(small)) > 1e-3


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_training_only_touches_operator(arch):
    small = small_model(arch).train()
    ligo = LiGO(small, config(arch, layers=4, hidden=64, ffn=128), width_init="rand", seed=1)
    operator = dict(ligo.named_parameters())
    assert operator and all(n.startswith(("width.", "depth_w.", "depth_b.")) for n in operator)
    head = {"scale_cls"} if arch == "bert" else set()  # the authors' separate MLM-head expansion
    assert set(ligo.state_dict()) == set(operator) | {"scale_res", "scale_v", "scale_fi"} | head

    params = ligo.materialize()
    for name, t in params.items():
        if name.endswith("bias") and t.shape == (VOCAB,):
            continue  # the vocabulary-sized decoder bias does not grow: a frozen copy
        assert t.grad_fn is not None, f"{name} should be built by the operator"

    b = batch()
    loss = ligo.loss(b)
    loss.backward()
    assert all(p.grad is None for p in small.parameters())
    assert all(p.grad is None for p in ligo._template.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in operator.values())

    ligo.zero_grad()
    before = ligo.loss(b).item()
    losses = train_ligo(ligo, [b], steps=1, lr=1e-2, progress=False)
    after = ligo.loss(b).item()
    assert losses == [pytest.approx(before)]
    assert after < before
    assert all(p.grad is None for p in small.parameters())


def test_custom_loss_fn_and_train_ligo_cycles_batches():
    small = small_model("neox")
    ligo = LiGO(small, config("neox", layers=3, hidden=48, ffn=80))
    calls = []

    def loss_fn(out, b):
        calls.append(1)
        return torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), b["input_ids"].flatten())

    losses = train_ligo(ligo, [batch(0, labels=False), batch(1, labels=False)], steps=3, loss_fn=loss_fn,
                        progress=False)
    assert len(losses) == 3 and len(calls) == 3
    losses = train_ligo(ligo, iter([batch(0)]), steps=5, progress=False)  # iterator runs out: stop early
    assert len(losses) == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_export_round_trips(arch, tmp_path):
    small = small_model(arch)
    ligo = LiGO(small, config(arch, layers=3, hidden=64, ffn=96), width_init="rand")
    train_ligo(ligo, [batch()], steps=1, progress=False)
    model = ligo.export().eval()
    assert type(model) is MODEL_CLS[arch]
    assert maxdiff(logits(model), logits(ligo.eval())) < 1e-5
    model.save_pretrained(tmp_path)
    loaded = MODEL_CLS[arch].from_pretrained(tmp_path).eval()
    assert torch.equal(logits(loaded), logits(model))
    if model.config.tie_word_embeddings:
        assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


# ------------------------------------------------------------------------------------------ baselines


@pytest.mark.parametrize("arch", ARCHS)
def test_net2net_width_preserves_function(arch):
    small = small_model(arch)
    large = config(arch, hidden=64, ffn=96)  # hidden x2 (heads 4 -> 8), ffn by a non-integer factor
    grown = net2net_width(small, large, seed=1).eval()
    assert grown.config.hidden_size == 64
    ref = logits(small)
    assert ref.std() > 0.1  # a meaningful comparison, not near-zero logits
    assert maxdiff(logits(grown), ref) < 1e-5
    triple = net2net_width(small, config(arch, hidden=96, ffn=64), seed=2).eval()  # hidden x3, same ffn
    assert maxdiff(logits(triple), ref) < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_stack_and_interpolate_depth(arch):
    small = small_model(arch)
    large = config(arch, layers=4)
    src = to_canon(small).layers
    for fn, expect in ((stack_depth, [0, 1, 0, 1]), (interpolate_depth, [0, 0, 1, 1])):
        grown = fn(small, large)
        canon = to_canon(grown)
        assert len(canon.layers) == 4
        for l, j in enumerate(expect):
            for key, t in canon.layers[l].items():
                assert torch.equal(t, src[j][key]), (fn.__name__, l, key)
        for key, t in canon.glob.items():
            assert torch.equal(t, to_canon(small).glob[key])


@pytest.mark.parametrize("method", ["scratch", "stackbert", "interpolation", "net2net", "ligo"])
def test_grow_convenience(method):
    small = small_model("gpt2")
    large = config("gpt2", layers=4, hidden=64, ffn=128)
    kw = {"batches": [batch()], "steps": 1, "progress": False} if method == "ligo" else {}
    grown = grow(small, large, method=method, **kw)
    assert isinstance(grown, T.GPT2LMHeadModel)
    assert grown.config.n_layer == 4 and grown.config.n_embd == 64
    assert logits(grown.eval()).shape == (2, SEQ, VOCAB)


# ------------------------------------------------------------------------------------------ errors


def test_growth_errors():
    small = small_model("bert", layers=2, hidden=64, ffn=128)
    with pytest.raises(GrowthError, match="smaller"):
        LiGO(small, config("bert", layers=2, hidden=32, ffn=128))
    with pytest.raises(GrowthError, match="smaller"):
        stack_depth(small, config("bert", layers=1, hidden=64, ffn=128))
    with pytest.raises(GrowthError, match="vocab"):
        LiGO(small, config("bert", layers=4, hidden=64, ffn=128, vocab=VOCAB + 1))
    with pytest.raises(GrowthError, match="vocab"):
        net2net_width(small, config("bert", hidden=128, ffn=128, vocab=VOCAB + 1))
    with pytest.raises(GrowthError, match="head dim"):
        LiGO(small, config("bert", hidden=128, ffn=128, head_dim=16))
    with pytest.raises(GrowthError, match="integer factor"):
        net2net_width(small, config("bert", hidden=96, ffn=128))
    with pytest.raises(GrowthError, match="model_type"):
        LiGO(small, config("roberta_preln", hidden=64, ffn=128))
    with pytest.raises(GrowthError, match="unsupported"):
        LiGO(T.BertModel(small.config), config("bert", layers=4, hidden=64, ffn=128))
    with pytest.raises(GrowthError, match="depth-only"):
        stack_depth(small, config("bert", layers=4, hidden=128, ffn=128))
    with pytest.raises(GrowthError, match="unknown method"):
        grow(small, small.config, method="magic")
    assert issubclass(GrowthError, ValueError)
