# The per-pod keeper (keeper.py, run as a script, and its spawn, log and
# /proc helpers) and ch-cri's client of it. Standard library only: the
# keeper imports these modules as top-level ones from this directory.
