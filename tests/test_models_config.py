from dataclasses import dataclass

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import workbench as wb
from workbench.config import check, parse, parse_overrides
from workbench.errors import ConfigError, ModelError


@pytest.mark.parametrize("preset", ["bert-tiny", "prelnbert-tiny", "gpt2-tiny", "pythia-tiny", "bert-mini", "pythia-14m"])
def test_flops_per_token_matches_flop_counter(preset):
    m = wb.model(preset, vocab_size=500, dropout=0.0).eval()
    m.set_attn_implementation("eager")      # the counter sees attention as plain matmuls
    T = 32
    x = torch.randint(5, 500, (2, T))
    with FlopCounterMode(display=False) as fc:
        m(input_ids=x, attention_mask=torch.ones_like(x))
    ours = wb.models.forward_flops_per_token(m.config, T) * 2 * T
    assert fc.get_total_flops() == pytest.approx(ours, rel=1e-9)
    assert wb.flops_per_token(m, T) == 3 * wb.models.forward_flops_per_token(m.config, T)


def test_presets_build_and_are_seeded():
    for p in wb.models.presets():
        cfg = wb.models.config(p, vocab_size=1000)
        assert cfg.vocab_size == 1000
    a, b = wb.model("gpt2-tiny", 300, seed=3), wb.model("gpt2-tiny", 300, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert type(wb.model("prelnbert-tiny", 300)).__name__ == "RobertaPreLayerNormForMaskedLM"
    with pytest.raises(ModelError, match="unknown model preset"):
        wb.model("bert-huge", 300)


@dataclass(frozen=True)
class P:
    a: int = 1
    b: float = 0.5
    c: str = "x"
    d: bool = False
    e: list[str] | None = None

    def __post_init__(self):
        check(self.a > 0, "a must be positive")


def test_parse_converts_and_rejects():
    p = parse(P, parse_overrides(["a=3", "b=1e-3", "d=true", "e=u,v"]))
    assert (p.a, p.b, p.d, p.e) == (3, 1e-3, True, ["u", "v"])
    with pytest.raises(ConfigError, match="unknown parameter.*'zz'"):
        parse(P, {"zz": 1})
    with pytest.raises(ConfigError, match="'a'.*integer"):
        parse(P, {"a": "three"})
    with pytest.raises(ConfigError, match="'b'.*number"):
        parse(P, {"b": "fast"})
    with pytest.raises(ConfigError, match="'d'"):
        parse(P, {"d": "maybe"})
    with pytest.raises(ConfigError, match="positive"):
        parse(P, {"a": 0})
    with pytest.raises(ConfigError, match="NaN"):
        parse(P, {"b": "nan"})
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])
    with pytest.raises(ConfigError, match="'a'"):
        parse(P, {"a": 2.5})
