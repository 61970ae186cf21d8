"""The workers' scaling on the node: the quota-aware maximum follows the provider policy, and
a scale-down spares the pod that runs a job (its pod-deletion-cost)."""

from __future__ import annotations

import time

import httpx

from tests.support.kube import (
    KEDA,
    NAMESPACE,
    PAUSED_REPLICAS,
    RELEASE,
    SANDBOX_URL,
    annotate_scaled_object,
    scaled_object,
    wait_for_jobs,
    watch_custom,
    watch_deployment,
    watch_pods,
)
from unilingo.scaling import DELETION_COST_ANNOTATION, REASON_ANNOTATION

POLICY = ("unilingo.io", "v1alpha1", "unilingoproviderpolicies")
AI = f"{RELEASE}-worker-ai"
AI_PODS = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=worker,unilingo.io/queue=ai"


def put_policy(custom, spec: dict) -> None:
    body = {
        "apiVersion": "unilingo.io/v1alpha1",
        "kind": "UnilingoProviderPolicy",
        "metadata": {"name": "openai-scaling"},
        "spec": {"provider": "openai", **spec},
    }
    try:
        current = custom.get_namespaced_custom_object(*POLICY[:2], NAMESPACE, POLICY[2], "openai-scaling")
    except Exception:
        custom.create_namespaced_custom_object(*POLICY[:2], NAMESPACE, POLICY[2], body)
        return
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    custom.replace_namespaced_custom_object(*POLICY[:2], NAMESPACE, POLICY[2], "openai-scaling", body)


def delete_policy(custom) -> None:
    try:
        custom.delete_namespaced_custom_object(*POLICY[:2], NAMESPACE, POLICY[2], "openai-scaling")
    except Exception:
        pass


def hpa_max(api_client) -> int:
    from kubernetes import client

    return (
        client.AutoscalingV2Api(api_client).read_namespaced_horizontal_pod_autoscaler(AI, NAMESPACE).spec.max_replicas
    )


def wait_hpa_max(api_client, expected: int, timeout: float = 60) -> None:
    from kubernetes import client, watch

    autoscaling = client.AutoscalingV2Api(api_client)
    if hpa_max(api_client) == expected:
        return
    w = watch.Watch()
    for event in w.stream(
        autoscaling.list_namespaced_horizontal_pod_autoscaler,
        NAMESPACE,
        field_selector=f"metadata.name={AI}",
        timeout_seconds=int(timeout),
    ):
        if event["object"].spec.max_replicas == expected:
            w.stop()
            return
    assert hpa_max(api_client) == expected


def test_the_ai_queue_maximum_follows_the_openai_policy(custom, api_client):
    """maxInFlight over the pods' 2 job slots, rounded up, within the chart's 3; suspended:
    no scaling up; the defaults (5 in flight) back when the policy goes."""

    def max_is(n: int, reason: str):
        return lambda so: (
            so["spec"].get("maxReplicaCount") == n
            and reason in (so["metadata"].get("annotations") or {}).get(REASON_ANNOTATION, "")
        )

    delete_policy(custom)
    try:
        assert scaled_object(custom, AI)["metadata"]["annotations"]["unilingo.io/max-replicas"] == "3"
        watch_custom(custom, KEDA, AI, max_is(3, "openai allows 5 in flight, 2 per pod"), timeout=60)

        put_policy(custom, {"maxInFlight": 2})
        watch_custom(custom, KEDA, AI, max_is(1, "openai allows 2 in flight, 2 per pod"), timeout=60)
        wait_hpa_max(api_client, 1)  # KEDA carried it to the HPA

        put_policy(custom, {"maxInFlight": 4})
        watch_custom(custom, KEDA, AI, max_is(2, "openai allows 4 in flight, 2 per pod"), timeout=60)
        wait_hpa_max(api_client, 2)

        put_policy(custom, {"maxInFlight": 4, "suspended": True})
        watch_custom(
            custom,
            KEDA,
            AI,
            lambda so: "suspended: not scaling up" in so["metadata"]["annotations"].get(REASON_ANNOTATION, ""),
            timeout=60,
        )
    finally:
        delete_policy(custom)
    watch_custom(custom, KEDA, AI, max_is(3, "openai allows 5 in flight"), timeout=90)
    wait_hpa_max(api_client, 3)


def test_a_scale_down_keeps_the_pod_running_a_long_job(core, apps, custom, api_url, token):
    """Two AI pods, one running a 45 s job: KEDA taking the queue to one pod removes the idle
    pod, and the job succeeds at its first attempt."""
    annotate_scaled_object(custom, AI, {PAUSED_REPLICAS: "2"})
    try:
        watch_deployment(apps, AI, lambda d: (d.status.ready_replicas or 0) == 2, timeout=240)
        pods = watch_pods(core, AI_PODS, lambda ps: len(ps) == 2, timeout=60)
        # Every call OpenAI gets in the next few seconds takes 45 s longer.
        with httpx.Client(base_url=SANDBOX_URL, timeout=10) as sandbox:
            sandbox.delete("/_sandbox/faults")
            r = sandbox.post(
                "/_sandbox/faults", json={"provider": "openai", "mode": "slow", "duration_s": 20, "delay_s": 45}
            )
            assert r.status_code < 300, r.text
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=api_url, headers=headers, timeout=30) as http:
            r = http.post(
                "/api/ai/generate-flashcards",
                json={"content": f"Die Katze schlaeft im Garten {time.time_ns()}", "count": 3},
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]

            def one_busy(ps):
                costs = [(p.metadata.annotations or {}).get(DELETION_COST_ANNOTATION) for p in ps]
                return len(ps) == 2 and sorted(costs) == ["0", "1"]

            pods = watch_pods(core, AI_PODS, one_busy, timeout=60)
            busy = next(p.metadata.name for p in pods if p.metadata.annotations[DELETION_COST_ANNOTATION] == "1")
            idle = next(p.metadata.name for p in pods if p.metadata.name != busy)
            assert http.get(f"/api/jobs/{job_id}").json()["status"] == "running"

            annotate_scaled_object(custom, AI, {PAUSED_REPLICAS: "1"})
            remaining = watch_pods(core, AI_PODS, lambda ps: len(ps) == 1, timeout=120)
            assert [p.metadata.name for p in remaining] == [busy], f"the scale-down removed {busy}, not idle {idle}"
            job = wait_for_jobs(http, [job_id], timeout=240)[job_id]
            assert job["attempts"] == 1, job  # never interrupted nor handed back
            assert [p.metadata.name for p in watch_pods(core, AI_PODS, lambda ps: True, timeout=1)] == [busy]
    finally:
        with httpx.Client(base_url=SANDBOX_URL, timeout=10) as sandbox:
            sandbox.delete("/_sandbox/faults")
        annotate_scaled_object(custom, AI, {PAUSED_REPLICAS: None})
