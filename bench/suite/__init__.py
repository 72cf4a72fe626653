"""One file per benchmark; `bench/run.py` finds every module here that defines NAME, TITLE and run(ctx)."""
