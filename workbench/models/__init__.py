"""Models: presets (HF BERT / pre-LN RoBERTa / GPT-2 / GPT-NeoX), any HF causal or masked LM from a
directory, a hub id or an object, the sparse MLM loss, FLOP counts."""
from .flops import flops_per_token, forward_flops_per_token, param_count
from .heads import mlm_loss, mlm_parts, sparse_parts
from .presets import (ENCODER_TYPES, SIZES, check_seq_len, check_spec, config, embedding_rows, hub_offline,
                      is_encoder, load_config, load_pretrained, max_positions, model, model_class, parse_preset,
                      presets)

__all__ = ["ENCODER_TYPES", "SIZES", "check_seq_len", "check_spec", "config", "embedding_rows", "flops_per_token",
           "forward_flops_per_token", "hub_offline", "is_encoder", "load_config", "load_pretrained", "mlm_loss",
           "mlm_parts", "max_positions", "model", "model_class", "param_count", "parse_preset", "presets",
           "sparse_parts"]
