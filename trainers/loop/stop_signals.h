// Graceful stops: SIGTERM, SIGUSR1 and SIGINT (what Slurm, PBS and a user's Ctrl-C send) only set
// a flag; the training loop polls it at step boundaries, the ranks agree, write a checkpoint and
// exit 75. A second SIGINT ends the process at once (exit 130), for a user who will not wait.
// The flag is process state by nature (a signal handler can reach nothing else); it lives here.
#pragma once

namespace cellfm::trainers {

/// Installs the handlers (idempotent) and clears the flag; also ignores SIGXFSZ, so a write past
/// a file size limit fails with EFBIG and is reported. The training loop calls it.
void install_stop_signal_handlers();

/// The first caught signal's number, or 0 when none arrived.
int caught_stop_signal();

/// "SIGTERM", "SIGUSR1", "SIGINT" (or "signal N").
const char* stop_signal_name(int signal_number);

}  // namespace cellfm::trainers
