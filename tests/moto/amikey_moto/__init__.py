"""amikey's moto 5.2.5 emulator harness: fidelity patches (see patches.py) applied before the server starts."""

from .patches import APPLIED, MOTO_VERSION, PatchError, apply_all

__all__ = ["APPLIED", "MOTO_VERSION", "PatchError", "apply_all"]
