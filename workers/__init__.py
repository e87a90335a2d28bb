"""Everything Ray: the run pipeline, Tune LR search and final training."""
