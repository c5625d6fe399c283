{{- define "logq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "logq.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "logq.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "logq.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "logq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "logq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "logq.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "logq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: broker
{{- end }}

{{- define "logq.headless" -}}
{{ include "logq.fullname" . }}-brokers
{{- end }}

{{/* Refusals, each with what to do instead. */}}
{{- define "logq.validate" -}}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "replicaCount is %d: logq has no replication yet, so brokers cannot share topics and each would be a separate, unreplicated broker behind one Service. Use replicaCount: 1 (one broker, its data on its volume); more brokers need clustering, which logq does not have yet." (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) }}
{{- fail "auth.enabled needs auth.existingSecret: a Secret whose key auth.yaml holds the auth: section of logq's config (users with token or password hashes, and roles)" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret: a kubernetes.io/tls Secret with tls.crt and tls.key" }}
{{- end }}
{{- if and (not .Values.auth.enabled) (not .Values.auth.allowUnauthenticated) }}
{{- fail "auth is off and auth.allowUnauthenticated is false: logq would refuse to listen on the pod network. Turn auth on (auth.enabled, auth.existingSecret) or allow it explicitly" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.auth.enabled (not .Values.serviceMonitor.bearerTokenSecret.name) }}
{{- fail "serviceMonitor with auth on needs serviceMonitor.bearerTokenSecret (name, key): /metrics asks for a token" }}
{{- end }}
{{- range $key := list "dataDir" "listeners" "nodeId" }}
{{- if hasKey ($.Values.config.broker | default dict) $key }}
{{- fail (printf "config.broker.%s is set by the chart (the volume, the Service ports, the pod's name): remove it" $key) }}
{{- end }}
{{- end }}
{{- range $key := list "auth" "tls" }}
{{- if hasKey $.Values.config $key }}
{{- fail (printf "config.%s comes from a Secret: use the chart's %s values" $key $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* logq's config file: the values' config, with the chart's TLS paths. */}}
{{- define "logq.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if .Values.tls.enabled }}
{{- $_ := set $config "tls" (dict "certFile" "/etc/logq/tls/tls.crt" "keyFile" "/etc/logq/tls/tls.key") }}
{{- end }}
{{- toYaml $config }}
{{- end }}
