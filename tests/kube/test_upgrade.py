"""`helm upgrade` with changed values on the node: the worker pods roll while jobs wait in
their queue, and every one of those jobs succeeds, once."""

from __future__ import annotations

import threading
import uuid

import httpx

from tests.samples import pdf_with_text
from tests.support.kube import (
    PAUSED_REPLICAS,
    RELEASE,
    annotate_scaled_object,
    exec_in,
    helm_upgrade,
    wait_for_jobs,
    watch_deployment,
    watch_pods,
)

PDF = f"{RELEASE}-worker-pdf"
PDF_QUEUE = "pdf"
PDF_PODS = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=worker,unilingo.io/queue=pdf"
BACKLOG = 40


def test_helm_upgrade_rolls_the_workers_without_losing_a_queued_job(core, apps, custom, api_url, token, kube_env):
    annotate_scaled_object(custom, PDF, {PAUSED_REPLICAS: "1"})
    revision = uuid.uuid4().hex[:8]
    try:
        watch_deployment(apps, PDF, lambda d: (d.status.ready_replicas or 0) == 1, timeout=240)
        before = {p.metadata.name for p in watch_pods(core, PDF_PODS, lambda ps: len(ps) == 1, timeout=120)}
        # The old pod stops taking pdf jobs (Celery's remote control), so the whole backlog
        # waits in the queue through the roll: one pod runs a one-page PDF in milliseconds,
        # and has drained all 40 before the upgrade began.
        exec_in(core, next(iter(before)), ["celery", "-A", "workers.app", "control", "cancel_consumer", PDF_QUEUE])
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=api_url, headers=headers, timeout=30) as http:
            jobs = []
            for _ in range(BACKLOG):
                pdf = pdf_with_text([f"Der Hund bellt {uuid.uuid4().hex}"])
                r = http.post("/api/process-pdf", files={"file": ("lesson.pdf", pdf, "application/pdf")})
                assert r.status_code == 202, r.text
                jobs.append(r.json()["job_id"])
            queued = int(exec_in(core, f"{RELEASE}-redis-0", ["redis-cli", "llen", PDF_QUEUE], container="redis"))
            # A new pod template for every worker Deployment: each rolls (maxSurge 1, the old
            # pod drains its running jobs; the waiting ones stay in the queue for the new pod).
            result: dict = {}
            upgrade = threading.Thread(
                target=lambda: result.update(
                    r=helm_upgrade(
                        kube_env, "--set-string", f"workers.defaults.podAnnotations.unilingo\\.io/revision={revision}"
                    )
                )
            )
            upgrade.start()
            rolled = watch_pods(
                core, PDF_PODS, lambda ps: bool(ps) and not ({p.metadata.name for p in ps} & before), timeout=300
            )
            done = wait_for_jobs(http, jobs, timeout=420)
            upgrade.join(timeout=700)
        assert result["r"].returncode == 0, result["r"].stdout + result["r"].stderr
        assert queued == BACKLOG, f"{BACKLOG - queued} jobs were taken before the upgrade started"
        assert all(p.metadata.annotations.get("unilingo.io/revision") == revision for p in rolled)
        assert len(done) == BACKLOG
        # Each result written once: a drained job is never run again, so one attempt each.
        assert sorted({job["attempts"] for job in done.values()}) == [1], {
            j: job["attempts"] for j, job in done.items() if job["attempts"] != 1
        }
    finally:
        annotate_scaled_object(custom, PDF, {PAUSED_REPLICAS: None})
