# Unit tests of container run specifications (lib/cri/spec.py): request
# mounts.

import errno
import os
import types

import pytest

import cri.errors as err
import cri.spec

from cri_api.v1 import api_pb2 as pb


## Functions ##

def config_mounting(host_path):
   return pb.ContainerConfig(mounts=[pb.Mount(container_path="/data",
                                              host_path=host_path)])


## Tests ##

def test_mount_missing_host_path_created(tmp_path):
   pod = types.SimpleNamespace(dir_=str(tmp_path))
   want = tmp_path / "new" / "dir"
   (mounts, _, _, _) = cri.spec.mounts_make(pod, config_mounting(str(want)))
   assert want.is_dir()
   assert mounts == [{ "src": str(want), "dst": "/data", "ro": False,
                       "rro": False, "propagation": "private" }]


def test_mount_unreachable_host_path(tmp_path, monkeypatch):
   # What an unprivileged ch-cri meets under a root kubelet: the file is
   # there, in a directory it may not search. Root cannot be refused, so
   # stat is made to refuse that one path.
   pod = types.SimpleNamespace(dir_=str(tmp_path))
   hidden = str(tmp_path / "pods" / "uid" / "etc-hosts")
   stat = os.stat

   def stat_refusing(path, *a, **kw):
      if (path == hidden):
         raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
      return stat(path, *a, **kw)

   monkeypatch.setattr(os, "stat", stat_refusing)
   with pytest.raises(err.Failed_Precondition) as x:
      cri.spec.mounts_make(pod, config_mounting(hidden))
   msg = str(x.value)
   assert msg.startswith("config.mounts[0].host_path: can't access %s: "
                         "Permission denied (ch-cri runs as uid " % hidden)
   # Nothing was created in its stead.
   assert not (tmp_path / "pods").exists()


def test_image_passwd_links_stay_in_the_image(tmp_path):
   # An image whose /etc/passwd is an absolute link: the image's target,
   # never the host's file of that name.
   root = tmp_path / "img"
   (root / "etc").mkdir(parents=True)
   (root / "host-looking").write_text("alice:x:1234:1235::/:/bin/sh\n")
   (root / "etc" / "passwd").symlink_to("/host-looking")
   (root / "etc" / "group").symlink_to("../../../../../../etc/group")
   assert cri.spec.user_resolve(pb.ContainerConfig(), "alice", str(root)) \
      == (1234, 1235)
   # /etc/group climbs out of the image: resolved inside, it is not there.
   assert cri.spec.groups_resolve(pb.ContainerConfig(), 1234, 1235,
                                  str(root)) == [1235]
   with pytest.raises(err.Invalid_Argument):
      cri.spec.user_resolve(pb.ContainerConfig(), "root:daemon", str(root))
