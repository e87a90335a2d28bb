"""A plugin whose dependency is missing: importing it fails."""

import aelab_no_such_module  # noqa: F401


def build(latent_dim: int) -> None:
    raise AssertionError("never reached")
