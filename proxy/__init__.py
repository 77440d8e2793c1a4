"""refusal-guard's proxy: an OpenAI-compatible gateway that watches how the served model behaves."""

__version__ = "0.1.0"
