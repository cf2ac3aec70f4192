# The CRI streaming server: Exec/Attach/PortForward URLs with single-use
# tokens, served over SPDY/3.1 or WebSocket with Kubernetes' semantics.

import ipaddress
import json
import os
import secrets
import select
import socket
import threading
import time
import urllib.parse

import h11

import misc
import cri.errors as err
import cri.metrics as metrics
import cri.stream.portfwd as portfwd
import cri.stream.spdy as spdy
import cri.stream.wschan as wschan

from cri.errors import Stream_Error  # noqa: F401 (for backends)


## Constants ##

# SPDY remote-command protocols, best first (X-Stream-Protocol-Version).
COMMAND_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io",
                     "v2.channel.k8s.io", "channel.k8s.io")
PORT_FORWARD_PROTOCOLS = ("portforward.k8s.io",)
# WebSocket subprotocols of exec/attach: name -> (base64_p, v4+ status_p,
# v5 close signals_p).
WS_COMMAND_PROTOCOLS = {
   "v5.channel.k8s.io": (False, True, True),
   "v4.channel.k8s.io": (False, True, False),
   "v4.base64.channel.k8s.io": (True, True, False),
   "channel.k8s.io": (False, False, False),
   "base64.channel.k8s.io": (True, False, False) }
WS_PORT_FORWARD_PROTOCOLS = { "v4.channel.k8s.io": False,
                              "v4.base64.channel.k8s.io": True }
# client-go's port-forward over WebSocket tunnels SPDY with this prefix.
WS_TUNNEL_PREFIX = "SPDY/3.1+"

DRAIN_IDLE = 2.0         # seconds output may pause after exit before we stop
HEADER_TIMEOUT = 10      # seconds a client has to send its request head
STREAM_CREATION_TIMEOUT = 30
TOKENS_MAX = 1000        # outstanding tokens, as the kubelet's request cache
WAIT_AFTER_CLOSE = 5     # seconds Proc.wait() may take after Proc.close()


## Globals ##

log = misc.log


## Functions ##

def exit_code_byte(code):
   """Return code as the 0-255 value Kubernetes clients accept; a signal
      death (negative code) becomes 128 + signal, as shells report it.

      >>> [exit_code_byte(c) for c in (0, 3, -9, 300)]
      [0, 3, 137, 255]"""
   if (code < 0):
      code = 128 - code
   return min(code, 255)


def protocol_pick(offered, supported):
   """Return the first protocol in offered (the client's order of
      preference) that is supported, or None.

      >>> protocol_pick(["v5.channel.k8s.io", "v4.channel.k8s.io"],
      ...               COMMAND_PROTOCOLS)
      'v4.channel.k8s.io'"""
   for p in offered:
      if (p in supported):
         return p
   return None


def header_list(headers, name):
   """Return the comma-separated values of every header called name.

      >>> header_list([(b"x-a", b"a, b"), (b"X-A", b"c")], "x-a")
      ['a', 'b', 'c']"""
   out = []
   for (k, v) in headers:
      if (k.decode("latin-1").lower() == name):
         out.extend(p.strip() for p in v.decode("latin-1").split(",")
                    if p.strip())
   return out


def status_json(status, message=None, reason=None, causes=None, code=None):
   """Return a metav1.Status as the JSON Kubernetes writes (fields in
      Go's order, empty ones omitted).

      >>> status_json("Success")
      b'{"metadata":{},"status":"Success"}'"""
   obj = { "metadata": {}, "status": status }
   if (message):
      obj["message"] = message
   if (reason):
      obj["reason"] = reason
   if (causes):
      obj["details"] = { "causes": causes }
   if (code):
      obj["code"] = code
   return json.dumps(obj, separators=(",", ":")).encode()


def status_exit(cmd, code):
   """Return (JSON, plain text) of the status of a command that exited
      with code, as the kubelet writes it.

      >>> status_exit(["sh", "-c", "exit 3"], 3)[1].decode()[-45:]
      'executing command [sh -c exit 3], exit code 3'"""
   if (code == 0):
      return (status_json("Success"), b"")
   code = exit_code_byte(code)
   msg = ("command terminated with non-zero exit code: error executing "
          "command [%s], exit code %d" % (" ".join(cmd), code))
   return (status_json("Failure", msg, "NonZeroExitCode",
                       [{ "reason": "ExitCode", "message": str(code) }]),
           msg.encode())


def status_internal(msg):
   "Return (JSON, plain text) of an internal error status."
   full = "Internal error occurred: %s" % msg
   return (status_json("Failure", full, "InternalError",
                       [{ "message": msg }], 500), full.encode())


## Classes ##

class Tokens:
   """Single-use tokens naming saved requests, expiring ttl seconds after
      they are issued. lock guards table (token -> (kind, request, end))."""

   def __init__(self, ttl, clock=time.monotonic):
      self.ttl = ttl
      self.clock = clock
      self.lock = threading.Lock()
      self.table = dict()

   def consume(self, kind, token):
      "Return the request of an unexpired token of kind, or None."
      with self.lock:
         ent = self.table.pop(token, None)
      if (ent is None or ent[0] != kind or ent[2] < self.clock()):
         return None
      return ent[1]

   def insert(self, kind, req):
      now = self.clock()
      copy = type(req)()
      copy.CopyFrom(req)
      token = secrets.token_urlsafe(24)
      with self.lock:
         for (t, ent) in list(self.table.items()):
            if (ent[2] < now):
               del self.table[t]
         if (len(self.table) >= TOKENS_MAX):
            raise err.Resource_Exhausted(
               "streaming: %d requests outstanding; retry later"
               % len(self.table))
         self.table[token] = (kind, copy, now + self.ttl)
      return token


class Resize_Parser:
   """Terminal sizes from a resize stream: JSON objects {"Width": w,
      "Height": h}, back to back. The last size is kept until a target
      is attached. lock guards buf, fn and last."""

   def __init__(self):
      self.lock = threading.Lock()
      self.buf = ""
      self.fn = None
      self.last = None
      self.decoder = json.JSONDecoder()

   def attach(self, fn):
      with self.lock:
         self.fn = fn
         last = self.last
      if (last is not None):
         self.apply(fn, last)

   def apply(self, fn, size):
      try:
         fn(*size)
      except Exception as x:
         log.debug("streaming: resize %s failed: %s", size, x)

   def feed(self, data):
      sizes = []
      with self.lock:
         self.buf += data.decode("utf-8", "replace")
         while True:
            self.buf = self.buf.lstrip()
            try:
               (obj, end) = self.decoder.raw_decode(self.buf)
            except ValueError:
               if (len(self.buf) > 4096):
                  self.buf = ""
               break
            self.buf = self.buf[end:]
            if (isinstance(obj, dict)):
               try:
                  self.last = (int(obj.get("Width", 0)),
                               int(obj.get("Height", 0)))
               except (TypeError, ValueError):
                  continue
               sizes.append(self.last)
         fn = self.fn
      if (fn is not None):
         for s in sizes:
            self.apply(fn, s)


class Spdy_Command_Chans:
   """Exec/attach streams of a SPDY session, by stream type. cond is the
      session's; it guards streams."""

   def __init__(self):
      self.session = None
      self.streams = dict()
      self.resize = Resize_Parser()

   @property
   def dead(self):
      return self.session.dead

   def close_ch(self, name):
      st = self.streams.get(name)
      if (st is not None):
         st.close()

   def finish(self):
      self.session.finish()

   def on_stream(self, st):
      type_ = st.header("streamtype")
      with self.session.cond:
         if (type_ not in ("error", "stdin", "stdout", "stderr", "resize")
             or type_ in self.streams):
            log.warning("streaming: unexpected stream type %r", type_)
            return True   # the kubelet replies and ignores it too
         if (type_ == "resize"):
            st.data_cb = self.resize.feed
         self.streams[type_] = st
         self.session.cond.notify_all()
      return True

   def read_stdin(self, timeout):
      return self.streams["stdin"].read(timeout)

   def stdin_discard(self):
      st = self.streams.get("stdin")
      if (st is not None):
         st.discard()

   def wait_streams(self, expected, timeout):
      end = time.monotonic() + timeout
      with self.session.cond:
         while (not expected <= set(self.streams)):
            left = end - time.monotonic()
            if (left <= 0 or self.session.dead_p):
               return False
            self.session.cond.wait(left)
      return True

   def write(self, name, data):
      st = self.streams.get(name)
      if (st is not None):
         st.write(data)


class Ws_Command_Chans:
   "Exec/attach channels of a WebSocket (see wschan.Ws_Channels)."

   CHANNELS = { "stdout": wschan.STDOUT, "stderr": wschan.STDERR,
                "error": wschan.ERROR }

   def __init__(self, conn, b64_p, v5_p, idle_timeout):
      self.stdin = spdy.Chunk_Queue()
      self.resize = Resize_Parser()
      self.chans = wschan.Ws_Channels(conn, b64_p, { wschan.STDIN:
                                                     self.stdin },
                                      idle_timeout, v5_p)
      self.chans.resize_cb = self.resize.feed
      self.conn = conn

   @property
   def dead(self):
      return self.chans.dead

   def close_ch(self, name):
      pass   # the channel protocol has no server-side half-close

   def finish(self):
      self.conn.close()

   def read_stdin(self, timeout):
      return self.stdin.get(timeout)

   def stdin_discard(self):
      self.stdin.discard()

   def write(self, name, data):
      self.chans.write(self.CHANNELS[name], data)


class Command_Run:
   """Copy between a backend Proc and a client's channels (chans, one of
      the *_Command_Chans) until the process ends or the client goes.
      run() returns the exit code, or None if the client went first.
      The fds are ours to close; proc.close() is called once."""

   def __init__(self, chans, proc, stdin_p, stdout_p, stderr_p):
      self.chans = chans
      self.proc = proc
      self.want = { "stdin": stdin_p, "stdout": stdout_p,
                    "stderr": stderr_p }
      self.stop = threading.Event()
      self.exited = threading.Event()
      self.code = None
      self.progress = time.monotonic()

   def fds(self):
      "Return (stdin, stdout, stderr) fds, distinct, unwanted ones closed."
      fin = self.proc.stdin
      fout = self.proc.stdout
      ferr = self.proc.stderr
      if (fin is not None and fin in (fout, ferr)):
         fin = os.dup(fin)   # a pty: one fd for both ways
      if (ferr is not None and ferr == fout):
         ferr = None
      if (fin is not None and not self.want["stdin"]):
         os.close(fin)   # the process sees EOF at once
         fin = None
      return (fin, fout, ferr)

   def pump_in(self, fd):
      try:
         os.set_blocking(fd, False)
         while (not self.stop.is_set()):
            data = self.chans.read_stdin(0.5)
            if (data is None):
               continue
            if (not data):
               break
            view = memoryview(data)
            while (view and not self.stop.is_set()):
               try:
                  view = view[os.write(fd, view):]
               except BlockingIOError:
                  select.select([], [fd], [], 0.5)
      except OSError:
         pass   # EPIPE: the process has gone or closed its stdin
      finally:
         self.chans.stdin_discard()
         os.close(fd)

   def pump_out(self, fd, name):
      try:
         while (not self.stop.is_set()):
            (r, _, _) = select.select([fd], [], [], 0.5)
            if (not r):
               continue
            try:
               data = os.read(fd, 65536)
            except BlockingIOError:
               continue
            except OSError:
               break   # EIO: a pty whose other side is closed
            if (not data):
               break
            self.progress = time.monotonic()
            if (self.want[name]):
               self.chans.write(name, data)
      except spdy.Closed_Error:
         pass
      finally:
         os.close(fd)
         self.chans.close_ch(name)

   def run(self):
      self.chans.resize.attach(self.proc.resize)
      (fin, fout, ferr) = self.fds()
      outs = []
      for (fd, name) in ((fout, "stdout"), (ferr, "stderr")):
         if (fd is not None):
            outs.append(threading.Thread(target=self.pump_out,
                                         args=(fd, name), daemon=True,
                                         name="stream-%s" % name))
         elif (self.want[name]):
            self.chans.close_ch(name)
      pumps = list(outs)
      if (fin is not None):
         pumps.append(threading.Thread(target=self.pump_in, args=(fin,),
                                       daemon=True, name="stream-stdin"))
      for t in pumps:
         t.start()
      waiter = threading.Thread(target=self.wait, daemon=True,
                                name="stream-wait")
      waiter.start()
      closed_p = False
      try:
         while (not self.exited.is_set() and not self.chans.dead.is_set()):
            self.exited.wait(0.2)
         if (not self.exited.is_set()):
            closed_p = True
            self.stop.set()
            self.proc.close()
            waiter.join(WAIT_AFTER_CLOSE)
            if (waiter.is_alive()):
               log.warning("streaming: Proc.wait() still blocked after "
                           "close(); abandoning it")
         else:
            # Let output written just before the exit drain, but do not
            # wait for a background child that keeps the pipe open.
            while (any(t.is_alive() for t in outs)
                   and time.monotonic() - self.progress < DRAIN_IDLE
                   and not self.chans.dead.is_set()):
               time.sleep(0.02)
         self.stop.set()
         for t in pumps:
            t.join()
      finally:
         self.stop.set()
         if (not closed_p):
            self.proc.close()
      return None if closed_p else self.code

   def wait(self):
      try:
         self.code = self.proc.wait()
      except Exception as x:
         log.warning("streaming: Proc.wait() failed: %s", x)
         self.code = -1
      self.exited.set()


class Stream_Server:
   """The streaming HTTP server. backend starts processes and connects
      ports (see the man page). address must be loopback unless
      allow_remote. Tokens last token_ttl seconds; a connection with no
      traffic for idle_timeout seconds is closed. conns (guarded by lock)
      holds the live connections' sockets, for stop()."""

   def __init__(self, backend, address="127.0.0.1", port=0, token_ttl=60,
                idle_timeout=14400, allow_remote=False,
                creation_timeout=STREAM_CREATION_TIMEOUT):
      self.backend = backend
      self.address = address
      self.port = port
      self.allow_remote = allow_remote
      self.idle_timeout = idle_timeout
      self.creation_timeout = creation_timeout
      self.tokens = Tokens(token_ttl)
      self.lock = threading.Lock()
      self.conns = set()
      self.listener = None
      self.thread = None
      self.stopping = threading.Event()
      self.conn_ct = 0

   @property
   def base_url(self):
      host = self.address
      if (":" in host):
         host = "[%s]" % host
      return "http://%s:%d" % (host, self.port)

   def accept_loop(self):
      while (not self.stopping.is_set()):
         try:
            (r, _, _) = select.select([self.listener], [], [], 0.5)
            if (not r):
               continue
            (sock, _) = self.listener.accept()
         except (OSError, ValueError):
            if (self.stopping.is_set()):
               break
            continue
         with self.lock:
            self.conns.add(sock)
            self.conn_ct += 1
            n = self.conn_ct
         threading.Thread(target=self.conn_serve, args=(sock,), daemon=True,
                          name="stream-conn-%d" % n).start()

   def attach_url(self, req):
      if (not req.container_id):
         raise err.Invalid_Argument("missing required container_id")
      if (req.tty and req.stderr):
         raise err.Invalid_Argument("tty and stderr cannot both be true")
      if (not (req.stdin or req.stdout or req.stderr)):
         raise err.Invalid_Argument("one of stdin, stdout, and stderr must "
                                    "be set")
      return self.url("attach", req)

   def command_serve(self, kind, req, chans, v4_p):
      "Run an exec or attach over chans (streams ready) and end it."
      stderr_p = req.stderr and not req.tty
      try:
         if (kind == "exec"):
            proc = self.backend.exec_start(req.container_id, list(req.cmd),
                                           req.tty, req.stdin)
         else:
            proc = self.backend.attach_start(req.container_id, req.tty,
                                             req.stdin)
      except Stream_Error as x:
         what = ("executing command in" if kind == "exec"
                 else "attaching to")
         status = status_internal("error %s container: %s" % (what, x))
      else:
         code = Command_Run(chans, proc, req.stdin, req.stdout,
                            stderr_p).run()
         if (code is None):
            return   # the client has gone
         if (kind == "exec"):
            status = status_exit(list(req.cmd), code)
         else:
            status = status_exit([], 0)
      for name in ("stdout", "stderr"):
         chans.close_ch(name)
      try:
         payload = status[0] if v4_p else status[1]
         if (payload):
            chans.write("error", payload)
         chans.close_ch("error")
      except spdy.Closed_Error:
         pass
      chans.finish()

   def conn_serve(self, sock):
      tr = spdy.Socket_Transport(sock, send_timeout=min(self.idle_timeout,
                                                         300))
      try:
         self.request_serve(tr)
      except Exception:
         log.exception("streaming: connection failed")
      finally:
         tr.close()
         with self.lock:
            self.conns.discard(sock)

   def exec_url(self, req):
      if (not req.container_id):
         raise err.Invalid_Argument("missing required container_id")
      if (not req.cmd):
         raise err.Invalid_Argument("missing required cmd")
      if (req.tty and req.stderr):
         raise err.Invalid_Argument("tty and stderr cannot both be true")
      if (not (req.stdin or req.stdout or req.stderr)):
         raise err.Invalid_Argument("one of stdin, stdout, or stderr must "
                                    "be set")
      return self.url("exec", req)

   def portforward_url(self, req):
      if (not req.pod_sandbox_id):
         raise err.Invalid_Argument("missing required pod_sandbox_id")
      return self.url("portforward", req)

   def request_read(self, tr):
      """Return (h11 connection, Request, raw bytes) of the request head,
         or None if none arrived in time."""
      conn = h11.Connection(h11.SERVER, max_incomplete_event_size=65536)
      raw = bytearray()
      end = time.monotonic() + HEADER_TIMEOUT
      while True:
         try:
            ev = conn.next_event()
         except h11.RemoteProtocolError as x:
            self.respond(tr, None, 400, "bad request: %s" % x)
            return None
         if (isinstance(ev, h11.Request)):
            return (conn, ev, bytes(raw))
         if (ev is not h11.NEED_DATA):
            return None
         left = end - time.monotonic()
         data = tr.recv(left) if left > 0 else None
         if (not data):
            return None
         raw += data
         conn.receive_data(data)

   def request_serve(self, tr):
      got = self.request_read(tr)
      if (got is None):
         return
      (conn, req, raw) = got
      target = urllib.parse.urlsplit(req.target.decode("latin-1"))
      parts = target.path.strip("/").split("/")
      if (len(parts) != 2
          or parts[0] not in ("exec", "attach", "portforward")):
         self.respond(tr, conn, 404, "404 page not found")
         return
      (kind, token) = parts
      cri_req = self.tokens.consume(kind, token)
      if (cri_req is None):
         self.respond(tr, conn, 404, "404 page not found")
         return
      upgrade = [u.lower() for u in header_list(req.headers, "upgrade")]
      connection = [c.lower() for c in header_list(req.headers,
                                                   "connection")]
      if (req.method not in (b"GET", b"POST") or "upgrade" not in connection):
         self.respond(tr, conn, 400, "unable to upgrade: missing upgrade "
                      "headers in request")
         return
      with metrics.STREAMS.labels(kind).track_inprogress():
         if ("websocket" in upgrade):
            self.ws_serve(tr, conn, req, raw, kind, cri_req, target.query)
         elif ("spdy/3.1" in upgrade):
            self.spdy_serve(tr, conn, req, kind, cri_req)
         else:
            self.respond(tr, conn, 400, "unable to upgrade: unknown "
                         "upgrade protocol %s" % upgrade)

   def respond(self, tr, conn, code, text, headers=()):
      "Send a plain-text HTTP error response."
      body = (text + "\n").encode()
      hs = [("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))), ("Connection", "close")]
      hs.extend(headers)
      try:
         if (conn is None):
            raise h11.LocalProtocolError("no connection")
         out = conn.send(h11.Response(status_code=code, headers=hs))
         out += conn.send(h11.Data(data=body))
         out += conn.send(h11.EndOfMessage())
      except h11.LocalProtocolError:
         out = (("HTTP/1.1 %d Error\r\n" % code)
                + "".join("%s: %s\r\n" % h for h in hs) + "\r\n").encode()
         out += body
      try:
         tr.sendall(out)
      except spdy.Closed_Error:
         pass

   def spdy_serve(self, tr, conn, req, kind, cri_req):
      offered = header_list(req.headers, "x-stream-protocol-version")
      supported = (PORT_FORWARD_PROTOCOLS if kind == "portforward"
                   else COMMAND_PROTOCOLS)
      proto = protocol_pick(offered, supported)
      if (offered and proto is None):
         self.respond(tr, conn, 403,
                      "unable to upgrade: unable to negotiate protocol: "
                      "client supports %s, server accepts %s"
                      % (offered, list(supported)),
                      [("X-Accepted-Stream-Protocol-Versions", p)
                       for p in supported])
         return
      hs = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
      if (proto):
         hs.append(("X-Stream-Protocol-Version", proto))
      out = conn.send(h11.InformationalResponse(status_code=101,
                                                headers=hs))
      (leftover, _) = conn.trailing_data
      if (kind == "portforward"):
         handler = portfwd.Spdy_Port_Forward(self, cri_req.pod_sandbox_id)
         session = spdy.Session(tr, handler.on_stream, self.idle_timeout,
                                leftover, "spdy portforward")
         handler.session = session
         tr.sendall(out)
         reader = threading.Thread(target=session.run, daemon=True,
                                   name="stream-spdy")
         reader.start()
         handler.run()
         reader.join()
         return
      chans = Spdy_Command_Chans()
      session = spdy.Session(tr, chans.on_stream, self.idle_timeout,
                             leftover, "spdy %s" % kind)
      chans.session = session
      tr.sendall(out)
      reader = threading.Thread(target=session.run, daemon=True,
                                name="stream-spdy")
      reader.start()
      expected = { "error" }
      for name in ("stdin", "stdout", "stderr"):
         if (getattr(cri_req, name)
             and not (name == "stderr" and cri_req.tty)):
            expected.add(name)
      if (cri_req.tty and proto in COMMAND_PROTOCOLS[:2]):
         expected.add("resize")
      if (chans.wait_streams(expected, self.creation_timeout)):
         self.command_serve(kind, cri_req, chans,
                            proto == COMMAND_PROTOCOLS[0])
      else:
         log.warning("streaming: %s: timed out waiting for the client to "
                     "create streams", kind)
         session.finish()
      reader.join()

   def start(self):
      "Bind and serve in background threads."
      try:
         loopback_p = ipaddress.ip_address(self.address).is_loopback
      except ValueError:
         loopback_p = (self.address == "localhost")
      if (not loopback_p and not self.allow_remote):
         raise ValueError("streaming address %s is not loopback; pass "
                          "allow_remote=True to serve other hosts"
                          % self.address)
      family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
      self.listener = socket.socket(family, socket.SOCK_STREAM)
      self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      self.listener.bind((self.address, self.port))
      self.listener.listen(128)
      self.port = self.listener.getsockname()[1]
      self.thread = threading.Thread(target=self.accept_loop, daemon=True,
                                     name="stream-accept")
      self.thread.start()
      log.info("streaming server on %s", self.base_url)

   def stop(self):
      "Stop accepting, end every connection, and wait for the acceptor."
      self.stopping.set()
      if (self.listener is not None):
         try:
            # Wakes the acceptor's select() now (Linux) rather than at its
            # next timeout: servers are built and stopped per unit test.
            self.listener.shutdown(socket.SHUT_RDWR)
         except OSError:
            pass
      if (self.thread is not None):
         self.thread.join()
      if (self.listener is not None):
         self.listener.close()
      with self.lock:
         conns = list(self.conns)
      for sock in conns:
         try:
            sock.shutdown(socket.SHUT_RDWR)
         except OSError:
            pass

   def url(self, kind, req):
      return "%s/%s/%s" % (self.base_url, kind,
                           self.tokens.insert(kind, req))

   def ws_serve(self, tr, conn, req, raw, kind, cri_req, query):
      offered = header_list(req.headers, "sec-websocket-protocol")
      if (kind == "portforward"):
         tunnel = [p for p in offered if p.startswith(WS_TUNNEL_PREFIX)
                   and p[len(WS_TUNNEL_PREFIX):] in PORT_FORWARD_PROTOCOLS]
         proto = (tunnel[0] if tunnel
                  else protocol_pick(offered, WS_PORT_FORWARD_PROTOCOLS))
      else:
         proto = protocol_pick(offered, WS_COMMAND_PROTOCOLS)
      if (offered and proto is None):
         self.respond(tr, conn, 400, "unable to upgrade: requested "
                      "protocol(s) are not supported: %s" % offered)
         return
      try:
         ws = wschan.Ws_Conn(tr, raw)
         ws.accept(proto)
      except Exception as x:
         self.respond(tr, conn, 400, "websocket handshake failed: %s" % x)
         return
      if (kind == "portforward" and proto and proto.startswith(
            WS_TUNNEL_PREFIX)):
         handler = portfwd.Spdy_Port_Forward(self, cri_req.pod_sandbox_id)
         session = spdy.Session(wschan.Ws_Tunnel(ws), handler.on_stream,
                                self.idle_timeout, b"", "ws-spdy portforward")
         handler.session = session
         reader = threading.Thread(target=session.run, daemon=True,
                                   name="stream-ws")
         reader.start()
         handler.run()
         reader.join()
      elif (kind == "portforward"):
         portfwd.ws_port_forward(self, ws, cri_req, WS_PORT_FORWARD_PROTOCOLS.get(
            proto, False), query)
      else:
         (b64_p, v4_p, v5_p) = WS_COMMAND_PROTOCOLS.get(
            proto, (False, False, False))
         chans = Ws_Command_Chans(ws, b64_p, v5_p, self.idle_timeout)
         reader = threading.Thread(target=chans.chans.run, daemon=True,
                                   name="stream-ws")
         reader.start()
         try:
            # The kubelet tells the client it is connected with an empty
            # message on the first channel it writes.
            first = ("stdout" if cri_req.stdout else
                     "stderr" if cri_req.stderr and not cri_req.tty
                     else "error")
            chans.write(first, b"")
            self.command_serve(kind, cri_req, chans, v4_p)
         except spdy.Closed_Error:
            pass
         finally:
            ws.close()
            reader.join(spdy.LINGER)

