# Pod networking with CNI plugins: ch-cri runs a plugin chain's ADD and DEL
# (CNI spec 1.0) on the network namespace its keeper made for a pod.

import glob
import ipaddress
import json
import os
import threading

import fsutil
import misc


## Constants ##

CNI_VERSION = "1.0.0"
IFNAME = "eth0"
PLUGIN_TIMEOUT = 30
# What ch-cri runs when the configuration directory has no network: a
# bridge on the host with a private subnet, addresses from host-local (its
# data kept in ch-cri's state directory), and port mappings.
NEED = ("bridge", "host-local", "portmap")


## Globals ##

log = misc.log


## Exceptions ##

class Cni_Error(Exception):
   "A plugin failed; the message names the plugin and says why."


## Functions ##

def conflist_default(name, bridge, subnet, data_dir, masquerade=True):
   """Return the network ch-cri uses when none is configured.

      >>> c = conflist_default("n", "b0", "10.85.0.0/16", "/d")
      >>> [p["type"] for p in c["plugins"]]
      ['bridge', 'portmap']
   """
   return { "cniVersion": CNI_VERSION, "name": name,
            "plugins": [
               { "type": "bridge", "bridge": bridge, "isGateway": True,
                 "ipMasq": masquerade, "hairpinMode": True,
                 "ipam": { "type": "host-local",
                           "ranges": [[{ "subnet": subnet }]],
                           "routes": [{ "dst": "0.0.0.0/0" }],
                           "dataDir": data_dir } },
               { "type": "portmap", "snat": True,
                 "capabilities": { "portMappings": True } } ] }


def conflist_load(path):
   """Return the network in file path (a .conflist, or a single-plugin
      .conf made into a list); raise Cni_Error naming the file."""
   try:
      with open(path) as fp:
         d = json.load(fp)
   except (OSError, ValueError) as x:
      raise Cni_Error("can't read CNI config %s: %s" % (path, x))
   if (not isinstance(d, dict)):
      raise Cni_Error("CNI config %s: not an object" % path)
   if ("plugins" not in d):
      d = { "cniVersion": d.get("cniVersion", CNI_VERSION),
            "name": d.get("name", ""), "plugins": [d] }
   if (not d.get("name") or not isinstance(d["plugins"], list)
       or not all(isinstance(p, dict) and p.get("type")
                  for p in d["plugins"])):
      raise Cni_Error("CNI config %s: needs a name and plugins with a type"
                      % path)
   return d


def cidr_check(cidr):
   """Return CIDR (a pod CIDR from the kubelet) normalized, or raise
      ValueError saying what is wrong.

      >>> cidr_check("10.244.1.0/24")
      '10.244.1.0/24'
      >>> cidr_check("10.244.1.7/24")
      Traceback (most recent call last):
        ...
      ValueError: 10.244.1.7/24 has host bits set
      >>> cidr_check("10.0.0.0/31")
      Traceback (most recent call last):
        ...
      ValueError: 10.0.0.0/31: too small for pods (a /30 at least)
   """
   n = ipaddress.ip_network(cidr)
   if (n.num_addresses < 4):
      raise ValueError("%s: too small for pods (a /%d at least)"
                       % (cidr, 30 if n.version == 4 else 126))
   return str(n)


def port_mappings(pms):
   """Return the CNI portMappings runtime config for CRI PortMappings:
      only those with a host port (the others need no plugin).

      >>> class P: pass
      >>> p = P(); p.host_port = 8080; p.container_port = 80
      >>> p.protocol = 0; p.host_ip = ""
      >>> port_mappings([p])
      [{'hostPort': 8080, 'containerPort': 80, 'protocol': 'tcp'}]
   """
   out = []
   for p in pms:
      if (p.host_port <= 0):
         continue
      m = { "hostPort": p.host_port, "containerPort": p.container_port,
            "protocol": ("tcp", "udp", "sctp")[p.protocol] }
      if (p.host_ip):
         m["hostIP"] = p.host_ip
      out.append(m)
   return out


def result_ip(result):
   """Return the first address (without prefix length) of a CNI result,
      IPv4 first, and the others.

      >>> result_ip({"ips": [{"address": "fd00::5/64"},
      ...                    {"address": "10.85.0.5/16"}]})
      ('10.85.0.5', ['fd00::5'])
   """
   ips = [str(ipaddress.ip_interface(i["address"]).ip)
          for i in result.get("ips", []) if i.get("address")]
   ips.sort(key=lambda a: ":" in a)
   return (ips[0] if ips else "", ips[1:])


## Classes ##

class Network:
   """The pod network: a CNI plugin chain, found in conf_dir (the first
      .conflist or .conf in name order) or ch-cri's default. ready is
      False, with reason, when pods can have no network."""

   def __init__(self, conf_dir, bin_dirs, state_dir, subnet, bridge,
                masquerade=True):
      self.bin_dirs = [d for d in bin_dirs if os.path.isdir(d)]
      self.data_dir = os.path.join(state_dir, "cni")
      self.conf = None
      self.reason = None
      self.builtin = False     # our default network, not a config file's
      self.bridge = bridge
      self.masquerade = masquerade
      self.lock = threading.Lock()
      if (os.geteuid() != 0):
         self.reason = ("pod networks need root (CNI plugins); use "
                        "hostNetwork pods")
         return
      files = sorted(glob.glob(os.path.join(conf_dir, "*.conflist"))
                     + glob.glob(os.path.join(conf_dir, "*.conf")))
      try:
         if (files):
            self.conf = conflist_load(files[0])
            self.source = files[0]
         else:
            self.builtin = True
            for t in NEED:
               self.plugin_path(t)
            # The kubelet's pod CIDR, when it gave one before a restart.
            try:
               subnet = cidr_check(fsutil.json_read(
                  self.pod_cidr_path)["pod_cidr"])
            except (FileNotFoundError, fsutil.State_Error, KeyError,
                    TypeError, ValueError):
               pass
            if (subnet == "kubelet"):
               self.subnet = None
               self.reason = ("waiting for the kubelet's pod CIDR "
                              "(network.subnet = \"kubelet\")")
            else:
               self.builtin_set(subnet)
            return
         for p in self.conf["plugins"]:
            self.plugin_path(p["type"])
            if (p.get("ipam", {}).get("type")):
               self.plugin_path(p["ipam"]["type"])
      except Cni_Error as x:
         self.conf = None
         self.builtin = False
         self.reason = str(x)

   @property
   def ready(self):
      return self.conf is not None

   @property
   def pod_cidr_path(self):
      return os.path.join(self.data_dir, "pod-cidr.json")

   def builtin_set(self, subnet):
      self.subnet = subnet
      self.reason = None
      self.conf = conflist_default("ch-cri", self.bridge, subnet,
                                   os.path.join(self.data_dir, "ipam"),
                                   self.masquerade)
      self.source = "built-in default (%s on %s)" % (subnet, self.bridge)

   def pod_cidr_set(self, cidr):
      """Take the pod CIDR the kubelet gives (UpdateRuntimeConfig) for the
         built-in network: new pods get addresses from it (pods running
         keep theirs), and it is kept for restarts. A network from a CNI
         config file is left alone (its IPAM says where addresses come
         from). Raise ValueError for a bad CIDR. Return whether the
         network changed."""
      cidr = cidr_check(cidr)
      with self.lock:
         if (not self.builtin):
            log.info("pod CIDR %s from the kubelet not used: %s", cidr,
                     self.reason or "network from %s" % self.source)
            return False
         if (cidr == self.subnet):
            return False
         os.makedirs(self.data_dir, exist_ok=True)
         fsutil.json_write_atomic(self.pod_cidr_path, { "pod_cidr": cidr })
         old = self.subnet
         self.builtin_set(cidr)
      log.info("pod CIDR from the kubelet: %s (was %s)", cidr, old)
      return True

   def plugin_path(self, type_):
      if (not type_ or "/" in type_ or type_.startswith(".")):
         raise Cni_Error("bad CNI plugin type: %r" % type_)
      for d in self.bin_dirs:
         p = os.path.join(d, type_)
         if (os.access(p, os.X_OK)):
            return p
      raise Cni_Error("CNI plugin %s not found in %s (Debian: install "
                      "containernetworking-plugins)"
                      % (type_, ":".join(self.bin_dirs) or "no directory"))

   def plugin_run(self, cmd, net, pod_id, netns, plugin, prev, port_maps):
      "Run one plugin of network net; return its result."
      conf = dict(plugin)
      conf["cniVersion"] = net.get("cniVersion", CNI_VERSION)
      conf["name"] = net["name"]
      if (prev is not None):
         conf["prevResult"] = prev
      if (plugin.get("capabilities", {}).get("portMappings")):
         conf["runtimeConfig"] = { "portMappings": port_maps }
      env = { "CNI_COMMAND": cmd, "CNI_CONTAINERID": pod_id,
              "CNI_NETNS": netns, "CNI_IFNAME": IFNAME,
              "CNI_PATH": ":".join(self.bin_dirs),
              "PATH": "/usr/sbin:/usr/bin:/sbin:/bin" }
      argv = [self.plugin_path(plugin["type"])]
      try:
         cp = misc.cmd_run(argv, PLUGIN_TIMEOUT, env=env,
                           input_=json.dumps(conf), check=False)
      except misc.Command_Error as x:
         raise Cni_Error("CNI %s %s: %s" % (plugin["type"], cmd, x))
      try:
         out = json.loads(cp.stdout) if cp.stdout.strip() else {}
      except ValueError:
         out = {}
      if (cp.returncode != 0):
         msg = (out.get("msg") or misc.stderr_tail(cp.stderr)
                or "exit code %d" % cp.returncode)
         if (out.get("details")):
            msg += " (%s)" % out["details"]
         raise Cni_Error("CNI %s %s: %s" % (plugin["type"], cmd, msg))
      return out

   def add(self, pod_id, netns, pms, hold=None):
      """Connect netns to the network; return the CNI result. On failure
         undo what was done and raise Cni_Error. (hold is for
         slirp.Slirp's interface.)"""
      pm = port_mappings(pms)
      prev = None
      conf = self.conf      # one network throughout, if the CIDR changes
      try:
         for p in conf["plugins"]:
            prev = self.plugin_run("ADD", conf, pod_id, netns, p, prev, pm)
      except Cni_Error:
         self.delete(pod_id, netns, { "result": prev, "port_maps": pm,
                                      "conf": conf })
         raise
      return { "result": prev, "port_maps": pm, "conf": conf }

   def delete(self, pod_id, netns, saved):
      """Disconnect; saved is what add() returned (its network, so a
         changed configuration still cleans up the old one). Log, don't
         raise: a pod must be removable."""
      conf = saved.get("conf") or self.conf
      if (conf is None):
         return
      for p in reversed(conf["plugins"]):
         try:
            self.plugin_run("DEL", conf, pod_id, netns or "", p,
                            saved.get("result"), saved.get("port_maps", []))
         except Cni_Error as x:
            log.warning("pod %s: %s", pod_id, x)

   def save_path(self, pod_dir):
      return os.path.join(pod_dir, "network.json")

   def saved(self, pod_dir):
      try:
         return fsutil.json_read(self.save_path(pod_dir))
      except (FileNotFoundError, fsutil.State_Error):
         return None
