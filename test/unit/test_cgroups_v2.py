# Unit tests of cgroup v2 (unified) support in lib/cri/cgroups.py against a
# fake cgroupfs tree: a directory of the real file names, filled by the
# test. These machines boot cgroup v1; the same code runs for real on the
# cgroup v2 machine (test/device/cgroup2-check).

import os
import types

import pytest

import cri.cgroups as cgroups
from cri.keeper.logio import oom_kills


## Constants ##

CONTROLLERS = "cpuset cpu io memory hugetlb pids"


## Helpers ##

def tree_make(root, path="", controllers=CONTROLLERS):
   "Make a fake cgroup at root/path with its interface files."
   d = os.path.join(str(root), path)
   os.makedirs(d, exist_ok=True)
   for (name, text) in (("cgroup.controllers", controllers + "\n"),
                        ("cgroup.subtree_control", ""),
                        ("cgroup.procs", "")):
      with open(os.path.join(d, name), "w") as fp:
         fp.write(text)
   return d


def res(**kw):
   "Return LinuxContainerResources-like values, unset ones zero."
   r = types.SimpleNamespace(cpu_period=0, cpu_quota=0, cpu_shares=0,
                             memory_limit_in_bytes=0,
                             memory_swap_limit_in_bytes=0, cpuset_cpus="",
                             cpuset_mems="", hugepage_limits=[], unified={})
   for (k, v) in kw.items():
      setattr(r, k, v)
   return r


def read(path):
   with open(path) as fp:
      return fp.read()


def write(path, text):
   with open(path, "w") as fp:
      fp.write(text)


## Tests ##

def test_root_v2_create_apply_remove(tmp_path):
   tree_make(tmp_path)
   cg = cgroups.Cgroups(root=str(tmp_path), euid=0)
   assert cg.v2 and cg.usable, cg.reason
   assert set(cg.controllers) == set(CONTROLLERS.split())
   key = "kubepods/pod1/c1"
   procs = cg.create(key, res(memory_limit_in_bytes=2**26,
                              memory_swap_limit_in_bytes=2**26,
                              cpu_quota=50000, cpu_period=100000,
                              cpu_shares=512, cpuset_cpus="0",
                              unified={"pids.max": "64"},
                              hugepage_limits=[types.SimpleNamespace(
                                 page_size="2MB", limit=2**21)]))
   d = tmp_path / key
   assert procs == [str(d / "cgroup.procs")]
   # Each ancestor hands the controllers down before its child is made.
   for p in (tmp_path, tmp_path / "kubepods", tmp_path / "kubepods/pod1"):
      assert set(read(p / "cgroup.subtree_control").split()) \
             == { "+" + c for c in CONTROLLERS.split() }
   assert read(d / "memory.max") == str(2**26)
   assert read(d / "memory.swap.max") == "0"
   assert read(d / "cpu.max") == "50000 100000"
   assert read(d / "cpu.weight") == str(cgroups.shares_weight(512))
   assert read(d / "cpuset.cpus") == "0"
   assert read(d / "pids.max") == "64"
   assert read(d / "hugetlb.2MB.max") == str(2**21)
   # A live update.
   cg.apply(key, res(memory_limit_in_bytes=2**27, cpu_quota=-1))
   assert read(d / "memory.max") == str(2**27)
   assert read(d / "cpu.max") == "max 100000"
   # What the memory controller files say, the kernel's names.
   write(d / "cpu.stat", "usage_usec 1500\nuser_usec 1000\n")
   write(d / "memory.current", "1000\n")
   write(d / "memory.stat", "anon 600\nfile 400\ninactive_file 300\n")
   assert cg.usage(key) == (1500000, 1000, 700, 600)
   write(d / "memory.pressure",
         "some avg10=1.50 avg60=0.00 avg300=0.00 total=12\n"
         "full avg10=0.00 avg60=0.00 avg300=0.00 total=3\n")
   p = cg.psi(key)
   assert p["memory"]["some"]["avg10"] == 1.5
   assert p["memory"]["full"]["total"] == 3
   # OOM kills come from memory.events, not a guess.
   assert not cg.oom_killed_p(key)
   write(d / "memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
   assert cg.oom_killed_p(key)
   assert oom_kills(str(d)) == 1
   for f in os.listdir(d):
      os.unlink(d / f)
   cg.remove(key)
   assert not d.exists()


def test_v2_without_memory_is_not_usable(tmp_path):
   tree_make(tmp_path, controllers="cpu pids")
   cg = cgroups.Cgroups(root=str(tmp_path), euid=0)
   assert not cg.usable and "memory" in cg.reason


def test_hybrid_host_stays_v1(tmp_path):
   # v1 hierarchies with an empty v2 at unified/, as on these machines.
   for c in cgroups.CONTROLLERS:
      os.makedirs(tmp_path / c)
      write(tmp_path / c / "cgroup.procs", "")
   tree_make(tmp_path, "unified", controllers="")
   cg = cgroups.Cgroups(root=str(tmp_path), euid=0)
   assert not cg.v2 and cg.usable
   assert cg.dir_("memory", "ch-cri/p") == str(tmp_path / "memory/ch-cri/p")


def test_user_with_delegated_subtree(tmp_path):
   base = "user.slice/user-1000.slice/user@1000.service/app.slice/x.service"
   tree_make(tmp_path, controllers=CONTROLLERS)
   tree_make(tmp_path, base, controllers="cpu memory pids")
   pc = tmp_path / "proc-cgroup"
   write(pc, "0::/%s\n" % base)
   cg = cgroups.Cgroups(root=str(tmp_path), proc_cgroup=str(pc), euid=1000)
   assert cg.usable, cg.reason
   assert cg.delegated == str(tmp_path / base)
   assert set(cg.controllers) == {"cpu", "memory", "pids"}
   # We moved into a leaf: a cgroup with processes gives children none.
   leaf = tmp_path / base / cgroups.SELF_LEAF
   assert read(leaf / "cgroup.procs") == str(os.getpid())
   # A user's pods all go under its subtree, whatever the kubelet says.
   assert cg.pod_key("/kubepods/pod1", "p1") == ("ch-cri/p1", True)
   procs = cg.create("ch-cri/p1/c1", res(memory_limit_in_bytes=2**20))
   assert procs == [str(tmp_path / base / "ch-cri/p1/c1/cgroup.procs")]
   assert read(tmp_path / base / "ch-cri/p1/c1/memory.max") == str(2**20)
   # Restarted inside the leaf, the base is found again.
   write(pc, "0::/%s/%s\n" % (base, cgroups.SELF_LEAF))
   cg = cgroups.Cgroups(root=str(tmp_path), proc_cgroup=str(pc), euid=1000)
   assert cg.delegated == str(tmp_path / base)


def test_user_without_delegation_says_why(tmp_path):
   tree_make(tmp_path)
   os.makedirs(tmp_path / "user.slice")    # no interface files: not ours
   pc = tmp_path / "proc-cgroup"
   write(pc, "0::/user.slice\n")
   cg = cgroups.Cgroups(root=str(tmp_path), proc_cgroup=str(pc), euid=1000)
   assert not cg.usable
   assert "no cgroup v2 subtree delegated" in cg.reason
   assert "Delegate=yes" in cg.reason


def test_v1_user_says_why(tmp_path):
   cg = cgroups.Cgroups(root=str(tmp_path), euid=1000)
   assert not cg.usable and "cgroup v1" in cg.reason


@pytest.mark.parametrize("key", ["../x.max", "cgroup.procs", "nodot",
                                 ".hidden.max"])
def test_unified_keys_refused(key):
   with pytest.raises(cgroups.Cgroup_Error):
      cgroups.settings_v2(res(unified={key: "1"}))


def test_psi_reaches_container_stats(tmp_path):
   import cri.stats
   from cri_api.v1 import api_pb2 as pb
   tree_make(tmp_path)
   cg = cgroups.Cgroups(root=str(tmp_path), euid=0)
   cg.create("ch-cri/p/c", None)
   d = tmp_path / "ch-cri/p/c"
   write(d / "cpu.pressure",
         "some avg10=0.25 avg60=0.10 avg300=0.05 total=900\n")
   write(d / "io.pressure",
         "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"
         "full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n")
   s = pb.ContainerStats()
   cri.stats.psi_fill(s, cg.psi("ch-cri/p/c"), 42)
   assert s.cpu.psi.Some.Total == 900 and s.cpu.psi.Some.Avg10 == 0.25
   assert s.io.psi.Full.Total == 5 and s.io.timestamp == 42
   assert not s.memory.HasField("psi")
