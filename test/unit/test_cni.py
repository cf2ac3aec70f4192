# The built-in pod network takes the kubelet's pod CIDR (UpdateRuntimeConfig)
# and keeps it across restarts; a configured CNI network is left alone.

import json
import os

import pytest

import cri.cni as cni


pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="pod networks need root")


@pytest.fixture
def plugins(tmp_path):
   d = tmp_path / "bin"
   d.mkdir()
   for p in cni.NEED:
      (d / p).write_text("#!/bin/sh\nexit 1\n")
      (d / p).chmod(0o755)
   return str(d)


def network(tmp_path, plugins, conf_dir=None, masquerade=True):
   conf = conf_dir or tmp_path / "conf"
   os.makedirs(conf, exist_ok=True)
   return cni.Network(str(conf), [plugins], str(tmp_path / "state"),
                      "10.85.0.0/16", "br9", masquerade)


def subnet_of(net):
   return net.conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]


def test_pod_cidr_taken_and_kept(tmp_path, plugins):
   net = network(tmp_path, plugins)
   assert net.ready and net.builtin and subnet_of(net) == "10.85.0.0/16"
   assert net.pod_cidr_set("10.235.1.0/24")
   assert subnet_of(net) == "10.235.1.0/24"
   assert "10.235.1.0/24" in net.source
   assert not net.pod_cidr_set("10.235.1.0/24")    # no change
   # A restarted ch-cri uses it before the kubelet says it again.
   assert subnet_of(network(tmp_path, plugins)) == "10.235.1.0/24"


def test_pod_cidr_bad(tmp_path, plugins):
   net = network(tmp_path, plugins)
   for bad in ("", "bogus", "10.1.2.3/24", "10.0.0.0/31", "10.0.0.0/33"):
      with pytest.raises(ValueError):
         net.pod_cidr_set(bad)
   assert subnet_of(net) == "10.85.0.0/16"
   assert not os.path.exists(net.pod_cidr_path)


def test_pod_cidr_config_file_wins(tmp_path, plugins):
   conf = tmp_path / "conf"
   conf.mkdir()
   (conf / "10-x.conflist").write_text(json.dumps(
      cni.conflist_default("x", "bx", "10.9.0.0/16", "/d")))
   net = network(tmp_path, plugins, conf)
   assert net.ready and not net.builtin
   assert not net.pod_cidr_set("10.235.1.0/24")
   assert subnet_of(net) == "10.9.0.0/16"


def test_masquerade_off(tmp_path, plugins):
   net = network(tmp_path, plugins, masquerade=False)
   assert net.conf["plugins"][0]["ipMasq"] is False
   net.pod_cidr_set("10.235.2.0/24")
   assert net.conf["plugins"][0]["ipMasq"] is False


def test_pod_cidr_waited_for(tmp_path, plugins):
   conf = tmp_path / "conf"
   conf.mkdir()
   net = cni.Network(str(conf), [plugins], str(tmp_path / "state"),
                     "kubelet", "br9")
   assert net.builtin and not net.ready
   assert "pod CIDR" in net.reason
   assert net.pod_cidr_set("10.235.3.0/24")
   assert net.ready and net.reason is None
   assert subnet_of(net) == "10.235.3.0/24"
   again = cni.Network(str(conf), [plugins], str(tmp_path / "state"),
                       "kubelet", "br9")
   assert again.ready and subnet_of(again) == "10.235.3.0/24"


def test_plugins_missing(tmp_path):
   conf = tmp_path / "conf"
   conf.mkdir()
   net = cni.Network(str(conf), [str(tmp_path)], str(tmp_path / "state"),
                     "10.85.0.0/16", "br9")
   assert not net.ready and "not found" in net.reason
   assert not net.pod_cidr_set("10.235.3.0/24")
   assert not net.ready


def test_status_names_network_after_cidr(tmp_path, plugins):
   # Verbose Status says where the network comes from as it is now, not
   # as it was at start-up.
   import cri.runtime
   from cri_api.v1 import api_pb2 as pb
   conf = tmp_path / "conf"
   conf.mkdir()
   net = cni.Network(str(conf), [plugins], str(tmp_path / "state"),
                     "kubelet", "br9")
   rt = cri.runtime.Runtime_Servicer("0", "cgroupfs", { "unit": True },
                                     None, None, None, net=net)
   def info():
      res = rt.Status(pb.StatusRequest(verbose=True), None)
      return json.loads(res.info["info"])
   assert info() == { "unit": True, "network": None }
   net.pod_cidr_set("10.235.3.0/24")
   assert "10.235.3.0/24" in info()["network"]
