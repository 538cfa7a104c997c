"""The only place that knows Hugging Face names and formats (import submodules directly)."""
