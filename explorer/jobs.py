"""The explorer's job queue: one generation at a time, in the order the requests came.

A single worker thread takes the jobs one after another; the page polls a job for its position,
its steps done and, at the end, its result. A failed job is reported on the page, and the server
goes on. The last KEEP_JOBS finished jobs stay in memory.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
import traceback

from explorer.requests import BadRequest, Limits

KEEP_JOBS = 16        # finished jobs whose images stay in memory
ID_BYTES = 16         # a job's id: this many random bytes as URL-safe text, never guessed


class Job:
    def __init__(self, job_id: str, kind: str, run, total: int):
        self.id, self.kind, self.run, self.total = job_id, kind, run, total
        self.state, self.done, self.error, self.result = "queued", 0, "", None
        self.started = self.finished = None   # time.time() when the worker took it and left it

    def step(self) -> None:
        self.done += 1


class JobQueue:
    """Jobs run one after another by a single worker thread, first come first served."""

    def __init__(self, limits: Limits):
        self.limits, self.lock, self.jobs, self.waiting = limits, threading.Lock(), {}, []
        self.todo: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, daemon=True, name="explorer-worker").start()

    def submit(self, kind: str, run, total: int) -> Job:
        """run(on_step) -> Result, called by the worker; total: its steps, for the progress bar."""
        with self.lock:
            if len(self.waiting) >= self.limits.max_queue:
                raise BadRequest(f"{len(self.waiting)} jobs are waiting already, the most this "
                                 "server queues; try again when one is done", 503)
            job = Job(secrets.token_urlsafe(ID_BYTES), kind, run, total)   # 22 characters
            self.jobs[job.id] = job
            self.waiting.append(job)
        self.todo.put(job)
        return job

    def position(self, job: Job) -> int:
        """0 while running or done, else the number of jobs before it."""
        with self.lock:
            return self.waiting.index(job) if job in self.waiting and job.state == "queued" else 0

    def _work(self) -> None:
        while True:
            job = self.todo.get()
            job.state, job.started = "running", time.time()
            try:
                job.result = job.run(job.step)
                job.state = "done"
            except Exception as error:  # a failed job is reported on the page; the server goes on
                traceback.print_exc()
                job.error, job.state = f"{type(error).__name__}: {error}", "failed"
            job.finished = time.time()
            with self.lock:
                self.waiting.remove(job)
                finished = [j for j in self.jobs.values() if j.state in ("done", "failed")]
                for old in finished[:-KEEP_JOBS]:
                    del self.jobs[old.id]
