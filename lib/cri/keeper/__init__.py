# The per-pod keeper (keeper.py, run as a script, with its operations in
# state, lifecycle and streams, and its spawn, namespace and mount, log and
# /proc helpers) and ch-cri's client of it. Standard library only: the
# keeper imports these modules as top-level ones from this directory.
