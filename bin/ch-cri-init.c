/* ch-cri-init: the last step before a container's (or an exec's) command.

   ch-run makes the container's user namespace, so a process has every
   capability in it and no seccomp filter once ch-run execs; what the CRI
   asks to take away must be taken inside the container, after ch-run.
   ch-cri binds this program (statically linked: the image may have no
   libc, or another one) into the container and runs it first:

     ch-run ... IMAGE -- /.ch-cri-init [-r PATH ...] [-c CAPS] [-n]
                                      [-s FILTER] -- CMD ...

   -r PATH    make PATH read-only (for what ch-run mounts itself, e.g. its
              private /tmp; the keeper does the rest before ch-run); needs
              a root container user, else it fails
   -c CAPS    keep only the capabilities in CAPS (a hex mask of capability
              numbers): the others leave the bounding, inheritable,
              permitted, effective and ambient sets
   -n         set no_new_privs
   -s FILTER  load the seccomp BPF program FILTER (hex of an array of
              struct sock_filter, host byte order), last, just before exec

   Then exec CMD. Errors go to stderr and end us with exit code 127, like a
   shell's "command not found", before CMD runs.

   ch-cri-init -P FD is instead a pod's PID 1 when its containers share a
   PID namespace (the keeper starts it there): it reaps orphans, and exits
   (ending the namespace) when the process whose pidfd is FD, the keeper,
   has exited. */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_FAIL 127
#define CAP_LAST_DEFAULT 40

static void fatal(const char *what)
{
   fprintf(stderr, "ch-cri-init: %s: %s\n", what, strerror(errno));
   exit(EXIT_FAIL);
}

static void usage(void)
{
   fprintf(stderr, "usage: ch-cri-init [-r PATH ...] [-c CAPS] [-n] "
                   "[-s FILTER] -- CMD [ARG ...]\n");
   exit(EXIT_FAIL);
}

/* Return the highest capability number this kernel knows. */
static int cap_last(void)
{
   char buf[16] = { 0 };
   int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
   if (fd < 0)
      return CAP_LAST_DEFAULT;
   ssize_t n = read(fd, buf, sizeof(buf) - 1);
   close(fd);
   return (n > 0) ? atoi(buf) : CAP_LAST_DEFAULT;
}

/* Keep only the capabilities in mask keep. Without CAP_SETPCAP (a
   non-root container user) the bounding set cannot shrink; such a process
   has no capabilities to lose anyway. */
static void caps_limit(uint64_t keep)
{
   int last = cap_last();
   for (int c = 0; c <= last && c < 64; c++) {
      if ((keep & (1ULL << c)) || prctl(PR_CAPBSET_READ, c) != 1)
         continue;
      if (prctl(PR_CAPBSET_DROP, c) != 0 && errno != EPERM)
         fatal("dropping a capability from the bounding set");
   }
   if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0
       && errno != EINVAL)
      fatal("clearing ambient capabilities");
   struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
   struct __user_cap_data_struct d[2];
   if (syscall(SYS_capget, &h, d) != 0)
      fatal("capget");
   for (int i = 0; i < 2; i++) {
      uint32_t m = (uint32_t)(keep >> (32 * i));
      d[i].effective &= m;
      d[i].permitted &= m;
      d[i].inheritable &= m;
   }
   if (syscall(SYS_capset, &h, d) != 0)
      fatal("capset");
}

/* Make path read-only: a bind mount of itself, remounted read-only with
   the flags it has (the kernel refuses to drop locked ones). */
static void readonly(const char *path)
{
   struct statvfs sv;
   unsigned long keep = ST_NOSUID | ST_NODEV | ST_NOEXEC | ST_NOATIME
                        | ST_NODIRATIME | ST_RELATIME;
   if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0
       || statvfs(path, &sv) != 0
       || mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY
                                  | (sv.f_flag & keep), NULL) != 0) {
      fprintf(stderr, "ch-cri-init: can't make %s read-only: %s\n", path,
              strerror(errno));
      exit(EXIT_FAIL);
   }
}

static int hex_digit(char c)
{
   if (c >= '0' && c <= '9') return c - '0';
   if (c >= 'a' && c <= 'f') return c - 'a' + 10;
   if (c >= 'A' && c <= 'F') return c - 'A' + 10;
   return -1;
}

/* Load the seccomp filter in hex. Loading needs no_new_privs or
   CAP_SYS_ADMIN; a process with neither (a non-root user) gets
   no_new_privs, as the kernel requires. */
static void seccomp_load(const char *hex)
{
   size_t len = strlen(hex);
   if (len == 0 || len % (2 * sizeof(struct sock_filter)) != 0) {
      errno = EINVAL;
      fatal("seccomp filter length");
   }
   unsigned char *buf = malloc(len / 2);
   if (buf == NULL)
      fatal("malloc");
   for (size_t i = 0; i < len / 2; i++) {
      int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) {
         errno = EINVAL;
         fatal("seccomp filter is not hex");
      }
      buf[i] = (unsigned char)(hi << 4 | lo);
   }
   struct sock_fprog prog = {
      .len = (unsigned short)(len / 2 / sizeof(struct sock_filter)),
      .filter = (struct sock_filter *)buf };
   if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
      if (errno != EACCES)
         fatal("loading the seccomp filter");
      if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
         fatal("setting no_new_privs");
      if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
         fatal("loading the seccomp filter");
   }
}

/* Be a PID 1 that reaps orphans until pidfd keeper_fd is readable (the
   keeper exited). */
static void pause_reap(int keeper_fd)
{
   struct pollfd p = { .fd = keeper_fd, .events = POLLIN };
   while (1) {
      int r = poll(&p, 1, 1000);
      if (r > 0 || (r < 0 && errno != EINTR))
         exit(0);
      while (waitpid(-1, NULL, WNOHANG) > 0)
         ;
   }
}

int main(int argc, char **argv)
{
   const char *caps = NULL, *filter = NULL;
   int nnp = 0, opt;
   while ((opt = getopt(argc, argv, "+c:nP:r:s:")) != -1) {
      switch (opt) {
      case 'P': pause_reap(atoi(optarg)); break;
      case 'r': readonly(optarg); break;
      case 'c': caps = optarg; break;
      case 'n': nnp = 1; break;
      case 's': filter = optarg; break;
      default: usage();
      }
   }
   if (optind >= argc)
      usage();
   if (caps != NULL) {
      char *end;
      errno = 0;
      uint64_t keep = strtoull(caps, &end, 16);
      if (errno != 0 || *end != '\0' || end == caps) {
         errno = EINVAL;
         fatal("capability mask");
      }
      caps_limit(keep);
   }
   if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
      fatal("setting no_new_privs");
   if (filter != NULL)
      seccomp_load(filter);
   execvp(argv[optind], argv + optind);
   fprintf(stderr, "ch-cri-init: can't execute %s: %s\n", argv[optind],
           strerror(errno));
   return EXIT_FAIL;
}
