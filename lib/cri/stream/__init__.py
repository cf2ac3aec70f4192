# The streaming server (Exec, Attach, PortForward) and its transports.
