# Unit tests of CDI spec loading, device resolution and hook classification
# (lib/cri/cdi.py).

import doctest
import json
import logging
import os
import shutil

import grpc
import pytest
import yaml

from cri_api.v1 import api_pb2 as pb

import misc
import cri.cdi as cdi
import cri.errors as err


## Constants ##

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "cdi")
H200 = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared",
                                     "fixtures", "cdi", "nvidia-h200.yaml"))
if (not os.path.exists(H200)):
   H200 = "/work/shared/fixtures/cdi/nvidia-h200.yaml"
UUID = "GPU-f8a8bfb5-6068-9851-15aa-3637061c0a7d"
LIB = "/usr/local/nvidia/lib64"

# version fixture -> (kind, device)
VERSIONS = { "v030.json": ("example.com/basic", "dev1"),
             "v040.yaml": ("example.com/typed", "scratch"),
             "v050.json": ("example.com/digit", "0"),
             "v060.yaml": ("example.com/net.v2", "port-a"),
             "v070.json": ("example.com/rdt", "clos1"),
             "v080.yaml": ("example.com/all.of.it", "1") }

# broken fixture -> what its log line must say
BROKEN = { "bad-yaml.yaml": "line 7, column 9: did not find expected",
           "bad-json.json": "line 3: Expecting value",
           "wrong-kind.yaml": "kind: not vendor.com/class: 'example.com'",
           "no-kind.json": "kind: missing",
           "duplicate.json": "devices[1]: duplicate device x",
           "bad-name.yaml": "devices[0].name: bad device name: '-x'",
           "new-version.yaml": "cdiVersion: unknown: '1.0.0'",
           "too-old.yaml": "cdiVersion 0.3.0 too old for the features used: "
                           "needs 0.4.0",
           "unknown-field.yaml": "devices[0]: unknown field 'containerEdit'" }


## Fixtures ##

@pytest.fixture
def logged():
   "Collect the ch-cri logger's messages, whatever its propagation."
   msgs = list()
   class H(logging.Handler):
      def emit(self, rec):
         msgs.append(rec.getMessage())
   h = H(level=logging.DEBUG)
   level = misc.log.level
   misc.log.addHandler(h)
   misc.log.setLevel(logging.DEBUG)
   yield msgs
   misc.log.removeHandler(h)
   misc.log.setLevel(level)


@pytest.fixture
def h200(tmp_path):
   shutil.copy(H200, tmp_path)
   return cdi.specs_load([str(tmp_path)])


## Helpers ##

def spec_write(dir_, name, kind, devices, version="0.5.0", edits=None):
   "Write a JSON spec of kind with devices {name: env list} into dir_."
   os.makedirs(dir_, exist_ok=True)
   spec = { "cdiVersion": version, "kind": kind,
            "devices": [{ "name": n, "containerEdits": { "env": e } }
                        for (n, e) in devices.items()] }
   if (edits):
      spec["containerEdits"] = edits
   with open(os.path.join(dir_, name), "w") as fp:
      json.dump(spec, fp)


## Tests ##

def test_doctests():
   res = doctest.testmod(cdi, optionflags=doctest.ELLIPSIS, report=False)
   assert res.failed == 0 and res.attempted >= 5, res


def test_h200_devices(h200):
   assert sorted(h200.devices) == ["nvidia.com/gpu=%s" % n
                                   for n in ("0", UUID, "all")]
   assert h200.kinds == { "nvidia.com/gpu" }


def test_h200_all(h200):
   e = h200.resolve([("nvidia.com/gpu=all", "f")])
   assert sorted(e) == ["additionalGIDs", "deviceNodes", "env", "hooks",
                        "mounts"]
   assert e["env"] == ["NVIDIA_CTK_LIBCUDA_DIR=%s" % LIB,
                       "NVIDIA_VISIBLE_DEVICES=void"]
   # spec-wide nodes first, then the device's own
   assert [n["path"] for n in e["deviceNodes"]] \
          == ["/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidiactl",
              "/dev/nvidia0"]
   n = e["deviceNodes"][3]
   assert n == { "path": "/dev/nvidia0", "hostPath": "/dev/nvidia0",
                 "type": None, "major": 195, "minor": None,
                 "fileMode": 0o666, "permissions": "rwm", "uid": None,
                 "gid": None }
   assert (e["deviceNodes"][2]["major"], e["deviceNodes"][2]["minor"]) \
          == (195, 255)
   assert len(e["mounts"]) == 36
   assert all(m["hostPath"] == m["containerPath"] for m in e["mounts"]
              if m["hostPath"] not in ("/dev/null",
                                       "/usr/share/vulkan/icd.d/"
                                       "nvidia_icd.json"))
   opts = [m["options"] for m in e["mounts"]]
   assert opts.count(["ro", "nosuid", "nodev", "rbind", "rprivate"]) == 35
   assert opts.count(["ro", "nosuid", "nodev", "bind"]) == 1
   assert { "hostPath": "%s/libcuda.so.580.159.04" % LIB,
            "containerPath": "%s/libcuda.so.580.159.04" % LIB,
            "options": ["ro", "nosuid", "nodev", "rbind", "rprivate"],
            "type": None } in e["mounts"]
   depths = [m["containerPath"].count("/") for m in e["mounts"]]
   assert depths == sorted(depths)  # parents before children
   assert e["additionalGIDs"] == []
   # 6 spec-wide createContainer hooks, then the device's createRuntime one
   assert [h["hookName"] for h in e["hooks"]] \
          == ["createContainer"] * 6 + ["createRuntime"]
   assert all(h["path"] == "/usr/bin/nvidia-cdi-hook"
              and h["env"] == ["NVIDIA_CTK_DEBUG=false"]
              and h["timeout"] is None for h in e["hooks"])


def test_h200_hooks(h200):
   e = h200.resolve([("nvidia.com/gpu=0", "f")])
   c = cdi.hooks_classify(e["hooks"])
   assert [op for (op, _) in c] \
          == ["create-symlinks", "create-symlinks", "enable-cuda-compat",
              "update-ldcache", "oci", "oci", "oci"]
   assert c[0][1] == { "link": [("../libnvidia-allocator.so.1",
                                 "%s/gbm/nvidia-drm_gbm.so" % LIB)] }
   links = c[1][1]["link"]
   assert len(links) == 45
   assert links[0] == ("libEGL_nvidia.so.580.159.04",
                       "%s/libEGL_nvidia.so.0" % LIB)
   assert ("libcuda.so.1", "%s/libcuda.so" % LIB) in links
   assert all(l.startswith(LIB + "/") and "/" not in t for (t, l) in links)
   assert c[2][1] == { "host-driver-version": "580.159.04" }
   assert c[3][1] == { "folder": [LIB], "ldconfig-path": None }
   # hooks not emulated stay OCI hooks, whole
   assert [h["args"][1] for (_, h) in c[4:]] \
          == ["disable-device-node-modification",
              "update-application-profile", "apply-cuda-memory-limits"]
   assert c[6][1]["args"][2:] == ["--driver-root", "", "--gpu-id", UUID]
   assert c[6][1] is e["hooks"][6]


def test_h200_merge(h200):
   # the spec's own edits once; the same node twice is one node
   e = h200.resolve([("nvidia.com/gpu=0", "a"), ("nvidia.com/gpu=all", "b"),
                     ("nvidia.com/gpu=%s" % UUID, "c")])
   assert len(e["deviceNodes"]) == 4 and len(e["mounts"]) == 36
   assert len(e["env"]) == 2
   assert [h["hookName"] for h in e["hooks"]].count("createRuntime") == 3
   assert len(e["hooks"]) == 9


def test_hook_classify_forms():
   ctk = { "hookName": "createContainer", "path": "/usr/bin/nvidia-ctk",
           "args": ["nvidia-ctk", "hook", "update-ldcache", "--folder",
                    "/a", "--ldconfig-path", "/sbin/ldconfig.real",
                    "-folder=/b"] }
   assert cdi.hook_classify(ctk) \
          == ("update-ldcache", { "folder": ["/a", "/b"],
                                  "ldconfig-path": "/sbin/ldconfig.real" })
   cc = { "path": "/usr/bin/nvidia-cdi-hook",
          "args": ["nvidia-cdi-hook", "enable-cuda-compat",
                   "--host-driver-version", "570.1"] }
   assert cdi.hook_classify(cc) \
          == ("enable-cuda-compat", { "host-driver-version": "570.1" })
   for args in (["nvidia-cdi-hook", "create-symlinks", "--link", "nolink"],
                ["nvidia-cdi-hook", "create-symlinks", "--link"],
                ["nvidia-cdi-hook", "create-symlinks", "--csv-filename",
                 "/x.csv"],
                ["nvidia-cdi-hook", "update-ldcache", "stray"],
                ["nvidia-ctk", "update-ldcache", "--folder", "/a"],
                ["other-hook", "update-ldcache", "--folder", "/a"]):
      h = { "path": "/usr/bin/%s" % args[0], "args": args }
      assert cdi.hook_classify(h) == ("oci", h), args
   plain = { "hookName": "poststop", "path": "/bin/true", "args": [] }
   assert cdi.hooks_classify([plain]) == [("oci", plain)]


@pytest.mark.parametrize("fixture", sorted(VERSIONS))
@pytest.mark.parametrize("fmt", ["as-is", "converted"])
def test_versions(fixture, fmt, tmp_path, logged):
   "Each version's fixture loads as written and in the other format."
   src = os.path.join(FIXTURES, "versions", fixture)
   if (fmt == "as-is"):
      shutil.copy(src, tmp_path)
   else:
      with open(src) as fp:
         data = yaml.safe_load(fp)
      (base, ext) = os.path.splitext(fixture)
      with open(tmp_path / (base + (".yml" if ext == ".json"
                                    else ".json")), "w") as fp:
         (yaml.safe_dump if ext == ".json" else json.dump)(data, fp)
   c = cdi.specs_load([str(tmp_path)])
   (kind, name) = VERSIONS[fixture]
   assert list(c.devices) == ["%s=%s" % (kind, name)]
   assert not [m for m in logged if "skipped" in m]
   spec = c.devices["%s=%s" % (kind, name)]
   assert spec.version == "0.%s.0" % fixture[2]


def test_versions_content():
   c = cdi.specs_load([os.path.join(FIXTURES, "versions")])
   e = c.resolve([("example.com/basic=dev1", "f")])
   assert e["env"] == ["BASIC_SPEC=1", "BASIC_DEV=dev1"]
   assert e["deviceNodes"] == [{ "path": "/dev/basic1",
                                 "hostPath": "/dev/basic1", "type": "c",
                                 "major": 10, "minor": 200,
                                 "fileMode": 0o600, "permissions": "rw",
                                 "uid": 1000, "gid": 1000 }]
   assert e["mounts"] == [{ "hostPath": "/opt/basic/lib",
                            "containerPath": "/usr/lib/basic",
                            "options": ["ro", "nosuid", "nodev", "bind"],
                            "type": None }]
   assert e["hooks"] == [{ "hookName": "poststop",
                           "path": "/usr/bin/basic-cleanup",
                           "args": ["basic-cleanup", "--all"],
                           "env": ["A=b"], "timeout": 5 }]
   e = c.resolve([("example.com/typed=scratch", "f")])
   assert e["mounts"][0]["type"] == "tmpfs"
   assert e["mounts"][0]["options"] == ["nosuid", "nodev", "size=64m"]
   e = c.resolve([("example.com/digit=0", "f")])
   assert e["deviceNodes"][0]["hostPath"] == "/dev/real/digit0"
   assert e["deviceNodes"][0]["path"] == "/dev/digit0"
   e = c.resolve([("example.com/net.v2=port-a", "f")])
   assert e["env"] == ["PORT=a"]


def test_intel_rdt_ignored(logged):
   c = cdi.specs_load([os.path.join(FIXTURES, "versions")])
   e = c.resolve([("example.com/rdt=clos1", "f")])
   assert e["additionalGIDs"] == [44, 109]  # 0 dropped, 44 once
   assert "intelRdt" not in e
   assert any("example.com/rdt=clos1: ignoring intelRdt" in m
              for m in logged)
   e = c.resolve([("example.com/all.of.it=1", "f"),
                  ("example.com/rdt=clos1", "g")])
   assert e["additionalGIDs"] == [44, 109]
   assert e["env"] == ["ALL_SPEC=1"]
   assert [m["containerPath"] for m in e["mounts"]] == ["/x"]
   assert e["deviceNodes"][0]["type"] == "b"


def test_broken_skipped(tmp_path, logged):
   "Broken specs are logged with file (and line) and skipped; others load."
   d = os.path.join(FIXTURES, "broken")
   c = cdi.specs_load([d])
   assert list(c.devices) == ["example.com/good=ok"]
   assert c.resolve([("example.com/good=ok", "f")])["env"] == ["GOOD=1"]
   skipped = [m for m in logged if "skipped" in m]
   assert len(skipped) == len(BROKEN)
   for (f, why) in BROKEN.items():
      assert any(m.startswith("CDI spec %s: skipped: " % os.path.join(d, f))
                 and why in m for m in skipped), (f, skipped)
   assert not any("README.txt" in m for m in logged)


def test_bad_values(tmp_path):
   base = { "cdiVersion": "0.5.0", "kind": "a.com/b",
            "devices": [{ "name": "x", "containerEdits": { "env": ["A=1"] }}] }
   cases = [
      ({ "deviceNodes": [{ "path": "/d", "type": "z" }] }, "type: bad"),
      ({ "deviceNodes": [{ "path": "/d", "permissions": "rx" }] },
       "permissions: bad"),
      ({ "deviceNodes": [{ "path": "/d", "major": "1" }] },
       "major: not a non-negative integer"),
      ({ "deviceNodes": [{ "hostPath": "/d" }] }, "path: missing"),
      ({ "mounts": [{ "hostPath": "/d" }] }, "containerPath: missing"),
      ({ "mounts": [{ "hostPath": "/d", "containerPath": "/e",
                      "options": "ro" }] }, "options: not a list"),
      ({ "mounts": [{ "hostPath": "/d", "containerPath": "/e",
                      "options": [1] }] }, "not a list of strings"),
      ({ "hooks": [{ "hookName": "poststop" }] }, "path: missing"),
      ({ "deviceNodes": { "path": "/d" } }, "deviceNodes: not a list"),
      ({ "hooks": [{ "hookName": "prestop", "path": "/h" }] },
       "hookName: bad"),
      ({ "hooks": [{ "hookName": "poststop", "path": "/h",
                     "timeout": 0 }] }, "timeout: not positive"),
      ({ "env": ["=x"] }, "not NAME=VALUE"),
      ({ "additionalGids": "44" }, "additionalGids: not a list"),
   ]
   for (edits, why) in cases:
      spec = dict(base, containerEdits=edits)
      with pytest.raises(cdi.Spec_Error, match=why):
         cdi.spec_parse(json.dumps(spec), "x.json")
   for bad in ({ "annotations": ["a"] }, { "annotations": { "a": 1 } },
               { "cdiVersion": 0.5 }, { "kind": ["a.com/b"] }):
      with pytest.raises(cdi.Spec_Error):
         cdi.spec_parse(json.dumps(dict(base, **bad)), "x.json")
   for devs in ([], [{ "name": "x", "containerEdits": {} }],
                [{ "name": 7, "containerEdits": { "env": ["A=1"] }}]):
      with pytest.raises(cdi.Spec_Error):
         cdi.spec_parse(json.dumps(dict(base, devices=devs)), "x.json")
   # Go's decoder matches keys ignoring case; so do we
   spec = dict(base, containerEdits={ "additionalGIDs": [5] })
   assert cdi.spec_parse(json.dumps(spec), "x.json").edits[
      "additionalGIDs"] == [5]


def test_priority(tmp_path, logged):
   "A later directory's device replaces an earlier one's, device by device."
   (etc, run) = (str(tmp_path / "etc"), str(tmp_path / "run"))
   spec_write(etc, "v.json", "vendor.com/dev",
              { "a": ["FROM=etc"], "b": ["FROM=etc"] },
              edits={ "env": ["SPEC=etc"] })
   spec_write(run, "v.yaml", "vendor.com/dev", { "a": ["FROM=run"] },
              edits={ "env": ["SPEC=run"] })
   c = cdi.specs_load([etc, run])
   assert c.resolve([("vendor.com/dev=a", "f")])["env"] \
          == ["SPEC=run", "FROM=run"]
   assert c.resolve([("vendor.com/dev=b", "f")])["env"] \
          == ["SPEC=etc", "FROM=etc"]
   # each device brings its own spec's edits; later values win
   assert c.resolve([("vendor.com/dev=b", "f"), ("vendor.com/dev=a", "g")])[
      "env"] == ["SPEC=run", "FROM=run"]
   c = cdi.specs_load([run, etc])
   assert c.resolve([("vendor.com/dev=a", "f")])["env"] \
          == ["SPEC=etc", "FROM=etc"]
   assert not logged or not any("skipped" in m for m in logged)


def test_conflict_same_dir(tmp_path, logged):
   d = str(tmp_path / "d")
   spec_write(d, "1.json", "vendor.com/dev", { "a": ["N=1"], "b": ["N=1"] })
   spec_write(d, "2.json", "vendor.com/dev", { "a": ["N=2"] })
   c = cdi.specs_load([d])
   assert list(c.devices) == ["vendor.com/dev=b"]
   assert any("vendor.com/dev=a: defined in both" in m for m in logged)
   with pytest.raises(cdi.Unresolvable, match="defined in both"):
      c.resolve([("vendor.com/dev=a", "f")])
   # a later directory settles it
   spec_write(str(tmp_path / "e"), "3.json", "vendor.com/dev",
              { "a": ["N=3"] })
   c = cdi.specs_load([d, str(tmp_path / "e")])
   assert c.resolve([("vendor.com/dev=a", "f")])["env"] == ["N=3"]


def test_missing_dirs(tmp_path):
   c = cdi.specs_load([str(tmp_path / "none"), str(tmp_path)])
   assert c.devices == {} and c.kinds == set()


def test_unresolvable(h200):
   with pytest.raises(cdi.Unresolvable) as x:
      h200.resolve([("nvidia.com/gpu=0", "config.CDI_devices[0]"),
                    ("nvidia.com/gpu=1", "config.CDI_devices[1]"),
                    ("vendor.com/x=y", "config.CDI_devices[2]")])
   assert str(x.value) == "config.CDI_devices[1]: unresolvable CDI device " \
                          "nvidia.com/gpu=1"
   assert isinstance(x.value, err.Invalid_Argument)
   assert x.value.code == grpc.StatusCode.INVALID_ARGUMENT
   with pytest.raises(cdi.Unresolvable) as x:
      h200.resolve([("vendor.com/x=y", "config.CDI_devices[2]")])
   assert str(x.value).startswith("config.CDI_devices[2]: unresolvable CDI "
                                  "device vendor.com/x=y (no CDI spec for "
                                  "vendor.com/x")
   with pytest.raises(cdi.Unresolvable, match="not a fully-qualified"):
      h200.resolve([("gpu0", "config.CDI_devices[0]")])


def test_all_only_if_defined(tmp_path):
   spec_write(str(tmp_path), "v.json", "vendor.com/dev", { "a": ["A=1"] })
   c = cdi.specs_load([str(tmp_path)])
   with pytest.raises(cdi.Unresolvable, match="vendor.com/dev=all"):
      c.resolve([("vendor.com/dev=all", "f")])


def test_names_requested(h200):
   config = pb.ContainerConfig(
      CDI_devices=[pb.CDIDevice(name="vendor.com/a=1"),
                   pb.CDIDevice(name="vendor.com/a=2"),
                   pb.CDIDevice(name="vendor.com/a=1")],
      annotations={ "cdi.k8s.io/plugin_b": "vendor.com/b=x, vendor.com/a=2",
                    "cdi.k8s.io/plugin_a": "vendor.com/c=z,",
                    "other.io/x": "vendor.com/d=no" },
      envs=[pb.KeyValue(key="NVIDIA_VISIBLE_DEVICES", value="void"),
            pb.KeyValue(key="PATH", value="/bin"),
            pb.KeyValue(key="NVIDIA_VISIBLE_DEVICES", value="0,%s" % UUID)])
   assert cdi.names_requested(config) == [
      ("vendor.com/a=1", "config.CDI_devices[0]"),
      ("vendor.com/a=2", "config.CDI_devices[1]"),
      ("vendor.com/c=z", "config.annotations[cdi.k8s.io/plugin_a]"),
      ("vendor.com/b=x", "config.annotations[cdi.k8s.io/plugin_b]")]
   assert cdi.names_requested(config, h200)[4:] == [
      ("nvidia.com/gpu=0", "config.envs[2]"),
      ("nvidia.com/gpu=%s" % UUID, "config.envs[2]")]
   assert cdi.names_requested(pb.ContainerConfig(), h200) == []


def test_nvidia_names(h200, tmp_path):
   g = "nvidia.com/gpu="
   assert cdi.nvidia_names("0,1", h200) == [g + "0", g + "1"]
   assert cdi.nvidia_names("all", h200) == [g + "all"]
   assert cdi.nvidia_names(UUID, h200) == [g + UUID]
   for v in ("void", "none", "", " "):
      assert cdi.nvidia_names(v, h200) == []
   # no nvidia.com/gpu spec: the variable means nothing to us
   assert cdi.nvidia_names("all", cdi.specs_load([str(tmp_path / "no")])) \
          == []
   e = h200.resolve([(n, "f") for n in cdi.nvidia_names("all", h200)])
   assert len(e["deviceNodes"]) == 4
