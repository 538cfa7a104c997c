"""One folder per family (docs/model_families.md): `model.py`, its config class (naming its
encoder and head modules, and saying what its layers are as blocks/ data) and its modules,
composed of the shared blocks (models/blocks/); `hf.py`, its HF half (config reader, weight
table, rejected switches, tokenizer class, head kinds: one hf/family.py Family record).
hf/registry.py maps HF model_type onto these records, one line each."""
