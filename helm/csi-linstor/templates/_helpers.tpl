{{/* Chart name, possibly overridden. */}}
{{- define "csi-linstor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name: <release>-csi-linstor unless the release already contains it. */}}
{{- define "csi-linstor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "csi-linstor.controllerName" -}}
{{- printf "%s-controller" (include "csi-linstor.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "csi-linstor.nodeName" -}}
{{- printf "%s-node" (include "csi-linstor.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "csi-linstor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "csi-linstor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "csi-linstor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "csi-linstor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The one required value. */}}
{{- define "csi-linstor.linstorEndpoint" -}}
{{- required "linstor.endpoint is required: the LINSTOR controller REST URL(s), comma separated, e.g. --set linstor.endpoint=http://linstor-controller.linstor.svc:3370" .Values.linstor.endpoint -}}
{{- end -}}

{{- define "csi-linstor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* usage: include "csi-linstor.sidecarImage" .Values.sidecars.provisioner */}}
{{- define "csi-linstor.sidecarImage" -}}
{{- printf "%s:%s" .image.repository .image.tag -}}
{{- end -}}

{{/* klog verbosity of the sidecars, following logLevel. */}}
{{- define "csi-linstor.sidecarVerbosity" -}}
{{- $m := dict "debug" "5" "info" "2" "warning" "1" "error" "1" -}}
{{- get $m .Values.logLevel | default "2" -}}
{{- end -}}

{{/* Sidecar worker threads, never more than the driver's --workers. */}}
{{- define "csi-linstor.sidecarWorkers" -}}
{{- min (int .Values.controller.sidecarWorkerThreads) (int .Values.workers) -}}
{{- end -}}

{{/* Where the CSI socket lives inside every pod of this chart. */}}
{{- define "csi-linstor.socketDir" -}}/csi{{- end -}}
{{- define "csi-linstor.socketPath" -}}/csi/csi.sock{{- end -}}

{{/* Node plugin directory on the host. */}}
{{- define "csi-linstor.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driverName -}}
{{- end -}}

{{/* Arguments shared by both modes of the driver. */}}
{{- define "csi-linstor.driverCommonArgs" -}}
- --csi-endpoint=unix://{{ include "csi-linstor.socketPath" . }}
- --linstor-endpoint=$(LS_CONTROLLERS)
- --log-level={{ .Values.logLevel }}
- --driver-name={{ .Values.driverName }}
- --property-namespace={{ .Values.propertyNamespace }}
- --label-by-storage-pool={{ .Values.labelByStoragePool }}
- --max-volumes-per-node={{ int .Values.maxVolumesPerNode }}
{{- if .Values.linstor.bearerToken.secretName }}
- --bearer-token=/etc/csi-linstor/bearer-token/{{ .Values.linstor.bearerToken.key }}
{{- end }}
{{- end -}}

{{/* Environment shared by both modes: endpoint and TLS client material. */}}
{{- define "csi-linstor.driverEnv" -}}
- name: LS_CONTROLLERS
  value: {{ include "csi-linstor.linstorEndpoint" . | quote }}
{{- with .Values.linstor.tls.secretName }}
{{- if $.Values.linstor.tls.caCert }}
- name: LS_ROOT_CA
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: ca.crt
{{- end }}
- name: LS_USER_CERTIFICATE
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: tls.crt
- name: LS_USER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: tls.key
{{- end }}
{{- end -}}

{{- define "csi-linstor.bearerTokenVolume" -}}
{{- if .Values.linstor.bearerToken.secretName -}}
- name: bearer-token
  secret:
    secretName: {{ .Values.linstor.bearerToken.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "csi-linstor.bearerTokenMount" -}}
{{- if .Values.linstor.bearerToken.secretName -}}
- name: bearer-token
  mountPath: /etc/csi-linstor/bearer-token
  readOnly: true
{{- end }}
{{- end -}}

{{/* Hardened securityContext for unprivileged containers. */}}
{{- define "csi-linstor.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
