"""Layer-wise lr decay places every param of real tiny models by the model's structure
(train/optim.Depths from the family config), not by guessed names: embeddings lowest, layers
increasing with depth, the encoder's final norm at 1, the head at head_lr_scale.

Before Depths, depth came from the names `embeddings` and `layer_i`, so a Qwen model's
encoder/word/embedding and encoder/final_norm (and ModernBERT's final_norm, MPNet's
relative_bias, DeBERTa's rel_embeddings) got the head's scale."""
from __future__ import annotations

import jax
import pytest

from tiny_hf import make_tiny
from tiny_llm import make_tiny_llm
from xenc_jax.hf.pretrained import load_pretrained
from xenc_jax.train import optim as O

DECAY, HEAD = 0.5, 1.0   # powers of two: the expected multipliers are exact in fp32

FAMILIES = {
    "bert": {},
    "modernbert": {"max_position_embeddings": 128, "pad_token_id": 0, "local_attention": 8, "num_hidden_layers": 3},
    "mpnet": {},
    "deberta-v2": {},   # tiny_hf's DeBERTa-v3 switches: relative table with its norm
    # tests/tiny_llm.py's Qwen3ForCausalLM reranker (yes/no LM columns), untied so it has a head
    # of its own (tied, the LM columns are the token table: encoder/word, embedding depth)
    "qwen3": None,
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def tiny_model(request, tmp_path_factory):
    family, path = request.param, tmp_path_factory.mktemp(request.param)
    if family == "qwen3":
        make_tiny_llm("qwen3-causal", path, seed=1, tie_word_embeddings=False)
    else:
        make_tiny(family, path, num_labels=1, seed=1, **FAMILIES[family])
    return family, load_pretrained(path, head=True, with_tokenizer=False)


def _flat(tree) -> dict[tuple[str, ...], float]:
    return {tuple(str(getattr(k, "key", k)) for k in p): float(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_every_param_gets_its_depth(tiny_model):
    family, pt = tiny_model
    cfg = pt.config
    n = cfg.num_layers
    scales = _flat(O.lr_scales(pt.params, O.Depths.of(cfg), DECAY, HEAD))
    layers = {int(k[1][6:]) for k in scales if k[0] == "encoder" and k[1].startswith("layer_")}
    assert layers == set(range(n)), (family, layers, n)   # the config's layer count is the tree's
    embedding = DECAY ** (n + 1)
    for path, s in scales.items():
        if path[0] != "encoder":
            assert s == HEAD, (family, path, s)                         # head / pooler / LM columns
        elif path[1].startswith("layer_"):
            assert s == DECAY ** (n - int(path[1][6:])), (family, path, s)
        elif path[1] in cfg.input_params:
            assert s == embedding, (family, path, s)
        else:
            assert path[1] in cfg.output_params and s == 1.0, (family, path, s)
    # the token table is the lowest, strictly below layer 0; the top layer is below the head
    token_tables = [s for p, s in scales.items() if p[0] == "encoder" and p[-1] == "embedding" and "layer_" not in p[1]]
    assert token_tables and max(token_tables) == embedding == min(scales.values()), family
    layer_scale = [scales[next(p for p in scales if p[:2] == ("encoder", f"layer_{i}"))] for i in range(n)]
    assert embedding < layer_scale[0] and all(a < b for a, b in zip(layer_scale, layer_scale[1:])), layer_scale
    assert layer_scale[-1] < HEAD
    assert any(p[0] != "encoder" for p in scales), family          # there is a head to check
    if family == "qwen3":    # the case the issue asked about: Qwen names its table encoder/word
        assert scales[("encoder", "word", "embedding")] == embedding
        assert scales[("encoder", "final_norm", "scale")] == 1.0


def test_an_unplaced_param_group_is_an_error(tiny_model):
    family, pt = tiny_model
    params = {**pt.params, "encoder": {**pt.params["encoder"], "mystery": {"kernel": 0.0}}}
    with pytest.raises(ValueError, match="'mystery' is neither layer_0"):
        O.lr_scales(params, O.Depths.of(pt.config), DECAY, HEAD)
