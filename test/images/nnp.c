/* Stand-in for the e2e nonewprivs image's entrypoint: installed setuid root,
   it shows whether the kernel honoured the setuid bit (no_new_privs off). */

#include <stdio.h>
#include <unistd.h>

int main(void)
{
   printf("Effective uid: %d\n", (int)geteuid());
   return 0;
}
