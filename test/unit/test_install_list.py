# make install installs every module: each .py under lib/ is in one of
# Makefile.am's _DATA lists (a module left out breaks only the installed
# ch-cri, which the other tests do not run).

import os
import re


## Constants ##

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))


## Tests ##

def test_every_module_installed():
   with open(os.path.join(TOP, "Makefile.am")) as fp:
      listed = set(re.findall(r"\blib/[\w/]+\.py\b", fp.read()))
   found = set()
   for (dir_, subdirs, files) in os.walk(os.path.join(TOP, "lib")):
      subdirs[:] = [d for d in subdirs if d != "__pycache__"]
      found.update(os.path.relpath(os.path.join(dir_, f), TOP)
                   for f in files if f.endswith(".py"))
   assert "lib/cri/keeper/keeper.py" in found
   assert found - listed == set(), "not installed (add to Makefile.am)"
   assert listed - found == set(), "listed in Makefile.am but missing"
