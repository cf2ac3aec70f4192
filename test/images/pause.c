/* Stand-in for the Kubernetes pause container: sleep until SIGINT or
   SIGTERM, reaping any children (it may be PID 1 of a pod). */

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void sig_exit(int sig)
{
   (void)sig;
   _exit(0);
}

static void sig_reap(int sig)
{
   (void)sig;
   while (waitpid(-1, NULL, WNOHANG) > 0)
      ;
}

int main(int argc, char **argv)
{
   struct sigaction sa;

   if (argc > 1 && strcmp(argv[1], "-v") == 0) {
      printf("pause.c (ch-cri test stand-in)\n");
      return 0;
   }
   memset(&sa, 0, sizeof(sa));
   sa.sa_handler = sig_exit;
   if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL))
      return 1;
   sa.sa_handler = sig_reap;
   sa.sa_flags = SA_NOCLDSTOP;
   if (sigaction(SIGCHLD, &sa, NULL))
      return 2;
   for (;;)
      pause();
   return 42;  /* not reached */
}
