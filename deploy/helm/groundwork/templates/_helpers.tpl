{{/* Name prefix of every object: the release name, with "-groundwork" unless it already says so. */}}
{{- define "groundwork.fullname" -}}
{{- if contains "groundwork" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-groundwork" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; "component" is passed in the dict. */}}
{{- define "groundwork.labels" -}}
app.kubernetes.io/name: groundwork
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: groundwork
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- if .root.Values.helmLabels }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: stable across upgrades. */}}
{{- define "groundwork.selectorLabels" -}}
app.kubernetes.io/name: groundwork
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "groundwork.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "groundwork.speakerNamespace" -}}
{{ .Values.lbSpeaker.namespace | default .Release.Namespace }}
{{- end -}}

{{/* The audience of the speakers' identity tokens: the controller of this release. */}}
{{- define "groundwork.speakerTokenAudience" -}}
lb-controller.groundwork.dev
{{- end -}}

{{/* Pod Security "restricted" for a container: non-root, read-only root, no escalation, no capabilities. */}}
{{- define "groundwork.restrictedContainer" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "groundwork.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Probes on the ops listener (--ops-addr): /healthz = the process works, /readyz = it should get traffic. */}}
{{- define "groundwork.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: ops}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: ops}
  periodSeconds: 2
  failureThreshold: 1
{{- end -}}

{{/* POD_NAME / POD_NAMESPACE from the downward API: identity in the Lease and Events, and the Lease's namespace. */}}
{{- define "groundwork.podEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
{{- end -}}

{{/* The etcd endpoints the DNS components use. */}}
{{- define "groundwork.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
https://{{ include "groundwork.fullname" . }}-etcd-client.{{ .Release.Namespace }}.svc:2379
{{- else -}}
{{ join "," .Values.etcd.external.endpoints }}
{{- end -}}
{{- end -}}

{{/*
Secret holding a DNS component's etcd client certificate (ca.crt, tls.crt, tls.key). Each component has its
own, whose CN is its etcd user (etcd.auth): dns-server's may only read. Arguments (dict): root, component
(dns-sync, dns-server), secret (the component's etcdTLSSecretName value).
*/}}
{{- define "groundwork.etcdClientSecret" -}}
{{- if .secret -}}
{{ .secret }}
{{- else if .root.Values.etcd.enabled -}}
{{ include "groundwork.fullname" .root }}-etcd-{{ .component }}-tls
{{- else -}}
{{ .root.Values.etcd.external.tlsSecretName }}
{{- end -}}
{{- end -}}

{{/* Checks no schema can express. */}}
{{- define "groundwork.validate" -}}
{{- if and .Values.certManager.enabled (not .Values.certManager.issuerRef.name) -}}
{{- fail "certManager.issuerRef.name: with certManager.enabled, name a CA ClusterIssuer that signs every groundwork certificate" -}}
{{- end -}}
{{- if and (or .Values.dnsSync.enabled .Values.dnsServer.enabled) (not .Values.etcd.enabled) (not .Values.etcd.external.endpoints) -}}
{{- fail "etcd.external.endpoints: dnsSync and dnsServer need etcd: set etcd.enabled=true or etcd.external.endpoints" -}}
{{- end -}}
{{- range $component := list "dnsSync" "dnsServer" }}
{{- $d := index $.Values $component }}
{{- if and $d.enabled (not $.Values.etcd.enabled) (not $.Values.etcd.external.tlsSecretName) (not $d.etcdTLSSecretName) -}}
{{- fail (printf "etcd.external.tlsSecretName: name the Secret (ca.crt, tls.crt, tls.key) used to reach the external etcd (or %s.etcdTLSSecretName)" $component) -}}
{{- end -}}
{{- end -}}
{{- end -}}
