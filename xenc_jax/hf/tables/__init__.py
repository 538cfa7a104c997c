"""One HF record per family: config.json translation, weight table, harmless extras, HF class names.
hf/registry.py maps model_type onto these records."""
