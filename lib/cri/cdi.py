# Container Device Interface (CDI): read vendors' device specs and resolve
# device names such as nvidia.com/gpu=0 into the container edits they ask for.

import copy
import json
import os
import re

import yaml

import misc
import cri.errors as err


## Constants ##

# Where specs live, lowest priority first (CDI's defaults).
SPEC_DIRS = ["/etc/cdi", "/var/run/cdi"]
SPEC_EXTS = (".json", ".yaml", ".yml")

# Spec versions we read, oldest first. A spec must declare at least the
# version that brought each feature it uses, as the reference library checks.
VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0")

ANNOTATION_PREFIX = "cdi.k8s.io/"
HOOK_NAMES = { "prestart", "createRuntime", "createContainer",
               "startContainer", "poststart", "poststop" }

# Fields of each object, as written; keys match them ignoring case, as Go's
# JSON decoder (which the reference library uses) does.
FIELDS = { k: v.split() for (k, v) in {
   "spec": "cdiVersion kind annotations devices containerEdits",
   "device": "name annotations containerEdits",
   "edits": "env deviceNodes mounts hooks intelRdt additionalGids",
   "node": "path hostPath type major minor fileMode permissions uid gid",
   "mount": "hostPath containerPath options type",
   "hook": "hookName path args env timeout" }.items() }

# vendor.com/class and device names, per the CDI parser.
KIND_RE = re.compile(r"([A-Za-z](?:[\w.-]*[A-Za-z0-9])?)"
                     r"/([A-Za-z](?:[\w.-]*[A-Za-z0-9])?)", re.ASCII)
NAME_RE = re.compile(r"[A-Za-z0-9](?:[\w.:-]*[A-Za-z0-9])?", re.ASCII)

NVIDIA_KIND = "nvidia.com/gpu"
NVIDIA_ENV = "NVIDIA_VISIBLE_DEVICES"
NVIDIA_NONE = { "", "void", "none" }

# NVIDIA hooks ch-cri emulates: subcommand -> {flag: takes a list}. A hook
# with any other flag is left as an OCI hook: we would not know what the
# flag changes.
NVIDIA_HOOKS = { "create-symlinks": { "link": True },
                 "update-ldcache": { "folder": True,
                                     "ldconfig-path": False },
                 "enable-cuda-compat": { "host-driver-version": False } }
NVIDIA_HOOK_PROGRAMS = { "nvidia-cdi-hook", "nvidia-ctk" }

# Where the host's ldconfig is looked for (update-ldcache runs it).
LDCONFIG_PATHS = ("/sbin/ldconfig", "/usr/sbin/ldconfig")

# Hook names by when they run; the keeper runs the first two, in this
# order, before the container's process starts (see hooks_plan()).
HOOKS_BEFORE = ("prestart", "createRuntime", "createContainer")

# Longest one hook (ldconfig included) may run, in seconds.
HOOK_TIMEOUT = 30


## Globals ##

log = misc.log

# Settings from ch-cri's configuration ([cdi]; see configure()).
spec_dirs = list(SPEC_DIRS)
ldconfig = None    # the host's ldconfig; None: the first of LDCONFIG_PATHS
oci_hooks = True   # run hooks that ch-cri does not emulate, as OCI hooks


## Exceptions ##

class Spec_Error(Exception):
   "A CDI spec that does not parse or is invalid (logged and skipped)."


class Unresolvable(err.Invalid_Argument):
   "A requested CDI device that no loaded spec defines."


## Functions ##

def edits_empty():
   "Return empty merged container edits, in CDI's order."
   return { "env": [], "deviceNodes": [], "mounts": [], "hooks": [],
            "additionalGIDs": [] }


def hook_classify(hook):
   """Return (op, info) for CDI hook dict hook: op names the NVIDIA hook to
      emulate, with info its parsed arguments, or is "oci" with info the
      hook itself. Nothing is run.

      >>> hook_classify({"hookName": "createContainer",
      ...                "path": "/usr/bin/nvidia-cdi-hook",
      ...                "args": ["nvidia-cdi-hook", "update-ldcache",
      ...                         "--folder", "/a", "--folder=/b,/c"]})
      ('update-ldcache', {'folder': ['/a', '/b', '/c'], 'ldconfig-path': None})
      >>> hook_classify({"path": "/bin/x", "args": ["nvidia-ctk", "hook",
      ...                "enable-cuda-compat", "--host-driver-version=5.1"]})
      ('enable-cuda-compat', {'host-driver-version': '5.1'})
      >>> hook_classify({"path": "/bin/x", "args": ["nvidia-cdi-hook",
      ...                "create-symlinks", "--link", "a::/b"]})
      ('create-symlinks', {'link': [('a', '/b')]})
   """
   args = list(hook.get("args") or [])
   prog = os.path.basename(hook.get("path", ""))
   if (prog not in NVIDIA_HOOK_PROGRAMS and args):
      prog = os.path.basename(args[0])
   if (prog == "nvidia-ctk"):
      if (args[1:2] != ["hook"]):
         return ("oci", hook)
      args = args[1:]  # "nvidia-ctk hook SUB ..." is "nvidia-cdi-hook SUB"
   if (prog not in NVIDIA_HOOK_PROGRAMS or len(args) < 2
       or args[1] not in NVIDIA_HOOKS):
      return ("oci", hook)
   op = args[1]
   flags = NVIDIA_HOOKS[op]
   info = { f: ([] if list_p else None) for (f, list_p) in flags.items() }
   rest = args[2:]
   while (rest):
      a = rest.pop(0)
      (name, eq, value) = a.lstrip("-").partition("=")
      if (not a.startswith("-") or name not in flags or (not eq and not rest)):
         log.log(misc.LOG_LEVELS["verbose"], "CDI hook %s: argument %r not "
                 "understood; leaving it as an OCI hook", op, a)
         return ("oci", hook)
      if (not eq):
         value = rest.pop(0)
      if (flags[name]):
         # urfave/cli, which the hooks use, splits list flags at commas
         info[name] += [v for v in value.split(",") if v]
      else:
         info[name] = value
   if (op == "create-symlinks"):
      links = [l.split("::") for l in info["link"]]
      if (any(len(l) != 2 or "" in l for l in links)):
         return ("oci", hook)
      info["link"] = [tuple(l) for l in links]
   return (op, info)


def hooks_classify(hooks):
   "Return hook_classify() of each hook in hooks, in order."
   return [hook_classify(h) for h in hooks]


def configure(table):
   """Take the settings of ch-cri's [cdi] configuration table (keys
      spec_dirs, ldconfig, oci_hooks; all optional)."""
   global spec_dirs, ldconfig, oci_hooks
   spec_dirs = list(table.get("spec_dirs", SPEC_DIRS))
   ldconfig = table.get("ldconfig") or None
   oci_hooks = bool(table.get("oci_hooks", True))


def ldconfig_find():
   "Return the host's ldconfig to run for update-ldcache, or None."
   for p in ([ldconfig] if ldconfig else LDCONFIG_PATHS):
      if (os.path.isfile(p) and os.access(p, os.X_OK)):
         return p
   return None


def hook_trusted(path):
   """Return None if ch-cri may run hook program path (an executable
      regular file that root or ch-cri's own user owns, which nobody else
      may write, in a directory likewise), else why not."""
   try:
      for p in (path, os.path.dirname(path)):
         st = os.stat(p)
         if (st.st_uid not in (0, os.geteuid())):
            return "%s is owned by uid %d" % (p, st.st_uid)
         if (st.st_mode & 0o022):
            return "%s is writable by group or others" % p
   except OSError as x:
      return "%s: %s" % (path, x.strerror)
   if (not os.path.isfile(path) or not os.access(path, os.X_OK)):
      return "%s is not an executable file" % path
   return None


def hooks_plan(hooks, ctr):
   """Return what the keeper does for CDI hooks (dicts) of container ctr
      (a name for logs), in the order it does it: ["symlinks", [[target,
      link], ...]], ["cuda_compat", host driver version], ["ldcache",
      {"ldconfig": host path, "folders": [...]}] for the NVIDIA hooks ch-cri
      emulates, and ["oci", {"path", "args", "env", "timeout"}] for others
      it runs as OCI hooks (state JSON on stdin). Hooks it does neither for
      are logged, naming them, and left out. prestart and createRuntime
      hooks come first, then createContainer ones; later hooks
      (startContainer, poststart, poststop) are never run.

      >>> hooks_plan([{"hookName": "createContainer",
      ...    "path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook",
      ...    "create-symlinks", "--link", "libcuda.so.1::/l/libcuda.so"]}],
      ...    "c")
      [['symlinks', [['libcuda.so.1', '/l/libcuda.so']]]]
   """
   plan = list()
   order = { n: i for (i, n) in enumerate(HOOKS_BEFORE) }
   hooks = sorted(hooks, key=lambda h: order.get(h.get("hookName"),
                                                 len(order)))
   for (h, (op, info)) in zip(hooks, hooks_classify(hooks)):
      words = " ".join([h.get("path", "?")] + (h.get("args") or [])[1:2])
      if (h.get("hookName") not in order):
         log.warning("container %s: CDI hook %s (%s) not run: ch-cri runs "
                     "no hook once the container is created", ctr, words,
                     h.get("hookName"))
      elif (op == "create-symlinks"):
         plan.append(["symlinks", [list(l) for l in info["link"]]])
      elif (op == "enable-cuda-compat"):
         if (info["host-driver-version"]):
            plan.append(["cuda_compat", info["host-driver-version"]])
      elif (op == "update-ldcache"):
         prog = ldconfig_find()
         if (prog is None):
            log.warning("container %s: CDI hook %s not run: no ldconfig at "
                        "%s (set [cdi] ldconfig)", ctr, words,
                        " or ".join([ldconfig] if ldconfig
                                    else LDCONFIG_PATHS))
         else:
            plan.append(["ldcache", { "ldconfig": prog,
                                      "folders": info["folder"] }])
      elif (os.path.basename(h.get("path", "")) in NVIDIA_HOOK_PROGRAMS):
         # Its other hooks read an OCI bundle ch-cri does not have, or
         # change what ch-cri's containers cannot (see ch-cri(1)).
         log.info("container %s: CDI hook %s skipped (not needed by, or "
                  "not possible in, a Charliecloud container)", ctr, words)
      elif (not oci_hooks):
         log.warning("container %s: CDI hook %s not run ([cdi] oci_hooks "
                     "is off)", ctr, words)
      else:
         why = hook_trusted(h.get("path", ""))
         if (why is not None):
            log.warning("container %s: CDI hook %s not run: %s", ctr,
                        words, why)
            continue
         plan.append(["oci", { "path": h["path"],
                               "args": list(h.get("args") or [h["path"]]),
                               "env": list(h.get("env") or []),
                               "timeout": min(h.get("timeout")
                                              or HOOK_TIMEOUT,
                                              HOOK_TIMEOUT) }])
   return plan


def name_parse(qname):
   """Return (kind, name) of fully-qualified CDI device name qname, or None
      if it is not one.

      >>> name_parse("nvidia.com/gpu=0")
      ('nvidia.com/gpu', '0')
      >>> name_parse("vendor.com/class=GPU-f8a8:1.x")
      ('vendor.com/class', 'GPU-f8a8:1.x')
      >>> [name_parse(n) for n in ("gpu=0", "a.com/b=", "a.com/b/c=d",
      ...                          "a.com/b=-x", "1a.com/b=x")]
      [None, None, None, None, None]
   """
   (kind, eq, name) = qname.partition("=")
   if (eq and KIND_RE.fullmatch(kind) and NAME_RE.fullmatch(name)):
      return (kind, name)
   return None


def names_requested(config, cache=None):
   """Return the CDI devices ContainerConfig-like config asks for, as
      (qualified name, field) pairs, each name once, first request first:
      config.CDI_devices, then annotations "cdi.k8s.io/*" (comma-separated
      names), then NVIDIA_VISIBLE_DEVICES from config.envs (see
      nvidia_names(); only with cache given)."""
   reqs = list()
   for (i, d) in enumerate(getattr(config, "CDI_devices", ())):
      reqs.append((getattr(d, "name", d), "config.CDI_devices[%d]" % i))
   annots = getattr(config, "annotations", {})
   for k in sorted(k for k in annots if k.startswith(ANNOTATION_PREFIX)):
      for n in annots[k].split(","):
         if (n.strip()):
            reqs.append((n.strip(), "config.annotations[%s]" % k))
   # Only the pod's own envs, never the image's: CUDA images set
   # NVIDIA_VISIBLE_DEVICES=all and would get every GPU on the node.
   env = [(i, e.value) for (i, e) in enumerate(getattr(config, "envs", ()))
          if e.key == NVIDIA_ENV]
   if (env and cache is not None):
      (i, value) = env[-1]
      for n in nvidia_names(value, cache):
         reqs.append((n, "config.envs[%d]" % i))
   first = dict()  # name -> field of its first request, in order
   for (n, f) in reqs:
      first.setdefault(n, f)
   return list(first.items())


def nvidia_names(value, cache):
   """Return the CDI device names an NVIDIA_VISIBLE_DEVICES value stands
      for ("0,1", "all", GPU UUIDs), if cache has a spec for nvidia.com/gpu;
      "void", "none" and "" stand for none. This is how device plugins that
      pass GPUs by environment (NVIDIA's default) reach a CDI runtime."""
   if (NVIDIA_KIND not in cache.kinds or value.strip() in NVIDIA_NONE):
      return []
   return ["%s=%s" % (NVIDIA_KIND, v.strip())
           for v in value.split(",") if v.strip()]


def spec_parse(text, path):
   """Return the Spec in text, read from file path (whose extension says
      JSON or YAML). Raise Spec_Error if it does not parse or is invalid."""
   try:
      if (path.endswith(".json")):
         raw = json.loads(text)
      else:
         raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader",
                                              yaml.SafeLoader))
   except json.JSONDecodeError as x:
      raise Spec_Error("line %d: %s" % (x.lineno, x.msg))
   except yaml.MarkedYAMLError as x:
      mark = x.problem_mark or x.context_mark
      raise Spec_Error("line %d, column %d: %s%s"
                       % (mark.line + 1, mark.column + 1, x.problem,
                          " (%s)" % x.context if x.context else ""))
   except yaml.YAMLError as x:
      raise Spec_Error(str(x))
   need = ["0.3.0"]  # versions the features used need
   f = _fields(raw, "spec", "spec")
   version = f.get("cdiVersion")
   if (version not in VERSIONS):
      raise Spec_Error("cdiVersion: unknown: %r (ch-cri reads %s to %s)"
                       % (version, VERSIONS[0], VERSIONS[-1]))
   kind = f.get("kind")
   if (kind is None):
      raise Spec_Error("kind: missing")
   m = KIND_RE.fullmatch(kind) if isinstance(kind, str) else None
   if (m is None):
      raise Spec_Error("kind: not vendor.com/class: %r" % (kind,))
   if ("." in m.group(2)):
      need.append("0.6.0")
   _annotations(f.get("annotations"), "annotations", need)
   spec = Spec(path, version, kind,
               _edits(f.get("containerEdits"), "containerEdits", need))
   devs = _list(f.get("devices"), "devices")
   if (not devs):
      raise Spec_Error("devices: missing or empty")
   for (i, d) in enumerate(devs):
      where = "devices[%d]" % i
      d = _fields(d, "device", where)
      name = d.get("name")
      if (not isinstance(name, str) or not NAME_RE.fullmatch(name)):
         raise Spec_Error("%s.name: bad device name: %r" % (where, name))
      if (name in spec.devices):
         raise Spec_Error("%s: duplicate device %s" % (where, name))
      if (not name[0].isalpha()):
         need.append("0.5.0")
      _annotations(d.get("annotations"), where + ".annotations", need)
      edits = _edits(d.get("containerEdits"), where + ".containerEdits",
                     need)
      if (not any(edits.values())):
         raise Spec_Error("%s.containerEdits: empty" % where)
      spec.devices[name] = edits
   need = max(need, key=VERSIONS.index)
   if (VERSIONS.index(need) > VERSIONS.index(version)):
      raise Spec_Error("cdiVersion %s too old for the features used: "
                       "needs %s" % (version, need))
   return spec


def specs_load(dirs=None):
   """Return a Cache of the devices in the CDI specs of dirs (default
      spec_dirs, from the configuration). A spec that cannot be read or is
      invalid is logged and skipped; a missing directory is no error."""
   cache = Cache()
   # A later directory has priority: a device it defines replaces the same
   # device of an earlier one, as in CDI's reference cache, so specs
   # generated at boot (/var/run/cdi) beat static ones (/etc/cdi). Two specs
   # in one directory defining the same device conflict: neither is used.
   for d in (spec_dirs if dirs is None else dirs):
      try:
         files = sorted(f for f in os.listdir(d) if f.endswith(SPEC_EXTS))
      except OSError as x:
         log.log(misc.LOG_LEVELS["verbose"], "CDI: skipping %s: %s",
                 d, x.strerror)
         continue
      here = dict()
      for f in files:
         path = os.path.join(d, f)
         if (not os.path.isfile(path)):
            continue
         try:
            with open(path, encoding="utf-8") as fp:
               spec = spec_parse(fp.read(), path)
         except (OSError, UnicodeDecodeError, Spec_Error) as x:
            log.warning("CDI spec %s: skipped: %s", path, x)
            continue
         cache.kinds.add(spec.kind)
         for name in spec.devices:
            q = "%s=%s" % (spec.kind, name)
            here.setdefault(q, []).append(spec)
      for (q, specs) in here.items():
         if (len(specs) == 1):
            cache.devices[q] = specs[0]
            cache.conflicts.pop(q, None)
         else:
            paths = " and ".join(s.path for s in specs)
            log.warning("CDI device %s: defined in both %s: not used",
                        q, paths)
            cache.devices.pop(q, None)
            cache.conflicts[q] = "defined in both %s" % paths
   return cache


def _annotations(a, where, need):
   if (a is not None and (not isinstance(a, dict) or not all(
         isinstance(v, str) for v in list(a) + list(a.values())))):
      raise Spec_Error("%s: not a map of strings" % where)
   if (a):
      need.append("0.6.0")


def _edits(raw, where, need):
   "Return the edits dict raw, checked and with defaults filled."
   f = _fields(raw or {}, "edits", where)
   def part(k):
      return _list(f.get(k), "%s.%s" % (where, k))
   e = edits_empty()
   e["intelRdt"] = f.get("intelRdt")
   if (e["intelRdt"] is not None):
      need.append("0.7.0")
      if (not isinstance(e["intelRdt"], dict)):
         raise Spec_Error("%s.intelRdt: not a map" % where)
   e["env"] = _strs(f.get("env"), where + ".env", True)
   for (i, n) in enumerate(part("deviceNodes")):
      w = "%s.deviceNodes[%d]" % (where, i)
      n = _fields(n, "node", w)
      if (_str(n, "hostPath", w)):
         need.append("0.5.0")
      node = { "path": _str(n, "path", w, True), "type": _str(n, "type", w),
               "permissions": _str(n, "permissions", w) or None }
      node["hostPath"] = n.get("hostPath") or node["path"]
      for k in ("major", "minor", "fileMode", "uid", "gid"):
         node[k] = _int(n.get(k), "%s.%s" % (w, k))
      if (node["type"] not in (None, "", "b", "c", "u", "p")):
         raise Spec_Error("%s.type: bad: %r" % (w, node["type"]))
      if (not re.fullmatch(r"[rwm]*", node["permissions"] or "")):
         raise Spec_Error("%s.permissions: bad: %r" % (w, n["permissions"]))
      e["deviceNodes"].append(node)
   for (i, m) in enumerate(part("mounts")):
      w = "%s.mounts[%d]" % (where, i)
      m = _fields(m, "mount", w)
      if (_str(m, "type", w)):
         need.append("0.4.0")
      e["mounts"].append({ "hostPath": _str(m, "hostPath", w, True),
                           "containerPath": _str(m, "containerPath", w, True),
                           "options": _strs(m.get("options"), w + ".options"),
                           "type": m.get("type") or None })
   for (i, h) in enumerate(part("hooks")):
      w = "%s.hooks[%d]" % (where, i)
      h = _fields(h, "hook", w)
      if (h.get("hookName") not in HOOK_NAMES):
         raise Spec_Error("%s.hookName: bad: %r" % (w, h.get("hookName")))
      timeout = _int(h.get("timeout"), w + ".timeout")
      if (timeout == 0):
         raise Spec_Error("%s.timeout: not positive: 0" % w)
      e["hooks"].append({ "hookName": h["hookName"],
                          "path": _str(h, "path", w, True),
                          "args": _strs(h.get("args"), w + ".args"),
                          "env": _strs(h.get("env"), w + ".env", True),
                          "timeout": timeout })
   e["additionalGIDs"] = [_int(g, where + ".additionalGids")
                          for g in part("additionalGids")]
   return e


def _fields(raw, what, where):
   "Return map raw with its keys spelled as FIELDS[what] says."
   if (not isinstance(raw, dict)):
      raise Spec_Error("%s: not a map" % where)
   names = { k.lower(): k for k in FIELDS[what] }
   out = dict()
   for (k, v) in raw.items():
      if (str(k).lower() not in names):
         raise Spec_Error("%s: unknown field %r" % (where, k))
      out[names[str(k).lower()]] = v
   return out


def _int(v, where):
   if (v is not None and (isinstance(v, bool) or not isinstance(v, int)
                          or v < 0)):
      raise Spec_Error("%s: not a non-negative integer: %r" % (where, v))
   return v


def _list(v, where):
   if (v is not None and not isinstance(v, list)):
      raise Spec_Error("%s: not a list: %r" % (where, v))
   return v or []


def _str(d, key, where, required=False):
   "Return d[key], which must be a string and, if required, not empty."
   v = d.get(key)
   if ((v is not None and not isinstance(v, str)) or (required and not v)):
      raise Spec_Error("%s.%s: %s" % (where, key, "not a string: %r" % v
                                      if v else "missing"))
   return v


def _strs(v, where, env_p=False):
   "Return list of strings v (environment variables NAME=VALUE if env_p)."
   for s in _list(v, where):
      if (not isinstance(s, str)):
         raise Spec_Error("%s: not a list of strings" % where)
      if (env_p and s.find("=") <= 0):
         raise Spec_Error("%s: not NAME=VALUE: %r" % (where, s))
   return list(v or [])


## Classes ##

class Cache:
   """The devices of the CDI specs read by specs_load(). Not changed after
      loading, so RPC threads can share it without a lock."""

   def __init__(self):
      self.conflicts = dict()  # qualified name -> why it is not used
      self.devices = dict()    # qualified name -> Spec defining it
      self.kinds = set()       # kinds of the specs loaded

   def resolve(self, requests):
      """Return the container edits of requests, (qualified name, field)
         pairs as names_requested() returns: each spec's own edits once,
         before those of its first device requested, then each device's.
         As CDI runtimes do, a later variable, device node or mount with
         the same name or path replaces an earlier one; mounts are sorted
         parents first. Raise Unresolvable naming the first unknown one."""
      out = edits_empty()
      specs_seen = set()
      for (q, field) in requests:
         spec = self.devices.get(q)
         if (spec is None):
            raise Unresolvable("%s: unresolvable CDI device %s%s"
                               % (field, q, self._hint(q)))
         if (id(spec) not in specs_seen):
            specs_seen.add(id(spec))
            self._merge(out, spec.edits, "%s (%s)" % (spec.kind, spec.path))
         self._merge(out, spec.devices[name_parse(q)[1]], q)
      out["mounts"].sort(key=lambda m: (os.path.normpath(
         m["containerPath"]).count("/"), m["containerPath"]))
      return out

   def _hint(self, q):
      "Return why device q is unknown, if we know, for error messages."
      parsed = name_parse(q)
      if (parsed is None):
         return " (not a fully-qualified name vendor.com/class=name)"
      if (q in self.conflicts):
         return " (%s)" % self.conflicts[q]
      if (parsed[0] not in self.kinds):
         return " (no CDI spec for %s loaded)" % parsed[0]
      return ""

   def _merge(self, out, e, what):
      if (e.get("intelRdt") is not None):
         log.warning("CDI %s: ignoring intelRdt: not supported", what)
      for v in e["env"]:
         key = v.split("=", 1)[0] + "="
         old = [i for (i, o) in enumerate(out["env"]) if o.startswith(key)]
         if (old):
            out["env"][old[0]] = v
         else:
            out["env"].append(v)
      for (kind, key) in (("deviceNodes", "path"),
                          ("mounts", "containerPath")):
         for x in e[kind]:
            out[kind] = [o for o in out[kind] if o[key] != x[key]]
            out[kind].append(copy.deepcopy(x))
      out["hooks"] += copy.deepcopy(e["hooks"])
      for g in e["additionalGIDs"]:
         if (g != 0 and g not in out["additionalGIDs"]):
            out["additionalGIDs"].append(g)


class Spec:
   "One CDI spec file: its kind, its own edits, and its devices' edits."

   def __init__(self, path, version, kind, edits):
      self.devices = dict()  # device name -> edits dict
      self.edits = edits
      self.kind = kind
      self.path = path
      self.version = version
