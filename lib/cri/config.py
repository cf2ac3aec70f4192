# ch-cri configuration: defaults, the TOML file, environment and options.

import ipaddress
import os
import tomllib
import urllib.parse

import imgref
import misc


## Constants ##

# Default upstream endpoint of registries whose API host differs from the
# name in image references.
UPSTREAM_DEFAULT = { "docker.io": "https://registry-1.docker.io" }

LOG_LEVELS = tuple(misc.LOG_LEVELS)

TOP_KEYS = { "socket", "socket_mode", "socket_group", "state_dir",
             "storage_dir", "log_level", "cgroup_driver", "pinned_images",
             "streaming", "registry", "network", "metrics", "cdi",
             "image_stores", "pull_progress_timeout", "pull_layers",
             "image_format", "squash_mounter" }
STREAMING_KEYS = { "address", "port", "token_ttl", "idle_timeout",
                   "allow_remote" }
NETWORK_KEYS = { "cni_conf_dir", "cni_bin_dirs", "subnet", "bridge",
                 "masquerade", "slirp4netns" }
CDI_KEYS = { "spec_dirs", "ldconfig", "oci_hooks" }
REGISTRY_KEYS = { "server", "upstream", "mirrors", "ca", "skip_verify",
                  "username", "password" }


## Exceptions ##

class Config_Error(Exception):
   "The configuration is invalid; the message names the key."


## Functions ##

def defaults():
   """Return the default settings for the effective user: system paths as
      root, per-user paths otherwise (so an HPC user needs no config)."""
   if (os.geteuid() == 0):
      socket = "/run/ch-cri/ch-cri.sock"
      state = "/var/lib/ch-cri"
      storage = "/var/lib/ch-cri/storage"
      config = "/etc/ch-cri/config.toml"
   else:
      home = os.path.expanduser("~")
      run = os.environ.get("XDG_RUNTIME_DIR") or "/tmp/ch-cri-%d" % os.getuid()
      socket = os.path.join(run, "ch-cri.sock")
      state = os.path.join(os.environ.get("XDG_STATE_HOME")
                           or os.path.join(home, ".local", "state"), "ch-cri")
      storage = (os.environ.get("CH_IMAGE_STORAGE")
                 or "/var/tmp/%s.ch" % misc.user_name())
      config = os.path.join(os.environ.get("XDG_CONFIG_HOME")
                            or os.path.join(home, ".config"),
                            "ch-cri", "config.toml")
   return { "config": config,
            "socket": socket,
            "socket_mode": 0o660,
            "socket_group": None,
            "state_dir": state,
            "storage_dir": storage,
            "log_level": "info",
            "cgroup_driver": "cgroupfs",
            "pinned_images": [],
            "image_stores": [],
            "pull_progress_timeout": 300,
            "pull_layers": 3,
            "image_format": "dir",
            "squash_mounter": "auto",
            "streaming": { "address": "127.0.0.1", "port": 0,
                           "token_ttl": 60, "idle_timeout": 4 * 3600,
                           "allow_remote": False },
            "network": { "cni_conf_dir": "/etc/cni/net.d",
                         "cni_bin_dirs": ["/usr/lib/cni", "/opt/cni/bin"],
                         "subnet": "10.85.0.0/16", "bridge": "chcri0",
                         "masquerade": True,
                         "slirp4netns": "slirp4netns" },
            "registry": {},
            "cdi": { "spec_dirs": ["/etc/cdi", "/var/run/cdi"],
                     "ldconfig": None, "oci_hooks": True },
            "metrics": None }


def endpoint_parse(url, where):
   """Return (host[:port], path prefix) of an https:// registry endpoint.

      >>> endpoint_parse("https://127.0.0.1:5443", "x")
      ('127.0.0.1:5443', '')
      >>> endpoint_parse("https://m.example/v2/pfx/", "x")
      ('m.example', 'pfx')
      >>> endpoint_parse("http://h", "registry.x.mirrors")
      Traceback (most recent call last):
      ...
      cri.config.Config_Error: registry.x.mirrors: Charliecloud pulls over HTTPS only: http://h
   """
   u = urllib.parse.urlsplit(url if "://" in url else "https://" + url)
   if (u.scheme != "https"):
      raise Config_Error("%s: Charliecloud pulls over HTTPS only: %s"
                         % (where, url))
   if (not u.netloc or u.query or u.fragment or "@" in u.netloc):
      raise Config_Error("%s: bad endpoint URL: %s" % (where, url))
   path = u.path.strip("/")
   if (path == "v2" or path.startswith("v2/")):
      path = path[2:].strip("/")
   return (u.netloc, path)


def load(path, required):
   """Return settings: defaults updated from the TOML file at path. A
      missing file is fine unless required (it was named explicitly)."""
   cfg = defaults()
   cfg["config"] = path
   try:
      with open(path, "rb") as fp:
         data = tomllib.load(fp)
   except FileNotFoundError:
      if (required):
         raise Config_Error("config file not found: %s" % path)
      return cfg
   except (OSError, tomllib.TOMLDecodeError) as x:
      raise Config_Error("can't read config file %s: %s" % (path, x))
   unknown(data, TOP_KEYS, "")
   for k in ("socket", "state_dir", "storage_dir", "socket_group",
             "cgroup_driver", "image_format", "squash_mounter"):
      if (k in data):
         cfg[k] = typed(data, k, str, k)
   if ("socket_mode" in data):
      cfg["socket_mode"] = mode_parse(data["socket_mode"])
   if ("log_level" in data):
      cfg["log_level"] = typed(data, "log_level", str, "log_level")
   if ("metrics" in data):
      cfg["metrics"] = typed(data, "metrics", str, "metrics") or None
   if ("pinned_images" in data):
      cfg["pinned_images"] = typed(data, "pinned_images", list,
                                   "pinned_images")
   if ("pull_progress_timeout" in data):
      cfg["pull_progress_timeout"] = typed(data, "pull_progress_timeout", int,
                                           "pull_progress_timeout")
   if ("pull_layers" in data):
      cfg["pull_layers"] = typed(data, "pull_layers", int, "pull_layers")
   if ("image_stores" in data):
      cfg["image_stores"] = typed(data, "image_stores", list, "image_stores")
   s = typed(data, "streaming", dict, "streaming") if "streaming" in data \
       else {}
   unknown(s, STREAMING_KEYS, "streaming.")
   for (k, t) in (("address", str), ("port", int), ("token_ttl", int),
                  ("idle_timeout", int), ("allow_remote", bool)):
      if (k in s):
         cfg["streaming"][k] = typed(s, k, t, "streaming." + k)
   n = typed(data, "network", dict, "network") if "network" in data else {}
   unknown(n, NETWORK_KEYS, "network.")
   for (k, t) in (("cni_conf_dir", str), ("cni_bin_dirs", list),
                  ("subnet", str), ("bridge", str), ("masquerade", bool),
                  ("slirp4netns", str)):
      if (k in n):
         cfg["network"][k] = typed(n, k, t, "network." + k)
   d = typed(data, "cdi", dict, "cdi") if "cdi" in data else {}
   unknown(d, CDI_KEYS, "cdi.")
   for (k, t) in (("spec_dirs", list), ("ldconfig", str),
                  ("oci_hooks", bool)):
      if (k in d):
         cfg["cdi"][k] = typed(d, k, t, "cdi." + k)
   regs = typed(data, "registry", dict, "registry") if "registry" in data \
          else {}
   for (name, r) in regs.items():
      where = "registry.%s" % name
      if (not isinstance(r, dict)):
         raise Config_Error("%s: must be a table" % where)
      unknown(r, REGISTRY_KEYS, where + ".")
      cfg["registry"][name] = r
   validate(cfg)
   return cfg


def metrics_parse(text):
   """Return (host, port) of metrics address text, "ADDR:PORT", "[V6]:PORT"
      or ":PORT"; ADDR is an IP address and defaults to 127.0.0.1, so that
      only an address the admin names opens metrics to other hosts.

      >>> metrics_parse("127.0.0.1:9712")
      ('127.0.0.1', 9712)
      >>> metrics_parse(":9712")
      ('127.0.0.1', 9712)
      >>> metrics_parse("[::1]:9712")
      ('::1', 9712)
      >>> metrics_parse("h:")
      Traceback (most recent call last):
      ...
      cri.config.Config_Error: metrics: not ADDR:PORT (ADDR an IP address): 'h:'
   """
   (host, _, port) = str(text).rpartition(":")
   if (host.startswith("[") and host.endswith("]")):
      host = host[1:-1]
   elif (":" in host):
      host = ""   # an IPv6 address needs its brackets
   else:
      host = host or "127.0.0.1"
   try:
      ipaddress.ip_address(host)
      port = int(port)
   except ValueError:
      raise Config_Error("metrics: not ADDR:PORT (ADDR an IP address): %r"
                         % text)
   if (not 0 <= port <= 65535):
      raise Config_Error("metrics: port out of range: %r" % text)
   return (host, port)


def mode_parse(v):
   """Return a socket mode from an int or an octal string.

      >>> oct(mode_parse("0660"))
      '0o660'
   """
   try:
      m = v if isinstance(v, int) else int(str(v), 8)
   except ValueError:
      raise Config_Error("socket_mode: not an octal mode: %r" % v)
   if (not 0 <= m <= 0o777):
      raise Config_Error("socket_mode: out of range: %r" % v)
   return m


def typed(table, key, type_, where):
   v = table[key]
   if (not isinstance(v, type_) or (type_ is int and isinstance(v, bool))):
      raise Config_Error("%s: must be %s, not %r"
                         % (where, type_.__name__, v))
   return v


def unknown(table, known, prefix):
   for k in table:
      if (k not in known):
         raise Config_Error("unknown config key: %s%s" % (prefix, k))


def validate(cfg):
   "Check settings that may come from several sources; raise Config_Error."
   if (cfg["log_level"] not in LOG_LEVELS):
      raise Config_Error("log_level: must be one of %s"
                         % ", ".join(LOG_LEVELS))
   if (cfg["cgroup_driver"] not in ("cgroupfs", "systemd")):
      raise Config_Error("cgroup_driver: must be cgroupfs or systemd")
   try:
      if (cfg["network"]["subnet"] != "kubelet"):
         ipaddress.ip_network(cfg["network"]["subnet"])
   except ValueError as x:
      raise Config_Error("network.subnet: %s (or \"kubelet\")" % x)
   if (not all(isinstance(d, str) for d in cfg["network"]["cni_bin_dirs"])):
      raise Config_Error("network.cni_bin_dirs: must be strings")
   if (not all(isinstance(d, str) and d.startswith("/")
               for d in cfg["cdi"]["spec_dirs"])):
      raise Config_Error("cdi.spec_dirs: must be absolute paths")
   if (cfg["cdi"]["ldconfig"] is not None
       and not cfg["cdi"]["ldconfig"].startswith("/")):
      raise Config_Error("cdi.ldconfig: must be an absolute path")
   if (cfg["metrics"] is not None):
      metrics_parse(cfg["metrics"])
   if (cfg["image_format"] not in ("dir", "squash")):
      raise Config_Error("image_format: must be dir or squash")
   if (cfg["squash_mounter"] not in ("auto", "kernel", "fuse")):
      raise Config_Error("squash_mounter: must be auto, kernel or fuse")
   if (not 1 <= cfg["pull_layers"] <= 32):
      raise Config_Error("pull_layers: must be 1 to 32")
   if (cfg["pull_progress_timeout"] < 1):
      raise Config_Error("pull_progress_timeout: must be at least 1 (s)")
   if (not all(isinstance(d, str) and d.startswith("/")
               for d in cfg["image_stores"])):
      raise Config_Error("image_stores: must be absolute paths")
   for i in cfg["pinned_images"]:
      try:
         imgref.parse(i)
      except (imgref.Ref_Error, TypeError) as x:
         raise Config_Error("pinned_images: %s" % x)
   for (name, r) in cfg["registry"].items():
      where = "registry.%s" % name
      for k in ("server", "ca", "username", "password"):
         if (k in r):
            typed(r, k, str, "%s.%s" % (where, k))
      for k in ("skip_verify", "upstream"):
         if (k in r):
            typed(r, k, bool, "%s.%s" % (where, k))
      if ("mirrors" in r):
         typed(r, "mirrors", list, where + ".mirrors")
      for (i, m) in enumerate(r.get("mirrors", [])):
         if (not isinstance(m, str)):
            raise Config_Error("%s.mirrors: must be strings" % where)
         endpoint_parse(m, "%s.mirrors[%d]" % (where, i))
      if (r.get("server")):
         endpoint_parse(r["server"], where + ".server")
      if ("ca" in r and not os.path.isfile(r["ca"])):
         raise Config_Error("%s.ca: no such file: %s" % (where, r["ca"]))


## Classes ##

class Endpoint:
   """One place to pull from: host (with port), path prefix, and the TLS
      and credential settings that apply to it."""

   __slots__ = ("host", "prefix", "ca", "skip_verify", "username",
                "password", "mirror_p")

   def __init__(self, host, prefix, settings, mirror_p):
      self.host = host
      self.prefix = prefix
      self.mirror_p = mirror_p
      self.ca = settings.get("ca")
      self.skip_verify = settings.get("skip_verify", False)
      self.username = settings.get("username")
      self.password = settings.get("password")

   def __repr__(self):
      return "Endpoint(%s/%s)" % (self.host, self.prefix)

   def src_ref(self, ref):
      """Return the reference string for ref at this endpoint.

         >>> e = Endpoint("127.0.0.1:5443", "", {}, True)
         >>> e.src_ref(imgref.parse("registry.k8s.io/pause:3.9"))
         '127.0.0.1:5443/pause:3.9'
      """
      path = ref.path if not self.prefix else self.prefix + "/" + ref.path
      s = "%s/%s" % (self.host, path)
      return s + ("@" + ref.digest if ref.digest else ":" + ref.tag)


class Registries:
   "Where to pull each image from: containerd hosts.toml semantics."

   def __init__(self, table):
      self.table = table

   def endpoints(self, ref):
      """Return the Endpoints to try for ref, in order: the registry's
         mirrors, then its upstream server (unless upstream = false). A
         host's own table (by
         host[:port]) supplies TLS and credentials wherever it is used."""
      r = self.table.get(ref.domain, {})
      out = []
      for m in r.get("mirrors", []):
         (host, prefix) = endpoint_parse(m, "mirror")
         out.append(Endpoint(host, prefix, self.table.get(host, {}), True))
      if (not r.get("upstream", True)):
         return out   # mirrors only (air-gapped sites)
      server = r.get("server") or UPSTREAM_DEFAULT.get(ref.domain,
                                                       "https://" + ref.domain)
      (host, prefix) = endpoint_parse(server, "server")
      settings = dict(self.table.get(host, {}))
      settings.update({ k: v for (k, v) in r.items()
                        if k in ("ca", "skip_verify", "username",
                                 "password") })
      out.append(Endpoint(host, prefix, settings, False))
      return out
