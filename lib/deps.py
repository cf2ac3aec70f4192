# ch-cri's Python dependencies, as requirements.txt lists them: the one
# list that configure, "ch-cri --dependencies" and the tests read.

import os
import re


## Constants ##

# Where requirements.txt is: beside lib/ in the source tree, in lib/ (the
# package library directory) once installed.
PATHS = (os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                      "requirements.txt"),
         os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "requirements.txt"))


## Functions ##

def parse(text):
   """Return [(import name, package)] of requirements text: lines
      "PACKAGE==VERSION  # import MODULE".

      >>> parse("# x\\nh11==0.16.0   # import h11\\nprotobuf==6.1 "
      ...       "# import google.protobuf\\n")
      [('h11', 'h11'), ('google.protobuf', 'protobuf')]
   """
   out = []
   for line in text.splitlines():
      m = re.search(r"^([A-Za-z0-9_.-]+)==\S+\s+#\s*import\s+([\w.]+)", line)
      if (m):
         out.append((m.group(2), m.group(1)))
   return out


def modules():
   "Return [(import name, package)] of the requirements.txt we have."
   for p in PATHS:
      if (os.path.isfile(p)):
         with open(p) as fp:
            return parse(fp.read())
   raise FileNotFoundError("requirements.txt not found: %s" % " or ".join(
      os.path.normpath(p) for p in PATHS))
