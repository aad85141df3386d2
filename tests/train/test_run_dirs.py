"""A run folder belongs to one run; a resume continues only its own run; SIGINT saves the state
and says where; outputs are written atomically."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from suan.cli import main
from suan.data.synthetic import generate
from suan.defaults import DATA_PRESETS
from suan.rundir import LOCK_NAME, RunLock

TINY = dataclasses.replace(DATA_PRESETS["tiny"], num_users=120, chunk_users=60)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("data") / "tiny"), TINY)


def _train(store, out, *extra):
    return main(["train", "--data", store.path, "--grade", "g0", "--max-len", "16", "--epochs", "1",
                 "--batch-size", "64", "--max-steps", "4", "--no-progress", "--eval-batch-size", "512",
                 "--out-dir", str(out), *extra])


def _write_lock(out, pid):
    os.makedirs(out, exist_ok=True)
    import socket

    with open(os.path.join(out, LOCK_NAME), "w") as f:
        json.dump({"pid": pid, "host": socket.gethostname(), "started": "earlier"}, f)


def test_second_run_into_a_busy_folder_refuses(store, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(out, holder.pid)
        assert _train(store, out) == 2
        err = capsys.readouterr().err
        assert "in use by another run" in err and str(holder.pid) in err
        assert not (out / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the owner is gone: its stale lock is taken over with a notice
    assert _train(store, out) == 0
    assert "taking over" in capsys.readouterr().err
    assert (out / "results.json").exists() and not (out / LOCK_NAME).exists()


def test_lock_is_exclusive_in_process(tmp_path):
    with RunLock(str(tmp_path / "x")):
        other = RunLock(str(tmp_path / "x"))
        other_pid_file = json.loads((tmp_path / "x" / LOCK_NAME).read_text())
        assert other_pid_file["pid"] == os.getpid()
    assert not (tmp_path / "x" / LOCK_NAME).exists()


@pytest.mark.parametrize("change,word", [(["--seed", "7"], "seed"), (["--lr", "0.01"], "lr"),
                                         (["--model", "suan"], "model"), (["--grade", "g1"], "grade"),
                                         (["--max-len", "12"], "max_len"), (["--epochs", "2"], "epochs")])
def test_resume_with_other_settings_refuses(store, tmp_path, capsys, change, word):
    out = tmp_path / "run"
    assert _train(store, out) == 0
    before = (out / "results.json").read_text()
    capsys.readouterr()
    assert _train(store, out, *change) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and f"{word}: checkpoint" in err and "--no-resume" in err, err
    assert (out / "results.json").read_text() == before  # nothing of the other run was written
    assert _train(store, out, *change, "--no-resume") == 0  # starting afresh is allowed


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_checkpoint_names_the_path_and_the_way_out(store, tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert _train(store, out) == 0
    ck = out / "checkpoint.pt"
    data = ck.read_bytes()
    ck.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    capsys.readouterr()
    assert _train(store, out) == 2
    err = capsys.readouterr().err.strip()
    assert str(ck) in err and "--no-resume" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_sigint_saves_the_current_step_and_the_same_command_resumes(store, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "suan.cli", "train", "--data", store.path, "--grade", "g0", "--max-len", "16",
           "--epochs", "3", "--batch-size", "8", "--no-progress", "--eval-batch-size", "512", "--log-every", "1",
           "--checkpoint-every", "5", "--out-dir", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait for the first periodic checkpoint (step 5: the loop and its signal handler are running), not
    # for a fixed time, which a loaded machine may spend before the first step
    deadline = time.time() + 300
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert "interrupted at step" in last and str(out / "checkpoint.pt") in last and "Traceback" not in stderr
    step = int(last.split("interrupted at step ")[1].split()[0])
    state = torch.load(str(out / "checkpoint.pt"), weights_only=False)
    assert state["step"] == step > 0
    assert not (out / LOCK_NAME).exists()
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {out / 'checkpoint.pt'} at step {step}" in resumed.stdout


def _children(pid: int):
    """Pids whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_compare_with_jobs_stops_its_workers(store, tmp_path):
    """`suan compare --jobs 2` killed with SIGTERM (a scheduler, `kill`): the workers get it too,
    save their runs' checkpoints and stop; nothing keeps running after the command exits, which
    says so in one line with status 130."""
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "suan.cli", "compare", "--data", store.path, "--models", "dnn", "suan",
           "--seeds", "0", "1", "--jobs", "2", "--epochs", "200", "--early-stopping", "0", "--lr-grid", "3e-3",
           "--grade", "g0", "--max-len", "12", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    locks = []
    while proc.poll() is None and time.time() < deadline and len(locks) < 2:
        runs = out / "runs"
        locks = [d for d in runs.iterdir() if (d / LOCK_NAME).exists()] if runs.exists() else []
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1]
    # into their training loops: each run has finished an epoch (its checkpoint), not a fixed sleep,
    # which a loaded machine may spend building the models
    while proc.poll() is None and time.time() < deadline and not all((d / "checkpoint.pt").exists() for d in locks):
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1]
    workers = _children(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped by SIGTERM" in stderr.strip().splitlines()[-1]
    deadline = time.time() + 30
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)
    # each worker got the signal inside its training loop and saved its state there
    assert stderr.count("SIGTERM: saving a checkpoint after the current step") == 2, stderr
    assert all((d / "checkpoint.pt").exists() for d in locks)
    assert not any((d / LOCK_NAME).exists() for d in locks)


def test_interrupted_run_started_without_resume_says_the_same_command_starts_afresh(store, tmp_path, monkeypatch,
                                                                                    capsys):
    """`--no-resume` (and `suan demo`, whose runs start afresh) must not claim that running the
    same command again resumes; the checkpoint is saved all the same."""
    from suan.train import Trainer

    real = Trainer.train_step

    def train_step(self, batch):  # as if a SIGTERM arrived during step 2
        rec = real(self, batch)
        if self.step == 2:
            self._stop_signal = signal.SIGTERM
        return rec

    monkeypatch.setattr(Trainer, "train_step", train_step)
    out = tmp_path / "run"
    assert _train(store, out, "--no-resume") == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "interrupted at step 2" in last and "the same command starts afresh" in last
    assert "run the same command again to resume" not in last and (out / "checkpoint.pt").exists()
