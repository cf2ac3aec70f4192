# Run the doctests of ch-cri's library modules.

import doctest
import importlib

import pytest


## Constants ##

# module -> whether it has doctests (a module losing all of its examples
# is worth noticing)
MODULES = { "misc": True, "deps": True, "fsutil": False, "imgref": True, "charlie": True,
            "cri.config": True, "cri.devices": True, "cri.images": True,
            "cri.container": False, "cri.ctrstart": True,
            "cri.cgroups": True, "cri.cni": True, "cri.metrics": True,
            "cri.keeper.client": True, "cri.podspec": True,
            "cri.sandbox": False,
            "cri.security": True, "cri.slirp": True, "cri.spec": True,
            "cri.stream.command": True, "cri.stream.spdy": True,
            "cri.stream.server": True,
            "cri.squash": True, "cri.store": True }


## Tests ##

@pytest.mark.parametrize("name", sorted(MODULES))
def test_doctests(name):
   m = importlib.import_module(name)
   res = doctest.testmod(m, optionflags=doctest.ELLIPSIS, report=False)
   assert res.failed == 0, "%s: %d doctest failures" % (name, res.failed)
   assert (res.attempted > 0) == MODULES[name], res


def test_doctests_run_at_all():
   total = sum(doctest.testmod(importlib.import_module(n)).attempted
               for n in MODULES)
   assert total >= 10
