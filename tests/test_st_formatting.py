"""sentence-transformers 6.3's input formatting (hf/st_transformer.py, chat_format.py): a
Transformer that takes the "message" modality (saved in sentence_bert_config.json's
modality_config, or inferred for a plain folder whose tokenizer has a chat template) renders each
text as a user message (a pair as query/document messages, a prompt as a system message) through
the chat template; an ST folder saved without modality_config, or a tokenizer without a template,
takes plain text. Compared with ST 6.3 itself (the pinned reference): token ids first (cheap, many
cases), then embeddings and scores.

Before: a tiny Qwen3 lasttoken embedder with a user-role template embedded 0.54 away from ST 6.3.
END_TOL 1e-4 is the project's fp32 end-to-end bound (DESIGN.md, principle 6).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tiny_llm import CHAT_TEMPLATE, QWEN3_EMBEDDING_PROMPTS, llm_tokenizer, make_tiny_llm, tiny_llm_config

END_TOL = 1e-4
MAX_SEQ = 48
# A structured template: content is a list of typed parts ("'type'" in the text makes ST pick "structured").
STRUCTURED_TEMPLATE = (
    "{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{{ '<|im_end|>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")
PROMPT = QWEN3_EMBEDDING_PROMPTS["query"]


def test_pinned_sentence_transformers_version():
    """The semantics mirrored are 6.3's (docs/model_families.md); a newer ST must be re-read first."""
    import sentence_transformers
    assert sentence_transformers.__version__.startswith("6.3."), sentence_transformers.__version__


def _texts(data_dir) -> list[str]:
    root = data_dir / "msmarco-dl19-subset"
    queries = [json.loads(line)["text"] for line in open(root / "queries.jsonl")][:3]
    passages = sorted((json.loads(line)["text"] for line in open(root / "corpus.jsonl")), key=len)[:200]
    return queries + passages[:2] + passages[-2:] + ["", "yes"]   # the last passages: cut at MAX_SEQ


def _qwen3_model(path, template):
    """A tiny Qwen3Model + llm_tokenizer(template) (padding left, as Qwen3-Embedding) in path."""
    import tiny_hf
    import torch
    import transformers as tf
    tok = llm_tokenizer(path, template=None, padding_side="left")
    tok.chat_template = template
    tok.save_pretrained(str(path))
    torch.manual_seed(3)
    model = tf.Qwen3Model._from_config(tiny_llm_config("qwen3-causal", pad_token_id=tok.pad_token_id),
                                      attn_implementation="eager")
    tiny_hf.randomize_(model, 3)
    model.eval().save_pretrained(str(path), safe_serialization=True)


@pytest.fixture(scope="module")
def embedders(tmp_path_factory):
    """plain_chat: a plain HF folder, user-role ChatML template (ST infers "message", flat);
    st_chat: its ST folder, Qwen3-Embedding-like (lasttoken, Normalize, prompts), saved by ST with
    modality_config {text, message}; st_text: the same without modality_config (text only);
    st_struct: a structured template; st_none: no template."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    root = tmp_path_factory.mktemp("st_formatting")
    for name, template in (("plain_chat", CHAT_TEMPLATE), ("struct", STRUCTURED_TEMPLATE), ("none", None)):
        _qwen3_model(root / name, template)
    for name, base in (("st_chat", "plain_chat"), ("st_struct", "struct"), ("st_none", "none")):
        t = Transformer(str(root / base), max_seq_length=MAX_SEQ, model_kwargs={"attn_implementation": "eager"})
        SentenceTransformer(modules=[t, Pooling(32, pooling_mode="lasttoken"), Normalize()],
                            prompts=QWEN3_EMBEDDING_PROMPTS).save(str(root / name))
    shutil.copytree(root / "st_chat", root / "st_text")
    cfg = json.loads((root / "st_text" / "sentence_bert_config.json").read_text())
    assert set(cfg["modality_config"]) == {"text", "message"} and cfg["modality_config"]["message"]["format"] == "flat"
    del cfg["modality_config"]
    (root / "st_text" / "sentence_bert_config.json").write_text(json.dumps(cfg))
    return root


def _st(folder):
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(folder), device="cpu", model_kwargs={"attn_implementation": "eager"})


def _st_ids(model, inputs, prompt=None) -> list[list[int]]:
    f = model.preprocess(inputs, prompt=prompt)
    return [ids[mask.bool()].tolist() for ids, mask in zip(f["input_ids"], f["attention_mask"])]


def _ids(encodings) -> list[list[int]]:
    return [e.input_ids.tolist() for e in encodings]


@pytest.mark.parametrize("name,message", [("plain_chat", True), ("st_chat", True), ("st_struct", True),
                                          ("st_text", False), ("st_none", False)])
def test_text_ids_equal_sentence_transformers(embedders, data_dir, name, message):
    """Every text (cut ones end in the template's suffix), with and without a prompt."""
    from xenc_jax.bi_encoder import BiEncoder
    texts = _texts(data_dir)
    st = _st(embedders / name)
    ours = BiEncoder(embedders / name, max_seq_length=st.max_seq_length)
    assert ours._input_format.message is message
    for prompt in (None, PROMPT):
        want = _st_ids(st, texts, prompt)
        assert _ids(ours.encode_texts(texts, prompt)) == want, (name, prompt)
    if message:
        cut = [ids for ids in want if len(ids) == st.max_seq_length]
        assert cut and all(ids[-2:] == want[-1][-2:] for ids in cut)   # the suffix is back on cut rows


def test_chat_embedder_equals_sentence_transformers(embedders, data_dir):
    """The issue's case (0.54 before): lasttoken over messages, packed and unpacked, with the prompt."""
    from xenc_jax.batching import BucketConfig
    from xenc_jax.bi_encoder import BiEncoder
    texts = _texts(data_dir)
    st = _st(embedders / "st_chat")
    for buckets in (BucketConfig(pack=False, lengths=(MAX_SEQ,)), BucketConfig(pack=True, lengths=(MAX_SEQ,),
                                                                              max_segments=4)):
        ours = BiEncoder(embedders / "st_chat", buckets=buckets)
        for prompt_name in (None, "query"):
            want = st.encode(texts, prompt_name=prompt_name)
            got = ours.encode(texts, prompt_name=prompt_name)
            assert np.abs(got - want).max() <= END_TOL, (buckets, prompt_name)


def test_save_keeps_the_inferred_message_modality(embedders, data_dir, tmp_path):
    """A plain folder (modality inferred from its template) saved by us: sentence_bert_config.json
    says message, so ST loads the copy with the same ids and embeddings as the plain folder."""
    from xenc_jax.bi_encoder import BiEncoder
    texts = _texts(data_dir)
    BiEncoder(embedders / "plain_chat", max_seq_length=MAX_SEQ).save(tmp_path / "saved")
    cfg = json.loads((tmp_path / "saved" / "sentence_bert_config.json").read_text())
    assert cfg["modality_config"]["message"]["format"] == "flat"
    plain, saved = _st(embedders / "plain_chat"), _st(tmp_path / "saved")
    plain.max_seq_length = MAX_SEQ
    assert _st_ids(saved, texts, PROMPT) == _st_ids(plain, texts, PROMPT)
    assert np.abs(saved.encode(texts) - plain.encode(texts)).max() <= 1e-6   # same weights, same ids


@pytest.fixture(scope="module")
def rerankers(tmp_path_factory, minilm_dir):
    """Cross-encoders: a plain Qwen3ForCausalLM with the structured template (LogitScore yes/no);
    an ST-saved copy without modality_config (text pairs); a BERT classifier whose tokenizer has
    a query/document template (ST 6.3 renders any Transformer's pairs through it)."""
    import tiny_hf
    import transformers as tf
    from sentence_transformers import CrossEncoder as STCrossEncoder
    root = tmp_path_factory.mktemp("st_formatting_ce")
    make_tiny_llm("qwen3-causal", root / "llm_struct", template=None)
    tok = tf.AutoTokenizer.from_pretrained(str(root / "llm_struct"))
    tok.chat_template = STRUCTURED_TEMPLATE
    tok.model_max_length = 96
    tok.save_pretrained(str(root / "llm_struct"))
    st = STCrossEncoder(str(root / "llm_struct"), model_kwargs={"attn_implementation": "eager"})
    st.save(str(root / "llm_saved"))
    cfg = json.loads((root / "llm_saved" / "sentence_bert_config.json").read_text())
    assert "message" in cfg["modality_config"]
    del cfg["modality_config"]
    (root / "llm_saved" / "sentence_bert_config.json").write_text(json.dumps(cfg))
    tiny_hf.make_tiny_minilm("bert", root / "bert", minilm_dir, seed=4)
    tok = tf.AutoTokenizer.from_pretrained(str(root / "bert"))
    tok.chat_template = ("{%- for m in messages -%}{{ m['role'] + ': ' + m['content'] + ' [SEP] ' }}{%- endfor -%}")
    tok.model_max_length = 64
    tok.save_pretrained(str(root / "bert"))
    return root


@pytest.mark.parametrize("name,message", [("llm_struct", True), ("llm_saved", False), ("bert", True)])
def test_pair_ids_equal_sentence_transformers(rerankers, data_dir, name, message):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from xenc_jax.cross_encoder import CrossEncoder
    texts = _texts(data_dir)
    pairs = [(q, d) for q in texts[:2] for d in texts[3:]]
    st = STCrossEncoder(str(rerankers / name), model_kwargs={"attn_implementation": "eager"})
    ours = CrossEncoder(rerankers / name)
    assert ours._input_format.message is message and ours.max_length == st.max_seq_length
    for prompt in (None, "Given a web search query, retrieve relevant passages"):
        assert _ids(ours.encode_pairs(pairs, prompt)) == _st_ids(st, pairs, prompt), (name, prompt)


def test_bert_cross_encoder_with_a_template_scores_like_sentence_transformers(rerankers, data_dir):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from xenc_jax.cross_encoder import CrossEncoder
    texts = _texts(data_dir)
    pairs = [(q, d) for q in texts[:2] for d in texts[3:]]
    want = STCrossEncoder(str(rerankers / "bert")).predict(pairs)
    assert np.abs(CrossEncoder(rerankers / "bert").predict(pairs) - want).max() <= END_TOL
