{{/* Rules on UnilingoProviderPolicies and Events (namespaced Role or the cluster-wide ClusterRole). */}}
{{- define "unilingo.operator.policyRules" -}}
- apiGroups: ["unilingo.io"]
  resources: ["unilingoproviderpolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["unilingo.io"]
  resources: ["unilingoproviderpolicies/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
