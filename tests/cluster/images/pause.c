/* The sandbox ("pause") process for the real node's pods, and the process of the smoke
 * test's containers. Built by build.sh with `gcc -static` into a one-file OCI image
 * (images/build-pause.sh): there is no registry, the image is imported into containerd.
 * It sleeps until SIGTERM/SIGINT and reaps children (it is PID 1 of the pod's PID
 * namespace when the pod shares one). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  struct sigaction sa;
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("invoiceops-pause 1");
    return 0;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sa.sa_handler = on_child;
  sa.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);
  for (;;) pause();
}
