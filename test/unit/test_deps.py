# Dependencies have one list, requirements.txt: every third-party module
# lib/ imports is in it, and each entry names a module that imports.

import ast
import importlib
import os
import sys

import deps


## Constants ##

LIB = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..",
                                    "lib"))

# Charliecloud's own library (a system package, not pip's), which only the
# Charliecloud worker imports.
CHARLIECLOUD = ({ "charliecloud", "build_cache", "filesystem", "pull",
                  "registry", "version" },
                os.path.join("cri", "chworker.py"))


## Functions ##

def imports_third_party():
   """Return {top-level module: first file importing it} of the modules
      imported under lib/ that are neither stdlib nor ours."""
   ours = set()
   for (dir_, subdirs, files) in os.walk(LIB):
      subdirs[:] = [d for d in subdirs if d != "__pycache__"]
      ours.update(f[:-3] for f in files if f.endswith(".py"))
      ours.update(subdirs)
   out = dict()
   for (dir_, subdirs, files) in os.walk(LIB):
      subdirs[:] = [d for d in subdirs if d != "__pycache__"]
      for f in (f for f in files if f.endswith(".py")):
         path = os.path.join(dir_, f)
         with open(path) as fp:
            tree = ast.parse(fp.read(), path)
         for node in ast.walk(tree):
            if (isinstance(node, ast.Import)):
               names = [a.name for a in node.names]
            elif (isinstance(node, ast.ImportFrom) and node.level == 0):
               names = [node.module]
            else:
               continue
            for n in names:
               top = n.split(".")[0]
               rel = os.path.relpath(path, LIB)
               if (top in CHARLIECLOUD[0] and rel == CHARLIECLOUD[1]):
                  continue
               if (top not in sys.stdlib_module_names and top not in ours):
                  out.setdefault(top, rel)
   return out


## Tests ##

def test_lib_imports_listed():
   found = imports_third_party()
   assert "grpc" in found and "wsproto" in found   # the scan sees them
   listed = { mod.split(".")[0] for (mod, _) in deps.modules() }
   missing = { m: f for (m, f) in found.items() if m not in listed }
   assert not missing, "imported but not in requirements.txt: %s" % missing


def test_listed_import():
   for (mod, pkg) in deps.modules():
      importlib.import_module(mod)
