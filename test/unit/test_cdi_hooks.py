# Unit tests of CDI hooks: what ch-cri plans for a spec's hooks
# (cri.cdi.hooks_plan) and what the keeper does with the plan inside a
# container's root (cri.keeper.cdihooks), on temporary trees.

import doctest
import json
import os
import shutil
import stat
import subprocess

import pytest

import cri.cdi as cdi
import cri.cgroups as cgroups
import cri.config as config
import cri.keeper.cdihooks as ch

from test_cdi import H200, LIB, logged   # noqa: F401 (fixture)


## Helpers ##

def hook(*args, name="createContainer", path="/usr/bin/nvidia-cdi-hook"):
   return { "hookName": name, "path": path,
            "args": [os.path.basename(path)] + list(args) }


@pytest.fixture
def settings():
   "Restore cri.cdi's settings after a test changes them."
   yield
   cdi.configure({})


def so_make(path, soname):
   "Compile a shared object with SONAME soname at path (gcc)."
   src = path + ".c"
   with open(src, "w") as fp:
      fp.write("int f(void) { return 1; }\n")
   subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname," + soname,
                   "-o", path, src], check=True)
   os.unlink(src)


## Tests: the plan ##

def test_doctests():
   for m in (cdi, ch):
      assert doctest.testmod(m, optionflags=doctest.ELLIPSIS).failed == 0


def test_h200_plan(logged):
   spec = cdi.spec_parse(open(H200).read(), H200)
   e = cdi.Cache()
   e.devices["nvidia.com/gpu=all"] = spec
   hooks = e.resolve([("nvidia.com/gpu=all", "f")])["hooks"]
   plan = cdi.hooks_plan(hooks, "gpu")
   assert [p[0] for p in plan] == ["symlinks", "symlinks", "cuda_compat",
                                   "ldcache"]
   assert plan[0][1] == [["../libnvidia-allocator.so.1",
                          LIB + "/gbm/nvidia-drm_gbm.so"]]
   assert ["libcuda.so.1", LIB + "/libcuda.so"] in plan[1][1]
   assert len(plan[1][1]) == 45      # every --link of the second hook
   assert plan[2][1] == "580.159.04"
   assert plan[3][1]["folders"] == [LIB]
   assert plan[3][1]["ldconfig"] in cdi.LDCONFIG_PATHS
   # The three NVIDIA hooks that need an OCI bundle are named, skipped.
   for sub in ("apply-cuda-memory-limits", "disable-device-node-modification",
               "update-application-profile"):
      assert any(sub in m and "skipped" in m for m in logged), sub


def test_plan_order_and_oci(tmp_path, logged, settings):
   good = tmp_path / "good-hook"
   good.write_text("#!/bin/sh\n")
   good.chmod(0o755)
   os.chmod(tmp_path, 0o755)
   loose = tmp_path / "loose-hook"
   loose.write_text("#!/bin/sh\n")
   loose.chmod(0o777)
   hooks = [hook("x", path=str(good)),
            hook("y", path=str(good), name="createRuntime"),
            hook("z", path=str(good), name="poststart"),
            hook("w", path=str(loose)),
            hook("v", path=str(tmp_path / "absent"))]
   hooks[0]["timeout"] = 3600
   plan = cdi.hooks_plan(hooks, "c")
   # createRuntime before createContainer; timeouts capped; poststart,
   # a group-writable program and a missing one are named, not run.
   assert [(p[0], p[1]["args"][1]) for p in plan] == [("oci", "y"),
                                                      ("oci", "x")]
   assert plan[1][1]["timeout"] == cdi.HOOK_TIMEOUT
   text = "\n".join(logged)
   assert "(poststart) not run" in text
   assert "loose-hook is writable by group or others" in text
   assert "absent: No such file or directory" in text
   cdi.configure({ "oci_hooks": False })
   assert cdi.hooks_plan(hooks[:1], "c") == []
   assert "oci_hooks is off" in "\n".join(logged)


def test_plan_without_ldconfig(logged, settings):
   cdi.configure({ "ldconfig": "/nonexistent/ldconfig" })
   assert cdi.hooks_plan([hook("update-ldcache", "--folder", "/l")], "c") \
          == []
   assert any("no ldconfig at /nonexistent/ldconfig" in m for m in logged)


def test_config_cdi(tmp_path):
   p = tmp_path / "c.toml"
   p.write_text('[cdi]\nspec_dirs = ["/x"]\nldconfig = "/sbin/ldconfig"\n'
                'oci_hooks = false\n')
   c = config.load(str(p), True)
   assert c["cdi"] == { "spec_dirs": ["/x"], "ldconfig": "/sbin/ldconfig",
                        "oci_hooks": False }
   for (text, msg) in (('[cdi]\nspec_dirs = ["rel"]\n', "cdi.spec_dirs"),
                       ('[cdi]\nnope = 1\n', "cdi.nope"),
                       ('[cdi]\noci_hooks = "yes"\n', "cdi.oci_hooks")):
      p.write_text(text)
      with pytest.raises(config.Config_Error, match=msg):
         config.load(str(p), True)


## Tests: the keeper's side ##

def test_symlinks(tmp_path):
   root = tmp_path / "root"
   (root / "usr/lib").mkdir(parents=True)
   (root / "lib").symlink_to("usr/lib")
   (root / "usr/lib/libx.so.1").write_text("there")
   (root / "escape").symlink_to("/tmp")
   ch.symlinks_make(str(root), [["libx.so.9", "/lib/libx.so"],
                                ["new", "/usr/lib/libx.so.1"],
                                ["t", "/a/b/c"],
                                ["esc", "/escape/ch-cri-test-link"]])
   # Through the image's own link, kept inside the root; nothing replaced.
   assert os.readlink(root / "usr/lib/libx.so") == "libx.so.9"
   assert (root / "usr/lib/libx.so.1").read_text() == "there"
   assert os.readlink(root / "a/b/c") == "t"
   assert os.readlink(root / "tmp/ch-cri-test-link") == "esc"
   assert not os.path.lexists("/tmp/ch-cri-test-link")


@pytest.mark.parametrize("libs,host,want", [
   (["libcuda.so.590.1.2", "libcuda.so.1", "libnvidia-ptx.so.590.1"],
    "580.159.04", True),
   (["libcuda.so.575.1"], "580.159.04", False),
   (["libcuda.so.580.200.1"], "580.159.04", False),   # same major: no
   ([], "580.159.04", False)])
def test_cuda_compat(tmp_path, libs, host, want):
   d = tmp_path / "usr/local/cuda/compat"
   d.mkdir(parents=True)
   for l in libs:
      (d / l).write_text("")
   assert ch.compat_dir(str(tmp_path), host) \
          == (ch.CUDA_COMPAT if want else None)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("gcc"),
                    reason="ldconfig -r chroots (root), gcc makes the libs")
def test_run_ldcache_compat(tmp_path):
   root = tmp_path / "root"
   lib = root / LIB.lstrip("/")
   compat = root / "usr/local/cuda/compat"
   for d in (lib, compat, root / "etc"):
      d.mkdir(parents=True)
   so_make(str(lib / "libcuda.so.580.159.04"), "libcuda.so.1")
   so_make(str(compat / "libcuda.so.590.10.1"), "libcuda.so.1")
   ldconfig = cdi.LDCONFIG_PATHS[0]
   ch.run(str(root), [["symlinks", [["libcuda.so.1", LIB + "/libcuda.so"]]],
                      ["cuda_compat", "580.159.04"],
                      ["ldcache", { "ldconfig": ldconfig,
                                    "folders": [LIB] }]],
          "c1", str(tmp_path))
   assert os.readlink(lib / "libcuda.so") == "libcuda.so.1"
   assert os.readlink(lib / "libcuda.so.1") == "libcuda.so.580.159.04"
   conf = root / "etc/ld.so.conf.d"
   assert (conf / ch.CONF_COMPAT).read_text() == ch.CUDA_COMPAT + "\n"
   assert (conf / ch.CONF_CDI).read_text() == LIB + "\n"
   cache = subprocess.run([ldconfig, "-r", str(root), "-p"], check=True,
                          capture_output=True, text=True).stdout
   # The newer compat libcuda comes first; both are there.
   found = [l.split("=>")[1].strip() for l in cache.splitlines()
            if "libcuda.so.1 " in l]
   assert found == [ch.CUDA_COMPAT + "/libcuda.so.1", LIB + "/libcuda.so.1"]


def test_oci_hook(tmp_path):
   bundle = tmp_path / "ctr"
   bundle.mkdir()
   out = tmp_path / "seen"
   prog = tmp_path / "hook"
   prog.write_text("#!/bin/sh\necho \"$1 $HOOK_ENV\" > %s\ncat >> %s\n"
                   "echo >> %s\ncat config.json >> %s\n"
                   % (out, out, out, out))
   prog.chmod(0o755)
   ch.run("/merged", [["oci", { "path": str(prog), "args": ["argv0", "a1"],
                                "env": ["HOOK_ENV=e"], "timeout": 5 }]],
          "c1", str(bundle))
   (line, state, conf) = out.read_text().split("\n", 2)
   assert line == "a1 e"
   s = json.loads(state)
   assert s["id"] == "c1" and s["status"] == "creating"
   assert s["bundle"] == str(bundle) and s["pid"] == os.getpid()
   assert json.loads(conf)["root"]["path"] == "/merged"
   prog.write_text("#!/bin/sh\necho broken >&2\nexit 4\n")
   with pytest.raises(ch.Hook_Error, match="argv0 a1: exited 4: broken"):
      ch.run("/m", [["oci", { "path": str(prog), "args": ["argv0", "a1"],
                              "env": [], "timeout": 5 }]], "c1", str(bundle))
   prog.write_text("#!/bin/sh\nexec sleep 10\n")
   with pytest.raises(ch.Hook_Error, match="ran over 1 s"):
      ch.run("/m", [["oci", { "path": str(prog), "args": ["h"],
                              "env": [], "timeout": 1 }]], "c1", str(bundle))


## Tests: the devices cgroup ##

def test_devices_cgroup_v1(tmp_path):
   for c in cgroups.CONTROLLERS + ("devices",):
      (tmp_path / c).mkdir()
      (tmp_path / c / "cgroup.procs").write_text("")
   (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-1")
   (tmp_path / "cpuset" / "cpuset.mems").write_text("0")
   cg = cgroups.Cgroups(root=str(tmp_path), euid=0)
   assert "devices" in cg.controllers
   procs = cg.create("ch-cri/c1", None, [["c", 195, 0, "rw"]])
   assert str(tmp_path / "devices/ch-cri/c1/cgroup.procs") in procs
   d = tmp_path / "devices/ch-cri/c1"
   assert (d / "devices.deny").read_text() == "a"
   # file_write replaces: the last rule written is the one given.
   assert (d / "devices.allow").read_text() == "c 195:0 rw"
   cg.create("ch-cri/p1", None)       # privileged: no rule written
   assert not (tmp_path / "devices/ch-cri/p1/devices.deny").exists()
