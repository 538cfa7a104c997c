"""Tiny, seeded, fully random decoder-only Hugging Face models (any registered decoder family's
tiny preset, models/families/<name>/presets.py) with a small in-process byte-level BPE tokenizer:
the PyTorch reference side of the LLM parity tests.

As in tiny_hf.py every parameter (RMSNorm scales, q/k norms and Qwen2's q/k/v biases included)
is drawn at random, so a wrong transform or a missed bias cannot hide behind HF's initialisation.

A model "kind" is "<model_type>-<head>": head "causal" (...ForCausalLM, the record's "lm" head kind),
"seqcls" (...ForSequenceClassification, its "score" head kind) or "model" (the bare ...Model).

Builders:
  llm_tokenizer(path, template="reranker"|"chat"|None)   -> PreTrainedTokenizerFast (saved)
  make_tiny_llm(kind, path, seed=0, num_labels=1, ...)    -> torch model (eval), saved + tokenizer
  make_st_reranker(path, tokens="yes/no"|"1/0"|"yes", ...) -> sentence_transformers.CrossEncoder (saved)
  make_st_lasttoken_embedder(path, ...)                    -> sentence_transformers.SentenceTransformer (saved)

Run this file as a script to build each variant in a temp dir and print ST's scores.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
import transformers as tf

from tiny_hf import randomize_, tiny_config
from xenc_jax.hf import registry

# kind suffix -> (the record's head kind it needs, None: any decoder; HF class suffix)
HEADS = {"causal": ("lm", "ForCausalLM"), "seqcls": ("score", "ForSequenceClassification"), "model": (None, "Model")}
# the scoring kinds of every registered decoder family with a tiny preset
KINDS = tuple(f"{model_type}-{head}" for model_type, rec in registry.FAMILIES.items()
              if rec.tiny and "lm" in rec.head_kinds for head in ("causal", "seqcls"))
DEFAULT_MODEL_TYPE = "qwen3"   # the ST builders' default: Qwen3-Reranker's and Qwen3-Embedding's layouts
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2 (Qwen's order)
VOCAB_SIZE = 512          # BPE target incl. the 256 byte tokens and the 3 specials
MODEL_VOCAB_SIZE = 544    # the model's embedding rows: a bit more than the tokenizer, like Qwen

# Qwen3-Reranker's template as ported to Sentence Transformers (chat_template.jinja on the Hub):
# a pair reaches it as [{"role": "query", ...}, {"role": "document", ...}], a prompt as a leading
# {"role": "system", ...} that fills <Instruct>; the assistant prefix (with the empty think block)
# is emitted unconditionally, since ST does not pass add_generation_prompt. Content is a plain
# string ("flat" message format: the template must not mention content[0] / "type").
# Conversations without a query role fall back to plain ChatML.
JUDGE = 'Judge whether the Document meets the Query and the Instruct. Answer only "yes" or "no".'
DEFAULT_INSTRUCT = "Given a query, find the passages that answer the query"
RERANKER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
RERANKER_TEMPLATE = (
    '{%- set query = messages | selectattr("role", "eq", "query") | map(attribute="content") | first -%}'
    '{%- if query is defined and query is not none -%}'
    '{%- set document = messages | selectattr("role", "eq", "document") | map(attribute="content") | first -%}'
    '{%- set instruct = messages | selectattr("role", "eq", "system") | map(attribute="content") | first'
    ' | default("' + DEFAULT_INSTRUCT + '") -%}'
    "{{ '<|im_start|>system\\n" + JUDGE + "<|im_end|>\\n<|im_start|>user\\n<Instruct>: ' + instruct"
    " + '\\n<Query>: ' + query + '\\n<Document>: ' + document + '"
    + RERANKER_SUFFIX.replace("\n", "\\n") + "' }}"
    '{%- else -%}'
    '{%- for message in messages -%}'
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    '{%- endfor -%}'
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    '{%- endif -%}'
)

# A plain user/assistant ChatML template (a chat backbone's): a (query, document) pair has no role
# it renders, so ST refuses the pair (the bad-input test).
CHAT_TEMPLATE = (
    '{%- for message in messages -%}'
    '{%- if message["role"] in ["system", "user", "assistant"] -%}'
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    '{%- endif -%}'
    '{%- endfor -%}'
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

TEMPLATES = {"reranker": RERANKER_TEMPLATE, "chat": CHAT_TEMPLATE, None: None}

_SUBJECTS = ["the cat", "a dog", "the river", "my friend", "the city", "a small bird", "the teacher",
             "the old man", "our team", "the train", "a young girl", "the market"]
_VERBS = ["sees", "likes", "finds", "needs", "wants", "makes", "keeps", "helps", "reads", "follows"]
_OBJECTS = ["the red ball", "a long book", "some fresh water", "the green hill", "a warm coat",
            "the blue sky", "an open door", "the quiet street", "a bright light", "the first answer"]
_TAILS = ["today.", "at night.", "in the morning.", "near the sea.", "after school.", "every day."]
_QA = ["is {s} here?", "does {s} know the way?", "can {s} see it?", "was {s} right?"]


def corpus() -> list[str]:
    """A fixed English corpus (a few hundred short lines, no randomness). Many lines start with
    "yes" / "no" so BPE learns them as unprefixed tokens, the spelling ST looks up."""
    lines = []
    for i, (s, v, o) in enumerate(itertools.product(_SUBJECTS, _VERBS, _OBJECTS)):
        if i % 3 == 0:
            lines.append(f"{s} {v} {o} {_TAILS[i % len(_TAILS)]}")
    for i, s in enumerate(_SUBJECTS):
        for j, q in enumerate(_QA):
            lines.append(q.format(s=s))
            lines.append(f"yes, {s} {_VERBS[(i + j) % len(_VERBS)]} {_OBJECTS[j]}.")
            lines.append(f"no, {s} does not.")
            lines.append("yes" if (i + j) % 2 else "no")
            lines.append(f"{i + j} of {j} is {i}, 1 or 0.")
    # the chat template's and the embedding prompt's fixed text, so BPE merges it into few tokens
    template_text = ["system", "user", "assistant", "<think>", "</think>", "<Instruct>: ", "<Query>: ",
                     "<Document>: ", JUDGE, DEFAULT_INSTRUCT, "Instruct: " + DEFAULT_INSTRUCT, "Query:"]
    return lines + template_text * 60


def llm_tokenizer(path: Path | None = None, *, template: str | None = "reranker",
                  padding_side: str = "right") -> tf.PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer with Qwen's special tokens: "<|endoftext|>" (pad, id 0),
    "<|im_start|>" (1), "<|im_end|>" (2, eos), no bos / unk. "yes", "no", "1", "0" are single tokens.
    template: "reranker" (query/document roles, Qwen3-Reranker style), "chat" (user/assistant only)
    or None (no chat template: ST then tokenizes pairs as plain text pairs).
    padding_side is what gets saved; ST's causal path forces "left" on load anyway."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus(), trainer=trainer)
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                     additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                     padding_side=padding_side, model_max_length=128)
    tok.chat_template = TEMPLATES[template]
    for word in ("yes", "no", "1", "0"):
        tid = tok.convert_tokens_to_ids(word)
        assert tid is not None and tok.encode(word) == [tid], (word, tid, tok.encode(word))
    assert len(tok) <= MODEL_VOCAB_SIZE
    if path is not None:
        tok.save_pretrained(str(path))
    return tok


def split_kind(kind: str) -> tuple[str, str]:
    """"qwen3-causal" -> ("qwen3", "ForCausalLM"): the model_type and the HF class suffix."""
    model_type, _, head = kind.rpartition("-")
    needs, suffix = HEADS.get(head, ("?", ""))
    rec = registry.FAMILIES.get(model_type)
    if rec is None or not rec.tiny or needs == "?" or (needs is not None and needs not in rec.head_kinds):
        raise ValueError(f"kind must be <decoder model_type>-<{'|'.join(HEADS)}> (e.g. one of {KINDS}), got {kind!r}")
    return model_type, suffix


def tiny_llm_config(kind: str, *, num_labels: int = 1, pad_token_id: int = 0, **overrides):
    """The HF config of a kind's tiny model: its family's tiny preset, the tokenizer's pad id, overrides."""
    model_type, _ = split_kind(kind)
    return tiny_config(model_type, num_labels, pad_token_id=pad_token_id, **overrides)


def _model_class(kind: str):
    """The HF class a real folder of this kind names (Family.class_name: Gemma 3 text's causal LM
    is Gemma3ForCausalLM, as transformers' Auto mapping and Gemma 3 1B's config.json say)."""
    model_type, suffix = split_kind(kind)
    return getattr(tf, registry.family(model_type).class_name(suffix))


def make_tiny_llm(kind: str, path: Path, *, seed: int = 0, num_labels: int = 1, template: str | None = "reranker",
                  **overrides) -> torch.nn.Module:
    """Build, randomize and save (safetensors) a tiny model of `kind` (e.g. Qwen3ForCausalLM for
    "qwen3-causal", Qwen3ForSequenceClassification for "qwen3-seqcls") plus llm_tokenizer() into
    path; returns the model in eval mode. overrides go to the config constructor (e.g. head_dim=16,
    tie_word_embeddings=False)."""
    path = Path(path)
    cls = _model_class(kind)
    tok = llm_tokenizer(path, template=template)
    torch.manual_seed(seed)
    cfg = tiny_llm_config(kind, num_labels=num_labels, pad_token_id=tok.pad_token_id, **overrides)
    model = cls._from_config(cfg, attn_implementation="eager")
    randomize_(model, seed)  # named_parameters() yields a tied embedding/head once
    model.eval()
    model.save_pretrained(str(path), safe_serialization=True)
    return model


def make_st_reranker(path: Path, *, tokens: str = "yes/no", kind: str = DEFAULT_MODEL_TYPE + "-causal", seed: int = 0,
                     max_length: int | None = 96, prompts: dict | None = None, default_prompt_name: str | None = None,
                     **overrides):
    """A Sentence Transformers CrossEncoder folder around a tiny causal LM, saved by ST itself.
    max_length 96: the template's fixed text alone is 68 tokens, so 48 would cut every pair.
    tokens="yes/no": ST's default path (no modules.json -> Transformer(text-generation) +
    LogitScore(yes, no)). tokens="1/0": explicit modules with LogitScore("1", "0") (mxbai-rerank-v2
    style); tokens="yes": LogitScore(true_token_id=yes, false_token_id=None) (true token alone).
    The base HF model is written to path / "hf"; the CrossEncoder to path / "st"; returns the CrossEncoder."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import LogitScore, Transformer

    path = Path(path)
    make_tiny_llm(kind, path / "hf", seed=seed, **overrides)
    kw = dict(max_length=max_length, prompts=prompts, default_prompt_name=default_prompt_name,
              model_kwargs={"attn_implementation": "eager"})
    if tokens == "yes/no":
        ce = CrossEncoder(str(path / "hf"), local_files_only=True, **kw)
    else:
        true_tok, false_tok = (tokens.split("/") + [None])[:2]
        processor_kwargs = {"model_max_length": max_length} if max_length is not None else None
        transformer = Transformer(str(path / "hf"), transformer_task="text-generation",
                                  model_kwargs={"attn_implementation": "eager"}, processor_kwargs=processor_kwargs)
        ids = [None if t is None else transformer.tokenizer.convert_tokens_to_ids(t) for t in (true_tok, false_tok)]
        ce = CrossEncoder(modules=[transformer, LogitScore(true_token_id=ids[0], false_token_id=ids[1])],
                          prompts=prompts, default_prompt_name=default_prompt_name)
    ce.save(str(path / "st"))
    return ce


QWEN3_EMBEDDING_PROMPTS = {
    "query": "Instruct: " + DEFAULT_INSTRUCT + "\nQuery:",
    "document": "",
}


def make_st_lasttoken_embedder(path: Path, *, seed: int = 0, max_seq_length: int = 48, normalize: bool = True,
                               prompts: dict | None = None, default_prompt_name: str | None = None,
                               padding_side: str = "left", model_type: str = DEFAULT_MODEL_TYPE, **overrides):
    """A SentenceTransformer folder like Qwen3-Embedding: Transformer(feature-extraction, a tiny
    <model_type>Model, Qwen3Model by default) -> Pooling("lasttoken") -> Normalize, prompts in
    config_sentence_transformers.json.
    The tokenizer has no chat template (else ST would render plain texts through it as "message"
    inputs) and is saved with padding_side (Qwen3-Embedding ships "left"). The base Qwen3Model is
    written to path / "hf", the SentenceTransformer to path / "st"; returns the SentenceTransformer."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    path = Path(path)
    tok = llm_tokenizer(path / "hf", template=None, padding_side=padding_side)
    torch.manual_seed(seed)
    cfg = tiny_llm_config(f"{model_type}-model", pad_token_id=tok.pad_token_id, **overrides)
    model = _model_class(f"{model_type}-model")._from_config(cfg, attn_implementation="eager")
    randomize_(model, seed)
    model.eval()
    model.save_pretrained(str(path / "hf"), safe_serialization=True)
    transformer = Transformer(str(path / "hf"), max_seq_length=max_seq_length,
                              model_kwargs={"attn_implementation": "eager"})
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")]
    if normalize:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, prompts=QWEN3_EMBEDDING_PROMPTS if prompts is None else prompts,
                             default_prompt_name=default_prompt_name, similarity_fn_name="cosine")
    st.save(str(path / "st"))
    return st


PAIRS = [
    ("is the cat here?", "yes, the cat sees the red ball."),
    ("does a dog know the way?", "no, a dog does not."),
    ("can my friend see it?", " ".join(["my friend reads a long book near the sea."] * 8)),  # > 96 tokens with the template
]


def _main() -> None:
    import tempfile
    import time

    from sentence_transformers import CrossEncoder, SentenceTransformer

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = llm_tokenizer(tmp / "tok")
        print("tokenizer:", len(tok), "tokens; yes/no/1/0 ->",
              [tok.convert_tokens_to_ids(w) for w in ("yes", "no", "1", "0")], "pad", tok.pad_token_id)
        for kind in KINDS:
            m = make_tiny_llm(kind, tmp / kind)
            print(kind, type(m).__name__, sum(p.numel() for p in m.parameters()), "params")

        for tokens in ("yes/no", "1/0", "yes"):
            make_st_reranker(tmp / tokens.replace("/", ""), tokens=tokens,
                             prompts={"web": "Given a web search query, retrieve relevant passages"})
            st_dir = tmp / tokens.replace("/", "") / "st"
            ce = CrossEncoder(str(st_dir), local_files_only=True)
            files = sorted(p.name for p in st_dir.iterdir())
            print(f"\n[{tokens}] saved: {files}")
            print("  modules.json:", [m["type"] for m in json.loads((st_dir / "modules.json").read_text())])
            print("  LogitScore:", ce[1].true_token_id, ce[1].false_token_id, "act:", ce.activation_fn,
                  "max_len:", ce.max_seq_length, "padding:", ce[0].tokenizer.padding_side)
            feats = ce.preprocess(PAIRS)
            print("  lengths:", feats["attention_mask"].sum(1).tolist(), "tail ids:", feats["input_ids"][:, -3:].tolist())
            print("  predict:", ce.predict(PAIRS))
            print("  predict(prompt_name='web'):", ce.predict(PAIRS, prompt_name="web"))
            print("  rank:", ce.rank(PAIRS[0][0], [d for _, d in PAIRS]))
            print("  rank(prompt=...):", ce.rank(PAIRS[0][0], [d for _, d in PAIRS], prompt="find the cat"))

        seqcls = tmp / "seqcls"
        make_tiny_llm(DEFAULT_MODEL_TYPE + "-seqcls", seqcls)
        ce = CrossEncoder(str(seqcls), local_files_only=True, max_length=96, model_kwargs={"attn_implementation": "eager"})
        print("\n[seqcls] modules:", [type(m).__name__ for m in ce], "padding:", ce[0].tokenizer.padding_side,
              "predict:", ce.predict(PAIRS))

        bad = tmp / "bad"
        make_tiny_llm(DEFAULT_MODEL_TYPE + "-causal", bad, template="chat")
        try:
            CrossEncoder(str(bad), local_files_only=True).predict(PAIRS[:1])
        except ValueError as e:
            print("\n[chat template] ValueError:", str(e).splitlines()[0][:160])

        make_st_lasttoken_embedder(tmp / "emb")
        st = SentenceTransformer(str(tmp / "emb" / "st"), local_files_only=True)
        print("\n[embedder] modules:", [type(m).__name__ for m in st], "padding:", st[0].tokenizer.padding_side)
        e_q = st.encode([q for q, _ in PAIRS], prompt_name="query")
        e_d = st.encode([d for _, d in PAIRS])
        print("  query emb[:, :4]:", e_q[:, :4].round(4).tolist(), "norms", (e_q ** 2).sum(1).round(4).tolist())
        print("  similarity:", st.similarity(e_q, e_d).numpy().round(4).tolist())
    print(f"\ntotal {time.time() - t0:.1f}s")


if __name__ == "__main__":
    _main()
