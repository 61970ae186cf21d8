{{/*
Shared helpers. Templates are grouped per component (api/, worker/, operator/, redis/,
monitoring/, tests/); everything they share is defined here.
*/}}

{{- define "unilingo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "unilingo.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "unilingo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "unilingo.labels" -}}
helm.sh/chart: {{ include "unilingo.chart" . }}
{{ include "unilingo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: unilingo
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "unilingo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "unilingo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "api"). */}}
{{- define "unilingo.componentLabels" -}}
{{ include "unilingo.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "unilingo.componentSelectorLabels" -}}
{{ include "unilingo.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "unilingo.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{- define "unilingo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "unilingo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end }}

{{- define "unilingo.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "unilingo.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end }}

{{- define "unilingo.worker.fullname" -}}
{{- printf "%s-worker-%s" (include "unilingo.fullname" .ctx) .queue | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/*
One queue's effective settings: workers.defaults with the queue's own keys on top (a key
given for the queue replaces the default wholesale; 0 and false are honoured, unlike
sprig's merge). Returns YAML; use with fromYaml.
*/}}
{{- define "unilingo.worker.settings" -}}
{{- $out := dict -}}
{{- range $k, $v := .ctx.Values.workers.defaults }}{{- $_ := set $out $k $v }}{{- end }}
{{- range $k, $v := (.settings | default dict) }}{{- $_ := set $out $k $v }}{{- end }}
{{- if $out.drainSeconds }}
{{- $_ := set $out "drainSeconds" (int $out.drainSeconds) }}
{{- $_ := set $out "terminationGracePeriodSeconds" (add $out.drainSeconds 15) }}
{{- else }}
{{- $_ := set $out "terminationGracePeriodSeconds" (add (int $out.jobTimeoutSeconds) (int $out.drainMarginSeconds)) }}
{{- /* past the hard time limit: nothing is left to hand back, but the clock is there */}}
{{- $_ := set $out "drainSeconds" (sub $out.terminationGracePeriodSeconds 15) }}
{{- end -}}
{{- toYaml $out -}}
{{- end }}

{{/* Security contexts. */}}
{{- define "unilingo.podSecurityContext" -}}
{{- toYaml .Values.securityContext.pod }}
{{- end }}

{{- define "unilingo.containerSecurityContext" -}}
{{- toYaml .Values.securityContext.container }}
{{- end }}

{{/* ---------------------------------------------------------------------------------------
Redis connection. Three modes:
  bundled   <fullname>-redis StatefulSet; REDIS_URL redis://[user:$(REDIS_PASSWORD)@]host:6379/<db>
  external  redis.external.url (no credentials in it); the password is spliced in the same way
  sentinel  REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_DB (+ REDIS_PASSWORD,
            REDIS_SENTINEL_PASSWORD); no REDIS_URL: redis-py URLs cannot name Sentinels.
--------------------------------------------------------------------------------------- */}}

{{- define "unilingo.redis.bundledHost" -}}
{{- printf "%s-redis.%s.svc.%s" (include "unilingo.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- end }}

{{/* host:port of the Redis master for bundled and external modes. */}}
{{- define "unilingo.redis.address" -}}
{{- if eq .Values.redis.mode "external" -}}
{{- $u := urlParse .Values.redis.external.url -}}
{{- if contains ":" $u.host }}{{ $u.host }}{{ else }}{{ printf "%s:6379" $u.host }}{{ end -}}
{{- else -}}
{{- printf "%s:6379" (include "unilingo.redis.bundledHost" .) -}}
{{- end -}}
{{- end }}

{{- define "unilingo.redis.database" -}}
{{- if eq .Values.redis.mode "external" -}}
{{- $u := urlParse .Values.redis.external.url -}}
{{- $db := trimPrefix "/" $u.path -}}
{{- if $db }}{{ $db }}{{ else }}0{{ end -}}
{{- else -}}
{{- .Values.redis.database -}}
{{- end -}}
{{- end }}

{{- define "unilingo.redis.tls" -}}
{{- if eq .Values.redis.mode "external" -}}
{{- if eq (urlParse .Values.redis.external.url).scheme "rediss" }}true{{ else }}false{{ end -}}
{{- else if eq .Values.redis.mode "sentinel" -}}
{{- .Values.redis.sentinel.tls -}}
{{- else -}}
false
{{- end -}}
{{- end }}

{{- define "unilingo.redis.url" -}}
{{- $scheme := ternary "rediss" "redis" (eq (include "unilingo.redis.tls" .) "true") -}}
{{- $auth := "" -}}
{{- if .Values.redis.auth.existingSecret -}}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" .Values.redis.auth.username -}}
{{- end -}}
{{- printf "%s://%s%s/%s" $scheme $auth (include "unilingo.redis.address" .) (include "unilingo.redis.database" .) -}}
{{- end }}

{{/* The Redis environment of every app container. */}}
{{- define "unilingo.redis.env" -}}
{{- if .Values.redis.auth.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.auth.existingSecret | quote }}
      key: {{ .Values.redis.auth.passwordKey | quote }}
{{- end }}
{{- if .Values.redis.auth.username }}
- name: REDIS_USERNAME
  value: {{ .Values.redis.auth.username | quote }}
{{- end }}
{{- if eq .Values.redis.mode "sentinel" }}
- name: REDIS_SENTINELS
  value: {{ join "," .Values.redis.sentinel.hosts | quote }}
- name: REDIS_SENTINEL_MASTER
  value: {{ .Values.redis.sentinel.masterName | quote }}
- name: REDIS_DB
  value: {{ .Values.redis.database | quote }}
- name: REDIS_TLS
  value: {{ .Values.redis.sentinel.tls | quote }}
{{- if and .Values.redis.auth.existingSecret .Values.redis.sentinel.sentinelPasswordKey }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.auth.existingSecret | quote }}
      key: {{ .Values.redis.sentinel.sentinelPasswordKey | quote }}
{{- end }}
{{- else }}
- name: REDIS_URL
  value: {{ include "unilingo.redis.url" . | quote }}
{{- end }}
{{- end }}

{{/* The credentials (Secret references) of every app container. */}}
{{- define "unilingo.credentials.env" -}}
{{- $names := dict
  "supabaseJwtSecret" "SUPABASE_JWT_SECRET"
  "webhookSecret" "WEBHOOK_SECRET"
  "databaseUrl" "DATABASE_URL"
  "openaiApiKey" "OPENAI_API_KEY"
  "azureSpeechKey" "AZURE_SPEECH_KEY"
  "azureSpeechRegion" "AZURE_SPEECH_REGION"
  "azureVisionKey" "AZURE_VISION_KEY"
  "azureVisionEndpoint" "AZURE_VISION_ENDPOINT"
  "awsAccessKeyId" "AWS_ACCESS_KEY_ID"
  "awsSecretAccessKey" "AWS_SECRET_ACCESS_KEY" -}}
{{- range $field := keys $names | sortAlpha }}
{{- $ref := get $.Values.credentials $field }}
{{- $secret := $ref.secretName | default $.Values.credentials.existingSecret }}
{{- if and $secret $ref.key }}
- name: {{ get $names $field }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ $ref.key | quote }}
      optional: {{ $ref.optional | default false }}
{{- end }}
{{- end }}
{{- end }}

{{/* Non-secret settings of every app container. */}}
{{- define "unilingo.config.env" -}}
{{- $c := .Values.config -}}
- name: UNILINGO_ENV
  value: {{ $c.environment | quote }}
- name: PUBLIC_BASE_URL
  value: {{ $c.publicBaseUrl | quote }}
{{- if $c.supabaseJwksUrl }}
- name: SUPABASE_JWKS_URL
  value: {{ $c.supabaseJwksUrl | quote }}
{{- end }}
- name: JWT_AUDIENCE
  value: {{ $c.jwtAudience | quote }}
- name: JWT_ISSUER
  value: {{ $c.jwtIssuer | quote }}
- name: TRUSTED_PROXIES
  value: {{ $c.trustedProxies | toJson | quote }}
- name: ADMIN_IP_ALLOWLIST
  value: {{ $c.adminIpAllowlist | toJson | quote }}
- name: QUOTA_IP
  value: {{ $c.quotaIp | quote }}
- name: QUOTA_USER_AI
  value: {{ $c.quotaUserAi | quote }}
- name: QUOTA_USER_PRONUNCIATION
  value: {{ $c.quotaUserPronunciation | quote }}
- name: JOB_TTL_SECONDS
  value: {{ $c.jobTtlSeconds | quote }}
- name: JOB_MAX_ATTEMPTS
  value: {{ $c.jobMaxAttempts | quote }}
- name: WEBHOOK_ALLOW_PRIVATE
  value: {{ $c.webhookAllowPrivate | quote }}
{{- if $c.openaiBaseUrl }}
- name: OPENAI_BASE_URL
  value: {{ $c.openaiBaseUrl | quote }}
{{- end }}
- name: OPENAI_MODEL
  value: {{ $c.openaiModel | quote }}
- name: AWS_REGION
  value: {{ $c.awsRegion | quote }}
{{- if $c.s3Bucket }}
- name: TTS_BUCKET
  value: {{ $c.s3Bucket | quote }}
{{- end }}
{{- if $c.uploadsBucket }}
- name: UPLOADS_BUCKET
  value: {{ $c.uploadsBucket | quote }}
{{- end }}
{{- if $c.storagePublicUrl }}
- name: STORAGE_PUBLIC_URL
  value: {{ $c.storagePublicUrl | quote }}
{{- end }}
- name: HOME
  value: /tmp
{{- end }}

{{/*
Everything an app container needs, in dependency order ($(REDIS_PASSWORD) must be
defined before REDIS_URL uses it). Args: (dict "ctx" $ "extra" <list>).
*/}}
{{- define "unilingo.env" -}}
{{ include "unilingo.config.env" .ctx }}
{{- include "unilingo.redis.env" .ctx }}
{{- include "unilingo.credentials.env" .ctx }}
{{- with .ctx.Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The writable /tmp every app container gets (the root filesystem is read-only). */}}
{{- define "unilingo.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "unilingo.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Validation that values.schema.json cannot express. */}}
{{- define "unilingo.validate" -}}
{{- if and (eq .Values.redis.mode "external") (not .Values.redis.external.url) -}}
{{- fail "redis.mode=external needs redis.external.url" -}}
{{- end -}}
{{- if and (eq .Values.redis.mode "sentinel") (not .Values.redis.sentinel.hosts) -}}
{{- fail "redis.mode=sentinel needs redis.sentinel.hosts" -}}
{{- end -}}
{{- if and (eq .Values.redis.mode "external") (urlParse .Values.redis.external.url).userinfo -}}
{{- fail "redis.external.url must not carry credentials: put the password in a Secret (redis.auth.existingSecret)" -}}
{{- end -}}
{{- range $queue, $settings := .Values.workers.queues }}
{{- $w := include "unilingo.worker.settings" (dict "ctx" $ "settings" $settings) | fromYaml }}
{{- if gt (int $w.minReplicas) (int $w.maxReplicas) }}
{{- fail (printf "workers.queues.%s: minReplicas (%v) exceeds maxReplicas (%v)" $queue $w.minReplicas $w.maxReplicas) }}
{{- end }}
{{- end }}
{{- end }}
