"""fastprotect: real-time protection of images against mimicry by personalised diffusion models."""

__version__ = "0.1.0"
