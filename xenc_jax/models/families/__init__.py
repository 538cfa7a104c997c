"""One module per encoder family: its config class (naming its encoder and head modules) and
its encoder, composed of the shared blocks. hf/registry.py maps HF model_type onto these."""
