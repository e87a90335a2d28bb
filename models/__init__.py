"""Pure PyTorch: the study's autoencoders, data, losses, measures and training.

Import submodules directly; ``models.catalog`` is the torch-free part.
"""
