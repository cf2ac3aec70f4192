# The CRI streaming server: Exec/Attach/PortForward URLs with single-use
# tokens, served over SPDY/3.1 or WebSocket with Kubernetes' semantics.

import ipaddress
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
import cri.stream.command as command
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

HEADER_TIMEOUT = 10      # seconds a client has to send its request head
STREAM_CREATION_TIMEOUT = 30
TOKENS_MAX = 1000        # outstanding tokens, as the kubelet's request cache


## Globals ##

log = misc.log


## Functions ##

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
         status = command.status_internal("error %s container: %s" % (what, x))
      else:
         code = command.Command_Run(chans, proc, req.stdin, req.stdout,
                            stderr_p).run()
         if (code is None):
            return   # the client has gone
         if (kind == "exec"):
            status = command.status_exit(list(req.cmd), code)
         else:
            status = command.status_exit([], 0)
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
      chans = command.Spdy_Command_Chans()
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
         chans = command.Ws_Command_Chans(ws, b64_p, v5_p, self.idle_timeout)
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

