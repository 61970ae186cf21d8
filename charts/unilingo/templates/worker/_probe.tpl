{{/*
Worker liveness, cheap and real: the worker's main process writes its heartbeat every
0.25 s into the sorted set unilingo:workers (member "<queues>@<pod hostname>-<pid>", score
= unix time; workers/housekeeping.py). The probe fails only when Redis answers and this
pod's heartbeat is missing or older than maxAge: the main process is wedged. It passes when
Redis itself is unreachable (restarting workers would not help; the alerts cover Redis) and
when no REDIS_URL is set (sentinel mode). The kubelet stops liveness probes once a pod is
terminating, so the heartbeat removed at warm shutdown cannot kill a draining worker.
*/}}
{{- define "unilingo.worker.heartbeatProbe" -}}
import os, socket, sys, time
import redis
url = os.environ.get("REDIS_URL")
if not url:
    sys.exit(0)
prefix = os.environ["WORKER_QUEUES"].replace(",", "-") + "@" + socket.gethostname() + "-"
try:
    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    beats = [score for _, score in client.zscan_iter("unilingo:workers", match=prefix + "*")]
except redis.RedisError:
    sys.exit(0)
sys.exit(0 if beats and time.time() - max(beats) < {{ .maxAge }} else 1)
{{- end }}
