// isoflop-exec PROGRAM ARGS...: runs PROGRAM with SIGTERM, SIGINT and SIGUSR2 blocked, so a
// stop signal that arrives while it starts is held rather than fatal. isoflop-train unblocks
// them once its handlers are installed, then sees the held signal and stops cleanly (a resumable
// checkpoint). The SLURM executor's batch scripts start the trainer through it under srun: SLURM
// may send USR2 (time limit) or SIGTERM (requeue, scancel) at any moment, LibTorch's start-up
// included. No dependencies, so it starts in microseconds.
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: isoflop-exec PROGRAM [ARGS...]\n");
    return 2;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR2);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  execv(argv[1], argv + 1);
  fprintf(stderr, "isoflop-exec: cannot execute %s: %s\n", argv[1], strerror(errno));
  return 127;
}
