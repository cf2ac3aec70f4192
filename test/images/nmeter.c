/* A stand-in for busybox's nmeter applet, which Debian's busybox lacks and
   the node e2e suite's container lifecycle specs call as
   "nmeter -d0 '%3t' | head -n1" to get the time with milliseconds. Only
   what they use: -d MSEC between lines (0: none) and a format whose %[N]t
   is the time of day, UTC, with N decimals; other text is copied. Prints
   a line every MSEC until killed (head's exit ends it with SIGPIPE). */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void line(const char *fmt)
{
   struct timespec ts;
   struct tm tm;
   const char *p;

   clock_gettime(CLOCK_REALTIME, &ts);
   gmtime_r(&ts.tv_sec, &tm);
   for (p = fmt; *p != '\0'; p++) {
      if (p[0] == '%' && p[1] == '%') {
         putchar('%');
         p++;
      } else if (p[0] == '%' && p[1] >= '0' && p[1] <= '9' && p[2] == 't') {
         int n = p[1] - '0';
         long frac = ts.tv_nsec;
         int i;
         for (i = n; i < 9; i++)
            frac /= 10;
         printf("%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
         if (n > 0)
            printf(".%0*ld", n, frac);
         p += 2;
      } else if (p[0] == '%' && p[1] == 't') {
         printf("%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
         p++;
      } else {
         putchar(*p);
      }
   }
   putchar('\n');
   fflush(stdout);
}

int main(int argc, char **argv)
{
   long delay = 1000;
   int c;

   while ((c = getopt(argc, argv, "d:")) != -1) {
      if (c == 'd')
         delay = atol(optarg);
      else
         return 1;
   }
   if (optind >= argc) {
      fprintf(stderr, "usage: nmeter [-d MSEC] FORMAT\n");
      return 1;
   }
   for (;;) {
      line(argv[optind]);
      if (delay > 0)
         usleep(delay * 1000);
   }
}
