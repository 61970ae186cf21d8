{{/* Egress every app pod needs: DNS and Redis. */}}
{{- define "unilingo.networkPolicy.baseEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if eq .Values.redis.mode "bundled" }}
- to:
    - podSelector:
        matchLabels:
          {{- include "unilingo.componentSelectorLabels" (dict "ctx" . "component" "redis") | nindent 10 }}
  ports:
    - port: 6379
      protocol: TCP
{{- else if eq .Values.redis.mode "external" }}
- ports:
    - port: {{ (splitList ":" (include "unilingo.redis.address" .)) | last | int }}
      protocol: TCP
{{- else }}
{{- $ports := list 6379 }}
{{- range .Values.redis.sentinel.hosts }}
{{- $ports = append $ports (splitList ":" . | last | int) }}
{{- end }}
- ports:
    {{- range $ports | uniq }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end }}

{{/* Egress of api and workers beyond DNS and Redis: providers, JWKS, webhooks, PostgreSQL. */}}
{{- define "unilingo.networkPolicy.appEgress" -}}
{{ include "unilingo.networkPolicy.baseEgress" . }}
{{- with .Values.networkPolicy.egressPorts }}
- ports:
    {{- range . }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- with .Values.networkPolicy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}
