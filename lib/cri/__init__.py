# ch-cri's CRI server package.
