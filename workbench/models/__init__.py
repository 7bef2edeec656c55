"""Model presets (HF BERT / pre-LN RoBERTa / GPT-2 / GPT-NeoX), the sparse MLM loss, FLOP counts."""
from .flops import flops_per_token, forward_flops_per_token, param_count
from .heads import mlm_loss, mlm_parts
from .presets import SIZES, config, is_encoder, model, model_class, parse_preset, presets

__all__ = ["SIZES", "config", "flops_per_token", "forward_flops_per_token", "is_encoder", "mlm_loss",
           "mlm_parts", "model", "model_class", "param_count", "parse_preset", "presets"]
