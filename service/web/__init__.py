"""The web UI wing: server-rendered pages, a little JavaScript, charts by uPlot (vendored).

:mod:`.router` gathers its routes (the pages at ``/`` and the login) and its static assets
(shipped in this package: no CDN, no Node toolchain) for the composition root. Pages read
the database through the same repository as the API and never import torch.
"""
