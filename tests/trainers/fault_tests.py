#!/usr/bin/python3
"""Process-level fault tests of `cellfm train` under mpiexec -n 2 (stdlib only).

Each subcommand is one CTest test (tests/trainers/CMakeLists.txt, labels slow;mpi):

  kill9_trials [--trials N] [--seed S]
      N times: a 2-rank training that checkpoints every 1 or 2 steps (keep_last 2) is SIGKILLed
      after a random 1.5-6 s (one rank, both ranks, or mpirun and then its ranks; in about half
      the trials, chosen at random, the kill then waits up to 2 s more for a moment when a
      checkpoint write is under way, a .tmp- directory present, since random times rarely hit
      one on this tiny model). Everything
      must be gone within 60 s; the newest committed checkpoint must verify (checked here with
      hashlib against its manifest, and by `cellfm checkpoints`) and `--resume auto` with
      run.max_steps = that step + 2 must finish and say "resumed at step <that step>" (or start
      at step 0 when nothing was committed yet). All trials share one run directory, so later
      kills land on runs that were themselves resumed, and on the partial writes (.tmp-*) and
      retention deletes of the previous ones.
  rank_death
      After the first committed checkpoint rank 1 is SIGKILLed: mpirun must end within 60 s,
      non-zero, naming rank 1 and signal 9; the last checkpoint verifies and resumes.
  signal_stop
      SIGTERM to both ranks, SIGUSR1 to mpirun, SIGINT to both ranks: exit 75 within 30 s, the
      printed checkpoint exists, verifies, its trainer_state.json says "signal SIG...", and
      `--resume auto` continues from its step. Then two SIGINTs to one rank: it aborts at once
      (exit 130, no checkpoint) and mpirun ends non-zero within 30 s.
  watchdog
      parallel.collective_timeout_s=5 and rank 1 SIGSTOPped after the first progress line: the
      job must end non-zero within 60 s with the collective watchdog's report.
  disk_full
      A run checkpoints step 2; its resumed launch runs under a file size limit (RLIMIT_FSIZE
      below the model file's size, SIGXFSZ ignored: write() fails with EFBIG, as on a full disk
      or quota) and must end non-zero at step 4's checkpoint naming the file and "File too
      large"; step 2 still verifies and `--resume auto` finishes from it.
  run_dir_unwritable
      run.dir below a regular file (uncreatable even for root, for whom permission bits do not
      stop writes) and, when not root, in a read-only directory: exit 2 within 60 s, one message
      naming run.dir and the cause, and no training step.
  bad_cells
      A corpus of a good file and one with six corrupt cells (tests/data/write_bad_cells.py):
      `cellfm check` and `cellfm train` end with exit 2 naming the file, row and cause; with
      data.on_bad_cell=skip, check's per-file report counts the 5 bad cells (the fractional one
      is fine for Exceiver, which does not need raw counts) and a one-epoch training finishes,
      its last progress line saying skipped_cells 5.

Common options: --cellfm PATH (the binary), --mpiexec PATH, --scratch DIR (per-test temporary
directories are made in it; kept on failure, removed on success). Every mpiexec is started in
its own session; whatever of that session is left at the end is SIGCONTed and SIGKILLed.
"""

import argparse
import ctypes
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

# The checkout (experiments/quickstart.yaml is the specs' base); --source-dir overrides it.
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RANKS = 2
STEP_NAME = re.compile(r"^step_(\d{9})$")
PROGRESS = re.compile(r"\bstep (\d+)/(\d+) \|")
RANK_LINE = re.compile(r"^\[r(\d+)\] rank (\d+) of (\d+): pid (\d+) on ")


class TestFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def log(message):
    print(message, flush=True)


def tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# Processes


def become_subreaper():
    """Orphaned ranks (after mpirun is SIGKILLed) are re-parented to this script, so they can be
    reaped and waited for instead of lingering as zombies of PID 1."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def process_gone(pid):
    """True when pid has exited (reaping it when it is our child or orphan)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def session_members(sid):
    """Pids of live processes whose session id is sid."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) == sid and not process_gone(pid):
                members.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return members


def kill_session(sid):
    """SIGCONT and SIGKILL every process of the session (each rank has its own process group,
    so a process-group kill of mpirun would miss them). Returns the pids that were still there."""
    left = session_members(sid)
    for pid in left:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    while time.time() < deadline and any(not process_gone(pid) for pid in left):
        time.sleep(0.05)
    return left


def reap_orphans():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def pending_signals(pid):
    """The process's shared pending signal mask (/proc/PID/status ShdPnd), 0 when gone."""
    try:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                if line.startswith("ShdPnd:"):
                    return int(line.split()[1], 16)
    except FileNotFoundError:
        pass
    return 0


class Job:
    """One `mpiexec -n 2 cellfm ...` in its own session, output in a file."""

    def __init__(self, env, args, name):
        self.env = env
        self.output_path = os.path.join(env.dir, "%s.out" % name)
        self.name = name
        self.run_dir = None
        self.log_offsets = {}
        command = [env.mpiexec, "-n", str(RANKS), "--oversubscribe"]
        if os.geteuid() == 0:
            command.insert(1, "--allow-run-as-root")
        command += [env.cellfm] + args
        self.command = command
        self.output = open(self.output_path, "wb")
        self.started = time.time()
        self.proc = subprocess.Popen(command, stdout=self.output, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.sid = self.proc.pid
        self.rank_pids = {}
        self.leftovers = []
        self.clean_exit = False  # wait_exit saw mpiexec and both ranks end
        env.jobs.append(self)

    def text(self):
        with open(self.output_path, "rb") as out:
            return out.read().decode("utf-8", "replace")

    def watch_logs(self, run_dir):
        """Remembers the run's rank log sizes now (call before the ranks start: logs append)."""
        self.run_dir = run_dir
        for rank in range(RANKS):
            path = rank_log(run_dir, rank)
            self.log_offsets[rank] = os.path.getsize(path) if os.path.exists(path) else 0

    def new_log_text(self, rank):
        path = rank_log(self.run_dir, rank)
        if not os.path.exists(path):
            return ""
        with open(path, "rb") as f:
            data = f.read()
        start = self.log_offsets.get(rank, 0)
        if len(data) < start:
            start = 0
        return data[start:].decode("utf-8", "replace")

    def wait_for_pids(self, timeout):
        """Both ranks' pids from the 'rank R of 2: pid P' lines this job added to the logs,
        checked to be processes of this job's session."""
        deadline = time.time() + timeout
        while True:
            for rank in range(RANKS):
                if rank in self.rank_pids:
                    continue
                for line in self.new_log_text(rank).splitlines():
                    match = RANK_LINE.match(line)
                    if match and int(match.group(2)) == rank:
                        pid = int(match.group(4))
                        try:
                            same = os.getsid(pid) == self.sid
                        except ProcessLookupError:
                            same = False
                        check(same, "%s: rank %d's log names pid %d, which is not a process of "
                              "this job (session %d)" % (self.name, rank, pid, self.sid))
                        self.rank_pids[rank] = pid
            if len(self.rank_pids) == RANKS:
                return self.rank_pids
            check(self.proc.poll() is None,
                  "%s: mpiexec exited (status %s) before both ranks logged their pids:\n%s"
                  % (self.name, self.proc.returncode, tail(self.text())))
            check(time.time() < deadline, "%s: no 'rank R of 2: pid P' lines in %s/logs after "
                  "%.0f s:\n%s" % (self.name, self.run_dir, timeout, tail(self.text())))
            time.sleep(0.05)

    def wait_for_progress(self, timeout, min_step=1):
        """Waits for rank 0 to log 'step N/M |' with N >= min_step; returns N."""
        deadline = time.time() + timeout
        while True:
            steps = [int(m.group(1)) for m in PROGRESS.finditer(self.new_log_text(0))]
            if steps and steps[-1] >= min_step:
                return steps[-1]
            check(self.proc.poll() is None, "%s: mpiexec exited (status %s) before progress "
                  "step %d:\n%s" % (self.name, self.proc.returncode, min_step, tail(self.text())))
            check(time.time() < deadline, "%s: no progress line for step %d after %.0f s:\n%s"
                  % (self.name, min_step, timeout, tail(self.text())))
            time.sleep(0.05)

    def wait_exit(self, timeout, since=None):
        """Waits until mpiexec and both ranks are gone; fails after timeout seconds (counted
        from since). Returns (mpiexec status, seconds since `since`)."""
        since = self.started if since is None else since
        deadline = since + timeout
        while True:
            done = self.proc.poll() is not None
            ranks_done = all(process_gone(pid) for pid in self.rank_pids.values())
            if done and ranks_done:
                self.clean_exit = True
                self.output.flush()
                return self.proc.returncode, time.time() - since
            if time.time() > deadline:
                alive = [pid for pid in [self.proc.pid] + list(self.rank_pids.values())
                         if not process_gone(pid)]
                raise TestFailure(
                    "%s: still running %.0f s after %s (live pids %s: mpiexec %d, ranks %s); "
                    "output:\n%s" % (self.name, timeout, "the fault" if since != self.started
                                     else "its start", alive, self.proc.pid, self.rank_pids,
                                     tail(self.text())))
            time.sleep(0.05)

    def cleanup(self):
        left = kill_session(self.sid)
        if left and not self.leftovers:
            self.leftovers = left
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.output.close()
        return left


def rank_log(run_dir, rank):
    return os.path.join(run_dir, "logs", "rank_%05d.log" % rank)


def send(pid, sig, what):
    log("  %s -> %s (pid %d)" % (signal.Signals(sig).name, what, pid))
    os.kill(pid, sig)


# ---------------------------------------------------------------------------------------------
# Environment: a tiny corpus and spec per test


class Env:
    def __init__(self, args, test):
        self.cellfm = os.path.abspath(args.cellfm)
        self.mpiexec = args.mpiexec
        os.makedirs(args.scratch, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="fault-%s-" % test, dir=os.path.abspath(args.scratch))
        self.jobs = []
        self.spec = os.path.join(self.dir, "spec.yaml")

    def setup(self):
        """A 600-cell, 200-gene corpus, a quickstart-based spec (batch 8 cells per rank, log
        every step, constant schedule, one held-out batch) and its gene statistics."""
        check(os.access(self.cellfm, os.X_OK), "no cellfm binary at %s" % self.cellfm)
        corpus = os.path.join(self.dir, "corpus")
        self.run_one(["synth", "--out", corpus, "--cells", "600", "--files", "2", "--genes",
                      "200", "--cell-types", "4", "--matrix", "raw", "--seed", "0"])
        stats = os.path.join(self.dir, "stats")
        with open(self.spec, "w") as spec:
            spec.write(
                "base: %s/experiments/quickstart.yaml\n"
                "run:\n  name: fault\n  dir: %s\n  max_steps: 1000000\n"
                "data:\n  files: [%s/*.h5ad]\n  batch_cells: 8\n  gene_stats: %s/gene_stats.tsv\n"
                "schedule:\n  name: constant\n  warmup_steps: 4\n"
                "evaluation:\n  every_steps: 0\n  batches: 1\n"
                "checkpoint:\n  every_steps: 0\n  keep_last: 2\n"
                "logging:\n  every_steps: 1\n" % (SOURCE_DIR, stats, corpus, stats))
        self.run_one(["prep", "stats", self.spec])
        check(os.path.exists(os.path.join(stats, "gene_stats.tsv")),
              "cellfm prep stats wrote no %s/gene_stats.tsv" % stats)

    def run_one(self, args, timeout=120):
        """cellfm on one process; fails unless it exits 0."""
        result = subprocess.run([self.cellfm] + args, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=timeout)
        out = result.stdout.decode("utf-8", "replace")
        check(result.returncode == 0, "cellfm %s exited %d:\n%s"
              % (" ".join(args), result.returncode, tail(out)))
        return out

    def train(self, name, run_dir, sets=(), resume=None):
        args = ["train", self.spec, "--set", "run.dir=" + run_dir]
        for item in sets:
            args += ["--set", item]
        if resume:
            args += ["--resume", resume]
        job = Job(self, args, name)
        job.watch_logs(run_dir)
        return job

    def train_to_end(self, name, run_dir, sets=(), resume=None, timeout=120):
        job = self.train(name, run_dir, sets, resume)
        try:
            status, _ = job.wait_exit(timeout)
        finally:
            job.cleanup()
        return status, job.text()

    def cleanup(self):
        leftovers = []
        for job in self.jobs:
            job.cleanup()
            if job.leftovers and job.proc.returncode is not None and job.clean_exit:
                leftovers.append((job.name, job.leftovers))
        reap_orphans()
        return leftovers


# ---------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_dirs(run_dir):
    """(committed [(step, path)] newest first, .tmp- names, .old- names)."""
    root = os.path.join(run_dir, "checkpoints")
    committed, tmp, old = [], [], []
    if os.path.isdir(root):
        for name in os.listdir(root):
            match = STEP_NAME.match(name)
            if match and os.path.isdir(os.path.join(root, name)):
                committed.append((int(match.group(1)), os.path.join(root, name)))
            elif name.startswith(".tmp-"):
                tmp.append(name)
            elif name.startswith(".old-"):
                old.append(name)
    committed.sort(reverse=True)
    return committed, tmp, old


def verify_manifest(path):
    """Independent check: every file the manifest lists has its size and SHA-256, the manifest
    names the directory's step, and the directory holds nothing unlisted. '' when it verifies."""
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as error:
        return "manifest.json: %s" % error
    listed = set()
    for entry in manifest.get("files", []):
        name = entry["name"]
        listed.add(name)
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            return "%s listed but missing" % name
        if os.path.getsize(file_path) != entry["bytes"]:
            return "%s has %d bytes, manifest says %d" % (name, os.path.getsize(file_path),
                                                          entry["bytes"])
        digest = hashlib.sha256()
        with open(file_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            return "%s: SHA-256 %s, manifest says %s" % (name, digest.hexdigest(),
                                                        entry["sha256"])
    for required in ("trainer_state.json", "spec.yaml", "vocabulary.txt"):
        if required not in listed:
            return "manifest does not list %s" % required
    unlisted = sorted(set(os.listdir(path)) - listed - {"manifest.json"})
    if unlisted:
        return "files not in the manifest: %s" % ", ".join(unlisted)
    match = STEP_NAME.match(os.path.basename(path))
    if match and manifest.get("step") != int(match.group(1)):
        return "manifest step %s in %s" % (manifest.get("step"), os.path.basename(path))
    return ""


def check_listing(env, run_dir, newest):
    """`cellfm checkpoints RUN`: exit 0 naming newest as verified and as what --resume auto
    takes, or exit 2 with 'no checkpoint verifies' when newest is None. Returns (output, number
    of older checkpoints it reports CORRUPT)."""
    result = subprocess.run([env.cellfm, "checkpoints", run_dir], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120)
    out = result.stdout.decode("utf-8", "replace")
    if newest is None:
        check(result.returncode == 2 and "no checkpoint verifies" in out,
              "cellfm checkpoints %s with no committed checkpoint: exit %d (expected 2 and 'no "
              "checkpoint verifies'):\n%s" % (run_dir, result.returncode, out))
        return out, 0
    check(result.returncode == 0, "cellfm checkpoints %s exited %d with committed %s:\n%s"
          % (run_dir, result.returncode, newest, out))
    lines = {}
    for line in out.splitlines():
        if "  " in line:
            path, verdict = line.split("  ", 1)
            lines[os.path.basename(path.strip())] = verdict.strip()
    name = os.path.basename(newest)
    check(lines.get(name) == "verified", "cellfm checkpoints: newest committed checkpoint %s "
          "is not 'verified':\n%s" % (name, out))
    takes = [l for l in out.splitlines() if l.startswith("--resume auto takes ")]
    check(len(takes) == 1 and os.path.basename(takes[0].split()[-1]) == name,
          "cellfm checkpoints: '--resume auto takes' does not name %s:\n%s" % (name, out))
    corrupt = sum(1 for v in lines.values() if v.startswith("CORRUPT"))
    return out, corrupt


def check_newest_and_resume(env, run_dir, label):
    """The newest committed checkpoint verifies (hashlib and `cellfm checkpoints`), and
    `--resume auto` with run.max_steps = its step + 2 finishes from it. Returns (step or None,
    number of .tmp- dirs, number of older CORRUPT checkpoints, notes)."""
    committed, tmp, old = checkpoint_dirs(run_dir)
    notes = []
    newest_step, newest = (committed[0] if committed else (None, None))
    if newest is not None:
        problem = verify_manifest(newest)
        check(problem == "", "%s: newest committed checkpoint %s does not verify: %s"
              % (label, newest, problem))
        with open(os.path.join(newest, "trainer_state.json")) as f:
            state = json.load(f)
        check(state.get("step") == newest_step, "%s: %s/trainer_state.json has step %s"
              % (label, newest, state.get("step")))
        latest_path = os.path.join(run_dir, "checkpoints", "latest")
        if os.path.exists(latest_path):
            with open(latest_path) as f:
                latest = f.read().strip()
            if latest != os.path.basename(newest):
                notes.append("latest names %s, newest committed is %s"
                             % (latest, os.path.basename(newest)))
    listing, corrupt = check_listing(env, run_dir, newest)
    if tmp or old or corrupt:
        notes.append("left: %s" % "; ".join(l for l in listing.splitlines()
                                            if "incomplete" in l or "CORRUPT" in l) or
                     ", ".join(tmp + old))

    target = (newest_step or 0) + 2
    status, out = env.train_to_end("%s-resume" % label, run_dir,
                                   ["run.max_steps=%d" % target], resume="auto")
    check(status == 0, "%s: cellfm train --resume auto (max_steps %d) exited %s:\n%s"
          % (label, target, status, tail(out)))
    summary = [l for l in out.splitlines() if l.startswith("fault: ")]
    check(summary, "%s: no summary line 'fault: ...' in the resumed run's output:\n%s"
          % (label, tail(out)))
    if newest is not None:
        expected = "fault: %d steps (resumed at step %d)" % (target, newest_step)
        check(summary[-1].startswith(expected), "%s: resumed run's summary is\n  %s\nexpected "
              "it to start with\n  %s" % (label, summary[-1], expected))
    else:
        check(summary[-1].startswith("fault: %d steps," % target) and
              "resumed" not in summary[-1], "%s: with no committed checkpoint the run should "
              "start fresh; summary:\n  %s" % (label, summary[-1]))
    end = os.path.join(run_dir, "checkpoints", "step_%09d" % target)
    check(verify_manifest(end) == "", "%s: the resumed run's end checkpoint %s does not verify: "
          "%s" % (label, end, verify_manifest(end)))
    return newest_step, len(tmp), corrupt, notes


# ---------------------------------------------------------------------------------------------
# Tests


def test_kill9_trials(env, args):
    rng = random.Random(args.seed)
    log("kill9_trials: %d trials, seed %d, one run directory for all of them"
        % (args.trials, args.seed))
    run_dir = os.path.join(env.dir, "run")
    during_write = 0
    corrupt_older = 0
    resumed_runs = 0
    all_notes = []
    start = time.time()
    for trial in range(1, args.trials + 1):
        every = rng.choice([1, 2])
        delay = rng.uniform(1.5, 6.0)
        victim = rng.choice(["rank 0", "rank 1", "both ranks", "mpirun"])
        gap = rng.uniform(0.0, 0.5)
        aim = rng.random() < 0.5
        label = "trial %d" % trial
        had_checkpoint = bool(checkpoint_dirs(run_dir)[0])
        job = env.train(label, run_dir, ["checkpoint.every_steps=%d" % every,
                                         "checkpoint.keep_last=2"], resume="auto")
        try:
            pids = job.wait_for_pids(60)
            time.sleep(max(0.0, job.started + delay - time.time()))
            if aim:
                # Then up to 2 s more, until a checkpoint write is under way (.tmp- present).
                aim_until = time.time() + 2.0
                while not checkpoint_dirs(run_dir)[1] and time.time() < aim_until:
                    time.sleep(0.0005)
            check(job.proc.poll() is None, "%s: the training exited (status %s) before the kill:"
                  "\n%s" % (label, job.proc.returncode, tail(job.text())))
            progress = [int(m.group(1)) for m in PROGRESS.finditer(job.new_log_text(0))]
            log("%s: every_steps %d, SIGKILL %s after %.2f s%s (last logged step %s)"
                % (label, every, victim, time.time() - job.started,
                   ", aimed at a checkpoint write" if aim else "",
                   progress[-1] if progress else "none"))
            killed_at = time.time()
            if victim == "mpirun":
                send(job.proc.pid, signal.SIGKILL, "mpirun")
                time.sleep(gap)
                for rank in range(RANKS):
                    if not process_gone(pids[rank]):
                        send(pids[rank], signal.SIGKILL, "rank %d" % rank)
            elif victim == "both ranks":
                for rank in range(RANKS):
                    send(pids[rank], signal.SIGKILL, "rank %d" % rank)
            else:
                rank = int(victim.split()[1])
                send(pids[rank], signal.SIGKILL, victim)
            status, took = job.wait_exit(60, since=killed_at)
            log("  all gone %.2f s after the kill (mpirun status %s)" % (took, status))
            if victim != "mpirun":
                check(status != 0, "%s: mpirun exited 0 after %s was SIGKILLed" % (label, victim))
        finally:
            job.cleanup()
        reap_orphans()
        step, tmp, corrupt, notes = check_newest_and_resume(env, run_dir, label)
        during_write += tmp > 0
        corrupt_older += corrupt
        resumed_runs += had_checkpoint
        for note in notes:
            all_notes.append("%s: %s" % (label, note))
            log("  note: %s" % note)
        log("  newest committed: %s%s; resumed to step %s"
            % ("step %d verified" % step if step is not None else "none",
               " (a .tmp- write left by the kill)" if tmp else "",
               (step or 0) + 2))
    log("kill9_trials: %.0f s in all; %d of the killed runs had resumed from a checkpoint"
        % (time.time() - start, resumed_runs))
    log("kill9_trials: %d trials, %d kills during a checkpoint write (a .tmp- dir present after "
        "the kill), all newest checkpoints verified and resumed" % (args.trials, during_write))
    if corrupt_older:
        log("kill9_trials: %d older checkpoints were reported CORRUPT (partly deleted by "
            "retention when killed)" % corrupt_older)


def first_checkpoint(job, run_dir, timeout):
    deadline = time.time() + timeout
    while True:
        committed = checkpoint_dirs(run_dir)[0]
        if committed:
            return committed[0]
        check(job.proc.poll() is None, "%s: mpirun exited (status %s) before the first "
              "checkpoint:\n%s" % (job.name, job.proc.returncode, tail(job.text())))
        check(time.time() < deadline, "%s: no checkpoint in %s after %.0f s"
              % (job.name, run_dir, timeout))
        time.sleep(0.05)


def test_rank_death(env, args):
    run_dir = os.path.join(env.dir, "run")
    job = env.train("rank_death", run_dir, ["checkpoint.every_steps=5"])
    try:
        pids = job.wait_for_pids(60)
        step, path = first_checkpoint(job, run_dir, 120)
        log("rank_death: first checkpoint %s" % path)
        killed_at = time.time()
        send(pids[1], signal.SIGKILL, "rank 1")
        status, took = job.wait_exit(60, since=killed_at)
        out = job.text()
    finally:
        job.cleanup()
    log("rank_death: mpirun exited %s, %.2f s after the kill" % (status, took))
    check(status != 0, "rank_death: mpirun exited 0 after rank 1 was SIGKILLed:\n%s" % tail(out))
    named = re.search(r"process rank 1 .*exited on signal 9", out)
    check(named, "rank_death: mpirun's output does not name rank 1 and signal 9 (expected "
          "'process rank 1 ... exited on signal 9'):\n%s" % tail(out))
    log("rank_death: mpirun says: %s" % named.group(0))
    step, tmp, _, notes = check_newest_and_resume(env, run_dir, "rank_death")
    log("rank_death: newest checkpoint step %s verified and resumed%s"
        % (step, "; " + "; ".join(notes) if notes else ""))


STOPPED = re.compile(r"^fault: stopped by (SIG\w+) after step (\d+); checkpoint (\S+);", re.M)


def signal_case(env, name, targets, sig, every_steps):
    run_dir = os.path.join(env.dir, name)
    job = env.train(name, run_dir, ["checkpoint.every_steps=%d" % every_steps])
    try:
        pids = job.wait_for_pids(60)
        step = job.wait_for_progress(120, min_step=3)
        log("%s: at step %d" % (name, step))
        sent_at = time.time()
        for target in targets:
            pid = job.proc.pid if target == "mpirun" else pids[int(target.split()[1])]
            send(pid, sig, target)
        status, took = job.wait_exit(30, since=sent_at)
        out = job.text()
    finally:
        job.cleanup()
    signame = signal.Signals(sig).name
    log("%s: exit %s %.2f s after the signal" % (name, status, took))
    check(status == 75, "%s: exit status %s, expected 75:\n%s" % (name, status, tail(out)))
    stopped = STOPPED.findall(out)
    check(len(stopped) == 1, "%s: expected one line 'fault: stopped by %s after step N; "
          "checkpoint DIR;', found %d:\n%s" % (name, signame, len(stopped), tail(out)))
    got_signal, step, path = stopped[0][0], int(stopped[0][1]), stopped[0][2]
    check(got_signal == signame, "%s: stopped by %s, sent %s" % (name, got_signal, signame))
    check(os.path.basename(path) == "step_%09d" % step and os.path.isdir(path),
          "%s: printed checkpoint %s (step %d) is not a directory" % (name, path, step))
    problem = verify_manifest(path)
    check(problem == "", "%s: checkpoint %s does not verify: %s" % (name, path, problem))
    with open(os.path.join(path, "trainer_state.json")) as f:
        state = json.load(f)
    check(state.get("reason") == "signal " + signame, "%s: %s/trainer_state.json reason is %r, "
          "expected %r" % (name, path, state.get("reason"), "signal " + signame))
    check(state.get("step") == step, "%s: trainer_state.json step %s, printed step %d"
          % (name, state.get("step"), step))
    committed = checkpoint_dirs(run_dir)[0]
    check(committed and committed[0][1] == path, "%s: the printed checkpoint %s is not the "
          "newest committed one (%s)" % (name, path, committed[:1]))
    # Every rank stopped after the same step, also when only one rank got the signal.
    for rank in (0, 1):
        with open(rank_log(run_dir, rank), errors="replace") as f:
            logged = re.findall(r"stopped after step (\d+) with checkpoint", f.read())
        check(logged == [str(step)], "%s: rank %d's log says it stopped after step(s) %s, the "
              "job after step %d" % (name, rank, logged, step))
    resumed, _, _, notes = check_newest_and_resume(env, run_dir, name)
    check(resumed == step, "%s: resumed from %s, stopped at %d" % (name, resumed, step))
    log("%s: stopped after step %d, checkpoint verified (reason %r), resumed at step %d%s"
        % (name, step, state["reason"], step, "; " + "; ".join(notes) if notes else ""))


def double_sigint(env):
    name = "double_sigint"
    run_dir = os.path.join(env.dir, name)
    job = env.train(name, run_dir, ["checkpoint.every_steps=1000"])
    try:
        pids = job.wait_for_pids(60)
        job.wait_for_progress(120, min_step=3)
        before = checkpoint_dirs(run_dir)[0]
        sent_at = time.time()
        send(pids[1], signal.SIGINT, "rank 1")
        # The second must not merge with the first: wait until the first is delivered.
        while pending_signals(pids[1]) & (1 << (signal.SIGINT - 1)):
            check(time.time() - sent_at < 5, "double_sigint: the first SIGINT stayed pending "
                  "for 5 s")
            time.sleep(0.0005)
        send(pids[1], signal.SIGINT, "rank 1")
        rank_gone = None
        while rank_gone is None and time.time() - sent_at < 30:
            if process_gone(pids[1]):
                rank_gone = time.time() - sent_at
            time.sleep(0.005)
        status, took = job.wait_exit(30, since=sent_at)
        out = job.text()
    finally:
        job.cleanup()
    log("%s: rank 1 gone %.3f s after the first SIGINT; mpirun exit %s after %.2f s"
        % (name, rank_gone if rank_gone is not None else -1, status, took))
    check(status not in (0, 75), "%s: mpirun exit %s; expected an abort (not 0, not 75):\n%s"
          % (name, status, tail(out)))
    check("second SIGINT, aborting without a checkpoint" in out, "%s: no 'second SIGINT, "
          "aborting without a checkpoint' message:\n%s" % (name, tail(out)))
    check(re.search(r"Exit code:\s+130", out), "%s: mpirun does not report exit code 130 "
          "for the aborted rank:\n%s" % (name, tail(out)))
    check(rank_gone is not None and rank_gone < 5, "%s: rank 1 took %s s to exit after two "
          "SIGINTs" % (name, rank_gone))
    after = checkpoint_dirs(run_dir)[0]
    check(after == before, "%s: a checkpoint was written after the second SIGINT: %s -> %s"
          % (name, before[:1], after[:1]))


def test_signal_stop(env, args):
    # every_steps 1: the stop's step is also a periodic checkpoint's step.
    signal_case(env, "sigterm_ranks", ["rank 0", "rank 1"], signal.SIGTERM, 5)
    signal_case(env, "sigusr1_mpirun", ["mpirun"], signal.SIGUSR1, 1)
    signal_case(env, "sigint_ranks", ["rank 0", "rank 1"], signal.SIGINT, 3)
    # One rank alone caught it: the step-boundary agreement stops both at the same step.
    signal_case(env, "sigusr1_rank1", ["rank 1"], signal.SIGUSR1, 1000)
    double_sigint(env)


WATCHDOG = re.compile(r"cellfm: error: rank (\d+): (.*) at training step (\d+) has not finished "
                      r"after ([\d.]+) s \(collective timeout 5 s\): another rank died, hangs or "
                      r"skipped it; aborting the job")


def test_watchdog(env, args):
    run_dir = os.path.join(env.dir, "run")
    job = env.train("watchdog", run_dir, ["parallel.collective_timeout_s=5",
                                          "checkpoint.every_steps=50"])
    pids = {}
    try:
        pids = job.wait_for_pids(60)
        step = job.wait_for_progress(120, min_step=1)
        stopped_at = time.time()
        send(pids[1], signal.SIGSTOP, "rank 1")
        log("watchdog: rank 1 stopped after step %d" % step)
        status, took = job.wait_exit(60, since=stopped_at)
        out = job.text()
    finally:
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        job.cleanup()
    log("watchdog: mpirun exit %s, %.2f s after SIGSTOP" % (status, took))
    check(status != 0, "watchdog: mpirun exited 0:\n%s" % tail(out))
    report = WATCHDOG.search(out)
    check(report, "watchdog: no watchdog report ('cellfm: error: rank R: ... at training step N "
          "has not finished after T s (collective timeout 5 s): another rank died, hangs or "
          "skipped it; aborting the job') in the output:\n%s" % tail(out))
    log("watchdog: %s" % report.group(0))
    check(report.group(1) == "0", "watchdog: the report comes from rank %s, expected rank 0 "
          "(rank 1 was stopped)" % report.group(1))
    check(float(report.group(4)) >= 5.0, "watchdog: fired after %s s < 5 s" % report.group(4))
    check(int(report.group(3)) >= step, "watchdog: names step %s, rank 1 was stopped after step "
          "%d" % (report.group(3), step))
    check(took >= 4.0, "watchdog: the job ended %.2f s after SIGSTOP, before the 5 s timeout "
          "could have run" % took)


TESTS = {
    "kill9_trials": test_kill9_trials,
    "rank_death": test_rank_death,
    "signal_stop": test_signal_stop,
    "watchdog": test_watchdog,
}


# Run as each rank (not around mpiexec, whose PMIx shared-memory files a small limit breaks):
# sets the limit, ignores SIGXFSZ (kept across exec) and becomes cellfm.
LIMIT_WRAPPER = ("import os, resource, signal, sys\n"
                 "limit = int(sys.argv[1])\n"
                 "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
                 "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                 "os.execv(sys.argv[2], sys.argv[2:])\n")


def train_with_file_limit(env, name, run_dir, sets, resume, file_limit, timeout=180):
    """`mpiexec -n 2 cellfm train` whose ranks may not write a file beyond file_limit bytes (a
    write past it fails with EFBIG, SIGXFSZ ignored: what a full disk or a quota looks like to
    the writer). Returns (exit code, output)."""
    command = [env.mpiexec, "-n", str(RANKS), "--oversubscribe"]
    if os.geteuid() == 0:
        command.insert(1, "--allow-run-as-root")
    command += [sys.executable, "-c", LIMIT_WRAPPER, str(file_limit), env.cellfm, "train",
                env.spec, "--set", "run.dir=" + run_dir]
    for item in sets:
        command += ["--set", item]
    if resume:
        command += ["--resume", resume]
    output_path = os.path.join(env.dir, "%s.out" % name)
    with open(output_path, "wb") as output:
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure("%s did not end within %d s" % (name, timeout))
        finally:
            kill_session(proc.pid)
    with open(output_path, "rb") as f:
        return code, f.read().decode("utf-8", "replace")


def test_disk_full(env, args):
    run_dir = os.path.join(env.dir, "run")
    every = ["checkpoint.every_steps=2", "checkpoint.keep_last=5"]
    status, out = env.train_to_end("first", run_dir, every + ["run.max_steps=2"])
    check(status == 0, "the first run exited %s:\n%s" % (status, tail(out)))
    step2 = os.path.join(run_dir, "checkpoints", "step_%09d" % 2)
    model = os.path.join(step2, "model.tp0-of-1.safetensors")
    check(verify_manifest(step2) == "", "step 2 does not verify: %s" % verify_manifest(step2))
    limit = os.path.getsize(model) // 2
    check(limit > 32 * 1024, "model file too small (%d bytes) to put the limit above the logs"
          % os.path.getsize(model))
    code, out = train_with_file_limit(env, "limited", run_dir, every + ["run.max_steps=6"],
                                      "auto", limit)
    failed = os.path.join(run_dir, "checkpoints", ".tmp-step_%09d" % 4,
                          "model.tp0-of-1.safetensors")
    check(code != 0 and code != 75, "the run under a %d-byte file limit exited %d:\n%s"
          % (limit, code, tail(out)))
    expected = ("checkpoint of step 4 not written: cannot write %s: write failed (File too large)"
                % failed)
    check(expected in out, "no message\n  %s\nin the output:\n%s" % (expected, tail(out)))
    check(count_lines(out, "checkpoint of step 4 not written") == 1,
          "the failure is reported more than once:\n%s" % tail(out))
    check(PROGRESS.search(out) and "step 4/6" in out and "step 5/6" not in out,
          "the run did not stop at step 4's checkpoint:\n%s" % tail(out))
    committed, _, _ = checkpoint_dirs(run_dir)
    check([step for step, _ in committed] == [2], "committed checkpoints after the failure: %s"
          % committed)
    check(verify_manifest(step2) == "", "step 2 no longer verifies after the failed write: %s"
          % verify_manifest(step2))
    newest, _, _, notes = check_newest_and_resume(env, run_dir, "disk_full")
    check(newest == 2, "resume auto took step %s, not 2" % newest)
    log("disk_full: step 4's write failed (%d-byte limit) with the path and cause; step 2 "
        "verified and resumed to step 4 (%s)" % (limit, "; ".join(notes) or "nothing left over"))


def count_lines(text, needle):
    return sum(1 for line in text.splitlines() if needle in line)


def expect_start_refused(env, name, run_dir, cause):
    started = time.time()
    status, out = env.train_to_end(name, run_dir, timeout=60)
    expected = "run.dir %s: %s" % (run_dir, cause)
    check(status == 2, "%s: exit %s, expected 2:\n%s" % (name, status, tail(out)))
    check(count_lines(out, expected) == 1, "%s: expected one line with\n  %s\nin:\n%s"
          % (name, expected, tail(out)))
    check(not PROGRESS.search(out), "%s: a training step ran:\n%s" % (name, tail(out)))
    log("%s: refused in %.1f s: %s" % (name, time.time() - started, expected))


def test_run_dir_unwritable(env, args):
    blocker = os.path.join(env.dir, "a-file")
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    expect_start_refused(env, "under_a_file", os.path.join(blocker, "run"),
                         "cannot create it (Not a directory)")
    if os.geteuid() == 0:
        log("run_dir_unwritable: read-only directory case skipped: root writes through "
            "permission bits (the under-a-file case covers the start check)")
        return
    read_only = os.path.join(env.dir, "read-only")
    os.makedirs(read_only)
    os.chmod(read_only, 0o555)
    try:
        expect_start_refused(env, "read_only", os.path.join(read_only, "run"),
                             "cannot create it (Permission denied)")
    finally:
        os.chmod(read_only, 0o755)


def test_bad_cells(env, args):
    corpus = os.path.join(env.dir, "bad-corpus")
    writer = os.path.join(SOURCE_DIR, "tests", "data", "write_bad_cells.py")
    subprocess.run(["/usr/bin/python3", writer, corpus, "200"], check=True,
                   stdout=subprocess.DEVNULL)
    with open(env.spec, "w") as spec:
        spec.write(
            "base: %s/experiments/quickstart.yaml\n"
            "run:\n  name: fault\n  max_steps: 30\n"
            "data:\n  files: [%s/good.h5ad, %s/many_bad.h5ad]\n  matrix: X\n  batch_cells: 8\n"
            "  filters: {}\n  group_column: ''\n  validation:\n    fraction: 0\n"
            "model:\n  exceiver:\n    mask_fraction: 0.5\n"  # cells of 1 to 4 genes
            "evaluation:\n  every_steps: 0\n"
            "checkpoint:\n  every_steps: 0\n"
            "logging:\n  every_steps: 1\n" % (SOURCE_DIR, corpus, corpus))
    bad_file = os.path.join(corpus, "many_bad.h5ad")
    cause = "%s: X has a negative count at row 5 (-3)" % bad_file
    result = subprocess.run([env.cellfm, "check", env.spec, "--set",
                             "run.dir=" + os.path.join(env.dir, "check-run")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = result.stdout.decode("utf-8", "replace")
    check(result.returncode == 2 and cause in out, "cellfm check on a corrupt cell: exit %d, "
          "expected 2 and\n  %s\nin:\n%s" % (result.returncode, cause, tail(out)))
    status, out = env.train_to_end("error", os.path.join(env.dir, "run-error"))
    check(status == 2 and count_lines(out, cause) == 1, "cellfm train on a corrupt cell: exit "
          "%s, expected 2 and one line with\n  %s\nin:\n%s" % (status, cause, tail(out)))

    skip = ["--set", "data.on_bad_cell=skip"]
    result = subprocess.run([env.cellfm, "check", env.spec, "--set",
                             "run.dir=" + os.path.join(env.dir, "check-run")] + skip,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = result.stdout.decode("utf-8", "replace")
    check(result.returncode == 0, "cellfm check with skip exited %d:\n%s"
          % (result.returncode, tail(out)))
    rows = {}
    for line in out.splitlines():
        fields = line.split()
        if (len(fields) == 8 and fields[0].endswith(".h5ad") and
                all(field.isdigit() for field in fields[1:])):  # the corpus table's rows
            rows[os.path.basename(fields[0])] = int(fields[7])
    check(rows == {"good.h5ad": 0, "many_bad.h5ad": 5}, "cellfm check's bad column: %s in:\n%s"
          % (rows, tail(out)))
    check("5 bad cells skipped (data.on_bad_cell: skip)" in out,
          "cellfm check does not sum the bad cells:\n%s" % tail(out))
    # 400 cells / (2 ranks x 8) = 25 steps an epoch: after step 25 every bad cell was met once.
    status, out = env.train_to_end("skip", os.path.join(env.dir, "run-skip"),
                                   ["data.on_bad_cell=skip", "run.max_steps=25"])
    check(status == 0, "cellfm train with skip exited %s:\n%s" % (status, tail(out)))
    last = [l for l in out.splitlines() if "step 25/25 |" in l]
    check(last and "| skipped_cells 5 |" in last[-1], "the last progress line does not say "
          "skipped_cells 5:\n%s" % tail(out))
    check(count_lines(out, "skipping this file's bad cells (data.on_bad_cell: skip)") >= 1,
          "no warning about the skipped cells:\n%s" % tail(out))
    # The count lives in the checkpoints: resumed from step 25 to 40, the run goes on counting
    # from 5 and ends where one run to 40 without a stop ends.
    def skipped_at(out, step):
        lines = [l for l in out.splitlines() if "step %d/%d |" % (step, step) in l]
        found = re.search(r"\| skipped_cells (\d+) \|", lines[-1]) if lines else None
        return int(found.group(1)) if found else 0
    status, out = env.train_to_end("skip-resumed", os.path.join(env.dir, "run-skip"),
                                   ["data.on_bad_cell=skip", "run.max_steps=40"], resume="auto")
    check(status == 0 and "resum" in out.lower(), "resuming the skip run exited %s:\n%s"
          % (status, tail(out)))
    resumed = skipped_at(out, 40)
    status, out = env.train_to_end("skip-whole", os.path.join(env.dir, "run-skip-whole"),
                                   ["data.on_bad_cell=skip", "run.max_steps=40"])
    check(status == 0, "cellfm train with skip to 40 exited %s:\n%s" % (status, tail(out)))
    whole = skipped_at(out, 40)
    check(resumed == whole and whole > 5, "skipped_cells at step 40: %d resumed from step 25, %d "
          "in one run (expected equal and above the first epoch's 5)" % (resumed, whole))
    log("bad_cells: error names file/row/cause (check and train, exit 2); skip: check counts 5, "
        "training finished with skipped_cells 5, and %d at step 40 resumed or not" % whole)


TESTS.update({"disk_full": test_disk_full, "run_dir_unwritable": test_run_dir_unwritable,
              "bad_cells": test_bad_cells})


def main():
    global SOURCE_DIR
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cellfm", required=True, help="the cellfm binary")
    parser.add_argument("--mpiexec", default=shutil.which("mpiexec") or "mpiexec")
    parser.add_argument("--scratch", default=tempfile.gettempdir(),
                        help="folder for the tests' temporary directories")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--source-dir", default=SOURCE_DIR,
                        help="the cellfm checkout (default: this script's)")
    sub = parser.add_subparsers(dest="test", required=True)
    kill9 = sub.add_parser("kill9_trials")
    kill9.add_argument("--trials", type=int, default=20)
    kill9.add_argument("--seed", type=int, default=20240601)
    for name in ("rank_death", "signal_stop", "watchdog", "disk_full", "run_dir_unwritable",
                 "bad_cells"):
        sub.add_parser(name)
    args = parser.parse_args()
    SOURCE_DIR = os.path.abspath(args.source_dir)

    become_subreaper()

    def interrupted(signum, frame):
        raise KeyboardInterrupt("%s" % signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)  # CTest's timeout, a CI cancel: clean up first
    env = Env(args, args.test)
    started = time.time()
    failure = None
    try:
        env.setup()
        TESTS[args.test](env, args)
    except TestFailure as error:
        failure = str(error)
    except KeyboardInterrupt as error:
        failure = "interrupted (%s); the jobs were killed" % (error or "SIGINT")
    except Exception:  # an error in the test itself is a failure too, with its traceback
        failure = traceback.format_exc()
    finally:
        leftovers = env.cleanup()
    if leftovers and failure is None:
        failure = "processes were still running at the end (killed): %s" % leftovers
    took = time.time() - started
    if failure is not None:
        print("FAIL %s (%.1f s): %s\n(kept %s)" % (args.test, took, failure, env.dir),
              file=sys.stderr, flush=True)
        return 1
    if not args.keep:
        shutil.rmtree(env.dir, ignore_errors=True)
    log("PASS %s (%.1f s)" % (args.test, took))
    return 0


if __name__ == "__main__":
    sys.exit(main())
