# The keeper package: the protocol's two ends, the keeper's handlers
# (keeper.py OPS) and ch-cri's client (Keeper_Client), name the same
# operations, and none of its modules loads grpc or protobuf.

import inspect
import json
import os
import subprocess
import sys

import cri
import cri.keeper.client as kc


## Constants ##

KEEPER_DIR = os.path.join(os.path.dirname(os.path.abspath(cri.__file__)),
                          "keeper")
LIB_DIR = os.path.dirname(os.path.dirname(KEEPER_DIR))
MODULES = ("client", "logio", "nsmount", "proc", "spawn")


## Functions ##

def client_ops():
   "Return the operation methods of Keeper_Client (all but request)."
   return { n for (n, f) in inspect.getmembers(kc.Keeper_Client,
                                               inspect.isfunction)
            if (not n.startswith("_") and n != "request") }


def keeper_ops():
   "Return the keys of keeper.OPS, imported as the keeper imports it."
   code = ("import json, sys; sys.path.insert(0, %r); import keeper; "
           "print(json.dumps(sorted(keeper.OPS)))" % KEEPER_DIR)
   out = subprocess.run([sys.executable, "-I", "-S", "-c", code],
                        check=True, capture_output=True, timeout=60)
   return set(json.loads(out.stdout))


## Tests ##

def test_ops_match():
   ops = keeper_ops()
   assert "start" in ops and "events" in ops
   assert client_ops() == ops


def test_keeper_imports_no_grpc():
   """The keeper as it runs (a script beside its helpers) and the package's
      modules as ch-cri imports them load neither grpc nor protobuf."""
   heavy = ("grpc", "google.protobuf", "google")
   code = ("import sys; sys.path.insert(0, %r); import keeper; "
           "sys.path[0] = %r; %s; "
           "print(' '.join(m for m in sys.modules if m in %r))"
           % (KEEPER_DIR, LIB_DIR,
              "; ".join("import cri.keeper.%s" % m for m in MODULES), heavy))
   out = subprocess.run([sys.executable, "-I", "-c", code], check=True,
                        capture_output=True, timeout=60, text=True)
   assert out.stdout.split() == []
