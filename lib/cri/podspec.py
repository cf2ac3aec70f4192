# A pod's CRI config as ch-cri takes it: the checks that refuse what it
# cannot give (naming the field), and the resolv.conf and user namespace
# ID maps made from it.

import ipaddress
import os
import re

import cri.errors as err

from cri_api.v1 import api_pb2 as pb


## Constants ##

IPC_SYSCTLS = { "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni",
                "kernel.sem", "kernel.shmall", "kernel.shmmax",
                "kernel.shmmni", "kernel.shm_rmid_forced" }


## Functions ##

def resolv_conf(dns):
   """Return resolv.conf text for a CRI DNSConfig, or None if it is empty
      (then the host's is used).

      >>> resolv_conf(pb.DNSConfig(servers=["10.0.0.10"], searches=["a.b"],
      ...                          options=["ndots:5"]))
      'nameserver 10.0.0.10\\nsearch a.b\\noptions ndots:5\\n'
   """
   if (not (dns.servers or dns.searches or dns.options)):
      return None
   out = ["nameserver %s\n" % s for s in dns.servers]
   if (dns.searches):
      out.append("search %s\n" % " ".join(dns.searches))
   if (dns.options):
      out.append("options %s\n" % " ".join(dns.options))
   return "".join(out)


def line_check(value, field):
   "Refuse a value that would break the one-line files it is written to."
   if (any(c in value for c in "\n\r\0")):
      raise err.Invalid_Argument("%s: must not contain newlines or NUL"
                                 % field)


def sysctls_check(sysctls, ns):
   """Refuse sysctls that are not namespaced, or whose namespace the pod
      shares with the host (setting them would change the host).

      >>> sysctls_check({"kernel.shm_rmid_forced": "1"}, pb.NamespaceOption())
      >>> sysctls_check({"vm.swappiness": "1"}, pb.NamespaceOption())
      Traceback (most recent call last):
      ...
      cri.errors.Invalid_Argument: config.linux.sysctls[vm.swappiness]: not a namespaced sysctl ch-cri can set
   """
   for (name, value) in sysctls.items():
      f = "config.linux.sysctls[%s]" % name
      if (not re.fullmatch(r"[a-z0-9_]+([./][a-z0-9_-]+)+", name)
          or "\n" in value):
         raise err.Invalid_Argument("%s: bad name or value" % f)
      n = name.replace("/", ".")
      if (n.startswith("net.")):
         shared = ns.network == pb.NamespaceMode.NODE
      elif (n in IPC_SYSCTLS or n.startswith("fs.mqueue.")):
         shared = ns.ipc == pb.NamespaceMode.NODE
      elif (n in ("kernel.hostname", "kernel.domainname")):
         shared = ns.network == pb.NamespaceMode.NODE
      else:
         raise err.Invalid_Argument("%s: not a namespaced sysctl ch-cri can "
                                    "set" % f)
      if (shared):
         raise err.Invalid_Argument("%s: the pod shares this namespace with "
                                    "the host" % f)


def port_mappings_check(pms):
   """Refuse port mappings the network could not set up, naming the field.

      >>> port_mappings_check([pb.PortMapping(container_port=80,
      ...                                     host_port=8080)])
      >>> port_mappings_check([pb.PortMapping(container_port=0, host_port=3)])
      Traceback (most recent call last):
      ...
      cri.errors.Invalid_Argument: config.port_mappings[0].container_port: must be 1 to 65535, not 0
   """
   for (i, p) in enumerate(pms):
      f = "config.port_mappings[%d]" % i
      if (not 0 < p.container_port < 65536):
         raise err.Invalid_Argument("%s.container_port: must be 1 to 65535, "
                                    "not %d" % (f, p.container_port))
      if (not 0 <= p.host_port < 65536):
         raise err.Invalid_Argument("%s.host_port: must be 0 to 65535, not %d"
                                    % (f, p.host_port))
      if (p.protocol not in (pb.Protocol.TCP, pb.Protocol.UDP,
                             pb.Protocol.SCTP)):
         raise err.Invalid_Argument("%s.protocol: unknown: %d"
                                    % (f, p.protocol))
      if (p.host_ip):
         try:
            ipaddress.ip_address(p.host_ip)
         except ValueError:
            raise err.Invalid_Argument("%s.host_ip: not an IP address: %r"
                                       % (f, p.host_ip))


def userns_maps():
   """Return the ID maps of a pod keeper's user namespace, or None for
      unshare(1)'s map of our one ID to root (an ordinary user's ch-cri).
      As root, every host ID maps to itself: a container's user is then
      the same host user, as with runc, and not host root for every file
      check (see ch-cri(1), "Security model")."""
   if (os.geteuid() != 0):
      return None
   # 4294967295 IDs from 0: all but (uid_t) -1, which is never an ID.
   return { "uid_map": "0 0 4294967295\n", "gid_map": "0 0 4294967295\n" }


def userns_check(ns):
   """Refuse user namespace options ch-cri cannot give: POD needs a root
      ch-cri and one mapping each of UIDs and GIDs that maps container ID
      0 (as the kubelet sends for hostUsers: false); NODE is the default;
      CONTAINER and TARGET are not Kubernetes modes for it."""
   f = "config.linux.security_context.namespace_options.userns_options"
   u = ns.userns_options
   # Unset means the host's (POD is the enum's zero value).
   if (not ns.HasField("userns_options") or u.mode == pb.NamespaceMode.NODE):
      if (u.uids or u.gids):
         raise err.Invalid_Argument("%s: mappings with mode NODE" % f)
      return
   if (u.mode != pb.NamespaceMode.POD):
      raise err.Invalid_Argument("%s.mode: %s is not supported (POD or "
                                 "NODE)" % (f, pb.NamespaceMode.Name(u.mode)))
   if (os.geteuid() != 0):
      raise err.Failed_Precondition(
         "%s.mode: POD (hostUsers: false) needs a root ch-cri: an ordinary "
         "user's pods are that user already" % f)
   for (name, ms) in (("uids", u.uids), ("gids", u.gids)):
      if (len(ms) != 1):
         raise err.Invalid_Argument("%s.%s: need exactly one mapping, not "
                                    "%d" % (f, name, len(ms)))
      m = ms[0]
      if (m.container_id != 0 or m.length < 1
          or m.host_id + m.length > 0xffffffff):
         raise err.Invalid_Argument(
            "%s.%s[0]: must map container ID 0 within the 32-bit ID range "
            "(got container_id %d, host_id %d, length %d)"
            % (f, name, m.container_id, m.host_id, m.length))


def userns_pod_maps(ns):
   """Return the keeper's ID maps of a pod's own user namespace
      (userns_options mode POD, checked by userns_check), or None."""
   u = ns.userns_options
   if (not ns.HasField("userns_options") or u.mode != pb.NamespaceMode.POD):
      return None
   return { k: "0 %d %d\n" % (ms[0].host_id, ms[0].length)
            for (k, ms) in (("uid_map", u.uids), ("gid_map", u.gids)) }
