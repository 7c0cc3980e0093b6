// The async-signal-safe handlers behind stop_signals.h.
#include "trainers/loop/stop_signals.h"

#include <unistd.h>

#include <csignal>

namespace cellfm::trainers {

namespace {

volatile std::sig_atomic_t g_caught = 0;

extern "C" void on_stop_signal(int signal_number) {
  if (signal_number == SIGINT && g_caught == SIGINT) {
    static const char message[] = "cellfm: second SIGINT, aborting without a checkpoint\n";
    const ssize_t ignored = write(STDERR_FILENO, message, sizeof message - 1);
    (void)ignored;
    _exit(130);
  }
  if (g_caught == 0) g_caught = signal_number;
}

}  // namespace

void install_stop_signal_handlers() {
  g_caught = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking reads and MPI progress continue; the loop polls
  for (int signal_number : {SIGTERM, SIGUSR1, SIGINT}) sigaction(signal_number, &action, nullptr);
  // Past a file size limit (ulimit -f) a write fails with EFBIG, and the checkpoint write that hit
  // it ends the run naming the file, instead of SIGXFSZ killing the rank mid-write.
  signal(SIGXFSZ, SIG_IGN);
}

int caught_stop_signal() {
  return g_caught;
}

const char* stop_signal_name(int signal_number) {
  switch (signal_number) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGINT: return "SIGINT";
    default: return "a signal";
  }
}

}  // namespace cellfm::trainers
