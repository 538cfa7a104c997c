"""One folder per family: its config class (naming its encoder and head modules, and saying what
its layers are as blocks/ data) and its modules, composed of the shared blocks (models/blocks/).
hf/registry.py maps HF model_type onto these."""
