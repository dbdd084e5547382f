// A test stand-in for a slow-starting isoflop-train: writes its pid to $HELD_EXEC_PIDFILE,
// waits until the file $HELD_EXEC_GATE exists, then execs $HELD_EXEC_TARGET with its own
// arguments. Unlike a shell script it leaves the signal mask alone, so a stop signal that
// arrives while it waits stays pending into isoflop-train, exactly as during LibTorch's load.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  const char* pidfile = std::getenv("HELD_EXEC_PIDFILE");
  const char* gate = std::getenv("HELD_EXEC_GATE");
  const char* target = std::getenv("HELD_EXEC_TARGET");
  if (!pidfile || !gate || !target) {
    std::fprintf(stderr, "held_exec: set HELD_EXEC_PIDFILE, HELD_EXEC_GATE, HELD_EXEC_TARGET\n");
    return 127;
  }
  if (FILE* f = std::fopen(pidfile, "w")) {
    std::fprintf(f, "%d\n", static_cast<int>(getpid()));
    std::fclose(f);
  }
  while (access(gate, F_OK) != 0) usleep(20000);
  argv[0] = const_cast<char*>(target);
  execv(target, argv);
  std::perror("held_exec: execv");
  return 127;
}
