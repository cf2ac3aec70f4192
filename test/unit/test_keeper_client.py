# The keeper protocol's two ends: the keeper's handlers (keeper.py OPS)
# and ch-cri's client (Keeper_Client) name the same operations.

import inspect
import json
import os
import subprocess
import sys

import cri
import cri.keeper_conn as kc


## Constants ##

KEEPER_DIR = os.path.dirname(os.path.abspath(cri.__file__))


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
