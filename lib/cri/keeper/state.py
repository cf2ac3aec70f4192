# The per-pod keeper's state, shared by its modules: the selector, the pod's
# containers, and the operations in progress.
#
# Imported as a top-level module beside keeper.py (see its top). The lists
# and dicts are only ever changed in place, so a sibling may import them by
# name; pod_init, userns and shutdown are set later, so siblings read them
# as state.NAME.

import os
import selectors

from proc import json_write_atomic


## Constants ##

READ_SIZE = 65536


## Globals ##

sel = selectors.DefaultSelector()
containers = dict()      # id -> Container
subscribers = []         # event connections
execs = []               # Exec in progress
waiters = []             # (deadline, Conn, container id)
starts = []              # Start in progress
pod_init = None          # PID of the pod's init (PID namespace POD)
held = []                # descriptors kept open for our lifetime (hold)
userns = None            # (holder PID, fd) of the pod's user namespace
shutdown = None          # (deadline, Conn) once asked to shut down


## Functions ##

def container_get(id_):
   c = containers.get(id_)
   if (c is None):
      raise KeyError("no such container in this pod: %s" % id_)
   return c


def running_p():
   return any(c.pid and not c.exited_p() for c in containers.values())


## Classes ##

class Container:

   def __init__(self, id_, dir_):
      self.id_ = id_
      self.dir_ = dir_
      self.status = dict()
      self.pidfd = None
      self.outs = dict()      # fd -> stream name
      self.stdin_w = None
      self.log = None
      self.merged = None
      self.stdin_once = False
      self.memcg = None       # memory cgroup directory, for OOM kills
      self.staged = []        # mounts staged for ch-run --bind
      self.attached = []      # (stream name, socket) copies of output
      self.exit_conns = []    # Conns told the exit code (attach)
      self.user = None        # host user its processes become, if not us
      self.procs = ()         # its cgroups' cgroup.procs files
      self.pts = None         # its pod's devpts, for its ttys

   @property
   def pid(self):
      return self.status.get("pid")

   def exited_p(self):
      return "finished_at" in self.status

   def save(self):
      json_write_atomic(os.path.join(self.dir_, "status.json"), self.status)
