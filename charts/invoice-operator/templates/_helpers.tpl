{{/* Chart name, overridable. */}}
{{- define "invoice-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name, plus the chart name unless the release name contains it. */}}
{{- define "invoice-operator.fullname" -}}
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

{{/*
Name of cluster-scoped objects (ClusterRole, ClusterRoleBinding): the release namespace is
part of it, so two releases of the same name in different namespaces do not collide.
*/}}
{{- define "invoice-operator.clusterName" -}}
{{- printf "%s-%s" (include "invoice-operator.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "invoice-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "invoice-operator.labels" -}}
helm.sh/chart: {{ include "invoice-operator.chart" . }}
{{ include "invoice-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Labels selecting the operator's pods. */}}
{{- define "invoice-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "invoice-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "invoice-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "invoice-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "invoice-operator.leaseName" -}}
{{- default (include "invoice-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The image reference: digest wins over tag; the tag defaults to appVersion. */}}
{{- define "invoice-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Whether the chart installs the CRD, and whether it keeps it on uninstall: `crds.enabled` and
`crds.keep`, unless the deprecated `installCRDs` / `keepCRDs` are set, which win. "true" or
"" (so `if include ...` reads as a boolean). A `crds` map missing altogether (values reused
from a release of an older chart) means the defaults, true.
*/}}
{{- define "invoice-operator.crdsEnabled" -}}
{{- $crds := default dict .Values.crds }}
{{- if hasKey .Values "installCRDs" }}
{{- if .Values.installCRDs }}true{{ end }}
{{- else if or (not (hasKey $crds "enabled")) $crds.enabled }}true
{{- end }}
{{- end }}

{{- define "invoice-operator.crdsKept" -}}
{{- $crds := default dict .Values.crds }}
{{- if hasKey .Values "keepCRDs" }}
{{- if .Values.keepCRDs }}true{{ end }}
{{- else if or (not (hasKey $crds "keep")) $crds.keep }}true
{{- end }}
{{- end }}
