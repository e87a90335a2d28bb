"""Orchestration: the dispatcher, the Ray executor, the job entrypoint and its run store."""
