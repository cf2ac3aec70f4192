# Logging and subprocess helpers shared by ch-cri's modules.

import logging
import os
import pwd
import shlex
import subprocess
import sys


## Constants ##

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_LEVELS = { "error": logging.ERROR,
               "warning": logging.WARNING,
               "info": logging.INFO,
               "verbose": 15,
               "debug": logging.DEBUG }


## Globals ##

log = logging.getLogger("ch-cri")


## Exceptions ##

class Command_Error(Exception):
   "A subprocess failed, timed out, or could not be started."

   def __init__(self, argv, msg, rc=None, stderr=""):
      self.argv = argv
      self.rc = rc
      self.stderr = stderr
      super().__init__("%s: %s" % (argv[0], msg))


## Functions ##

def argv_quote(argv):
   """Return argv as one shell-quoted string, for log messages only.

      >>> argv_quote(["ch-run", "a b", "--", "x"])
      "ch-run 'a b' -- x"
   """
   return " ".join(shlex.quote(str(a)) for a in argv)


def cmd_run(argv, timeout, env=None, input_=None, check=True):
   """Run argv (a list, never a shell string) with a timeout; return the
      CompletedProcess with text stdout/stderr. Raise Command_Error if it
      cannot start, times out, or (with check) exits non-zero."""
   argv = [str(a) for a in argv]
   log.log(LOG_LEVELS["verbose"], "running: %s", argv_quote(argv))
   cp = subprocess_run(argv, timeout, env=env, text=True, input=input_,
                       capture_output=True,
                       stdin=(subprocess.DEVNULL if input_ is None
                              else None))
   if (check and cp.returncode != 0):
      raise Command_Error(argv, "exit code %d: %s"
                          % (cp.returncode, stderr_tail(cp.stderr)),
                          cp.returncode, cp.stderr)
   return cp


def cmd_detach(argv, log_path, timeout):
   """Run argv, which detaches what it starts (e.g. "setsid -f"), with its
      output appended to log_path; wait for argv itself only. Raise
      Command_Error if it cannot start or fails."""
   argv = [str(a) for a in argv]
   log.log(LOG_LEVELS["verbose"], "starting: %s", argv_quote(argv))
   with open(log_path, "ab") as fp:
      cp = subprocess_run(argv, timeout, stdin=subprocess.DEVNULL,
                          stdout=fp, stderr=fp)
   if (cp.returncode != 0):
      raise Command_Error(argv, "exit code %d" % cp.returncode, cp.returncode)


def subprocess_run(argv, timeout, **kw):
   """subprocess.run() in a new session, with its failures to start or
      finish in time raised as Command_Error."""
   try:
      return subprocess.run(argv, timeout=timeout, start_new_session=True,
                            **kw)
   except FileNotFoundError:
      raise Command_Error(argv, "not found")
   except subprocess.TimeoutExpired:
      raise Command_Error(argv, "timed out after %ss" % timeout)
   except OSError as x:
      raise Command_Error(argv, "can't run: %s" % x.strerror)


def log_setup(level, stream=None):
   "Configure the ch-cri logger at level (a key of LOG_LEVELS)."
   logging.addLevelName(LOG_LEVELS["verbose"], "VERBOSE")
   h = logging.StreamHandler(stream or sys.stderr)
   h.setFormatter(logging.Formatter(LOG_FORMAT))
   log.handlers[:] = [h]
   log.setLevel(LOG_LEVELS[level])
   log.propagate = False


def stderr_tail(text, lines=3):
   """Return a command's error in brief: its "error:" and "hint:" lines
      (Charliecloud's style) if any, else its last few non-empty lines.

      >>> stderr_tail("a\\n\\nb\\nc\\nd\\n", 2)
      'c; d'
      >>> stderr_tail("x\\nerror: bad\\nTraceback\\nhint: h\\n")
      'error: bad; hint: h'
   """
   ls = [l.strip() for l in text.splitlines() if l.strip()]
   errs = [l for l in ls if l.startswith(("error:", "hint:"))]
   return "; ".join(errs[-lines:] if errs else ls[-lines:])


def user_name():
   "Return the name of the effective user, falling back to the UID."
   try:
      return pwd.getpwuid(os.geteuid()).pw_name
   except KeyError:
      return str(os.geteuid())
