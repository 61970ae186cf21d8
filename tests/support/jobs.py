"""Jobs queued straight into Redis (as the API's submit script queues them) and awaited."""

from __future__ import annotations

import time

from unilingo.jobs import Job, JobStatus, JobStore, JobType, NewJob, new_job_id
from unilingo.messages import task_message


def submit(
    store: JobStore, job_type: JobType, params: dict | None = None, upload: bytes | None = None, owner="alice"
) -> str:
    now = time.time()
    job = Job(
        job_id=new_job_id(),
        type=job_type,
        status=JobStatus.QUEUED,
        owner=owner,
        params=params or {},
        created_at=now,
        updated_at=now,
    )
    message = task_message(job.workload.task, job.workload.queue, [job.job_id], task_id=job.job_id)
    store.create(NewJob(job=job, message=message, upload=upload))
    return job.job_id


def finished(store: JobStore, job_ids: list[str]):
    jobs = [store.get(j) for j in job_ids]
    return jobs if all(j.status.terminal for j in jobs) else None
