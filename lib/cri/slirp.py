# Pod networking for an unprivileged ch-cri: slirp4netns, a user-mode
# network stack, gives a pod's network namespace an interface with
# outbound connectivity, and forwards host ports into it.
#
# One slirp4netns per pod, detached from ch-cri. Its --exit-fd is a pipe
# whose only write end the pod's keeper holds, so it lives exactly as long
# as the keeper (across ch-cri restarts) and needs no PID bookkeeping.

import json
import os
import select
import shutil
import socket
import subprocess
import time

import misc
from cri.cni import Cni_Error, port_mappings


## Constants ##

IFNAME = "eth0"
MTU = 65520
# slirp4netns's fixed addresses in its default 10.0.2.0/24.
POD_IP = "10.0.2.100"
GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
READY_TIMEOUT = 10
API_TIMEOUT = 5


## Globals ##

log = misc.log


## Exceptions ##

class Port_Error(Cni_Error):
   "A port mapping cannot be made; the message names port_mappings."


## Functions ##

def resolv_fix(text):
   """Return resolv.conf text for a slirp4netns pod: loopback name servers
      (e.g. systemd-resolved's 127.0.0.53), unreachable from the pod, are
      replaced by slirp4netns's DNS forwarder.

      >>> resolv_fix("nameserver 127.0.0.53\\nsearch x\\n")
      'nameserver 10.0.2.3\\nsearch x\\n'
      >>> resolv_fix("nameserver 192.0.2.1\\n")
      'nameserver 192.0.2.1\\n'
   """
   out = []
   for line in text.splitlines(keepends=True):
      f = line.split()
      if (len(f) >= 2 and f[0] == "nameserver"
          and (f[1].startswith("127.") or f[1] == "::1")):
         line = "nameserver %s\n" % DNS
      out.append(line)
   return "".join(out)


def hostfwd_requests(pm):
   """Return the slirp4netns API requests for CNI-style port mappings pm.

      >>> hostfwd_requests([{"hostPort": 8080, "containerPort": 80,
      ...                    "protocol": "tcp"}])[0]["arguments"]["host_addr"]
      '0.0.0.0'
   """
   out = []
   for m in pm:
      if (m["protocol"] not in ("tcp", "udp")):
         raise Port_Error("port_mappings: protocol %s is not supported by "
                          "slirp4netns (tcp and udp only)"
                          % m["protocol"].upper())
      out.append({ "execute": "add_hostfwd",
                   "arguments": { "proto": m["protocol"],
                                  "host_addr": m.get("hostIP", "0.0.0.0"),
                                  "host_port": m["hostPort"],
                                  "guest_addr": POD_IP,
                                  "guest_port": m["containerPort"] } })
   return out


def api_call(path, req):
   "Send one request to the slirp4netns API socket path; return its reply."
   with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
      s.settimeout(API_TIMEOUT)
      s.connect(path)
      s.sendall(json.dumps(req).encode())
      s.shutdown(socket.SHUT_WR)
      buf = b""
      while True:
         data = s.recv(4096)
         if (not data):
            break
         buf += data
   return json.loads(buf or b"{}")


## Classes ##

class Slirp:
   """The pod network of an unprivileged ch-cri. ready is False, with
      reason, where slirp4netns is missing or /dev/net/tun is unusable.
      Same interface as cni.Network."""

   def __init__(self, binary, state_dir, tun="/dev/net/tun"):
      self.dir_ = os.path.join(state_dir, "slirp")
      self.conf = None
      self.reason = None
      self.dns = None          # the pods' name server, once ready
      self.binary = shutil.which(binary) if binary else None
      if (not binary):
         self.reason = "network.slirp4netns is empty (turned off)"
         return
      if (self.binary is None):
         self.reason = ("%s not found (Debian: install slirp4netns)"
                        % binary)
         return
      try:
         os.close(os.open(tun, os.O_RDWR))
      except OSError as x:
         self.reason = ("slirp4netns can't use %s: %s (it is mode 0600 on "
                        "some hosts)" % (tun, x.strerror))
         return
      self.conf = { "name": "slirp4netns" }
      self.dns = DNS
      self.source = "%s (%s/24, MTU %d)" % (self.binary, POD_IP, MTU)

   @property
   def ready(self):
      return self.conf is not None

   def api_path(self, pod_id):
      return os.path.join(self.dir_, pod_id[:16])

   def add(self, pod_id, netns, pms, hold):
      """Start slirp4netns on netns (a /proc/PID/ns/net path; the user
         namespace beside it owns it), hand its exit pipe to hold (a
         function taking a list of file descriptors: the keeper's), and
         add pms's host ports. Return what delete() needs; raise
         Cni_Error."""
      pm = port_mappings(pms)
      reqs = hostfwd_requests(pm)
      os.makedirs(self.dir_, 0o700, exist_ok=True)
      api = self.api_path(pod_id)
      try:
         os.unlink(api)
      except FileNotFoundError:
         pass
      userns = os.path.join(os.path.dirname(netns), "user")
      (exit_r, exit_w) = os.pipe()
      (ready_r, ready_w) = os.pipe()
      log_path = os.path.join(self.dir_, pod_id[:16] + ".log")
      argv = ["setsid", "-f", self.binary, "--configure",
              "--mtu=%d" % MTU, "--disable-host-loopback",
              "--enable-seccomp",
              "--exit-fd=%d" % exit_r, "--ready-fd=%d" % ready_w,
              "--api-socket", api, "--netns-type=path",
              "--userns-path=%s" % userns, netns, IFNAME]
      try:
         with open(log_path, "wb") as fp:
            try:
               cp = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                   stdout=fp, stderr=fp, timeout=READY_TIMEOUT,
                                   pass_fds=(exit_r, ready_w),
                                   start_new_session=True)
            except (OSError, subprocess.TimeoutExpired) as x:
               raise Cni_Error("slirp4netns: can't start: %s" % x)
         os.close(exit_r)
         os.close(ready_w)
         (exit_r, ready_w) = (None, None)
         if (cp.returncode != 0):
            raise Cni_Error("slirp4netns: setsid failed: exit code %d"
                            % cp.returncode)
         ok = (select.select([ready_r], [], [], READY_TIMEOUT)[0]
               and os.read(ready_r, 1) == b"1")
         if (not ok):
            with open(log_path, errors="replace") as fp:
               why = misc.stderr_tail(fp.read()) or "no output"
            raise Cni_Error("slirp4netns did not come up in %ds: %s"
                            % (READY_TIMEOUT, why))
         hold([exit_w])
         for r in reqs:
            self.api_request(api, r)
      finally:
         for fd in (exit_r, exit_w, ready_r, ready_w):
            if (fd is not None):
               os.close(fd)
      # No pod IP is reported: 10.0.2.100 is the same in every pod and
      # reachable from nowhere, and on the host it names some other
      # machine; a client (critest does) would send it the pod's traffic.
      return { "result": { "ips": [] }, "port_maps": pm,
               "slirp4netns": { "api": api, "address": POD_IP + "/24",
                                "gateway": GATEWAY } }

   def api_request(self, api, req):
      # The API socket appears a moment after the ready signal.
      deadline = time.monotonic() + API_TIMEOUT
      while True:
         try:
            rep = api_call(api, req)
            break
         except (FileNotFoundError, ConnectionRefusedError):
            if (time.monotonic() > deadline):
               raise Cni_Error("slirp4netns API %s did not appear" % api)
            time.sleep(0.01)
         except (OSError, ValueError) as x:
            raise Cni_Error("slirp4netns API: %s" % x)
      if ("error" in rep):
         a = req["arguments"]
         raise Port_Error("port_mappings: host port %s/%d: %s"
                         % (a["proto"], a["host_port"],
                            rep["error"].get("desc", rep["error"])))

   def delete(self, pod_id, netns, saved):
      """Forget the pod's API socket. slirp4netns itself exits with the
         keeper, which holds its exit pipe."""
      try:
         os.unlink(self.api_path(pod_id))
      except FileNotFoundError:
         pass
      try:
         os.unlink(os.path.join(self.dir_, pod_id[:16] + ".log"))
      except FileNotFoundError:
         pass
